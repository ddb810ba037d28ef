"""The DDPM noise predictor ε(s, x_k, k) of the DAC and QSM baselines (BASELINES.md §3.5).

The integer denoising step k ∈ {1..K} enters through learnable Fourier features, which a conditioning MLP
turns into a step embedding; the noisy chunk, the observation and that embedding, in the order [x, s, cond],
then go through the main MLP. Both MLPs use mish and no LayerNorm, as the official network does.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from networks.mlp import MLP, concat_inputs


class FourierFeatures(nn.Module):
    """[cos(2π k W), sin(2π k W)] of a scalar k per sample, W [1, features/2] learnable with init N(0, 0.2²)."""

    features: int = 64

    @nn.compact
    def __call__(self, steps: jax.Array) -> jax.Array:
        if self.features % 2:
            raise ValueError(f"Fourier features come in cos/sin pairs; got an odd size {self.features}")
        kernel = self.param("kernel", nn.initializers.normal(0.2), (1, self.features // 2))
        angles = 2.0 * jnp.pi * jnp.reshape(steps, (-1, 1)) @ kernel
        return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class NoisePredictor(nn.Module):
    """Maps (observation, noisy chunk x_k [B, D], integer step k [B]) to the predicted noise [B, D].

    The conditioning MLP has `hidden_dims` with no activation after its last layer; the main MLP has
    `hidden_dims` with an activation after each, then a linear output of `action_dim`.
    """

    hidden_dims: Sequence[int]
    action_dim: int
    time_features: int = 64
    activation: str = "mish"
    dtype: Any = jnp.float32  # The matmuls' compute dtype (see networks.MLP); the output is float32 either way.

    @nn.compact
    def __call__(
        self,
        observations: jax.Array,
        noisy_actions: jax.Array,
        steps: jax.Array,
        goals: jax.Array | None = None,
    ) -> jax.Array:
        features = FourierFeatures(self.time_features)(steps.astype(noisy_actions.dtype))
        hidden = tuple(self.hidden_dims)
        cond = MLP(hidden[:-1], hidden[-1], self.activation, layer_norm=False, dtype=self.dtype)(features)
        x = concat_inputs(noisy_actions, observations, goals, cond)
        return MLP(hidden, self.action_dim, self.activation, layer_norm=False, dtype=self.dtype)(x)
