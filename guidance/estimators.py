"""Gradient estimators g for the guided Euler step a_{t+dt} = a_t + dt (v + w g).

Every estimator has the same signature,
    estimator(velocity_fn, critic_fn, observations, actions, times, velocity, step_index, steps, *, unroll)
        -> g [B, D],
with `actions` = a_t [B, D], `times` = t [B], `velocity` = v(s, a_t, t) [B, D] already computed by the
sampler, `step_index` the traced index k of the current Euler step (t = k / steps), `steps` the static
number of denoising steps and `unroll` (static) whether an estimator's own loop (bptt's) is unrolled, as
the sampler's is (see guidance.sample). `critic_fn(observations, actions) -> [B]` is already aggregated
over the ensemble.
Per-sample gradients are taken as the gradient of the batch sum, which is exact because samples do not
interact inside the networks.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

VelocityFn = Callable[[Any, jax.Array, jax.Array], jax.Array]
CriticFn = Callable[[Any, jax.Array], jax.Array]


def clean_action_estimate(actions: jax.Array, times: jax.Array, velocity: jax.Array) -> jax.Array:
    """One Euler step from t straight to t = 1: â = clip(a_t + (1 - t) v, -1, 1)."""
    return jnp.clip(actions + (1.0 - times)[:, None] * velocity, -1.0, 1.0)


def critic_gradient(critic_fn: CriticFn, observations: Any, actions: jax.Array) -> jax.Array:
    """∇_a Q(s, a) for every sample of the batch."""
    return jax.grad(lambda a: jnp.sum(critic_fn(observations, a)))(actions)


def no_guidance(velocity_fn, critic_fn, observations, actions, times, velocity, step_index, steps, *, unroll=False):
    """`none`: plain behaviour cloning, g = 0."""
    return jnp.zeros_like(actions)


def qgf(velocity_fn, critic_fn, observations, actions, times, velocity, step_index, steps, *, unroll=False):
    """`qgf`: ∇Q at the clean-action estimate, with the Jacobian ∂â/∂a_t replaced by the identity."""
    clean = clean_action_estimate(actions, times, jax.lax.stop_gradient(velocity))
    return critic_gradient(critic_fn, observations, clean)


def jacobian(velocity_fn, critic_fn, observations, actions, times, velocity, step_index, steps, *, unroll=False):
    """`jacobian`: the exact chain rule (∂â/∂a_t)ᵀ ∇Q(s, â), differentiating through v and the clip."""

    def q_at_clean_estimate(a):
        clean = clean_action_estimate(a, times, velocity_fn(observations, a, times))
        return jnp.sum(critic_fn(observations, clean))

    return jax.grad(q_at_clean_estimate)(actions)


def noisy(velocity_fn, critic_fn, observations, actions, times, velocity, step_index, steps, *, unroll=False):
    """`noisy`: ∇Q at the noisy a_t itself (QFQL's out-of-distribution gradient)."""
    return critic_gradient(critic_fn, observations, actions)


def bptt(velocity_fn, critic_fn, observations, actions, times, velocity, step_index, steps, *, unroll=False):
    """`bptt`: ∇_{a_t} Q(s, clip(a_1)) with a_1 from the remaining unguided Euler steps k, ..., steps-1."""
    dt = 1.0 / steps

    def integrate_rest(a):
        def euler_step(a, k):
            def advance(a):
                t = jnp.full(a.shape[:1], k, a.dtype) / steps
                return a + dt * velocity_fn(observations, a, t)

            return jax.lax.cond(k >= step_index, advance, lambda a: a, a), None

        a, _ = jax.lax.scan(euler_step, a, jnp.arange(steps), unroll=unroll)
        return jnp.clip(a, -1.0, 1.0)

    return jax.grad(lambda a: jnp.sum(critic_fn(observations, integrate_rest(a))))(actions)


ESTIMATORS: dict[str, Callable[..., jax.Array]] = {
    "none": no_guidance,
    "qgf": qgf,
    "jacobian": jacobian,
    "noisy": noisy,
    "bptt": bptt,
}
