"""The guided Euler integrator of the flow ODE, and best-of-N selection on top of it.

Both are pure functions of their inputs; `guidance_weight` is traced (a scalar or one weight per
sample), so a whole sweep of weights runs as one batch under one compilation, while `estimator`,
`steps`, `unroll` and the number of candidates are static. `unroll=True` unrolls every loop (the Euler
integration and an estimator's own) into straight-line code: same actions, a larger program, and what
XLA's cost analysis needs to count every step (it counts a rolled loop's body once; runner.flops).
"""

from typing import Any

import jax
import jax.numpy as jnp

from guidance.estimators import ESTIMATORS, CriticFn, VelocityFn
from guidance.gradient_steps import gradient_steps


def estimator_by_name(name: str):
    if name not in ESTIMATORS:
        raise ValueError(f"unknown guidance estimator {name!r}; choose one of {sorted(ESTIMATORS)}")
    return ESTIMATORS[name]


def sample(
    velocity_fn: VelocityFn,
    critic_fn: CriticFn,
    observations: Any,
    noise: jax.Array,
    *,
    guidance_weight: float | jax.Array,
    estimator: str = "qgf",
    steps: int = 10,
    grad_steps: int = 0,
    grad_step_size: float | jax.Array = 0.0,
    unroll: bool = False,
) -> jax.Array:
    """Integrates a_{t+dt} = a_t + dt (v(s, a_t, t) + w g) from a_0 = `noise` [B, D]; returns clip(a_1, -1, 1),
    refined by `grad_steps` GradStep ascent steps of size `grad_step_size` on `critic_fn` (none by default).

    `observations` may be any PyTree with a leading batch axis (e.g. observations and goals); it is
    handed unchanged to `velocity_fn(observations, a [B, D], t [B]) -> [B, D]` and
    `critic_fn(observations, a) -> [B]`.
    """
    if steps < 1:
        raise ValueError(f"the number of denoising steps must be >= 1, got {steps}")
    estimate = estimator_by_name(estimator)
    batch_size = noise.shape[0]
    weights = jnp.broadcast_to(jnp.asarray(guidance_weight, noise.dtype), (batch_size,))[:, None]
    dt = 1.0 / steps

    def euler_step(actions, step_index):
        times = jnp.full((batch_size,), step_index, noise.dtype) / steps
        velocity = velocity_fn(observations, actions, times)
        gradient = estimate(
            velocity_fn, critic_fn, observations, actions, times, velocity, step_index, steps, unroll=unroll
        )
        return actions + dt * (velocity + weights * gradient), None

    actions, _ = jax.lax.scan(euler_step, noise, jnp.arange(steps), unroll=unroll)
    actions = jnp.clip(actions, -1.0, 1.0)
    return gradient_steps(
        critic_fn, observations, actions, step_size=grad_step_size, num_steps=grad_steps, unroll=unroll
    )


def best_of_n(
    velocity_fn: VelocityFn,
    critic_fn: CriticFn,
    observations: Any,
    noise: jax.Array,
    *,
    guidance_weight: float | jax.Array,
    estimator: str = "qgf",
    steps: int = 10,
    grad_steps: int = 0,
    grad_step_size: float | jax.Array = 0.0,
    unroll: bool = False,
) -> jax.Array:
    """Draws N guided candidates per observation from `noise` [B, N, D] and keeps the one of highest Q.

    With `estimator="none"` (or weight 0) this is plain best-of-N of behaviour-cloning samples; with
    `grad_steps` > 0 the candidates are refined by GradStep before they are ranked.
    """
    batch_size, num_candidates, action_dim = noise.shape
    repeat = lambda x: jnp.repeat(x, num_candidates, axis=0)  # noqa: E731
    candidate_observations = jax.tree_util.tree_map(repeat, observations)
    weights = repeat(jnp.broadcast_to(jnp.asarray(guidance_weight, noise.dtype), (batch_size,)))
    candidates = sample(
        velocity_fn,
        critic_fn,
        candidate_observations,
        noise.reshape(batch_size * num_candidates, action_dim),
        guidance_weight=weights,
        estimator=estimator,
        steps=steps,
        grad_steps=grad_steps,
        grad_step_size=grad_step_size,
        unroll=unroll,
    )
    scores = critic_fn(candidate_observations, candidates).reshape(batch_size, num_candidates)
    best = jnp.argmax(scores, axis=1)
    candidates = candidates.reshape(batch_size, num_candidates, action_dim)
    return jnp.take_along_axis(candidates, best[:, None, None], axis=1)[:, 0]
