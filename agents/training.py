"""Many update steps per compiled call: batches are sampled on the device inside a `lax.scan`."""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from agents.agent import Agent


def make_train_chunk(agent: Agent, sample_batch: Callable[[Any, jax.Array], dict], steps_per_call: int):
    """Returns jitted `train_chunk(state, dataset, key) -> (state, mean metrics over the chunk)`.

    `sample_batch(dataset, key) -> batch` must be pure and jit-able. The incoming state's buffers are
    donated, so the caller must use the returned state only.
    """

    def train_chunk(state, dataset, key):
        def step(state, key):
            return agent.update(state, sample_batch(dataset, key))

        state, metrics = jax.lax.scan(step, state, jax.random.split(key, steps_per_call))
        return state, jax.tree_util.tree_map(jnp.mean, metrics)

    return jax.jit(train_chunk, donate_argnums=0)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the state that produced it must not be saved."""


def check_finite(metrics: dict, first_step: int, last_step: int, last_saved_step: int | None) -> None:
    """Raises NonFiniteLossError naming the losses and steps when any metric of a chunk is not finite."""
    bad = sorted(name for name, value in metrics.items() if not np.all(np.isfinite(value)))
    if bad:
        kept = f"the checkpoint of step {last_saved_step} is kept" if last_saved_step else "no checkpoint was saved"
        raise NonFiniteLossError(
            f"non-finite {', '.join(bad)} in training steps {first_step + 1}..{last_step}; stopped before saving "
            f"({kept}); lower --agent.lr or check the dataset for NaNs"
        )
