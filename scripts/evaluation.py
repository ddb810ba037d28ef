"""A whole guidance-weight sweep evaluated as one batch of episodes.

Episode i of the batch runs weight `weights[i // E]` from reset seed `seed + i % E`, so every weight
starts from the same E initial states. The policy is called on the full, padded batch at every decision,
so one compiled call serves the whole sweep whatever the number of unfinished episodes.
"""

import time

import jax
import numpy as np

import envs


def summarize(weights, episodes: int, results: dict) -> list[dict]:
    rows = []
    for j, weight in enumerate(weights):
        part = slice(j * episodes, (j + 1) * episodes)
        success = results["success"][part]
        rows.append(
            {
                "guidance_weight": float(weight),
                "success": float(np.mean(success)),
                "success_stderr": float(np.std(success, ddof=1) / np.sqrt(episodes)) if episodes > 1 else 0.0,
                "return": float(np.mean(results["returns"][part])),
                "length": float(np.mean(results["lengths"][part])),
                "episodes": episodes,
            }
        )
    return rows


def evaluate_sweep(act, state, env_name: str, weights, episodes: int, key, seed: int, max_steps=None) -> tuple:
    """Runs len(weights) × episodes episodes together; returns (rows per weight, timing dict).

    `act(state, observations, key, guidance_weight) -> [N, H, A]` is the agent's (jitted) act.
    """
    total = len(weights) * episodes
    weight_per_episode = np.repeat(np.asarray(weights, np.float32), episodes)
    reset_seeds = seed + np.arange(total) % episodes
    padded = None
    decisions = 0
    policy_seconds = 0.0

    def policy_fn(observations, episode_ids):
        nonlocal padded, decisions, policy_seconds
        start = time.perf_counter()
        if padded is None:
            padded = np.zeros((total,) + observations.shape[1:], np.float32)
        padded[episode_ids] = observations
        actions = act(state, padded, jax.random.fold_in(key, decisions), weight_per_episode)
        decisions += 1
        actions = np.asarray(actions)[episode_ids]
        policy_seconds += time.perf_counter() - start
        return actions

    start = time.perf_counter()
    results = envs.evaluate(policy_fn, env_name, total, seed=seed, reset_seeds=reset_seeds, max_steps=max_steps)
    seconds = time.perf_counter() - start
    timing = {"eval_seconds": seconds, "policy_seconds": policy_seconds, "env_seconds": seconds - policy_seconds}
    return summarize(weights, episodes, results), timing
