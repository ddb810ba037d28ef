"""Chunk sampling on a hand-built dataset with episode boundaries and a terminal inside chunks."""

import jax
import numpy as np
import pytest

import envs

# Two episodes: rows 0-2 and rows 3-6; the MDP terminates at row 4 (mask 0).
GAMMA = 0.5
GOAL_DISCOUNT = 0.6
N = 7
DATASET = {
    "observations": np.stack([np.arange(N), np.zeros(N)], 1).astype(np.float32),  # s_t = [t, 0]
    "next_observations": np.stack([np.arange(N) + 0.5, np.ones(N)], 1).astype(np.float32),  # [t + .5, 1]
    "actions": np.stack([np.arange(N), -np.arange(N)], 1).astype(np.float32),  # a_t = [t, -t]
    "terminals": np.array([0, 0, 1, 0, 0, 0, 1], np.float32),
    "rewards": np.array([1, 2, 4, 8, 16, 32, 64], np.float32),
    "masks": np.array([1, 1, 1, 1, 0, 1, 1], np.float32),
}
# Hand-computed chunks of horizon 3 for every start t: (rows read, valid, rewards, masks).
EXPECTED = {
    0: ([0, 1, 2], [1, 1, 1], [1, 2, 3], [1, 1, 1]),
    1: ([1, 2, 2], [1, 1, 0], [2, 4, 4], [1, 1, 1]),
    2: ([2, 2, 2], [1, 0, 0], [4, 4, 4], [1, 1, 1]),
    3: ([3, 4, 5], [1, 1, 1], [8, 16, 16], [1, 0, 0]),
    4: ([4, 5, 6], [1, 1, 1], [16, 16, 16], [0, 0, 0]),
    5: ([5, 6, 6], [1, 1, 0], [32, 64, 64], [1, 1, 1]),
    6: ([6, 6, 6], [1, 0, 0], [64, 64, 64], [1, 1, 1]),
}


@pytest.fixture(scope="module")
def device_dataset():
    return envs.to_device_dataset(DATASET)


def test_index_arrays(device_dataset):
    np.testing.assert_array_equal(device_dataset["episode_ends"], [2, 2, 2, 6, 6, 6, 6])
    np.testing.assert_array_equal(device_dataset["episode_ids"], [0, 0, 0, 1, 1, 1, 1])


def test_sample_chunks_matches_hand_computed(device_dataset):
    batch = jax.device_get(envs.sample_chunks(device_dataset, jax.random.PRNGKey(0), 128, 3, GAMMA))
    starts = batch["observations"][:, 0].astype(int)
    assert set(starts) == set(range(N))  # every start index drawn, none invalid
    for b, t in enumerate(starts):
        rows, valid, rewards, masks = (np.array(x, np.float32) for x in EXPECTED[t])
        rows = rows.astype(int)
        np.testing.assert_array_equal(batch["observations"][b], DATASET["observations"][t])
        np.testing.assert_array_equal(batch["actions"][b], DATASET["actions"][rows])
        np.testing.assert_array_equal(batch["next_observations"][b], DATASET["next_observations"][rows])
        np.testing.assert_array_equal(batch["valid"][b], valid)
        np.testing.assert_allclose(batch["rewards"][b], rewards)
        np.testing.assert_array_equal(batch["masks"][b], masks)


def test_horizon_one_is_one_step_transitions(device_dataset):
    batch = jax.device_get(envs.sample_chunks(device_dataset, jax.random.PRNGKey(1), 64, 1, 0.99))
    t = batch["observations"][:, 0].astype(int)
    np.testing.assert_array_equal(batch["actions"][:, 0], DATASET["actions"][t])
    np.testing.assert_array_equal(batch["rewards"][:, 0], DATASET["rewards"][t])
    np.testing.assert_array_equal(batch["masks"][:, 0], DATASET["masks"][t])
    np.testing.assert_array_equal(batch["next_observations"][:, 0], DATASET["next_observations"][t])
    np.testing.assert_array_equal(batch["valid"], 1.0)


def _goal_batch(device_dataset, p_cur, p_traj, p_rand, discount=GOAL_DISCOUNT, seed=0):
    return jax.device_get(
        envs.sample_goal_chunks(device_dataset, jax.random.PRNGKey(seed), 256, 3, discount, p_cur, p_traj, p_rand)
    )


def _expected_goal_chunk(t, goal_state):
    """Rewards and masks for start t when the goal is state s_{goal_state} of t's trajectory (None: not in it).

    Chunk step i looks at s_{t+i}, held at the trajectory's final state s_{end+1} past its end; it
    succeeds when that state is the goal; its reward counts only while valid and not yet cut.
    """
    end = 2 if t <= 2 else 6
    rewards, masks, total, mask = [], [], 0.0, 1.0
    for i in range(3):
        success = min(t + i, end + 1) == goal_state
        if t + i <= end and mask:
            total += GOAL_DISCOUNT**i * (0.0 if success else -1.0)
        mask = min(mask, 0.0 if success else 1.0)
        rewards.append(total)
        masks.append(mask)
    return np.array(rewards), np.array(masks)


def test_goal_chunks_current_state_goal(device_dataset):
    batch = _goal_batch(device_dataset, 1.0, 0.0, 0.0)
    np.testing.assert_array_equal(batch["goals"], batch["observations"])
    np.testing.assert_array_equal(batch["rewards"], 0.0)
    np.testing.assert_array_equal(batch["masks"], 0.0)


def test_goal_chunks_trajectory_goal(device_dataset):
    batch = _goal_batch(device_dataset, 0.0, 1.0, 0.0)
    starts = batch["observations"][:, 0].astype(int)
    offsets = []
    for b, t in enumerate(starts):
        # The goal is a later state of the same trajectory: s_{t+k} = next_observations[t+k-1].
        goal_row = int(batch["goals"][b, 0] - 0.5)
        assert batch["goals"][b, 1] == 1.0 and t <= goal_row <= (2 if t <= 2 else 6)
        k = goal_row - t + 1
        offsets.append(k)
        rewards, masks = _expected_goal_chunk(t, t + k)
        np.testing.assert_allclose(batch["rewards"][b], rewards, err_msg=f"t={t}, k={k}")
        np.testing.assert_array_equal(batch["masks"][b], masks, err_msg=f"t={t}, k={k}")
    assert {1, 2, 3} <= set(offsets)  # goals reached inside the chunk and beyond it


def test_goal_chunks_random_goal(device_dataset):
    batch = _goal_batch(device_dataset, 0.0, 0.0, 1.0)
    starts = batch["observations"][:, 0].astype(int)
    for b, t in enumerate(starts):
        assert batch["goals"][b, 1] == 0.0  # an `observations` row
        g = int(batch["goals"][b, 0])
        end = 2 if t <= 2 else 6
        rewards, masks = _expected_goal_chunk(t, g if t <= g <= end else None)
        np.testing.assert_allclose(batch["rewards"][b], rewards, err_msg=f"t={t}, g={g}")
        np.testing.assert_array_equal(batch["masks"][b], masks, err_msg=f"t={t}, g={g}")


def test_goal_success_fn_on_cube_observations():
    success = envs.goal_success_fn("cube-double-play-v0")
    goal = np.zeros(37, np.float32)
    near, far = goal.copy(), goal.copy()
    near[19:22] = [0.3, 0.0, 0.0]  # 0.03 m (observation units are 10x metres)
    near[19 + 9 : 22 + 9] = [0.0, 0.2, 0.2]
    far[19 + 9] = 0.5  # second cube 0.05 m away
    np.testing.assert_array_equal(success(np.stack([near, far, goal]), goal), [True, False, True])


def _actor_goal_batch(dataset, actor_p_cur, actor_p_traj, actor_p_rand, batch_size=256, seed=0, **kwargs):
    return jax.device_get(
        envs.sample_goal_chunks(
            dataset,
            jax.random.PRNGKey(seed),
            batch_size,
            3,
            GOAL_DISCOUNT,
            **kwargs,
            actor_p_cur=actor_p_cur,
            actor_p_traj=actor_p_traj,
            actor_p_rand=actor_p_rand,
            actor_geom_sample=False,
        )
    )


def _trajectory_offsets(batch, field, end_of):
    """Offsets k of goals s_{t+k} = next_observations[t+k-1] of the start's own trajectory, with each start's
    remaining length end + 1 - t; fails if a goal lies outside [s_{t+1}, s_{end+1}]."""
    starts = batch["observations"][:, 0].astype(int)
    assert np.all(batch[field][:, 1] == 1.0)  # `next_observations` rows: later states, never s_t itself
    offsets = batch[field][:, 0] - 0.5 - starts + 1
    remaining = np.array([end_of(t) + 1 - t for t in starts])
    assert np.all((offsets >= 1) & (offsets <= remaining)), (starts, offsets)
    return starts, offsets, remaining


def test_goal_chunks_without_actor_probabilities_have_no_actor_goals(device_dataset):
    assert "actor_goals" not in _goal_batch(device_dataset, 0.2, 0.5, 0.3)


def test_actor_trajectory_goals_cover_the_whole_rest_of_the_trajectory(device_dataset):
    # Value goals are all the start state, so rewards and masks stay those of `goals`, not of the actor's.
    batch = _actor_goal_batch(device_dataset, 0.0, 1.0, 0.0, p_cur=1.0, p_traj=0.0, p_rand=0.0)
    np.testing.assert_array_equal(batch["goals"], batch["observations"])
    np.testing.assert_array_equal(batch["rewards"], 0.0)
    starts, offsets, _ = _trajectory_offsets(batch, "actor_goals", lambda t: 2 if t <= 2 else 6)
    for t, remaining in [(0, 3), (3, 4)]:  # every offset 1..remaining is drawn
        assert set(offsets[starts == t]) == set(range(1, remaining + 1)), t


def test_actor_trajectory_goals_are_uniform_not_geometric():
    # One trajectory of 200 transitions: the offset k of start t is uniform on {1, ..., 200 - t}, so
    # (k - 1/2) / (200 - t) is close to uniform on (0, 1). A geometric offset (here mean 2.5) fails this.
    n = 200
    long_episode = {
        "observations": np.stack([np.arange(n), np.zeros(n)], 1).astype(np.float32),
        "next_observations": np.stack([np.arange(n) + 0.5, np.ones(n)], 1).astype(np.float32),
        "actions": np.zeros((n, 2), np.float32),
        "terminals": np.eye(n, dtype=np.float32)[-1],
    }
    batch = _actor_goal_batch(envs.to_device_dataset(long_episode), 0.0, 1.0, 0.0, batch_size=4096)
    _, offsets, remaining = _trajectory_offsets(batch, "actor_goals", lambda t: n - 1)
    fractions = (offsets - 0.5) / remaining
    assert abs(fractions.mean() - 0.5) < 0.03, fractions.mean()
    quarters = np.histogram(fractions, bins=4, range=(0, 1))[0] / len(fractions)
    np.testing.assert_allclose(quarters, 0.25, atol=0.03)


def test_actor_current_state_goals(device_dataset):
    batch = _actor_goal_batch(device_dataset, 1.0, 0.0, 0.0, p_cur=0.0, p_traj=1.0, p_rand=0.0)
    np.testing.assert_array_equal(batch["actor_goals"], batch["observations"])
    assert not np.array_equal(batch["goals"], batch["observations"])  # the value goals are drawn apart


def test_goal_sampler_binds_the_agent_config():
    import configs

    config = configs.get_config("gcqgf", "demo")
    sample = envs.goal_sampler(config, "cube-double-play-v0")
    assert sample.func is envs.sample_goal_chunks
    expected = {name: config[name] for name in ("batch_size", "horizon", "discount", "p_cur", "p_traj", "p_rand")}
    expected.update(actor_p_cur=0.0, actor_p_traj=1.0, actor_p_rand=0.0, actor_geom_sample=False)
    expected["success_fn"] = envs.goal_success_fn("cube-double-play-v0")
    assert sample.keywords == expected
