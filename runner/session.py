"""What training and evaluating a saved run share: the run's data on its devices, the agent, the seeds'
states (restored from the latest checkpoint when there is one), their logs, and one evaluation of a
guidance-weight sweep with its report."""

import dataclasses
import functools
import json
import os
import time

import jax
import numpy as np

import agents
import configs
import envs
from agents.training import over_seeds
from runner.checkpoints import saved_steps
from runner.config import EVALUATION_FILE, RunPlan, evaluation_settings
from runner.devices import Placement, placement
from runner.estimate import run_plan_line
from runner.evaluation import make_sweep_evaluator
from runner.report import format_data, write_report
from runner.run_data import (
    check_data_fits,
    content_sha256,
    device_dataset,
    load_data,
    make_sampler,
    placeholder_dataset,
    slice_directory,
    slice_rotation,
)
from runner.run_dir import ConfigMismatchError, write_config, write_json, write_slice_list
from runner.run_lock import RunLock
from runner.seed_runs import SeedRuns
from runner.slice_rotation import SliceRotation
from runner.videos import RenderingUnavailable, check_gl_variable, choose_gl_backend, write_videos


@dataclasses.dataclass
class Keys:
    """Per-seed keys [S, 2]; each seed's are those of a run of that seed alone, so seeds trained together
    equal separate runs."""

    init: jax.Array
    data: jax.Array
    val: jax.Array
    eval: jax.Array


@dataclasses.dataclass
class Session:
    plan: RunPlan
    where: Placement
    agent: agents.Agent
    sample: object  # `sample(device dataset, key) -> batch`
    dataset: dict | None  # the training data, on the devices (None when `rotation` supplies slices)
    val_dataset: dict | None  # the validation file's data, on the devices (None without one)
    keys: Keys
    runs: SeedRuns
    states: object  # the seeds' agent states, with a leading seed axis
    step: int  # the step `states` are at
    data_seconds: float
    sweep: object = None  # runner.evaluation's `evaluate(states, keys, reset_seeds)`
    rotation: SliceRotation | None = None  # training on a directory of slices
    locks: list = dataclasses.field(default_factory=list)  # the run dirs' RunLocks, released by close()
    stop: object = None  # runner.interrupt's StopRequest while training: a stop signal abandons an evaluation
    data_line: str = ""  # what the run trains on, for report.md (runner.report.format_data)

    def train_dataset(self, step: int) -> dict:
        """The device dataset the chunk of updates starting at `step` samples from: the slice of that step on a
        directory of slices, else the run's one dataset."""
        return self.dataset if self.rotation is None else self.rotation.dataset(step)

    def validation_dataset(self, step: int) -> dict:
        """The validation file's data, or without one the training data of the chunk starting at `step`."""
        return self.train_dataset(step) if self.val_dataset is None else self.val_dataset

    def evaluate(self, step: int) -> float:
        """Evaluates the sweep at `step` for every seed: eval.csv rows, TensorBoard scalars, report and its
        table printed. Returns the wall time in seconds."""
        plan = self.plan
        eval_step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(self.keys.eval, step)
        result = self.sweep(self.states, eval_step_keys, plan.reset_seeds)
        timing = result.timing
        config = plan.config
        tag = {"step": step, "estimator": config.estimator, "best_of_n": config.best_of_n}
        for seed, rows, episodes, recordings, log, episode_log, writer, out_dir in zip(
            plan.seeds,
            result.rows_per_seed,
            result.episodes_per_seed,
            result.recordings_per_seed,
            self.runs.eval_logs,
            self.runs.episode_logs,
            self.runs.writers,
            plan.out_dirs,
            strict=True,
        ):
            for episode in episodes:  # Before eval.csv, whose rows mark the evaluation done.
                episode_log.write({**tag, **episode})
            for row in rows:
                log.write({**tag, **row})
                for name in ("success", "return"):
                    writer.add_scalar(f"eval/{name}_w{row['guidance_weight']:g}_task_{row['task']}", row[name], step)
            videos = write_videos(out_dir, step, recordings) if recordings else None
            table = write_report(
                out_dir,
                rows,
                step=step,
                env_name=plan.env_name,
                agent_name=plan.agent_name,
                estimator=config.estimator,
                best_of_n=config.best_of_n,
                mask_convention=config.get("mask_convention"),
                data_line=self.data_line,
                grad_steps=config.get("grad_steps", 0),
                grad_step_size=config.get("grad_step_size", 0.0),
                command=plan.command,
                videos=videos,
            )
            print(
                f"\nStep {step}, seed {seed}: success per guidance weight ({timing['eval_seconds']:.0f} s for "
                f"{len(plan.seeds)} seed(s), of which policy {timing['policy_seconds']:.0f} s)\n{table}\n",
                flush=True,
            )
        return timing["eval_seconds"]

    def close(self) -> None:
        try:
            if self.rotation is not None:
                self.rotation.close()
            self.runs.close()
        finally:
            release(self.locks)


def trained_data_line(train_dir: str) -> str:
    """The report's data line of a saved run, from the data.json its training wrote ("" without a readable one)."""
    try:
        with open(os.path.join(train_dir, "data.json")) as f:
            return format_data(json.load(f))
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def act_with_weights(agent, state, observations, key, guidance_weight, goals, unroll=False):
    return agent.act(state, observations, key, guidance_weight=guidance_weight, goals=goals, unroll=unroll)


def release(locks: list) -> None:
    for lock in locks:
        lock.release()


def lock_run_dirs(plan: RunPlan) -> list:
    """Locks the dirs the run writes (each seed's run dir; evaluating, each eval dir), or raises
    RunDirLockedError naming the process that holds one."""
    locks = []
    # Evaluating, the dir is the evaluation's own folder, which only an evaluation of the same settings holds.
    elsewhere = "choose another --run_dir"
    if plan.eval_only:
        elsewhere = "evaluate with other settings (they go to another folder)"
    try:
        for d in plan.out_dirs:
            locks.append(RunLock(d, elsewhere))
            if locks[-1].took_over:
                print(f"note: {d} was last used by {locks[-1].took_over}, which ended without releasing it", flush=True)
    except BaseException:
        release(locks)
        raise
    return locks


def open_session(plan: RunPlan) -> Session:
    """Locks the run dirs, writes each seed's config.json (training), loads the data, builds the agent and its
    states (restored from the newest intact checkpoint every seed has) and opens the logs."""
    if plan.eval_only and not saved_steps(os.path.join(plan.train_dirs[0], "checkpoints")):
        raise configs.ConfigError(f"{plan.train_dirs[0]} has no checkpoint to evaluate; train it first")  # made nothing
    locks = lock_run_dirs(plan)
    try:
        return _open_session(plan, locks)
    except BaseException:
        release(locks)
        raise


def _open_session(plan: RunPlan, locks: list) -> Session:
    if not plan.eval_only:
        for train_dir, seed_config in zip(plan.train_dirs, plan.seed_configs, strict=True):
            try:
                write_config(train_dir, seed_config, plan.allow_config_change)
            except ConfigMismatchError as error:
                if not plan.restore:
                    raise
                raise ConfigMismatchError(
                    f"{error}; to evaluate it instead, add --eval_only (--restore without it trains into the run)"
                ) from None
    for d in plan.out_dirs:
        os.makedirs(d, exist_ok=True)
    if plan.eval_only:  # What the numbers in it come from: a later evaluation of other settings goes beside it.
        settings = evaluation_settings(plan.config, plan.weights, plan.run, plan.reset_seeds[0])
        write_json(os.path.join(plan.out_dirs[0], EVALUATION_FILE), settings)
    where = placement(len(plan.seeds), plan.config.batch_size)
    mapped = " (seeds mapped one after another)" if len(plan.seeds) > 1 and plan.batching == "map" else ""
    print(
        f"{plan.agent_name} on {plan.env_name}, preset '{plan.preset}', seed(s) {', '.join(map(str, plan.seeds))} "
        f"on {where.description}{mapped}; run dir(s) {', '.join(plan.out_dirs)}",
        flush=True,
    )
    if not plan.eval_only:
        print(run_plan_line(plan), flush=True)  # before the data, which may take long to obtain

    eval_videos = plan.eval_videos
    chosen_gl = os.environ.get("MUJOCO_GL", "").strip()  # the user's choice, which is theirs to fix when it fails
    try:  # before the first env imports MuJoCo, which reads MUJOCO_GL once
        if eval_videos:
            choose_gl_backend()
        else:
            check_gl_variable()
    except RenderingUnavailable as error:
        if chosen_gl:
            raise configs.ConfigError(str(error)) from None
        print(f"warning: --eval_videos: {error}; evaluating without videos", flush=True)
        eval_videos = 0
    start = time.perf_counter()
    if plan.eval_only:  # The parameters come from the checkpoint: the agent needs the data's shapes, not the data.
        train_data, val_data = placeholder_dataset(plan.env_name, plan.config), None
    else:
        env, train_data, val_data = load_data(plan.env_name, plan.run, plan.data, plan.progress)
        check_data_fits(train_data, plan.config)
    dataset = device_dataset(train_data, plan.config, where)
    val_dataset = None if val_data is None else device_dataset(val_data, plan.config, where)
    rotation = None
    if slice_directory(plan.run) and not plan.eval_only:
        rotation = slice_rotation(plan.run, plan.config, plan.env_name, env, where, first=dataset)
        for train_dir in plan.train_dirs:
            write_slice_list(train_dir, rotation.paths, plan.allow_config_change)
    data_seconds = time.perf_counter() - start
    if plan.eval_only:
        data_line = trained_data_line(plan.train_dirs[0])
    else:
        slices = len(envs.slice_paths(slice_directory(plan.run))) if slice_directory(plan.run) else 1
        loaded = {**(plan.seed_configs[0].get("dataset") or {}), "slices": slices}
        loaded["transitions"] = slices * len(train_data["observations"])  # with slices: about, from the first one
        loaded["content_sha256"] = content_sha256(train_data)  # with slices: the first one's
        for train_dir in plan.train_dirs:
            write_json(os.path.join(train_dir, "data.json"), loaded)
        data_line = format_data(loaded)

    sample = make_sampler(plan.config, plan.env_name)
    agent = agents.make(plan.agent_name, plan.config)
    split = np.stack([jax.random.split(jax.random.PRNGKey(seed), 4) for seed in plan.seeds], axis=1)
    keys = Keys(*(where.put_seeds(k) for k in split))
    init = over_seeds(lambda key, data_key: agent.init(key, sample(dataset, data_key)), batching=plan.batching)
    states = where.put_seeds(jax.jit(init)(keys.init, keys.data))
    runs = SeedRuns(plan.train_dirs, plan.out_dirs, read_only=plan.eval_only)
    try:
        step, restored = runs.resume(states)
    except BaseException:
        runs.close()
        raise
    if step:
        states = where.put_seeds(restored)
        what = "Evaluating" if plan.eval_only else "Resumed from"
        print(f"{what} the checkpoint at step {step}.", flush=True)
    elif plan.eval_only:
        runs.close()
        raise configs.ConfigError(f"{plan.train_dirs[0]} has no checkpoint to evaluate; train it first")
    runs.open_logs(step, train=not plan.eval_only, wandb=plan.wandb, seed_configs=plan.seed_configs)
    # With slices, the rotation alone holds slice 0, so that it can release it: at most two slices alive.
    train_data = None if rotation else dataset
    session = Session(plan, where, agent, sample, train_data, val_dataset, keys, runs, states, step, data_seconds)
    session.rotation = rotation
    session.data_line = data_line
    session.locks = locks
    session.sweep = make_sweep_evaluator(
        functools.partial(act_with_weights, agent),
        plan.env_name,
        plan.weights,
        plan.run.eval_episodes,
        plan.run.eval_envs,
        seed_batching=plan.batching,
        videos_per_weight=eval_videos,
        progress=plan.progress,
        check_stop=lambda: session.stop is not None and session.stop.check(),
    )
    return session
