"""Many update steps per compiled call: batches are sampled on the device inside a `lax.scan`."""

from typing import Any, Callable

import jax
import jax.numpy as jnp

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
