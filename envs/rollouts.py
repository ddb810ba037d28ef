"""Batched evaluation rollouts: many episodes stepped together, one policy call per decision.

`evaluate` resets episode i with seed `seed + i` (so two policies are compared on the same starts)
and, for goal-conditioned names, with OGBench's evaluation task `task_ids[i]` (default `1 + i % 5`).
At each decision it calls `policy_fn(observations [N, O], episode_ids [N])` for single-task names, or
`policy_fn(observations, episode_ids, goals [N, O])` for goal-conditioned ones, with the N unfinished
episodes, and executes the returned chunk `[N, H, A]` (or `[N, A]`) open loop, stopping an episode
inside a chunk when it ends.

The envs step in this process (`num_workers=1`) or, split round robin, in `num_workers` spawned
processes (`envs.vector_env.WorkerPool`), which step their chunks in parallel while the policy is still
called once per decision for all unfinished episodes; both give identical results. Envs (and worker
pools) are cached across calls and pools are closed at interpreter exit.
"""

import atexit
import os

import numpy as np

from envs.specs import parse_name
from envs.vector_env import LocalEpisodes, WorkerPool, return_free_memory

NUM_EVAL_TASKS = 5  # OGBench's evaluation goals per environment (task_id 1..5)
_ENV_CACHE = {}  # (env id, env kwargs) -> list of environments in this process, reused across calls
_POOL_CACHE = {}  # (env id, env kwargs, workers) -> WorkerPool, reused across calls


def _cache_key(env_name: str, env_kwargs: dict) -> tuple:
    return parse_name(env_name).env_id, tuple(sorted(env_kwargs.items()))


def _runner(env_name: str, env_kwargs: dict, num_workers: int):
    key = _cache_key(env_name, env_kwargs)
    if num_workers == 1:
        return LocalEpisodes(env_name, env_kwargs, _ENV_CACHE.setdefault(key, []))
    key += (num_workers,)
    if key in _POOL_CACHE and not _POOL_CACHE[key].alive():  # a worker was killed since the last call
        _drop_pool(_POOL_CACHE[key])
    if key not in _POOL_CACHE:
        _POOL_CACHE[key] = WorkerPool(env_name, env_kwargs, num_workers)
    return _POOL_CACHE[key]


def _drop_pool(pool) -> None:
    for key, cached in list(_POOL_CACHE.items()):
        if cached is pool:
            del _POOL_CACHE[key]
    pool.close()


@atexit.register
def close_pools() -> None:
    """Stop all cached worker pools (also run at interpreter exit)."""
    for pool in list(_POOL_CACHE.values()):
        _drop_pool(pool)


def release_envs() -> None:
    """Closes the cached worker pools and drops this process's cached envs (~110 MB each), e.g. between
    evaluations far apart or test modules."""
    close_pools()
    _ENV_CACHE.clear()
    return_free_memory()


def default_num_workers(num_episodes: int) -> int:
    """One worker per core when there are at least two episodes per core, else stepping in-process."""
    cores = os.cpu_count() or 1
    return cores if num_episodes >= 2 * cores else 1


def evaluate(
    policy_fn,
    env_name: str,
    num_episodes: int,
    *,
    seed: int = 0,
    max_steps: int | None = None,
    record_frames=False,
    task_ids=None,
    num_envs: int | None = None,
    env_kwargs: dict | None = None,
    reset_seeds=None,
    num_workers: int | None = None,
    on_episodes_done=None,
) -> dict:
    """Run `num_episodes` episodes of `policy_fn`; return numpy arrays per episode:
    `success` (OGBench's `info['success']` at the last step), `returns`, `lengths`, `task_ids`
    (goal-conditioned), and, when `record_frames`, `frames`: per episode its [length + 1, H, W, 3] uint8
    frames (the reset state, then one per step), or None for an episode not recorded.

    `record_frames` is True (every episode), False, or the indices of the episodes to record: only the envs
    running those render. Frames need an off-screen OpenGL backend, chosen by `MUJOCO_GL=egl` (or `osmesa`)
    in the environment before MuJoCo is first imported (runner.videos.choose_gl_backend).
    `reset_seeds` (default `seed + i`) gives each episode's reset seed, e.g. to run several policies
    as separate episodes of one batch from the same starts. `max_steps` cuts episodes shorter than the
    env's own limit. `num_envs` (default: all episodes at once) bounds how many environments exist;
    episodes then run in waves. `num_workers` (default `default_num_workers(num_episodes)`) processes
    step the envs; 1 steps them in this process. `on_episodes_done(n)` is called whenever n more episodes ended
    (e.g. to show progress).
    """
    parsed = parse_name(env_name)
    reset_seeds = seed + np.arange(num_episodes) if reset_seeds is None else np.asarray(reset_seeds, np.int64)
    if reset_seeds.shape != (num_episodes,):
        raise ValueError(f"reset_seeds must have one entry per episode ({num_episodes}), got {reset_seeds.shape}.")
    goal_conditioned = not parsed.singletask
    if goal_conditioned:
        task_ids = (
            np.arange(num_episodes) % NUM_EVAL_TASKS + 1 if task_ids is None else np.asarray(task_ids, dtype=np.int64)
        )
        if task_ids.shape != (num_episodes,):
            raise ValueError(f"task_ids must have one entry per episode ({num_episodes}), got {task_ids.shape}.")
    elif task_ids is not None:
        raise ValueError("task_ids are for goal-conditioned names; a single-task name fixes its task.")
    num_envs = max(1, min(num_envs or num_episodes, num_episodes))
    num_workers = default_num_workers(num_episodes) if num_workers is None else num_workers
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}.")
    runner = _runner(env_name, env_kwargs or {}, min(num_workers, num_envs))
    try:
        return _run(
            runner,
            policy_fn,
            reset_seeds,
            task_ids if goal_conditioned else None,
            num_envs,
            max_steps,
            record_frames,
            on_episodes_done or (lambda n: None),
        )
    except BaseException:
        if isinstance(runner, WorkerPool):  # its workers may be mid-request: start afresh next time
            _drop_pool(runner)
        raise


def _run(runner, policy_fn, reset_seeds, task_ids, num_envs, max_steps, record_frames, on_episodes_done) -> dict:
    num_episodes = len(reset_seeds)
    success = np.zeros(num_episodes, np.float32)
    returns = np.zeros(num_episodes, np.float32)
    lengths = np.zeros(num_episodes, np.int64)
    frames = [None] * num_episodes
    record = np.zeros(num_episodes, bool)  # which episodes render
    if record_frames is True:
        record[:] = True
    elif record_frames is not False:
        record[np.asarray(record_frames, np.int64)] = True
    for first in range(0, num_episodes, num_envs):
        ids = np.arange(first, min(first + num_envs, num_episodes))  # the last wave may use fewer envs
        starts = [(int(reset_seeds[i]), None if task_ids is None else int(task_ids[i])) for i in ids]
        observations, goals = runner.reset(starts, [bool(record[i]) for i in ids])
        active = np.arange(len(ids))  # slots (positions in this wave) of unfinished episodes
        while len(active):
            args = [observations[active], ids[active]]
            if goals is not None:
                args.append(goals[active])
            chunk = np.asarray(policy_fn(*args))
            if chunk.ndim == 2:
                chunk = chunk[:, None]
            if chunk.shape[0] != len(active):
                raise ValueError(f"policy_fn returned {chunk.shape[0]} action chunks for {len(active)} episodes.")
            observations[active], done = runner.step(active, chunk, max_steps)
            active = active[~done]
            if done.any():
                on_episodes_done(int(done.sum()))
        for i, (episode_success, episode_return, length, episode_frames) in zip(ids, runner.results(), strict=True):
            success[i], returns[i], lengths[i], frames[i] = episode_success, episode_return, length, episode_frames

    results = {"success": success, "returns": returns, "lengths": lengths}
    if task_ids is not None:
        results["task_ids"] = task_ids
    if record.any():
        results["frames"] = frames
    return results
