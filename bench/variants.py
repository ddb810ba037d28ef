"""What limits qgf's throughput: matmul ceilings at the networks' own shapes, and config variants.

    python -m bench.variants [--rounds 5] [--out bench/results/variants.json]

Variants are timed round-robin (one call of each per round, median over rounds), so a load change on a
shared machine hits them all alike. Every variant is a qgf config (`make_agent(**overrides)`).
"""

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp

import agents
import configs
from bench.flops import guided_action_flops, update_flops
from bench.output import write_json
from bench.throughput import fake_batch

OBS_DIM, ACTION_DIM = 40, 5


def make_agent(**overrides):
    config = configs.get_config("qgf")
    for name, value in overrides.items():
        setattr(config, name, value)
    return agents.make("qgf", config), config


def update_call(agent, config, n: int):
    batch = fake_batch(0, config.batch_size, OBS_DIM, config.horizon, ACTION_DIM)
    state = jax.tree_util.tree_map(jnp.copy, jax.jit(agent.init)(jax.random.key(0), batch))

    def updates(state, batch):
        return jax.lax.scan(lambda s, _: (agent.update(s, batch)[0], None), state, None, length=n)[0]

    scanned = jax.jit(updates, donate_argnums=0)
    holder = [state]

    def call():
        holder[0] = scanned(holder[0], batch)
        jax.block_until_ready(holder[0])

    return call, n * update_flops(config, OBS_DIM, ACTION_DIM)


def python_loop_update_call(agent, config, n: int):
    """The same n updates, one jitted call each from Python: the scan's saving."""
    batch = fake_batch(0, config.batch_size, OBS_DIM, config.horizon, ACTION_DIM)
    state = jax.tree_util.tree_map(jnp.copy, jax.jit(agent.init)(jax.random.key(0), batch))
    step = jax.jit(lambda s, b: agent.update(s, b)[0], donate_argnums=0)
    holder = [state]

    def call():
        for _ in range(n):
            holder[0] = step(holder[0], batch)
        jax.block_until_ready(holder[0])

    return call, n * update_flops(config, OBS_DIM, ACTION_DIM)


def act_call(agent, config, batch_size: int):
    batch = fake_batch(0, 2, OBS_DIM, config.horizon, ACTION_DIM)
    state = jax.jit(agent.init)(jax.random.key(0), batch)
    observations = jax.random.normal(jax.random.key(1), (batch_size, OBS_DIM))
    act = jax.jit(agent.act)
    key, weight = jax.random.key(2), jnp.float32(config.guidance_weight)
    return lambda: act(state, observations, key, weight).block_until_ready(), batch_size * guided_action_flops(
        config, OBS_DIM, ACTION_DIM
    )


def dot_call(lhs_shape, rhs_shape, dimension_numbers, dtype=jnp.float32, repeats: int = 20):
    """`repeats` dependent dot_generals in one jitted loop, so that dispatch does not count."""
    lhs = jax.random.normal(jax.random.key(3), lhs_shape, dtype)
    rhs = jax.random.normal(jax.random.key(4), rhs_shape, dtype) / jnp.sqrt(rhs_shape[-2]).astype(dtype)
    out = jax.eval_shape(lambda a, b: jax.lax.dot_general(a, b, dimension_numbers), lhs, rhs)

    def chain(lhs, rhs):
        if out.shape == lhs.shape:  # Feed each product back in as the next left operand.
            return jax.lax.fori_loop(0, repeats, lambda _, a: jax.lax.dot_general(a, rhs, dimension_numbers), lhs)

        # Weight-gradient shape: accumulate xᵀ dy while dy changes, so no dot is loop-invariant.
        def body(_, carry):
            total, grad = carry
            return total + jax.lax.dot_general(lhs, grad, dimension_numbers), grad * 1.0001

        return jax.lax.fori_loop(0, repeats, body, (jnp.zeros(out.shape, dtype), rhs))[0]

    f = jax.jit(chain)
    contracted = 1
    for axis in dimension_numbers[0][0]:
        contracted *= lhs_shape[axis]
    flops = 2 * contracted * out.size * repeats
    return lambda: jax.block_until_ready(f(lhs, rhs)), flops


MATMUL = (((1,), (0,)), ((), ()))
BATCHED = (((2,), (1,)), ((0,), (0,)))
WEIGHT_GRAD = (((0,), (0,)), ((), ()))  # xᵀ · dy, contracting the batch axis.


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--updates-per-call", type=int, default=5)
    parser.add_argument("--out", default=os.path.join("bench", "results", "variants.json"))
    args = parser.parse_args(argv)
    n = args.updates_per_call

    base_agent, base_config = make_agent()
    plain_agent, plain_config = make_agent(activation="relu", actor_layer_norm=False, critic_layer_norm=False)
    candidates = {
        "dot 2048x2048x2048": dot_call((2048, 2048), (2048, 2048), MATMUL, repeats=1),
        "dot 2048^3 bf16": dot_call((2048, 2048), (2048, 2048), MATMUL, jnp.bfloat16, repeats=1),
        "dot [256,512]x[512,512]": dot_call((256, 512), (512, 512), MATMUL),
        "dot weight-grad [256,512]^T x [256,512]": dot_call((256, 512), (256, 512), WEIGHT_GRAD),
        "dot batched [2,256,512]x[2,512,512]": dot_call((2, 256, 512), (2, 512, 512), BATCHED),
        "dot [1000,512]x[512,512]": dot_call((1000, 512), (512, 512), MATMUL),
        "dot [2,1000,512]x[2,512,512] batched": dot_call((2, 1000, 512), (2, 512, 512), BATCHED),
        "dot [1,512]x[512,512]": dot_call((1, 512), (512, 512), MATMUL),
        "update (baseline, scan)": update_call(base_agent, base_config, n),
        "update (python loop of jitted steps)": python_loop_update_call(base_agent, base_config, n),
        "update (relu, no LayerNorm)": update_call(plain_agent, plain_config, n),
        "act B=1000 (baseline)": act_call(base_agent, base_config, 1000),
        "act B=1000 (relu, no LayerNorm)": act_call(plain_agent, plain_config, 1000),
    }
    for call, _ in candidates.values():  # Compile and warm up.
        call()
        call()
    times = {name: [] for name in candidates}
    for _ in range(args.rounds):
        for name, (call, _) in candidates.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    results = {}
    for name, (_, flops) in candidates.items():
        seconds = statistics.median(times[name])
        results[name] = {"seconds_median": seconds, "flops": float(flops), "gflops": flops / seconds / 1e9}
    peak = results["dot 2048x2048x2048"]["gflops"]
    width = max(map(len, results))
    print(f"{'variant'.ljust(width)}  {'ms/call':>9}  {'GFLOP/s':>8}  {'% peak':>6}")
    for name, r in results.items():
        r["fraction_of_peak"] = r["gflops"] / peak
        print(
            f"{name.ljust(width)}  {1e3 * r['seconds_median']:9.2f}  {r['gflops']:8.1f}  "
            f"{100 * r['fraction_of_peak']:6.1f}"
        )
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
