"""Train and evaluate an agent on an OGBench task, e.g. `python main.py --agent=qgf --env=<task>`.

`python main.py` alone runs the `demo` preset (a small locally generated dataset, small networks, a short
guidance sweep) in minutes on a CPU; with `--env` the default preset is the task's family preset (the paper's
run of that task, on its 100M slices). `--dry_run` prints the resolved run. Any agent config field can be set
as `--agent.<field>=<value>`. Rerunning a command resumes its run directory from
the latest checkpoint. `--eval_only --restore=<run dir>` evaluates a saved agent (e.g. with another
`--agent.estimator` or `--agent.best_of_n`).

This file only turns flags into a `runner.config.Options`; `runner.config.resolve` makes the run of it and
`runner.train` / `runner.evaluate` carry it out (both callable from a test or a notebook).
"""

if __name__ == "__main__":
    # First, before the imports below take their seconds: a stop signal during start-up ends the run at once.
    from runner.interrupt import stop_at_once

    stop_at_once()
elif __name__ == "__mp_main__":
    # A worker process (evaluation, dataset generation) started by 'spawn' runs this file first: it ends with
    # its parent even while importing, and leaves stop signals, sent to a whole process group or job step, to it.
    from envs.orphans import end_with_parent, ignore_stop_signals

    end_with_parent()
    ignore_stop_signals()

import errno
import json
import shlex
import sys
import traceback

import jax
from absl import app, flags, logging
from ml_collections import config_flags

import configs
import envs
import runner
from agents.training import NonFiniteLossError
from envs.generate import DatasetWriteError, quiet_known_warnings
from envs.vector_env import WorkerError
from runner.checkpoints import CheckpointError
from runner.config import RUN_OVERRIDES, Options, check_agent_arguments, dry_run_view, resolve, split_agent_name
from runner.run_dir import ConfigMismatchError
from runner.run_lock import RunDirLockedError
from runner.train_loop import EvaluationFailed, RunStopped

# Set before the first environment imports MuJoCo (`envs` imports lazily).
quiet_known_warnings()

FLAGS = flags.FLAGS
flags.DEFINE_string("env", None, "OGBench task name; default: the preset's task.")
flags.DEFINE_string(
    "preset",
    None,
    "A configs.PRESETS name; default: 'demo' without --env, the task's family preset with it (a size preset or "
    "'study' alone composes after it).",
)
flags.DEFINE_integer("seed", 0, "Seed of initialisation, data order and evaluation noise.")
flags.DEFINE_integer("num_seeds", 1, "Train seeds seed..seed+N-1 together in one process, one run dir each.")
flags.DEFINE_string(
    "seed_batching", "auto", "How --num_seeds share a call: vmap, map (one after another), auto (map on one CPU)."
)
for _name in RUN_OVERRIDES:
    flags.DEFINE_integer(_name, None, f"Overrides the preset's run setting `{_name}`.")
flags.DEFINE_list("guidance_weights", None, "Guidance weights evaluated in one batch; default: the config's.")
flags.DEFINE_string(
    "run_dir", None, "Run directory ('{seed}' is replaced); default: runs/<env>/<agent>/seed<seed>-<config hash>."
)
flags.DEFINE_string("dataset_dir", None, "Directory of OGBench .npz files; default: the preset's.")
flags.DEFINE_string("dataset_path", None, "A dataset .npz file or a directory of .npz slices.")
flags.DEFINE_enum(
    "dataset_size",
    None,
    configs.DATASET_SIZES,
    "OGBench's standard file or its 100M slices (the paper's data, the family presets' default where OGBench has "
    "them); default: the preset's.",
)
flags.DEFINE_string(
    "data", "auto", "Where missing dataset files come from: auto (download, else generate), download, generate, local."
)
flags.DEFINE_bool("eval_only", False, "Only evaluate the checkpoint of --restore.")
flags.DEFINE_bool(
    "dry_run", False, "Print the resolved run (its config.json, run dir and data) as JSON and exit; nothing is loaded."
)
flags.DEFINE_string("restore", None, "Run directory whose latest checkpoint --eval_only evaluates.")
flags.DEFINE_integer("eval_reset_seed", None, "First reset seed of evaluation episodes; default: 1000 × seed.")
flags.DEFINE_bool("allow_config_change", False, "Resume into a run dir whose config.json differs.")
flags.DEFINE_bool("progress", True, "Show progress bars.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first (one process per host).")
flags.DEFINE_integer("eval_videos", 0, "Episodes per guidance weight recorded as videos at each evaluation.")
flags.DEFINE_bool("wandb", False, "Also log to Weights & Biases (needs `pip install wandb`).")
flags.DEFINE_string("wandb_project", "qgf", "W&B project of --wandb.")
flags.DEFINE_string("wandb_entity", None, "W&B entity (team or user) of --wandb; default: the account's.")
flags.DEFINE_string("wandb_mode", None, "W&B mode: online, offline (no network needed) or disabled; default: wandb's.")

# User errors end in one line naming the bad value and a non-zero exit; bugs keep their traceback.
USER_ERRORS = (
    configs.ConfigError,
    envs.DatasetMissingError,
    envs.DatasetFormatError,
    ConfigMismatchError,
    NonFiniteLossError,
    CheckpointError,
    DatasetWriteError,
    RunDirLockedError,
)
_CANNOT_WRITE = (errno.EACCES, errno.EPERM, errno.EROFS)  # a read-only run dir or dataset dir


def options_from_flags(agent_name: str, command: str) -> Options:
    """The parsed flags as plain values; `--agent.<field>` overrides only where given on the command line."""
    overrides = {
        name[len("agent.") :]: FLAGS.agent[name[len("agent.") :]]
        for name in FLAGS
        if name.startswith("agent.") and FLAGS[name].present
    }
    plain = ("env", "preset", "seed", "num_seeds", "seed_batching", "run_dir", "dataset_dir", "dataset_path")
    plain += ("dataset_size",)
    plain += ("data", "eval_only", "restore", "eval_reset_seed", "allow_config_change", "progress")
    plain += ("eval_videos", "wandb", "wandb_project", "wandb_entity", "wandb_mode")
    return Options(
        agent=agent_name,
        agent_overrides=overrides,
        guidance_weights=FLAGS.guidance_weights,
        command=command,
        **{name: getattr(FLAGS, name) for name in plain + RUN_OVERRIDES},
    )


def main(agent_name: str, command: str) -> None:
    logging.set_verbosity(logging.WARNING)  # Orbax and JAX log every step of a save at INFO.
    if FLAGS.distributed and not FLAGS.dry_run:  # First: resolving the run lists the devices, every host's then.
        try:
            jax.distributed.initialize()
        except (ValueError, RuntimeError) as error:  # no cluster found, or no coordinator reached
            what = " ".join(str(error).split())[:300].rstrip(".")
            raise configs.ConfigError(
                f"--distributed: {what}; start one process per host under a cluster manager (e.g. srun), or drop "
                "--distributed on one machine"
            ) from None
    plan = resolve(options_from_flags(agent_name, command))
    if FLAGS.dry_run:
        print(json.dumps(dry_run_view(plan), indent=2, sort_keys=True))
        return
    (runner.evaluate if plan.eval_only else runner.train)(plan)


def run_reporting_user_errors(agent_name: str, command: str) -> None:
    try:
        main(agent_name, command)
    except USER_ERRORS as error:
        sys.exit(f"error: {error}")
    except RunStopped as stopped:  # a stop signal while training, with a checkpoint of the step reached
        print(stopped, file=sys.stderr, flush=True)
        sys.exit(stopped.status)
    except EvaluationFailed as failed:  # with the step's checkpoint saved
        if not isinstance(failed.__cause__, WorkerError):  # not a worker's death or failure: maybe a bug here
            traceback.print_exception(failed.__cause__)
        sys.exit(f"error: {failed}")
    except OSError as error:
        if error.errno in _CANNOT_WRITE:
            # An evaluation writes into the run it evaluates (eval/<tag>/): no flag puts it elsewhere.
            where = "choose a writable directory"
            if FLAGS.eval_only:
                where = f"copy {FLAGS.restore} to a writable directory and evaluate the copy"
            sys.exit(f"error: cannot write {error.filename} ({error.strerror}); {where}")
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):  # A full disk while writing config.json, logs, report.
            raise
        sys.exit(f"error: {error}; free some space and rerun the same command: it resumes from the last checkpoint")


def refuse_arguments(argv: list[str]) -> None:
    """main.py takes flags only: a word without `--` is a typo (e.g. `--seed 1 2`), not something to ignore."""
    sys.exit(f"error: unexpected argument(s) {' '.join(argv[1:])}; main.py takes flags only, e.g. --seed=1")


if __name__ == "__main__":
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    # config_flags finds `--agent.<field>` overrides in sys.argv itself, so the name flag must leave it.
    agent_name, sys.argv = split_agent_name(sys.argv)
    try:
        check_agent_arguments(agent_name, sys.argv)
    except configs.ConfigError as error:
        sys.exit(f"error: {error}")
    config_flags.DEFINE_config_dict(
        "agent", configs.get_config(agent_name), "Agent config; set fields as --agent.<field>."
    )
    app.run(lambda argv: run_reporting_user_errors(agent_name, command) if len(argv) == 1 else refuse_arguments(argv))
