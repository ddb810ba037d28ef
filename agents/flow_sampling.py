"""How every flow agent turns a velocity field and a critic into action chunks at test time.

One copy of the choice between a single guided sample and best-of-N, with GradStep refinement on top, shared by
qgf (and edp), robust_q and cfgrl: each builds its own `velocity_fn` (robust_q and cfgrl fold their guidance
into it) and `critic_fn`, and reads the rest from its config.
"""

import jax
import ml_collections

import guidance


def sample_chunks(
    velocity_fn,
    critic_fn,
    inputs,
    key: jax.Array,
    flat_action_dim: int,
    guidance_weight,
    config: ml_collections.ConfigDict,
    estimator: str | None = None,
    unroll: bool = False,
) -> jax.Array:
    """Flat chunks [B, D] for the B rows of `inputs` (a PyTree whose first leaf is the observations).

    Integrates the flow (`config.denoising_steps` Euler steps, guided by `estimator`, default
    `config.estimator`, at `guidance_weight`), refines each sample by `config.grad_steps` GradStep ascent steps
    of size `config.grad_step_size` on `critic_fn`, and with `config.best_of_n` > 1 keeps the candidate of
    highest `critic_fn` among refined ones. `unroll` unrolls the sampler's loops (see guidance.sample).
    """
    batch_size = jax.tree_util.tree_leaves(inputs)[0].shape[0]
    options = dict(
        guidance_weight=guidance_weight,
        estimator=config.estimator if estimator is None else estimator,
        steps=config.denoising_steps,
        grad_steps=config.get("grad_steps", 0),
        grad_step_size=config.get("grad_step_size", 0.0),
        unroll=unroll,
    )
    if config.best_of_n > 1:
        noise = jax.random.normal(key, (batch_size, config.best_of_n, flat_action_dim))
        return guidance.best_of_n(velocity_fn, critic_fn, inputs, noise, **options)
    noise = jax.random.normal(key, (batch_size, flat_action_dim))
    return guidance.sample(velocity_fn, critic_fn, inputs, noise, **options)
