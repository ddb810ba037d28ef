"""The sinusoidal embedding of the flow time t ∈ [0, 1] (the official code's, BASELINES.md §1.6)."""

import jax
import jax.numpy as jnp


def sinusoidal_embedding(times: jax.Array, dim: int = 16) -> jax.Array:
    """[cos(τ f_0), ..., cos(τ f_{h−1}), sin(τ f_0), ..., sin(τ f_{h−1})] with τ = 10⁴ t, f_k = 10⁴^(−k/h), h = dim/2.

    `times` is [B] or [B, 1]; the result is [B, dim]. The factor 10⁴ on t is the official code's: with t in
    [0, 1] the angular frequencies run from 10⁴ t down to about 3.16 t (for dim 16).
    """
    if dim % 2:
        raise ValueError(f"the time embedding's size must be even, got {dim}")
    half = dim // 2
    frequencies = jnp.power(10_000.0, -jnp.arange(half, dtype=jnp.float32) / half)
    angles = 10_000.0 * jnp.reshape(times, (-1, 1)).astype(jnp.float32) * frequencies
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)
