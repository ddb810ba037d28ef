"""Train-state construction and the Polyak target update, shared by every agent."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState


def adam_train_state(module: nn.Module, params, learning_rate: float) -> TrainState:
    return TrainState.create(apply_fn=module.apply, params=params, tx=optax.adam(learning_rate))


def target_train_state(module: nn.Module, params) -> TrainState:
    """A train state that is never stepped by an optimizer, only by `polyak_update`.

    The parameters are copied so that the target never shares a buffer with the online network
    (a jitted update donates both).
    """
    params = jax.tree_util.tree_map(jnp.copy, params)
    return TrainState.create(apply_fn=module.apply, params=params, tx=optax.set_to_zero())


def polyak_update(target: TrainState, online_params, rate: float) -> TrainState:
    params = jax.tree_util.tree_map(lambda t, o: (1.0 - rate) * t + rate * o, target.params, online_params)
    return target.replace(params=params)


def clip_by_global_norm(grads, max_norm: float):
    """`optax.clip_by_global_norm` applied to the gradients of several train states as one group.

    g ← g · max_norm / ‖g‖ when the global norm ‖g‖ over the whole tree exceeds max_norm. Scaling the
    gradients before each network's own Adam equals one clip-then-Adam chain over the group, while every
    network keeps its own train state. Returns the clipped tree and the norm before clipping.
    """
    norm = optax.tree.norm(grads)
    scale = max_norm / jnp.maximum(norm, max_norm)
    return jax.tree_util.tree_map(lambda g: g * scale.astype(g.dtype), grads), norm
