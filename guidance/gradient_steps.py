"""GradStep: gradient ascent on the critic after the flow sample (the paper's "gradient steps after BC")."""

import jax
import jax.numpy as jnp

from guidance.estimators import CriticFn, critic_gradient


def gradient_steps(
    critic_fn: CriticFn,
    observations,
    actions: jax.Array,
    *,
    step_size: float | jax.Array,
    num_steps: int,
    unroll: bool = False,
) -> jax.Array:
    """`num_steps` (L, static) steps a ← clip(a + α ∇_a Q(s, a), −1, 1) from `actions` [B, D]; α may be traced.

    Each sample ascends its own Q (the gradient of the batch sum). L = 0 returns `actions` unchanged without
    tracing the critic (callers without one pass `critic_fn=None`). `unroll` unrolls the loop (see guidance.sample).
    """
    if num_steps == 0:
        return actions

    def ascend(a, _):
        return jnp.clip(a + step_size * critic_gradient(critic_fn, observations, a), -1.0, 1.0), None

    actions, _ = jax.lax.scan(ascend, actions, None, length=num_steps, unroll=unroll)
    return actions
