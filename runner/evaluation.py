"""Whole guidance-weight sweeps of several seeds, evaluated as one batch of episodes.

The batch is laid out seed-major, then weight-major: for seed s, weight j, task k (goal-conditioned envs
run OGBench's five evaluation tasks; single-task envs have one) and episode e, the episode resets with
seed `reset_seeds[s] + e` and task k, so every weight of a seed starts from the same initial states. The
policy is called on the full, padded batch at every decision, so one compiled call serves every seed's
sweep whatever the number of unfinished episodes.
"""

import time
from typing import NamedTuple

import jax
import numpy as np
from tqdm import tqdm

import envs
from agents.training import over_seeds
from runner.flops import flops_per_decision
from runner.videos import recorded_episodes

EVAL_TASKS = (1, 2, 3, 4, 5)  # OGBench's evaluation goals of a goal-conditioned env


def _stderr(values) -> float:
    """Standard error of the mean (0 for a single value)."""
    n = len(values)
    return float(np.std(values, ddof=1) / np.sqrt(n)) if n > 1 else 0.0


def episode_rows(weights, tasks, episodes: int, results: dict, reset_seeds) -> list[dict]:
    """One row per episode (of one seed, in the evaluator's order): its weight, task, index within the task,
    the seed its env reset with (the same episode index of two methods resets alike: paired comparisons),
    success, return and length."""
    per_weight = len(tasks) * episodes
    return [
        {
            "guidance_weight": float(weights[p // per_weight]),
            "task": str(tasks[(p % per_weight) // episodes]),
            "episode": p % episodes,
            "reset_seed": int(reset_seeds[p]),
            "success": float(results["success"][p]),
            "return": float(results["returns"][p]),
            "length": int(results["lengths"][p]),
        }
        for p in range(len(weights) * per_weight)
    ]


def summarize(weights, tasks, episodes: int, results: dict) -> list[dict]:
    """One row per weight and task, plus (goal-conditioned) a row per weight over all tasks ('all')."""
    rows = []
    per_weight = len(tasks) * episodes
    for j, weight in enumerate(weights):
        groups = [
            (str(task), slice(j * per_weight + k * episodes, j * per_weight + (k + 1) * episodes))
            for k, task in enumerate(tasks)
        ]
        if len(tasks) > 1:
            groups.append(("all", slice(j * per_weight, (j + 1) * per_weight)))
        for task, part in groups:
            success = results["success"][part]
            n = len(success)
            rows.append(
                {
                    "guidance_weight": float(weight),
                    "task": task,
                    "success": float(np.mean(success)),
                    "success_stderr": _stderr(success),
                    "return": float(np.mean(results["returns"][part])),
                    "return_stderr": _stderr(results["returns"][part]),
                    "length": float(np.mean(results["lengths"][part])),
                    "episodes": n,
                }
            )
    return rows


def headline_rows(rows: list[dict]) -> list[dict]:
    """The row per weight that summarizes it: 'all' tasks when there are several, else the only one."""
    if any(r["task"] == "all" for r in rows):
        return [r for r in rows if r["task"] == "all"]
    return rows


class SweepResult(NamedTuple):
    """What one sweep evaluation returns, each list indexed by seed."""

    rows_per_seed: list  # summarize()'s rows: one per weight and task.
    episodes_per_seed: list  # episode_rows(): one per episode.
    timing: dict  # eval_seconds, policy_seconds, env_seconds.
    recordings_per_seed: list  # The recorded episodes' frames (runner.videos).


def make_sweep_evaluator(
    act,
    env_name: str,
    weights,
    episodes: int,
    max_envs: int,
    max_steps=None,
    seed_batching: str = "vmap",
    videos_per_weight: int = 0,
    progress: bool = False,
    check_stop=None,
):
    """Returns `evaluate(states, keys, reset_seeds) -> (rows per seed, timing dict, recordings per seed)`, which
    runs S seeds × len(weights) × tasks × episodes episodes together, at most `max_envs` at a time, and
    records `videos_per_weight` episodes of each weight of each seed (runner.videos.recorded_episodes): a
    recording is {guidance_weight, task, episode, success, frames [T + 1, H, W, 3]}; only their envs render.

    `act(state, observations, key, guidance_weight, goals, unroll=False) -> [N, H, A]` is one seed's act
    (`goals` is None for single-task envs; `unroll=True` is for runner.flops); it runs over the leading
    seed axis of `states` and `keys` [S] (vmapped or mapped, `seed_batching`, see agents.training.over_seeds)
    and is compiled once. Seed s resets its episodes from `reset_seeds[s]`. The batch is seed-major, then
    weight-major as in the module docstring.
    `progress` shows a bar of episodes done; `check_stop()`, called at every decision, may raise to abandon the
    evaluation (runner.interrupt's stop signals).
    """
    goal_conditioned = not envs.parse_name(env_name).singletask
    tasks = EVAL_TASKS if goal_conditioned else ("all",)
    per_weight = len(tasks) * episodes
    per_seed = len(weights) * per_weight
    position = np.arange(per_seed) % per_weight
    act_seeds = jax.jit(over_seeds(act, batching=seed_batching))
    recorded = recorded_episodes(len(weights), len(tasks), episodes, videos_per_weight)

    def evaluate(states, keys, reset_seeds):
        num_seeds = len(reset_seeds)
        total = num_seeds * per_seed
        weight_per_episode = np.tile(np.repeat(np.asarray(weights, np.float32), per_weight), (num_seeds, 1))
        episode_seeds = (np.asarray(reset_seeds)[:, None] + position % episodes).reshape(-1)
        task_ids = np.tile(np.asarray(tasks)[position // episodes], num_seeds) if goal_conditioned else None
        padded = {}
        decisions = 0
        policy_seconds = 0.0

        def policy_fn(observations, episode_ids, goals=None):
            nonlocal decisions, policy_seconds
            if check_stop is not None:
                check_stop()
            start = time.perf_counter()
            for name, value in (("observations", observations), ("goals", goals)):
                if value is not None:
                    padded.setdefault(name, np.zeros((total,) + value.shape[1:], np.float32))[episode_ids] = value
            per_seed_view = jax.tree_util.tree_map(lambda x: x.reshape(num_seeds, per_seed, *x.shape[1:]), padded)
            step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, decisions)
            actions = act_seeds(
                states, per_seed_view["observations"], step_keys, weight_per_episode, per_seed_view.get("goals")
            )
            decisions += 1
            actions = np.asarray(actions).reshape(total, *actions.shape[2:])[episode_ids]
            policy_seconds += time.perf_counter() - start
            return actions

        start = time.perf_counter()
        with tqdm(total=total, desc="evaluation", unit="episode", disable=not progress, dynamic_ncols=True) as bar:
            results = envs.evaluate(
                policy_fn,
                env_name,
                total,
                reset_seeds=episode_seeds,
                task_ids=task_ids,
                max_steps=max_steps,
                num_envs=max_envs,
                record_frames=[s * per_seed + p for s in range(num_seeds) for p, *_ in recorded],
                on_episodes_done=bar.update,
            )
        seconds = time.perf_counter() - start
        timing = {"eval_seconds": seconds, "policy_seconds": policy_seconds, "env_seconds": seconds - policy_seconds}
        first_seed = jax.tree_util.tree_map(lambda x: x[0], (states, keys))
        flops = flops_per_decision(
            act,
            first_seed[0],
            padded["observations"],
            first_seed[1],
            weight_per_episode[0],
            padded.get("goals"),
        )
        rows_per_seed, episodes_per_seed = [], []
        for s in range(num_seeds):
            part = slice(s * per_seed, (s + 1) * per_seed)
            seed_results = {k: v[part] for k, v in results.items()}
            rows = summarize(weights, tasks, episodes, seed_results)
            for row in rows:
                row["flops_per_decision"] = flops
            rows_per_seed.append(rows)
            episodes_per_seed.append(episode_rows(weights, tasks, episodes, seed_results, episode_seeds[part]))
        recordings_per_seed = [
            [
                {
                    "guidance_weight": float(weights[j]),
                    "task": str(tasks[k]),
                    "episode": e,
                    "success": float(results["success"][s * per_seed + p]),
                    "frames": results["frames"][s * per_seed + p],
                }
                for p, j, k, e in recorded
            ]
            for s in range(num_seeds)
        ]
        return SweepResult(rows_per_seed, episodes_per_seed, timing, recordings_per_seed)

    return evaluate
