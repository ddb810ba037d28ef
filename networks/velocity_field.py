"""The flow policy's velocity field v(s, a_t, t)."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from networks.mlp import MLP, concat_inputs


class VelocityField(nn.Module):
    """Maps (observation, noisy action a_t, time t in [0, 1]) to a velocity of the action's size.

    `noisy_actions` is the flattened action chunk [B, H*A]; `times` is [B] or [B, 1].
    """

    hidden_dims: Sequence[int]
    action_dim: int
    activation: str = "gelu"
    layer_norm: bool = True
    dtype: Any = jnp.float32  # The matmuls' compute dtype (see MLP); the output is float32 either way.

    @nn.compact
    def __call__(
        self,
        observations: jax.Array,
        noisy_actions: jax.Array,
        times: jax.Array,
        goals: jax.Array | None = None,
    ) -> jax.Array:
        times = jnp.reshape(times, noisy_actions.shape[:-1] + (1,)).astype(noisy_actions.dtype)
        x = concat_inputs(observations, goals, noisy_actions, times)
        return MLP(self.hidden_dims, self.action_dim, self.activation, self.layer_norm, self.dtype)(x)
