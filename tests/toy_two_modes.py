"""A 2-D two-mode behaviour dataset, a velocity field trained on it, and a critic preferring one mode."""

import functools

import jax
import jax.numpy as jnp
import optax

from agents.losses import flow_matching_loss
from networks import VelocityField

MODES = jnp.array([[-0.5, -0.5], [0.5, 0.5]])
PREFERRED = MODES[1]
STEPS = 10


def sample_dataset_actions(key, n):
    mode_key, noise_key = jax.random.split(key)
    modes = MODES[jax.random.randint(mode_key, (n,), 0, 2)]
    return modes + 0.05 * jax.random.normal(noise_key, (n, 2))


@functools.lru_cache(maxsize=1)
def trained_velocity_fn(train_steps=400, seed=0, compute_dtype="float32"):
    """Flow-matching BC on the two modes (observations are a constant 1); returns velocity_fn(s, a, t).

    `compute_dtype` is the matmuls' dtype, in training and sampling (networks/mixed_precision.py).
    """
    model = VelocityField((64, 64), 2, "gelu", layer_norm=False, dtype=jnp.dtype(compute_dtype))
    key = jax.random.PRNGKey(seed)
    observations = jnp.ones((256, 1))
    params = model.init(key, observations, jnp.zeros((256, 2)), jnp.zeros(256))
    optimizer = optax.adam(3e-3)

    @jax.jit
    def train(params, key):
        def step(carry, key):
            params, opt_state = carry
            data_key, loss_key = jax.random.split(key)
            actions = sample_dataset_actions(data_key, 256)[:, None, :]
            valid = jnp.ones((256, 1))
            loss_fn = lambda p: flow_matching_loss(model.apply, p, observations, actions, valid, loss_key, STEPS)[0]  # noqa: E731
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = optimizer.update(grads, opt_state)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), jax.random.split(key, train_steps))
        return params, losses

    params, losses = train(params, key)

    def velocity_fn(s, a, t):
        return model.apply(params, s, a, t)

    return velocity_fn, losses


def critic_fn(s, a):
    """Q(a) = −‖a − preferred mode‖²: it prefers the (+, +) mode."""
    return -jnp.sum(jnp.square(a - PREFERRED), axis=-1)


def preferred_fraction(actions):
    return float(jnp.mean(jnp.sum(actions, axis=-1) > 0))
