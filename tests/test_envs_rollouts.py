"""Batched evaluation rollouts with a random chunked policy."""

import numpy as np

import envs

SINGLE = 'cube-single-play-singletask-task1-v0'


def _random_policy(horizon, calls):
    rng = np.random.default_rng(0)

    def policy(observations, episode_ids, *goals):
        calls.append((observations.copy(), episode_ids.copy(), goals))
        return rng.uniform(-1, 1, size=(len(observations), horizon, 5))

    return policy


def test_random_policy_episodes_finish_and_report():
    calls = []
    results = envs.evaluate(_random_policy(4, calls), SINGLE, 3, seed=0, max_steps=10)
    assert set(results) == {'success', 'returns', 'lengths'}
    assert results['success'].shape == results['returns'].shape == (3,)
    np.testing.assert_array_equal(results['lengths'], 10)  # cut inside the third chunk
    assert len(calls) == 3  # chunks of 4: decisions at steps 0, 4, 8
    np.testing.assert_array_equal(calls[0][1], [0, 1, 2])
    assert calls[0][0].shape == (3, 28) and calls[0][2] == ()
    assert np.all(results['returns'] <= 0)  # single-task rewards are -(unsolved cubes)


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
    results = envs.evaluate(_random_policy(3, calls), 'cube-single-play-v0', 2, task_ids=[2, 5], max_steps=3)
    np.testing.assert_array_equal(results['task_ids'], [2, 5])
    (goals,) = calls[0][2]
    assert goals.shape == (2, 28) and not np.array_equal(goals[0], goals[1])
