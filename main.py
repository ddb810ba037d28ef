"""Train and evaluate an agent on an OGBench task, e.g. `python main.py --agent=qgf --env=<task>`.

`python main.py` alone runs the `demo` preset (a small locally generated dataset, small networks, a short
guidance sweep) in minutes on a CPU; with `--env` the default preset is the paper's setting. Any agent
config field can be set as `--agent.<field>=<value>`. Rerunning a command resumes its run directory from
the latest checkpoint. `--eval_only --restore=<run dir>` evaluates a saved agent (e.g. with another
`--agent.estimator` or `--agent.best_of_n`).
"""

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
from tensorboardX import SummaryWriter
from tqdm import tqdm

import agents
import configs
import envs
from agents.training import NonFiniteLossError, check_finite, make_train_chunk
from scripts.checkpoints import Checkpoints
from scripts.evaluation import evaluate_sweep
from scripts.report import write_report
from scripts.run_dir import ConfigMismatchError, CsvLog, default_run_dir, to_plain, write_config

# Known, harmless start-up noise (no display for GLFW; gymnasium's float32 action bounds). Set before the
# first environment imports MuJoCo (`envs` imports lazily).
warnings.filterwarnings("ignore", message=".*DISPLAY environment variable is missing.*")
warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32.*")

FLAGS = flags.FLAGS
flags.DEFINE_string("env", None, "OGBench task name; default: the preset's task.")
flags.DEFINE_string("preset", None, "A configs.PRESETS name; default: 'demo' without --env, 'paper' with it.")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, data order and evaluation noise.")
for _name in ("train_steps", "steps_per_call", "log_every", "eval_every", "save_every", "eval_episodes"):
    flags.DEFINE_integer(_name, None, f"Overrides the preset's run setting `{_name}`.")
flags.DEFINE_list("guidance_weights", None, "Guidance weights evaluated in one batch; default: the config's.")
flags.DEFINE_string("run_dir", None, "Run directory; default: runs/<env>/<agent>/seed<seed>-<config hash>.")
flags.DEFINE_string("dataset_dir", None, "Directory of OGBench .npz files; default: the preset's.")
flags.DEFINE_string("dataset_path", None, "A dataset .npz file or a directory of .npz slices.")
flags.DEFINE_bool("generate_missing", True, "Generate a missing dataset with the OGBench oracles.")
flags.DEFINE_bool("eval_only", False, "Only evaluate the checkpoint of --restore.")
flags.DEFINE_string("restore", None, "Run directory whose latest checkpoint --eval_only evaluates.")
flags.DEFINE_integer("eval_reset_seed", None, "First reset seed of evaluation episodes; default: 1000 × seed.")
flags.DEFINE_bool("allow_config_change", False, "Resume into a run dir whose config.json differs.")
flags.DEFINE_bool("progress", True, "Show progress bars.")


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


def load_data(env_name: str, run):

    dataset_dir = os.path.expanduser(run.dataset_dir or envs.default_dataset_dir())
    try:
        return envs.make_env_and_datasets(env_name, dataset_dir=dataset_dir, dataset_path=run.dataset_path or None)
    except envs.DatasetMissingError:
        if not FLAGS.generate_missing or run.dataset_path:
            raise
    envs.generate_dataset(
        env_name,
        dataset_dir,
        episodes=run.dataset_episodes or None,
        seed=0,
        max_episode_steps=run.dataset_episode_steps,
        progress=FLAGS.progress,
    )
    return envs.make_env_and_datasets(env_name, dataset_dir=dataset_dir)


def check_data_fits(dataset: dict, config) -> None:

    transitions, ends = len(dataset["observations"]), np.flatnonzero(dataset["terminals"])
    longest = int(np.max(np.diff(np.concatenate([[-1], ends])))) if len(ends) else transitions
    if config.batch_size > transitions:
        raise configs.ConfigError(
            f"--agent.batch_size={config.batch_size} exceeds the dataset's {transitions} "
            "transitions; lower it or generate more episodes"
        )
    if config.horizon > longest:
        raise configs.ConfigError(
            f"--agent.horizon={config.horizon} is longer than the dataset's longest episode ({longest} steps); lower it"
        )


def main(_):
    logging.set_verbosity(logging.WARNING)  # Orbax and JAX log every step of a save at INFO.
    saved = None
    if FLAGS.eval_only:
        if not FLAGS.restore:
            raise configs.ConfigError("--eval_only needs --restore=<run dir>")
        with open(os.path.join(FLAGS.restore, "config.json")) as f:
            saved = json.load(f)
    preset = saved["preset"] if saved else FLAGS.preset or ("demo" if FLAGS.env is None else "paper")
    config = resolved_agent_config(AGENT_NAME, preset, saved["agent_config"] if saved else None)
    run = configs.get_run_config(preset, AGENT_NAME)
    run.update(saved["run"] if saved else {})
    for name in ("train_steps", "steps_per_call", "log_every", "eval_every", "save_every", "eval_episodes"):
        if getattr(FLAGS, name) is not None:
            run[name] = getattr(FLAGS, name)
    run.dataset_dir = FLAGS.dataset_dir or run.dataset_dir
    run.dataset_path = FLAGS.dataset_path or run.dataset_path
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
    seed = saved["seed"] if saved else FLAGS.seed
    reset_seed = 1000 * seed if FLAGS.eval_reset_seed is None else FLAGS.eval_reset_seed
    resolved = {
        "agent": AGENT_NAME,
        "preset": preset,
        "env": env_name,
        "seed": seed,
        "guidance_weights": weights,
        "eval_reset_seed": reset_seed,
        "agent_config": to_plain(config),
        "run": to_plain(run),
    }
    train_dir = FLAGS.restore or FLAGS.run_dir or default_run_dir("runs", env_name, AGENT_NAME, seed, resolved)
    eval_tag = f"{config.estimator}-bo{config.best_of_n}-reset{reset_seed}"
    out_dir = os.path.join(train_dir, "eval", eval_tag) if saved else train_dir
    if not saved:
        write_config(train_dir, resolved, FLAGS.allow_config_change)
    os.makedirs(out_dir, exist_ok=True)
    print(f"{AGENT_NAME} on {env_name}, preset '{preset}', seed {seed}; run dir {out_dir}", flush=True)

    clock = {"data": time.perf_counter()}
    _, train_data, val_data = load_data(env_name, run)
    dataset, val_dataset = envs.to_device_dataset(train_data), envs.to_device_dataset(val_data or train_data)
    clock["data"] = time.perf_counter() - clock["data"]
    check_data_fits(train_data, config)
    goal_conditioned = not envs.parse_name(env_name).singletask
    if goal_conditioned != config.get("goal_conditioned", False):
        kind = "goal-conditioned" if goal_conditioned else "single-task"
        raise configs.ConfigError(
            f"--env={env_name} is {kind}, which agent '{AGENT_NAME}' does not train on; use "
            + ("--agent=gcqgf" if goal_conditioned else "a ...-singletask-taskN-v0 task or --agent=qgf")
        )
    sample = functools.partial(
        envs.sample_chunks, batch_size=config.batch_size, horizon=config.horizon, discount=config.discount
    )
    if goal_conditioned:
        sample = functools.partial(
            envs.sample_goal_chunks,
            batch_size=config.batch_size,
            horizon=config.horizon,
            discount=config.discount,
            p_cur=config.p_cur,
            p_traj=config.p_traj,
            p_rand=config.p_rand,
            success_fn=envs.goal_success_fn(env_name),
        )
    agent = agents.make(AGENT_NAME, config)
    init_key, data_key, val_key, eval_key = jax.random.split(jax.random.PRNGKey(seed), 4)
    state = jax.jit(agent.init)(init_key, sample(dataset, data_key))
    checkpoints = Checkpoints(os.path.join(train_dir, "checkpoints"))
    step = checkpoints.latest_step() or 0
    if step:
        state = checkpoints.restore(step, state)
        print(f"Resumed from the checkpoint at step {step}.", flush=True)
    elif saved:
        raise configs.ConfigError(f"{train_dir} has no checkpoint to evaluate; train it first")

    act = jax.jit(lambda s, o, k, w, g: agent.act(s, o, k, guidance_weight=w, goals=g))
    eval_log = CsvLog(os.path.join(out_dir, "eval.csv"), step if not saved else -1)

    def evaluate(step):
        rows, timing = evaluate_sweep(
            act,
            state,
            env_name,
            weights,
            run.eval_episodes,
            run.eval_envs,
            jax.random.fold_in(eval_key, step),
            seed=reset_seed,
        )
        for row in rows:
            eval_log.write({"step": step, "estimator": config.estimator, "best_of_n": config.best_of_n, **row})
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
            f"\nStep {step}: success per guidance weight ({timing['eval_seconds']:.0f} s, of which policy "
            f"{timing['policy_seconds']:.0f} s)\n{table}\n",
            flush=True,
        )
        return timing["eval_seconds"]

    writer = SummaryWriter(out_dir)
    clock["eval"] = 0.0
    if saved:
        clock["eval"] += evaluate(step)
        return print(f"Report: {os.path.join(out_dir, 'report.md')}")

    for name in ("log_every", "eval_every", "save_every", "train_steps"):
        if run[name] % run.steps_per_call:
            raise configs.ConfigError(
                f"--{name}={run[name]} must be a multiple of --steps_per_call={run.steps_per_call}"
            )
    train_chunk = make_train_chunk(agent, sample, run.steps_per_call)
    validate = jax.jit(lambda s, k: agent.validate(s, sample(val_dataset, k)))
    train_log = CsvLog(os.path.join(train_dir, "train.csv"), step)
    clock["train"], last = 0.0, (time.perf_counter(), step)
    bar = tqdm(total=run.train_steps, initial=step, disable=not FLAGS.progress, unit="step", dynamic_ncols=True)
    while step < run.train_steps:
        start = time.perf_counter()
        state, metrics = train_chunk(state, dataset, jax.random.fold_in(data_key, step))
        step += run.steps_per_call
        metrics = jax.device_get(metrics)
        check_finite(metrics, step - run.steps_per_call, step, checkpoints.latest_step())
        if step % run.log_every == 0:
            metrics = {f"train/{k}": float(v) for k, v in metrics.items()}
            metrics.update(
                {f"val/{k}": float(v) for k, v in validate(state, jax.random.fold_in(val_key, step)).items()}
            )
            rate = (step - last[1]) / (time.perf_counter() - last[0])
            last = (time.perf_counter(), step)
            train_log.write({"step": step, "steps_per_s": rate, **metrics})
            for k, v in metrics.items():
                writer.add_scalar(k, v, step)
            bar.set_postfix(bc=f"{metrics['train/policy/bc_loss']:.3f}", q=f"{metrics['train/critic/q_mean']:.1f}")
        jax.block_until_ready(state)
        clock["train"] += time.perf_counter() - start
        bar.update(run.steps_per_call)
        if step % run.eval_every == 0 or step == run.train_steps:
            clock["eval"] += evaluate(step)
        if step % run.save_every == 0 or step == run.train_steps:
            checkpoints.save(step, state)
    bar.close()
    checkpoints.close()
    writer.close()
    print(
        f"Done: data {clock['data']:.0f} s, training {clock['train']:.0f} s, evaluation {clock['eval']:.0f} s. "
        f"Report: {os.path.join(out_dir, 'report.md')}",
        flush=True,
    )


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
    ) as error:
        sys.exit(f"error: {error}")


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
