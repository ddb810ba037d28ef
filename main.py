"""Train and evaluate an agent on an OGBench task, e.g. `python main.py --agent=qgf --env=<task>`.

`python main.py` alone runs the `demo` preset (a small locally generated dataset, small networks, a short
guidance sweep) in minutes on a CPU; with `--env` the default preset is the paper's setting. Any agent
config field can be set as `--agent.<field>=<value>`. Rerunning a command resumes its run directory from
the latest checkpoint. `--eval_only --restore=<run dir>` evaluates a saved agent (e.g. with another
`--agent.estimator` or `--agent.best_of_n`).
"""

import errno
import functools
import json
import os
import shlex
import sys
import time
import warnings

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

import agents
import configs
import envs
from agents.training import NonFiniteLossError, check_finite, make_train_chunk, over_seeds
from envs.generate import DatasetWriteError
from runner.checkpoints import CheckpointError
from runner.devices import placement, seed_batching
from runner.evaluation import make_sweep_evaluator
from runner.report import write_report
from runner.run_data import check_agent_fits_task, check_data_fits, load_data, make_sampler
from runner.run_dir import ConfigMismatchError, default_run_dir, to_plain, write_config
from runner.seed_runs import SeedRuns

# Known, harmless start-up noise (no display for GLFW; gymnasium's float32 action bounds). Set before the
# first environment imports MuJoCo (`envs` imports lazily).
warnings.filterwarnings("ignore", message=".*DISPLAY environment variable is missing.*")
warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32.*")

FLAGS = flags.FLAGS
flags.DEFINE_string("env", None, "OGBench task name; default: the preset's task.")
flags.DEFINE_string("preset", None, "A configs.PRESETS name; default: 'demo' without --env, 'paper' with it.")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, data order and evaluation noise.")
flags.DEFINE_integer("num_seeds", 1, "Train seeds seed..seed+N-1 together in one process, one run dir each.")
flags.DEFINE_string(
    "seed_batching", "auto", "How --num_seeds share a call: vmap, map (one after another), auto (map on one CPU)."
)
for _name in ("train_steps", "steps_per_call", "log_every", "eval_every", "save_every", "eval_episodes"):
    flags.DEFINE_integer(_name, None, f"Overrides the preset's run setting `{_name}`.")
flags.DEFINE_list("guidance_weights", None, "Guidance weights evaluated in one batch; default: the config's.")
flags.DEFINE_string(
    "run_dir", None, "Run directory ('{seed}' is replaced); default: runs/<env>/<agent>/seed<seed>-<config hash>."
)
flags.DEFINE_string("dataset_dir", None, "Directory of OGBench .npz files; default: the preset's.")
flags.DEFINE_string("dataset_path", None, "A dataset .npz file or a directory of .npz slices.")
flags.DEFINE_bool("generate_missing", True, "Generate a missing dataset with the OGBench oracles.")
flags.DEFINE_bool("eval_only", False, "Only evaluate the checkpoint of --restore.")
flags.DEFINE_string("restore", None, "Run directory whose latest checkpoint --eval_only evaluates.")
flags.DEFINE_integer("eval_reset_seed", None, "First reset seed of evaluation episodes; default: 1000 × seed.")
flags.DEFINE_bool("allow_config_change", False, "Resume into a run dir whose config.json differs.")
flags.DEFINE_bool("progress", True, "Show progress bars.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first (one process per host).")


def split_agent_name(argv: list[str]) -> tuple[str, list[str]]:
    """Takes `--agent=<name>` (or `--agent <name>`) out of argv; `--agent.<field>` flags stay for absl.

    Without one, the agent is qgf, or the saved run's agent for `--eval_only --restore=<run dir>`.
    """
    name, rest, i = None, [], 0
    while i < len(argv):
        if argv[i].startswith("--agent="):
            name = argv[i].split("=", 1)[1]
        elif argv[i] == "--agent" and i + 1 < len(argv):
            name, i = argv[i + 1], i + 1
        else:
            rest.append(argv[i])
        i += 1
    restore = [a.split("=", 1)[1] for a in argv if a.startswith("--restore=")]
    saved_config = os.path.join(restore[-1], "config.json") if restore else ""
    if name is None and "--eval_only" in argv and os.path.exists(saved_config):
        with open(saved_config) as f:
            name = json.load(f)["agent"]
    return name or "qgf", rest


def resolved_agent_config(agent_name: str, preset: str, base: dict | None = None):
    """The preset's agent config (or a saved one), with every `--agent.<field>` given on the command line."""
    config = configs.get_config(agent_name, preset)
    if base is not None:
        config.update(base)
    for flag_name in FLAGS:
        if flag_name.startswith("agent.") and FLAGS[flag_name].present:
            field = flag_name[len("agent.") :]
            config[field] = FLAGS.agent[field]
    return config


def seed_run_dir(seed: int, resolved: dict) -> str:
    if FLAGS.restore:
        return FLAGS.restore
    if FLAGS.run_dir is None:
        return default_run_dir("runs", resolved["env"], AGENT_NAME, seed, resolved)
    if "{seed}" in FLAGS.run_dir:
        return FLAGS.run_dir.replace("{seed}", str(seed))
    return os.path.join(FLAGS.run_dir, f"seed{seed}") if FLAGS.num_seeds > 1 else FLAGS.run_dir


def main(_):
    logging.set_verbosity(logging.WARNING)  # Orbax and JAX log every step of a save at INFO.
    if FLAGS.distributed:
        jax.distributed.initialize()
    saved = None
    if FLAGS.eval_only:
        if not FLAGS.restore:
            raise configs.ConfigError("--eval_only needs --restore=<run dir>")
        if FLAGS.num_seeds != 1:
            raise configs.ConfigError("--eval_only evaluates one run dir; drop --num_seeds")
        with open(os.path.join(FLAGS.restore, "config.json")) as f:
            saved = json.load(f)
    if FLAGS.num_seeds < 1:
        raise configs.ConfigError(f"--num_seeds={FLAGS.num_seeds} must be at least 1")
    batching = seed_batching(FLAGS.seed_batching)
    preset = saved["preset"] if saved else FLAGS.preset or ("demo" if FLAGS.env is None else "paper")
    config = resolved_agent_config(AGENT_NAME, preset, saved["agent_config"] if saved else None)
    run = configs.get_run_config(preset, AGENT_NAME)
    run.update(saved["run"] if saved else {})
    for name in ("train_steps", "steps_per_call", "log_every", "eval_every", "save_every", "eval_episodes"):
        if getattr(FLAGS, name) is not None:
            run[name] = getattr(FLAGS, name)
    run.dataset_dir = FLAGS.dataset_dir or run.dataset_dir
    run.dataset_path = FLAGS.dataset_path or run.dataset_path
    for name in ("log_every", "eval_every", "save_every", "train_steps"):
        if not saved and run[name] % run.steps_per_call:  # Checked before any data or compilation.
            raise configs.ConfigError(
                f"--{name}={run[name]} must be a multiple of --steps_per_call={run.steps_per_call}"
            )
    if saved and saved["agent"] != AGENT_NAME:
        raise configs.ConfigError(f"{FLAGS.restore} holds a '{saved['agent']}' run; drop --agent={AGENT_NAME}")
    env_name = saved["env"] if saved else FLAGS.env or run.env_name
    weights = saved["guidance_weights"] if saved else list(config.guidance_weights)
    weights = [float(w) for w in FLAGS.guidance_weights] if FLAGS.guidance_weights else weights
    configs.check_config(config, weights)
    try:
        envs.parse_name(env_name)
    except ValueError as error:
        raise configs.ConfigError(f"--env: {error}") from None
    check_agent_fits_task(AGENT_NAME, config, env_name)
    seeds = [saved["seed"]] if saved else [FLAGS.seed + i for i in range(FLAGS.num_seeds)]
    if FLAGS.eval_reset_seed is not None and len(seeds) > 1:
        raise configs.ConfigError("--eval_reset_seed sets one seed's episodes; drop it with --num_seeds")
    reset_seeds = [1000 * s if FLAGS.eval_reset_seed is None else FLAGS.eval_reset_seed for s in seeds]
    train_dirs, resolved = [], dict(agent=AGENT_NAME, preset=preset, env=env_name, guidance_weights=weights)
    resolved.update(agent_config=to_plain(config), run=to_plain(run))
    for seed, reset_seed in zip(seeds, reset_seeds, strict=True):
        seed_resolved = {**resolved, "seed": seed, "eval_reset_seed": reset_seed}
        train_dirs.append(seed_run_dir(seed, seed_resolved))
        if not saved:
            write_config(train_dirs[-1], seed_resolved, FLAGS.allow_config_change)
    eval_tag = f"{config.estimator}-bo{config.best_of_n}-reset{reset_seeds[0]}"
    out_dirs = [os.path.join(d, "eval", eval_tag) if saved else d for d in train_dirs]
    for d in out_dirs:
        os.makedirs(d, exist_ok=True)
    where = placement(len(seeds), config.batch_size)
    print(
        f"{AGENT_NAME} on {env_name}, preset '{preset}', seed(s) {', '.join(map(str, seeds))} on "
        f"{where.description}{' (seeds mapped one after another)' if len(seeds) > 1 and batching == 'map' else ''}; "
        f"run dir(s) {', '.join(out_dirs)}",
        flush=True,
    )

    clock = {"data": time.perf_counter()}
    _, train_data, val_data = load_data(env_name, run, FLAGS.generate_missing, FLAGS.progress)
    check_data_fits(train_data, config)
    dataset = where.put_replicated(envs.to_device_dataset(train_data))
    val_dataset = where.put_replicated(envs.to_device_dataset(val_data or train_data))
    clock["data"] = time.perf_counter() - clock["data"]
    sample = make_sampler(config, env_name)
    agent = agents.make(AGENT_NAME, config)
    # Each seed's keys are those of a run of that seed alone, so seeds trained together equal separate runs.
    keys = np.stack([jax.random.split(jax.random.PRNGKey(seed), 4) for seed in seeds], axis=1)
    init_keys, data_keys, val_keys, eval_keys = (where.put_seeds(k) for k in keys)
    init = over_seeds(lambda key, data_key: agent.init(key, sample(dataset, data_key)), batching=batching)
    states = where.put_seeds(jax.jit(init)(init_keys, data_keys))
    runs = SeedRuns(train_dirs, out_dirs)
    step = runs.resume_step()
    if step:
        states = where.put_seeds(runs.restore(step, states))
        print(f"Resumed from the checkpoint at step {step}.", flush=True)
    elif saved:
        raise configs.ConfigError(f"{FLAGS.restore} has no checkpoint to evaluate; train it first")
    runs.open_logs(step, train=not saved)
    act = functools.partial(act_with_weights, agent)
    evaluate_seeds = make_sweep_evaluator(
        act, env_name, weights, run.eval_episodes, run.eval_envs, seed_batching=batching
    )

    def evaluate(step):
        eval_step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(eval_keys, step)
        rows_per_seed, timing = evaluate_seeds(states, eval_step_keys, reset_seeds)
        for seed, rows, log, writer, out_dir in zip(
            seeds, rows_per_seed, runs.eval_logs, runs.writers, out_dirs, strict=True
        ):
            for row in rows:
                log.write({"step": step, "estimator": config.estimator, "best_of_n": config.best_of_n, **row})
                writer.add_scalar(f"eval/success_w{row['guidance_weight']:g}_task_{row['task']}", row["success"], step)
            table = write_report(
                out_dir,
                rows,
                step=step,
                env_name=env_name,
                agent_name=AGENT_NAME,
                estimator=config.estimator,
                best_of_n=config.best_of_n,
                command=COMMAND,
            )
            print(
                f"\nStep {step}, seed {seed}: success per guidance weight ({timing['eval_seconds']:.0f} s for "
                f"{len(seeds)} seed(s), of which policy {timing['policy_seconds']:.0f} s)\n{table}\n",
                flush=True,
            )
        return timing["eval_seconds"]

    clock["eval"] = 0.0
    if saved:
        clock["eval"] += evaluate(step)
        runs.close()
        return print(f"Report: {os.path.join(out_dirs[0], 'report.md')}")

    train_chunk = make_train_chunk(agent, sample, run.steps_per_call, where.constrain_batch, batching)
    validate = jax.jit(
        over_seeds(lambda state, key: agent.validate(state, sample(val_dataset, key)), batching=batching)
    )
    fold_in = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))
    clock["train"], last = 0.0, (time.perf_counter(), step)
    bar = tqdm(total=run.train_steps, initial=step, disable=not FLAGS.progress, unit="step", dynamic_ncols=True)
    while step < run.train_steps:
        start = time.perf_counter()
        states, metrics = train_chunk(states, dataset, fold_in(data_keys, step))
        step += run.steps_per_call
        metrics = jax.device_get(metrics)
        check_finite(metrics, step - run.steps_per_call, step, runs.checkpoints[0].latest_step(), seeds)
        if step % run.log_every == 0:
            val_metrics = jax.device_get(validate(states, fold_in(val_keys, step)))
            rate = (step - last[1]) / (time.perf_counter() - last[0])
            last = (time.perf_counter(), step)
            for i, (log, writer) in enumerate(zip(runs.train_logs, runs.writers, strict=True)):
                row = {f"train/{k}": float(v[i]) for k, v in metrics.items()}
                row.update({f"val/{k}": float(v[i]) for k, v in val_metrics.items()})
                log.write({"step": step, "steps_per_s": rate, **row})
                for k, v in row.items():
                    writer.add_scalar(k, v, step)
            bar.set_postfix(bc=f"{row['train/policy/bc_loss']:.3f}", q=f"{row['train/critic/q_mean']:.1f}")
        jax.block_until_ready(states)
        clock["train"] += time.perf_counter() - start
        bar.update(run.steps_per_call)
        if step % run.eval_every == 0 or step == run.train_steps:
            clock["eval"] += evaluate(step)
        if step % run.save_every == 0 or step == run.train_steps:
            runs.save(step, states)
    bar.close()
    runs.close()
    print(
        f"Done: data {clock['data']:.0f} s, training {clock['train']:.0f} s, evaluation {clock['eval']:.0f} s. "
        f"Report(s): {', '.join(os.path.join(d, 'report.md') for d in out_dirs)}",
        flush=True,
    )


def act_with_weights(agent, state, observations, key, guidance_weight, goals):
    return agent.act(state, observations, key, guidance_weight=guidance_weight, goals=goals)


def main_reporting_user_errors(argv):
    """User errors end in one line naming the bad value and a non-zero exit; bugs keep their traceback."""

    try:
        main(argv)
    except (
        configs.ConfigError,
        envs.DatasetMissingError,
        envs.DatasetFormatError,
        ConfigMismatchError,
        NonFiniteLossError,
        CheckpointError,
        DatasetWriteError,
    ) as error:
        sys.exit(f"error: {error}")
    except OSError as error:  # A full disk while writing config.json, logs or the report.
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        sys.exit(f"error: {error}; free some space and rerun the same command: it resumes from the last checkpoint")


if __name__ == "__main__":
    COMMAND = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    # config_flags finds `--agent.<field>` overrides in sys.argv itself, so the name flag must leave it.
    AGENT_NAME, sys.argv = split_agent_name(sys.argv)
    if AGENT_NAME not in configs.AGENT_CONFIGS:
        sys.exit(
            f"error: unknown agent {AGENT_NAME!r}{configs.closest(AGENT_NAME, configs.AGENT_CONFIGS)}; "
            f"choose one of {sorted(configs.AGENT_CONFIGS)}"
        )
    config_flags.DEFINE_config_dict(
        "agent", configs.get_config(AGENT_NAME), "Agent config; set fields as --agent.<field>."
    )
    app.run(main_reporting_user_errors)
