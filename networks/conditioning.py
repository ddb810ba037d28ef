"""The velocity field and the critic ensemble as guided sampling calls them: K times at the same observations.

Guided sampling evaluates v(s, a_t, t) and ∇_a Q(s, â) at every one of its K Euler steps, always at the same s.
`condition_velocity_field` and `condition_critic` take a module and its parameters (the trees training
writes: nothing is re-initialised, reshaped or stored in a new layout) and split the network's first Dense
layer by its input rows: the rows of the observation (and goal) give a context, [s, g] @ W_s + b, computed
once per observation before the Euler scan, and each step adds only [a, t] @ W_a. So the loop does no
observation product, and what XLA re-lays out of the critics' first-layer kernel at every step (their [E, D + O, W]
kernel becomes one [D + O, E·W] operand) shrinks to the action rows. The layers after the first are
`networks.mlp.MLP`'s forward written out on its parameters, with one difference of form: LayerNorm's input
gradient, which the critic's guidance gradient passes through K times, is the closed form
σ⁻¹ (g − mean g − x̂ mean(g x̂)) rather than autodiff's longer chain (on the 2-core CPU, one quiet measurement:
split networks with it took 0.80 of the unsplit modules' time per guided action at batch 1000, with autodiff's
LayerNorm gradient 1.03; 0.93 / 0.95 at batch 50). Both give the modules' `apply`, and its action gradient, up
to float rounding (tests/test_conditioning.py).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from networks.critic import Critic
from networks.mixed_precision import bfloat16_matmul, dense_dot_general
from networks.mlp import activation_by_name, concat_inputs
from networks.velocity_field import VelocityField, time_features

LAYER_NORM_EPSILON = 1e-6  # flax.linen.LayerNorm's default, which MLP uses.


@jax.custom_vjp
def normalize(x: jax.Array) -> jax.Array:
    """(x − μ) / σ over the last axis, σ² = E[x²] − μ² + ε: flax LayerNorm's statistics, without scale and bias."""
    return _normalize_forward(x)[0]


def _normalize_forward(x):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    variance = jnp.maximum(jnp.mean(jnp.square(x), axis=-1, keepdims=True) - jnp.square(mean), 0.0)
    inverse_std = jax.lax.rsqrt(variance + LAYER_NORM_EPSILON)
    normalized = (x - mean) * inverse_std
    return normalized, (normalized, inverse_std)


def _normalize_backward(residuals, cotangent):
    normalized, inverse_std = residuals
    mean_cotangent = jnp.mean(cotangent, axis=-1, keepdims=True)
    mean_projection = jnp.mean(cotangent * normalized, axis=-1, keepdims=True)
    return (inverse_std * (cotangent - mean_cotangent - normalized * mean_projection),)


normalize.defvjp(_normalize_forward, _normalize_backward)


def matmul_of(dtype) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """x @ kernel as a Dense layer of compute dtype `dtype` multiplies (networks/mixed_precision.py)."""
    return jnp.matmul if dense_dot_general(dtype) is None else bfloat16_matmul


def mlp_after_first_layer(
    params: dict,
    h: jax.Array,
    *,
    num_hidden: int,
    activation: str,
    layer_norm: bool,
    layer_norm_last_hidden: bool,
    dtype,
) -> jax.Array:
    """MLP's forward from its first Dense layer's output `h` on, on MLP's parameters `params` (Dense_i, LayerNorm_i)."""
    act = activation_by_name(activation)
    matmul = matmul_of(dtype)
    for i in range(num_hidden):
        if i > 0:
            h = matmul(h, params[f"Dense_{i}"]["kernel"]) + params[f"Dense_{i}"]["bias"]
        if layer_norm and (layer_norm_last_hidden or i < num_hidden - 1):
            h = normalize(h) * params[f"LayerNorm_{i}"]["scale"] + params[f"LayerNorm_{i}"]["bias"]
        h = act(h)
    output = params[f"Dense_{num_hidden}"]
    return matmul(h, output["kernel"]) + output["bias"]


def _only_submodule(params: dict) -> dict:
    """The parameters of a module's one submodule (VelocityField's MLP, Critic's vmapped MLP)."""
    tree = params["params"]
    if len(tree) != 1:
        raise ValueError(f"expected the parameters of one MLP, got submodules {sorted(tree)}")
    return next(iter(tree.values()))


def condition_velocity_field(module: VelocityField, params: dict, observations: jax.Array, goals=None):
    """(context [B, W], velocity): `velocity(context, noisy_actions [B, D], times [B]) -> [B, D]` is
    `module.apply(params, observations, noisy_actions, times, goals)` up to float rounding."""
    mlp = _only_submodule(params)
    conditions = concat_inputs(observations, goals)
    split = conditions.shape[-1]  # VelocityField's input is [s, g, a_t, time features]: s and g's rows first.
    matmul = matmul_of(module.dtype)
    context = matmul(conditions, mlp["Dense_0"]["kernel"][:split]) + mlp["Dense_0"]["bias"]
    step_kernel = mlp["Dense_0"]["kernel"][split:]

    @jax.named_scope("VelocityField")  # What bench.profile's op classes read.
    def velocity(context: jax.Array, noisy_actions: jax.Array, times: jax.Array) -> jax.Array:
        step_inputs = concat_inputs(noisy_actions, time_features(times, noisy_actions, module.time_embedding))
        return mlp_after_first_layer(
            mlp,
            context + matmul(step_inputs, step_kernel),
            num_hidden=len(module.hidden_dims),
            activation=module.activation,
            layer_norm=module.layer_norm,
            layer_norm_last_hidden=module.layer_norm_last_hidden,
            dtype=module.dtype,
        )

    return context, velocity


def condition_critic(module: Critic, params: dict, observations: jax.Array, goals=None):
    """(context [B, E, W], q): `q(context, actions [B, D]) -> [E, B]` is `module.apply(params, observations,
    actions, goals)` up to float rounding. The context is batch-first so that best-of-N can repeat it per row."""
    members = _only_submodule(params)  # Every leaf has the ensemble axis E first.
    conditions = concat_inputs(observations, goals)
    split = conditions.shape[-1]  # Critic's input is [s, g, a].
    matmul = matmul_of(module.dtype)
    first = members["Dense_0"]
    context = jax.vmap(lambda kernel, bias: matmul(conditions, kernel[:split]) + bias, out_axes=1)(
        first["kernel"], first["bias"]
    )
    step_kernels = first["kernel"][:, split:]

    @jax.named_scope("Critic")
    def q(context: jax.Array, actions: jax.Array) -> jax.Array:
        def member(member_params, step_kernel, member_context):
            h = member_context + matmul(actions, step_kernel)
            return mlp_after_first_layer(
                member_params,
                h,
                num_hidden=len(module.hidden_dims),
                activation=module.activation,
                layer_norm=module.layer_norm,
                layer_norm_last_hidden=True,  # Critic's MLPs keep MLP's default.
                dtype=module.dtype,
            )[..., 0]

        return jax.vmap(member, in_axes=(0, 0, 1))(members, step_kernels, context)

    return context, q
