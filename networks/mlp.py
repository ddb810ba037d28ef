"""Multi-layer perceptron shared by every network of the project."""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from networks.mixed_precision import dense_dot_general

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": nn.gelu,
    "relu": nn.relu,
    "silu": nn.silu,
    "tanh": jnp.tanh,
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),  # The DAC/QSM noise predictor's activation.
}


def activation_by_name(name: str) -> Callable[[jax.Array], jax.Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


OUTPUT_INITS = ("glorot_uniform", "lecun_normal")


class MLP(nn.Module):
    """Dense layers of `hidden_dims`, then a linear output of `output_dim`.

    LayerNorm, when on, sits after each hidden Dense and before its activation, which keeps
    the critic's gradients well scaled for guidance as well as for TD learning;
    `layer_norm_last_hidden=False` leaves it off the last hidden layer, as the official actor has it
    (BASELINES.md §1.6: its MLP never normalises the last entry of `hidden_dims`). `dtype` is the
    matmuls' compute dtype: bfloat16 multiplies in bfloat16 with float32 accumulation, while
    parameters and every other op stay float32 (networks/mixed_precision.py).
    """

    hidden_dims: Sequence[int]
    output_dim: int
    activation: str = "gelu"
    layer_norm: bool = True
    dtype: Any = jnp.float32
    layer_norm_last_hidden: bool = True
    # The output layer's kernel init: "glorot_uniform" like the hidden layers, or "lecun_normal" (Flax's default
    # Dense init, which the official actor's separate output layer has).
    output_init: str = "glorot_uniform"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation_by_name(self.activation)
        dot_general = dense_dot_general(self.dtype)
        kernel_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
        for i, width in enumerate(self.hidden_dims):
            x = nn.Dense(width, kernel_init=kernel_init, dot_general=dot_general)(x)
            if self.layer_norm and (self.layer_norm_last_hidden or i < len(self.hidden_dims) - 1):
                x = nn.LayerNorm()(x)
            x = act(x)
        if self.output_init not in OUTPUT_INITS:
            raise ValueError(f"unknown output_init {self.output_init!r}; choose one of {OUTPUT_INITS}")
        output_init = kernel_init if self.output_init == "glorot_uniform" else nn.initializers.lecun_normal()
        return nn.Dense(self.output_dim, kernel_init=output_init, dot_general=dot_general)(x)


def concat_inputs(*parts: jax.Array | None) -> jax.Array:
    """Concatenates the non-None inputs along the feature axis (goals are optional everywhere)."""
    return jnp.concatenate([p for p in parts if p is not None], axis=-1)
