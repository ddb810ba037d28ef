"""Losses shared by the agents: flow-matching BC, IQL's expectile value regression and chunked TD.

Each returns `(loss, metrics)`; the networks are passed as apply functions with the parameters to
differentiate, and every other network output they need arrives as a plain (gradient-free) array.
"""

import jax
import jax.numpy as jnp


def flow_interpolation(key: jax.Array, clean: jax.Array, denoising_steps: int | None):
    """(a_t, t, a_1 − a_0) for clean chunks a_1 = `clean` [B, D]: a_0 ~ N(0, I), a_t = (1 − t) a_0 + t a_1, with t
    on the grid {0, 1/K, ..., 1} (K = `denoising_steps`) or, for `denoising_steps=None`, t ~ U(0, 1)."""
    noise_key, time_key = jax.random.split(key)
    noise = jax.random.normal(noise_key, clean.shape, clean.dtype)
    if denoising_steps is None:
        times = jax.random.uniform(time_key, clean.shape[:1], clean.dtype)
    else:
        times = jax.random.randint(time_key, clean.shape[:1], 0, denoising_steps + 1).astype(clean.dtype)
        times = times / denoising_steps
    noisy = (1.0 - times)[:, None] * noise + times[:, None] * clean
    return noisy, times, clean - noise


def flow_matching_loss(velocity_apply, params, observations, actions, valid, key, denoising_steps, goals=None):
    """‖v(s, a_t, t) − (a_1 − a_0)‖² with a_0 ~ N(0, I), t on {0, 1/K, ..., 1}, a_t = (1 − t) a_0 + t a_1.

    `actions` is the chunk [B, H, A]; each action's error is weighted by `valid` [B, H] so that the
    padding after an episode's end is never cloned.
    """
    batch_size, horizon, action_dim = actions.shape
    clean = actions.reshape(batch_size, horizon * action_dim)
    noisy, times, target = flow_interpolation(key, clean, denoising_steps)
    weights = jnp.repeat(valid, action_dim, axis=1)  # [B, H·A], each action's validity over its dimensions.
    loss, _ = flow_matching_loss_at(velocity_apply, params, observations, noisy, times, target, weights, goals)
    return loss, {"policy/bc_loss": loss}


def flow_matching_loss_at(velocity_apply, params, observations, noisy, times, target, weights, goals=None):
    """(mean_{b,d} w_{bd} (v(s, a_t, t) − (a_1 − a_0))_d², v) at given draws (a_t, t, a_1 − a_0) [B, D], [B], [B, D].

    For the draws of `flow_interpolation` (or hand-made ones, in tests); `weights` broadcasts against [B, D]
    ([B, 1] weighs whole chunks). The velocity is returned for losses that reuse it (EDP's clean-action estimate).
    """
    velocity = velocity_apply(params, observations, noisy, times, goals)
    return jnp.mean(jnp.square(velocity - target) * weights), velocity


def expectile_loss(difference: jax.Array, expectile: float) -> jax.Array:
    """Asymmetric squared loss |τ − 1(d < 0)| d², elementwise, for d = target − prediction."""
    weight = jnp.where(difference > 0, expectile, 1.0 - expectile)
    return weight * jnp.square(difference)


def value_loss(value_apply, params, observations, target_q, expectile, weights, goals=None):
    """IQL: expectile regression of V(s) toward the (aggregated, target) Q of the dataset's chunk.

    (1/B) Σ_b w_b ℓ_τ(target_q_b − V(s_b)), each chunk weighted by its validity `weights` [B] (as in
    `critic_td_loss`), so that padding after an episode's end never trains V.
    """
    v = value_apply(params, observations, goals)
    loss = jnp.mean(expectile_loss(target_q - v, expectile) * weights)
    return loss, {"value/loss": loss, "value/v_mean": jnp.mean(v), "value/v_max": jnp.max(v)}


def chunk_td_target(rewards, masks, next_values, discount):
    """R + γ^H · mask · V(s_{t+H}), with R and mask the chunk's last cumulative entries [B, H]."""
    horizon = rewards.shape[1]
    return rewards[:, -1] + (discount**horizon) * masks[:, -1] * next_values


def critic_td_loss(critic_apply, params, observations, flat_actions, td_target, weights, goals=None):
    """Squared TD error of every ensemble member, each chunk weighted by its validity `weights` [B]."""
    q = critic_apply(params, observations, flat_actions, goals)  # [E, B]
    loss = jnp.mean(jnp.square(q - td_target[None]) * weights[None])
    return loss, {"critic/loss": loss, "critic/q_mean": jnp.mean(q), "critic/q_max": jnp.max(q)}
