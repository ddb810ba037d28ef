"""FLOPs of a policy decision, as every report states them: XLA's cost analysis of the compiled policy.

XLA's cost analysis counts a rolled loop's body once, whatever its trip count, so the policy is compiled
with `unroll=True` (an argument of every `agent.act`, passed down to `guidance.sample`'s `jax.lax.scan`s):
the Euler integration, best-of-N's candidates, bptt's inner integration and GradStep then count in full.
"""

import sys
import weakref

import jax


def xla_flops(compiled) -> float | None:
    """XLA's FLOP count of a compiled computation, or None where the backend gives none."""
    try:
        cost = compiled.cost_analysis()
    except Exception as error:  # Cost analysis is optional per backend; its absence is reported, not fatal.
        print(f"cost_analysis unavailable: {error}", file=sys.stderr)
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # act -> {input shapes: FLOPs}


def flops_per_decision(act, state, observations, key, *rest) -> float | None:
    """FLOPs of one decision (one action chunk for one environment) of
    `act(state, observations, key, *rest, unroll=True)`, whose `observations` and `rest` (PyTrees, None
    allowed) have a leading batch axis.

    The call is compiled on the first observation alone; `act` must be a plain (not jitted) function, as
    `unroll` is static. XLA counts a conditional at its costlier branch, so `bptt`, whose inner integration
    skips the steps already taken with `lax.cond`, is an upper bound. None where the backend gives no cost
    analysis. Cached per `act` and input shapes.
    """
    one = jax.tree_util.tree_map(lambda x: x[:1], (observations, *rest))
    shapes = str(jax.tree_util.tree_map(lambda x: (x.shape, str(x.dtype)), one))
    cache = _CACHE.setdefault(act, {})
    if shapes not in cache:
        unrolled = jax.jit(lambda s, o, k, *r: act(s, o, k, *r, unroll=True))
        cache[shapes] = xla_flops(unrolled.lower(state, one[0], key, *one[1:]).compile())
    return cache[shapes]
