"""Batched evaluation rollouts: many episodes stepped together, one policy call per decision.

`evaluate` keeps a list of environments (cached across calls), resets episode i with seed
`seed + i` (so two policies are compared on the same starts) and, for goal-conditioned names,
with OGBench's evaluation task `task_ids[i]` (default `1 + i % 5`). At each decision it calls
`policy_fn(observations [N, O], episode_ids [N])` for single-task names, or
`policy_fn(observations, episode_ids, goals [N, O])` for goal-conditioned ones, with the N
unfinished episodes, and executes the returned chunk `[N, H, A]` (or `[N, A]`) open loop,
stopping an episode inside a chunk when it ends.
"""

import numpy as np

from envs.datasets import make_env
from envs.specs import parse_name

NUM_EVAL_TASKS = 5  # OGBench's evaluation goals per environment (task_id 1..5)
_ENV_CACHE = {}  # (env id, env kwargs) -> list of environments, reused across calls


def _envs(env_name: str, count: int, env_kwargs: dict) -> list:
    key = (parse_name(env_name).env_id, tuple(sorted(env_kwargs.items())))
    cache = _ENV_CACHE.setdefault(key, [])
    while len(cache) < count:
        cache.append(make_env(env_name, **env_kwargs))
    return cache[:count]


def evaluate(
    policy_fn,
    env_name: str,
    num_episodes: int,
    *,
    seed: int = 0,
    max_steps: int | None = None,
    record_frames: bool = False,
    task_ids=None,
    num_envs: int | None = None,
    env_kwargs: dict | None = None,
    reset_seeds=None,
) -> dict:
    """Run `num_episodes` episodes of `policy_fn`; return numpy arrays per episode:
    `success` (OGBench's `info['success']` at the last step), `returns`, `lengths`, `task_ids`
    (goal-conditioned), and `frames` (a list of [T, H, W, 3] arrays) when `record_frames`.

    Frames need an OpenGL backend: without a display, run with `MUJOCO_GL=egl` in the environment.
    `reset_seeds` (default `seed + i`) gives each episode's reset seed, e.g. to run several policies
    as separate episodes of one batch from the same starts. `max_steps` cuts episodes shorter than the env's own limit. `num_envs` (default: all
    episodes at once) bounds how many environments exist; episodes then run in waves.
    """
    parsed = parse_name(env_name)
    reset_seeds = seed + np.arange(num_episodes) if reset_seeds is None else np.asarray(reset_seeds, np.int64)
    if reset_seeds.shape != (num_episodes,):
        raise ValueError(f'reset_seeds must have one entry per episode ({num_episodes}), got {reset_seeds.shape}.')
    goal_conditioned = not parsed.singletask
    if goal_conditioned:
        task_ids = (
            np.arange(num_episodes) % NUM_EVAL_TASKS + 1 if task_ids is None else np.asarray(task_ids, dtype=np.int64)
        )
        if task_ids.shape != (num_episodes,):
            raise ValueError(f'task_ids must have one entry per episode ({num_episodes}), got {task_ids.shape}.')
    elif task_ids is not None:
        raise ValueError('task_ids are for goal-conditioned names; a single-task name fixes its task.')
    num_envs = max(1, min(num_envs or num_episodes, num_episodes))
    envs = _envs(env_name, num_envs, env_kwargs or {})

    success = np.zeros(num_episodes, np.float32)
    returns = np.zeros(num_episodes, np.float32)
    lengths = np.zeros(num_episodes, np.int64)
    frames = [None] * num_episodes
    for first in range(0, num_episodes, num_envs):
        ids = np.arange(first, min(first + num_envs, num_episodes))
        observations, goals, episode_frames = [], [], []
        for env, i in zip(envs, ids, strict=False):  # the last wave may use fewer envs
            options = dict(task_id=int(task_ids[i])) if goal_conditioned else None
            ob, info = env.reset(seed=int(reset_seeds[i]), options=options)
            observations.append(ob)
            if goal_conditioned:
                goals.append(info['goal'])
            episode_frames.append([env.render()] if record_frames else None)
        active = list(range(len(ids)))  # positions in this wave
        while active:
            args = [np.stack([observations[j] for j in active]), ids[active]]
            if goal_conditioned:
                args.append(np.stack([goals[j] for j in active]))
            chunk = np.asarray(policy_fn(*args))
            if chunk.ndim == 2:
                chunk = chunk[:, None]
            if chunk.shape[0] != len(active):
                raise ValueError(f'policy_fn returned {chunk.shape[0]} action chunks for {len(active)} episodes.')
            still_active = []
            for row, j in enumerate(active):
                i, env = ids[j], envs[j]
                done = False
                for action in chunk[row]:
                    ob, reward, terminated, truncated, info = env.step(action)
                    observations[j] = ob
                    returns[i] += reward
                    lengths[i] += 1
                    if record_frames:
                        episode_frames[j].append(env.render())
                    done = terminated or truncated or (max_steps is not None and lengths[i] >= max_steps)
                    if done:
                        success[i] = float(info['success'])
                        break
                if not done:
                    still_active.append(j)
            active = still_active
        if record_frames:
            for j, i in enumerate(ids):
                frames[i] = np.stack(episode_frames[j])

    results = {'success': success, 'returns': returns, 'lengths': lengths}
    if goal_conditioned:
        results['task_ids'] = task_ids
    if record_frames:
        results['frames'] = frames
    return results
