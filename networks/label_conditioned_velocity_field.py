"""CFGRL's velocity field v(s, o, a_t, t), conditioned on an optimality label o ∈ {0, 1}."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from networks.mlp import MLP, concat_inputs
from networks.time_embedding import sinusoidal_embedding


class LabelConditionedVelocityField(nn.Module):
    """An MLP on [s, g, a_t, emb(t), E(o)]: emb the 16-d sinusoidal time embedding, E a learned 32-d embedding
    of the label o (0: unconditional behaviour cloning, 1: positive advantage), as the official CFGRL actor."""

    hidden_dims: Sequence[int]
    action_dim: int
    activation: str = "gelu"
    layer_norm: bool = True
    time_embedding_dim: int = 16
    label_embedding_dim: int = 32
    dtype: Any = jnp.float32  # The matmuls' compute dtype (see MLP).
    layer_norm_last_hidden: bool = True  # See MLP (the official actor: False).
    output_init: str = "glorot_uniform"  # See MLP (the official actor: "lecun_normal").

    @nn.compact
    def __call__(
        self,
        observations: jax.Array,
        labels: jax.Array,
        noisy_actions: jax.Array,
        times: jax.Array,
        goals: jax.Array | None = None,
    ) -> jax.Array:
        time_features = sinusoidal_embedding(times, self.time_embedding_dim).astype(noisy_actions.dtype)
        label_features = nn.Embed(2, self.label_embedding_dim)(jnp.asarray(labels, jnp.int32))
        x = concat_inputs(observations, goals, noisy_actions, time_features, label_features.astype(noisy_actions.dtype))
        return MLP(
            self.hidden_dims,
            self.action_dim,
            self.activation,
            self.layer_norm,
            self.dtype,
            layer_norm_last_hidden=self.layer_norm_last_hidden,
            output_init=self.output_init,
        )(x)
