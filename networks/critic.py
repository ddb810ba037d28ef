"""The critic ensemble Q(s, a) and the value V(s)."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from networks.mlp import MLP, concat_inputs


class Critic(nn.Module):
    """An ensemble of `num_critics` independent Q-networks; the output is always [E, B]."""

    hidden_dims: Sequence[int]
    num_critics: int = 2
    activation: str = "gelu"
    layer_norm: bool = True
    dtype: Any = jnp.float32  # The matmuls' compute dtype (see MLP).

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array, goals: jax.Array | None = None) -> jax.Array:
        ensemble = nn.vmap(
            MLP,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_critics,
        )
        x = concat_inputs(observations, goals, actions)
        return ensemble(self.hidden_dims, 1, self.activation, self.layer_norm, self.dtype)(x)[..., 0]


class Value(nn.Module):
    """The state value V(s) (a single network); the output is [B]."""

    hidden_dims: Sequence[int]
    activation: str = "gelu"
    layer_norm: bool = True
    dtype: Any = jnp.float32  # The matmuls' compute dtype (see MLP).

    @nn.compact
    def __call__(self, observations: jax.Array, goals: jax.Array | None = None) -> jax.Array:
        x = concat_inputs(observations, goals)
        return MLP(self.hidden_dims, 1, self.activation, self.layer_norm, self.dtype)(x)[..., 0]


AGGREGATIONS = ("min", "mean")


def aggregate(q: jax.Array, how: str) -> jax.Array:
    """Reduces the ensemble axis (axis 0) of critic outputs [E, B] to [B]."""
    if how == "min":
        return jnp.min(q, axis=0)
    if how == "mean":
        return jnp.mean(q, axis=0)
    raise ValueError(f"unknown critic aggregation {how!r}; choose one of {AGGREGATIONS}")
