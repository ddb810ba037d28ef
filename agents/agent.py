"""The `Agent` bundle: pure functions closed over one agent's config."""

from collections.abc import Callable
from typing import Any, NamedTuple

Batch = dict[str, Any]


class Agent(NamedTuple):
    """Pure functions of one agent; the state they pass around is a PyTree.

    init(key, example_batch) -> state
    update(state, batch) -> (state, metrics)
    act(state, observations, key, guidance_weight=None, goals=None, unroll=False) -> actions [B, H, A]
        (`unroll`, static: unroll the sampler's loops, for FLOP counting; see guidance.sample)
    validate(state, batch) -> metrics   (the training losses, without gradients or state change)
    """

    init: Callable[..., Any]
    update: Callable[..., tuple[Any, dict]]
    act: Callable[..., Any]
    validate: Callable[..., dict]


def flat_chunk(chunk, horizon: int):
    """The action chunks [B, H, A] of an example batch flattened to [B, H·A], after checking H."""
    if chunk.ndim != 3 or chunk.shape[1] != horizon:
        raise ValueError(f"expected actions [B, H={horizon}, A], got shape {chunk.shape}")
    return chunk.reshape(chunk.shape[0], -1)
