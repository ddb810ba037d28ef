"""Multi-layer perceptron shared by every network of the project."""

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

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


class MLP(nn.Module):
    """Dense layers of `hidden_dims`, then a linear output of `output_dim`.

    LayerNorm, when on, sits after each hidden Dense and before its activation, which keeps
    the critic's gradients well scaled for guidance as well as for TD learning.
    """

    hidden_dims: Sequence[int]
    output_dim: int
    activation: str = "gelu"
    layer_norm: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation_by_name(self.activation)
        for width in self.hidden_dims:
            x = nn.Dense(width, kernel_init=nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"))(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = act(x)
        return nn.Dense(self.output_dim, kernel_init=nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"))(x)


def concat_inputs(*parts: jax.Array | None) -> jax.Array:
    """Concatenates the non-None inputs along the feature axis (goals are optional everywhere)."""
    return jnp.concatenate([p for p in parts if p is not None], axis=-1)
