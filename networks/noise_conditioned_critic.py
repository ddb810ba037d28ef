"""Robust-Q's noise-conditioned critic Q_ρ(s, a_t, t): a critic of noisy action chunks along the flow."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from networks.mlp import MLP, concat_inputs
from networks.time_embedding import sinusoidal_embedding


class NoiseConditionedCritic(nn.Module):
    """One MLP on [s, g, a_t, emb(t)] (emb: the 16-d sinusoidal embedding, as the official code); output [B]."""

    hidden_dims: Sequence[int]
    activation: str = "gelu"
    layer_norm: bool = True
    time_embedding_dim: int = 16
    dtype: Any = jnp.float32  # The matmuls' compute dtype (see MLP).

    @nn.compact
    def __call__(
        self, observations: jax.Array, noisy_actions: jax.Array, times: jax.Array, goals: jax.Array | None = None
    ) -> jax.Array:
        embedding = sinusoidal_embedding(times, self.time_embedding_dim).astype(noisy_actions.dtype)
        x = concat_inputs(observations, goals, noisy_actions, embedding)
        return MLP(self.hidden_dims, 1, self.activation, self.layer_norm, self.dtype)(x)[..., 0]
