"""The flow policy's velocity field v(s, a_t, t)."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from networks.mlp import MLP, concat_inputs
from networks.time_embedding import sinusoidal_embedding

TIME_EMBEDDINGS = ("raw", "sinusoidal")


class VelocityField(nn.Module):
    """Maps (observation, noisy action a_t, time t in [0, 1]) to a velocity of the action's size.

    `noisy_actions` is the flattened action chunk [B, H*A]; `times` is [B] or [B, 1]. The time enters
    as `time_embedding`: "raw" appends the scalar t, "sinusoidal" the official 16-d embedding
    (networks/time_embedding.py). `layer_norm_last_hidden=False` is the official actor's placement of
    LayerNorm: after every hidden layer but the last (see MLP).
    """

    hidden_dims: Sequence[int]
    action_dim: int
    activation: str = "gelu"
    layer_norm: bool = True
    dtype: Any = jnp.float32  # The matmuls' compute dtype (see MLP); the output is float32 either way.
    time_embedding: str = "raw"
    layer_norm_last_hidden: bool = True
    output_init: str = "glorot_uniform"  # The output layer's kernel init (see MLP).

    @nn.compact
    def __call__(
        self,
        observations: jax.Array,
        noisy_actions: jax.Array,
        times: jax.Array,
        goals: jax.Array | None = None,
    ) -> jax.Array:
        times = time_features(times, noisy_actions, self.time_embedding)
        x = concat_inputs(observations, goals, noisy_actions, times)
        mlp = MLP(
            self.hidden_dims,
            self.action_dim,
            self.activation,
            self.layer_norm,
            self.dtype,
            layer_norm_last_hidden=self.layer_norm_last_hidden,
            output_init=self.output_init,
        )
        return mlp(x)


def time_features(times: jax.Array, noisy_actions: jax.Array, embedding: str) -> jax.Array:
    """The velocity field's time input for `times` [B] or [B, 1]: [B, 1] ("raw") or [B, 16] ("sinusoidal")."""
    times = jnp.reshape(times, noisy_actions.shape[:-1] + (1,)).astype(noisy_actions.dtype)
    if embedding == "sinusoidal":
        embedded = sinusoidal_embedding(times)  # [N, 16] over the flattened leading axes.
        return embedded.reshape(noisy_actions.shape[:-1] + embedded.shape[-1:]).astype(noisy_actions.dtype)
    if embedding != "raw":
        raise ValueError(f"unknown time_embedding {embedding!r}; choose one of {TIME_EMBEDDINGS}")
    return times
