"""Many update steps per compiled call, for a batch of independent seeds.

Batches are sampled on the device inside a `lax.scan`; the whole chunk runs over a leading seed axis of
the state and the keys (each seed its own initialisation and data order; the dataset is shared), so N
seeds train in one compiled call. The seeds are either batched (`jax.vmap`: every matmul gains a seed
axis, which pays on accelerators and across devices) or mapped (`jax.lax.map`: one seed after another
inside the call, each running the single-seed program; on one CPU device this was faster, see over_seeds).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from agents.agent import Agent


def make_train_chunk(
    agent: Agent,
    sample_batch: Callable[[Any, jax.Array], dict],
    steps_per_call: int,
    constrain_batch: Callable[[dict], dict] = lambda batch: batch,
    seed_batching: str = "vmap",
):
    """Returns jitted `train_chunk(states [S], dataset, keys [S]) -> (states, mean metrics [S] over the chunk)`.

    `sample_batch(dataset, key) -> batch` must be pure and jit-able; `constrain_batch` may place each batch
    (e.g. shard it over devices, see runner.devices). `seed_batching` is "vmap" or "map" (see over_seeds).
    The incoming states' buffers are donated, so the caller must use the returned states only.
    """

    def train_chunk(state, dataset, key):
        def step(state, key):
            return agent.update(state, constrain_batch(sample_batch(dataset, key)))

        state, metrics = jax.lax.scan(step, state, jax.random.split(key, steps_per_call))
        return state, jax.tree_util.tree_map(jnp.mean, metrics)

    return jax.jit(over_seeds(train_chunk, in_axes=(0, None, 0), batching=seed_batching), donate_argnums=0)


SEED_BATCHINGS = ("vmap", "map")


def over_seeds(fn: Callable, in_axes=0, batching: str = "vmap") -> Callable:
    """`fn` over a leading seed axis of the arguments whose `in_axes` entry is 0 (None: shared by all seeds).

    `batching="vmap"` is `jax.vmap(fn, in_axes)`; `"map"` is `jax.lax.map` over the seeds, each running
    the unbatched program. On a 2-core CPU the vmapped update was slower than the unbatched one (8 seeds at
    256×3, batch 256: 39.5 seed·steps/s against 64.4 for one seed; `python -m bench.profile --seeds=8`
    showed XLA fusing a critic's LayerNorm/GELU chain with its dots into one slow library call, and slower
    batched dots). A single seed always calls `fn` on its slice, which avoids a size-1 batch axis (38
    against 53 update steps/s at 256×3 when vmapped).
    """
    if batching not in SEED_BATCHINGS:
        raise ValueError(f"unknown seed batching {batching!r}; choose one of {SEED_BATCHINGS}")
    axes_of = lambda args: in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)  # noqa: E731

    def mapped(*args):
        axes = axes_of(args)
        seeded = [arg for arg, axis in zip(args, axes, strict=True) if axis is not None]

        def one_seed(sliced):
            parts = iter(sliced)
            return fn(*[arg if axis is None else next(parts) for arg, axis in zip(args, axes, strict=True)])

        return jax.lax.map(one_seed, seeded)

    batched = jax.vmap(fn, in_axes=in_axes) if batching == "vmap" else mapped

    def call(*args):
        axes = axes_of(args)
        sizes = {
            x.shape[axis]
            for arg, axis in zip(args, axes, strict=True)
            if axis is not None
            for x in jax.tree_util.tree_leaves(arg)
        }
        if sizes != {1}:
            return batched(*args)
        sliced = [
            arg if axis is None else jax.tree_util.tree_map(lambda x: x[0], arg)
            for arg, axis in zip(args, axes, strict=True)
        ]
        return jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], fn(*sliced))

    return call


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the state that produced it must not be saved."""


def check_finite(metrics: dict, first_step: int, last_step: int, last_saved_step: int | None, seeds=None) -> None:
    """Raises NonFiniteLossError naming the losses, steps (and seeds, for metrics [S]) when any metric of a
    chunk is not finite."""
    bad = sorted(name for name, value in metrics.items() if not np.all(np.isfinite(value)))
    if bad:
        kept = f"the checkpoint of step {last_saved_step} is kept" if last_saved_step else "no checkpoint was saved"
        where = ""
        if seeds is not None and len(seeds) > 1:
            bad_seeds = [s for i, s in enumerate(seeds) if not all(np.isfinite(metrics[n][i]) for n in bad)]
            where = f" of seed(s) {', '.join(map(str, bad_seeds))}"
        raise NonFiniteLossError(
            f"non-finite {', '.join(bad)}{where} in training steps {first_step + 1}..{last_step}; stopped before "
            f"saving ({kept}); lower --agent.lr or check the dataset for NaNs"
        )
