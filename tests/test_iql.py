"""The shared IQL critic (agents/iql.py): its losses against a NumPy float64 reference of BASELINES.md §1.7."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.training.train_state import TrainState

import configs
from agents import iql

B, OBS, H, A = 6, 3, 2, 2
GAMMA = 0.9


class CriticOnly(flax.struct.PyTreeNode):
    critic: TrainState
    target_critic: TrainState
    value: TrainState


def tiny_config():
    config = configs.get_config("qgf")
    config.critic_hidden_dims = (32, 32)
    config.horizon = H
    config.discount = GAMMA
    config.expectile = 0.8
    config.critic_aggregation = "min"
    return config


def random_batch(key):
    keys = jax.random.split(key, 5)
    return {
        "observations": jax.random.normal(keys[0], (B, OBS)),
        "actions": jax.random.uniform(keys[1], (B, H, A), minval=-1, maxval=1),
        "rewards": jax.random.normal(keys[2], (B, H)),
        "masks": jnp.array([[1.0, 1.0], [1.0, 0.0]] * (B // 2)),
        "valid": jnp.array([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]] * (B // 3)),
        "next_observations": jax.random.normal(keys[3], (B, H, OBS)),
    }


@pytest.fixture(scope="module")
def setup():
    config = tiny_config()
    batch = random_batch(jax.random.PRNGKey(0))
    flat = batch["actions"].reshape(B, -1)
    state = CriticOnly(**iql.init_critic_states(jax.random.PRNGKey(1), config, batch["observations"], flat))
    # Move the target away from the online critic so that using the wrong one would show.
    state = state.replace(
        target_critic=state.target_critic.replace(
            params=jax.tree_util.tree_map(lambda p: 1.3 * p + 0.01, state.target_critic.params)
        )
    )
    return config, batch, state


def test_iql_loss_matches_the_float64_formulas_with_valid_weights(setup):
    config, batch, state = setup
    flat = batch["actions"].reshape(B, -1)
    obs = batch["observations"]
    f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    q = f64(state.critic.apply_fn(state.critic.params, obs, flat))  # [E, B]
    q_bar = f64(state.target_critic.apply_fn(state.target_critic.params, obs, flat))
    v = f64(state.value.apply_fn(state.value.params, obs))
    v_next = f64(state.value.apply_fn(state.value.params, batch["next_observations"][:, -1]))
    w = f64(batch["valid"][:, -1])
    u = q_bar.min(axis=0) - v
    expected_v = np.mean(w * np.where(u > 0, 0.8, 0.2) * u**2)
    y = f64(batch["rewards"][:, -1]) + GAMMA**H * f64(batch["masks"][:, -1]) * v_next
    expected_q = np.sum(w[None] * (q - y[None]) ** 2) / (q.shape[0] * B)

    loss, metrics = iql.iql_loss(iql.critic_params(state), state, batch, config)
    assert w.sum() < B  # The batch has invalid chunks, so the weighting is exercised.
    np.testing.assert_allclose(float(metrics["value/loss"]), expected_v, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["critic/loss"]), expected_q, rtol=1e-5)
    np.testing.assert_allclose(float(loss), expected_v + expected_q, rtol=1e-5)


def test_invalid_chunks_do_not_train_the_value(setup):
    config, batch, state = setup
    invalid = batch["valid"][:, -1] == 0
    # Any actions in an invalid chunk change the target Q of its row, which must not reach V's loss.
    poisoned = dict(batch, actions=jnp.where(invalid[:, None, None], -batch["actions"], batch["actions"]))
    grads = jax.grad(lambda p, b: iql.iql_loss(p, state, b, config)[0])
    clean, dirty = grads(iql.critic_params(state), batch), grads(iql.critic_params(state), poisoned)
    for a, b in zip(jax.tree_util.tree_leaves(clean["value"]), jax.tree_util.tree_leaves(dirty["value"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("pre_update", [False, True])
def test_apply_critic_gradients_steps_q_and_v_and_polyaks_the_target(setup, pre_update):
    config, batch, state = setup
    config = config.copy_and_resolve_references()
    config.polyak_pre_update = pre_update  # True: the official one-step lag, Q̄ moves toward Q before its step.
    grads = jax.grad(lambda p: iql.iql_loss(p, state, batch, config)[0])(iql.critic_params(state))
    new = iql.apply_critic_gradients(state, grads, config)
    rate = config.target_rate
    source = state.critic if pre_update else new["critic"]
    for t_old, q, q_new, t_new in zip(
        jax.tree_util.tree_leaves(state.target_critic.params),
        jax.tree_util.tree_leaves(source.params),
        jax.tree_util.tree_leaves(new["critic"].params),
        jax.tree_util.tree_leaves(new["target_critic"].params),
        strict=True,
    ):
        np.testing.assert_allclose(t_new, (1 - rate) * t_old + rate * q, rtol=1e-6, atol=1e-7)
        assert not np.allclose(q_new, t_old)
    assert int(new["value"].step) == 1 and int(new["critic"].step) == 1
