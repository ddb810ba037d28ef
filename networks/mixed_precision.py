"""Mixed precision: the networks' matmuls in bfloat16 with float32 accumulation, everything else in float32.

`agent.compute_dtype = "bfloat16"` makes every Dense layer multiply bfloat16 copies of its input and kernel,
accumulating in float32, forward and backward (the two backward matmuls also take bfloat16 operands, so all
three matmuls of a layer run on the accelerator's bfloat16 units). Parameters, optimiser state, biases,
LayerNorm, activations, losses, the input gradient used for guidance and the Euler state stay float32: each
layer's output is float32, and the weight and input gradients are returned in their operands' float32.

Why not Flax's own `Dense(dtype=bfloat16)`: it casts the bias and the output to bfloat16 too (a critic's
Q of a few hundred would then be rounded to steps of 1-2 before the TD loss), and with a float32
`preferred_element_type` alone its backward matmuls would take one float32 operand, which XLA runs in float32.
"""

import jax
import jax.numpy as jnp

COMPUTE_DTYPES = ("float32", "bfloat16")


def compute_dtype(name: str):
    """The jnp dtype of a `compute_dtype` setting ("float32" or "bfloat16")."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"unknown compute dtype {name!r}; choose one of {COMPUTE_DTYPES}")
    return jnp.dtype(name)


def _to_bfloat16(x: jax.Array) -> jax.Array:
    """x rounded to bfloat16 for a matmul operand: a bfloat16 array where the backend multiplies bfloat16 natively;
    on CPU, a float32 array holding the rounded values (XLA:CPU runs some bfloat16 × bfloat16 → float32 dots not at
    all, and has no bfloat16 units to gain from), with the same products and float32 sums, so tests see the
    accelerators' numerics. `reduce_precision` rather than a cast pair, which XLA may drop as excess precision."""
    if jax.default_backend() == "cpu":
        return jax.lax.reduce_precision(x, exponent_bits=8, mantissa_bits=7)
    return x.astype(jnp.bfloat16)


@jax.custom_vjp
def bfloat16_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x [..., K] @ kernel [K, N] (both float32) with bfloat16 operands and float32 accumulation; float32 result."""
    return _forward(x, kernel)[0]


def _forward(x, kernel):
    x16, kernel16 = _to_bfloat16(x), _to_bfloat16(kernel)
    # The rounded copies are what the backward matmuls need (half the memory of float32 ones on accelerators).
    return jnp.matmul(x16, kernel16, preferred_element_type=jnp.float32), (x16, kernel16)


def _backward(residuals, cotangent):
    x16, kernel16 = residuals
    g16 = _to_bfloat16(cotangent)
    dx = jnp.matmul(g16, kernel16.T, preferred_element_type=jnp.float32)
    dkernel = jnp.einsum("...k,...n->kn", x16, g16, preferred_element_type=jnp.float32)
    return dx, dkernel


bfloat16_matmul.defvjp(_forward, _backward)


def bfloat16_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """`flax.linen.Dense`'s contraction (float32 lhs's last axis with float32 rhs's first) via `bfloat16_matmul`."""
    del precision, preferred_element_type  # Fixed: bfloat16 operands, float32 accumulation and result.
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    if tuple(lhs_contract) != (lhs.ndim - 1,) or tuple(rhs_contract) != (0,) or lhs_batch or rhs_batch:
        raise ValueError(f"bfloat16_dot_general does Dense's contraction only, got {dimension_numbers}")
    if lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32:
        raise ValueError(f"bfloat16_dot_general takes float32 operands (it casts them), got {lhs.dtype}, {rhs.dtype}")
    return bfloat16_matmul(lhs, rhs)


def dense_dot_general(dtype):
    """What `nn.Dense(dot_general=...)` takes for a compute dtype: None (Flax's float32 default) or bfloat16's."""
    return None if jnp.dtype(dtype) == jnp.float32 else bfloat16_dot_general
