"""Batched evaluation rollouts: random and linear chunked policies, in process and over worker processes."""

import numpy as np
import pytest

import envs

SINGLE = "cube-single-play-singletask-task1-v0"


def _random_policy(horizon, calls):
    rng = np.random.default_rng(0)

    def policy(observations, episode_ids, *goals):
        calls.append((observations.copy(), episode_ids.copy(), goals))
        return rng.uniform(-1, 1, size=(len(observations), horizon, 5))

    return policy


def test_random_policy_episodes_finish_and_report():
    calls = []
    results = envs.evaluate(_random_policy(4, calls), SINGLE, 3, seed=0, max_steps=10)
    assert set(results) == {"success", "returns", "lengths"}
    assert results["success"].shape == results["returns"].shape == (3,)
    np.testing.assert_array_equal(results["lengths"], 10)  # cut inside the third chunk
    assert len(calls) == 3  # chunks of 4: decisions at steps 0, 4, 8
    np.testing.assert_array_equal(calls[0][1], [0, 1, 2])
    assert calls[0][0].shape == (3, 28) and calls[0][2] == ()
    assert np.all(results["returns"] <= 0)  # single-task rewards are -(unsolved cubes)


def test_same_seed_same_first_observation():
    first = []
    for seed in (5, 5, 6):
        calls = []
        envs.evaluate(_random_policy(2, calls), SINGLE, 2, seed=seed, max_steps=2)
        first.append(calls[0][0])
    np.testing.assert_array_equal(first[0], first[1])
    assert not np.array_equal(first[0], first[2])
    # Episode i starts from seed + i: episode 1 of seed 5 is episode 0 of seed 6.
    np.testing.assert_array_equal(first[0][1], first[2][0])


def test_goal_conditioned_passes_goals_and_task_ids():
    calls = []
    results = envs.evaluate(_random_policy(3, calls), "cube-single-play-v0", 2, task_ids=[2, 5], max_steps=3)
    np.testing.assert_array_equal(results["task_ids"], [2, 5])
    (goals,) = calls[0][2]
    assert goals.shape == (2, 28) and not np.array_equal(goals[0], goals[1])


def _linear_policy(horizon, calls, action_dim=5):
    """Deterministic and observation-dependent: a fixed linear map of the observation, clipped."""
    weights = np.random.default_rng(1).normal(size=(28, horizon * action_dim)) * 0.3

    def policy(observations, episode_ids):
        calls.append((observations.copy(), episode_ids.copy()))
        return np.clip(observations @ weights, -1, 1).reshape(len(observations), horizon, action_dim)

    return policy


def test_workers_match_in_process():
    # 4 episodes on 3 envs: a wave of 3 (split 2 + 1 over the workers), then a wave of 1.
    kwargs = dict(seed=3, max_steps=30, num_envs=3)
    local_calls, pooled_calls = [], []
    local = envs.evaluate(_linear_policy(3, local_calls), SINGLE, 4, num_workers=1, **kwargs)
    pooled = envs.evaluate(_linear_policy(3, pooled_calls), SINGLE, 4, num_workers=2, **kwargs)
    for key in ("success", "returns", "lengths"):
        np.testing.assert_array_equal(local[key], pooled[key])
    np.testing.assert_array_equal(pooled["lengths"], 30)
    # One policy call per decision with every unfinished episode: 10 chunks of 3 per wave.
    assert [len(ids) for _, ids in pooled_calls] == [3] * 10 + [1] * 10
    np.testing.assert_array_equal(pooled_calls[0][1], [0, 1, 2])
    np.testing.assert_array_equal(pooled_calls[-1][1], [3])
    assert len(local_calls) == len(pooled_calls)
    for (local_obs, local_ids), (pooled_obs, pooled_ids) in zip(local_calls, pooled_calls, strict=True):
        np.testing.assert_array_equal(local_ids, pooled_ids)
        np.testing.assert_array_equal(local_obs, pooled_obs)  # the same states, bit for bit
    assert not np.array_equal(pooled_calls[0][0], pooled_calls[1][0])  # the policy moved the robot


def test_worker_error_is_raised_with_its_traceback():
    # A wrong action size fails inside env.step in a worker; the parent raises, it does not hang.
    with pytest.raises(RuntimeError, match=r"(?s)Evaluation worker \d failed:.*Traceback.*broadcast"):
        envs.evaluate(_linear_policy(2, [], action_dim=7), SINGLE, 2, max_steps=4, num_workers=2)
    # The failed pool was closed; the next call starts a fresh one and works.
    results = envs.evaluate(_linear_policy(2, []), SINGLE, 2, max_steps=4, num_workers=2)
    np.testing.assert_array_equal(results["lengths"], 4)
