"""What an accelerator gives qgf, in one command of a few minutes: matmul ceilings, training and sampling rates.

    python -m bench.accelerator                 # the paper preset (4×1024 networks, batch 1024), on a GPU or TPU
    python -m bench.accelerator --quick         # tiny sizes, seconds on a CPU (what CI runs)

For each compute dtype (`--compute-dtypes`, default float32 and bfloat16, see networks/mixed_precision.py):

- `update`: update steps/s of `--updates-per-call` updates scanned in one jitted call on a fixed batch, for 1
  seed and for `--num-seeds` seeds vmapped in the same call (seed-steps/s = steps/s × seeds);
- `chunk`: main.py's training chunk (`agents.training.make_train_chunk`, batches drawn by the on-device
  sampler `envs.chunks.sample_chunks` from a random dataset of `--dataset-rows` transitions), 1 and N seeds;
- `act`: guided actions (K Euler steps with the critic's gradient) at batch 1 and 1000, and one evaluation
  sweep's decision: N seeds × 9 guidance weights × 30 episodes in one vmapped call;

and before them the device's matmul ceilings: an n×n×n product in float32 (precision HIGHEST), float32 at
the default precision (which may use TF32 on NVIDIA GPUs) and bfloat16 with float32 accumulation. Every figure
keeps its compile time (lowering + XLA compilation) beside its rate. The JSON is rewritten after every figure, so
a run stopped by a time limit leaves what it measured; figures not reached within `--budget-minutes` are skipped
and listed as such.

Imports only what the GPU image used by this project's device checks has (jax, flax, optax, numpy, absl,
PyYAML) plus ml_collections, which travels as a wheel (bench/README.md); `tests/test_bench.py` checks that no
environment, logging or launcher package (ogbench, mujoco, gymnasium, tensorboardX, submitit, wandb) is imported.
"""

import argparse
import functools
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import agents
import configs
from agents.training import make_train_chunk, over_seeds
from bench.output import write_json
from bench.profile import random_dataset
from bench.throughput import QUICK_COMPILER_OPTIONS, fake_batch, time_calls
from envs.chunks import sample_chunks

DEFAULT_OUT = os.path.join("bench", "results", "accelerator.json")
SWEEP_WEIGHTS = configs.PAPER_GUIDANCE_WEIGHTS  # The paper's 9 positive guidance weights.


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT, help="where the JSON goes")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a CPU smoke run of seconds")
    parser.add_argument("--preset", default="paper", help="configs preset of the qgf agent")
    parser.add_argument("--compute-dtypes", default="float32,bfloat16", help="comma separated")
    parser.add_argument("--num-seeds", type=int, default=10, help="seeds vmapped in one call")
    parser.add_argument("--obs-dim", type=int, default=40)
    parser.add_argument("--action-dim", type=int, default=5)
    parser.add_argument("--updates-per-call", type=int, default=50, help="scanned update steps per timed call")
    parser.add_argument("--dataset-rows", type=int, default=1_000_000, help="rows of the chunk's random dataset")
    parser.add_argument("--act-batches", default="1,1000", help="observations per guided act call")
    parser.add_argument("--sweep-episodes", type=int, default=30, help="episodes per weight of the sweep decision")
    parser.add_argument("--matmul-size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per figure (at least)")
    parser.add_argument("--min-seconds", type=float, default=0.5, help="keep repeating a figure this long")
    parser.add_argument("--budget-minutes", type=float, default=7.0, help="skip the figures not started by then")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_seeds, args.updates_per_call, args.dataset_rows = 2, 2, 2000
        args.act_batches, args.sweep_episodes, args.matmul_size = "1,8", 2, 128
        args.repeats, args.min_seconds = 2, 0.0
    args.compute_dtypes = args.compute_dtypes.split(",")
    for dtype in args.compute_dtypes:
        if dtype not in configs.COMPUTE_DTYPES:
            choices = list(configs.COMPUTE_DTYPES)
            raise configs.ConfigError(f"--compute-dtypes: unknown {dtype!r}; choose from {choices}")
    # A smoke run is all compilation: skip XLA:CPU's expensive passes (its figures are present, not representative).
    args.compiler_options = QUICK_COMPILER_OPTIONS if args.quick else None
    return args


def agent_config(args, compute_dtype: str):
    config = configs.get_config("qgf", args.preset)
    if args.quick:
        config.actor_hidden_dims = config.critic_hidden_dims = (32, 32)
        config.batch_size = 32
    config.compute_dtype = compute_dtype
    return config


def compiled(fn, args, *example):
    """(compiled fn, compile seconds: lowering and XLA compilation)."""
    start = time.perf_counter()
    result = fn.lower(*example).compile(args.compiler_options)
    return result, time.perf_counter() - start


def timed(call, args) -> float:
    """Median seconds of one blocking `call()`, warm-up excluded."""
    return statistics.median(time_calls(call, args.repeats, args.min_seconds, warmup=1))


@functools.cache
def _jitted_init(agent):
    """One jitted seed-batched init per agent, so that figures of the same agent share its compilations."""
    return jax.jit(jax.vmap(agent.init, (0, None)))


def seed_states(agent, batch, num_seeds: int):
    """`num_seeds` independent initial states stacked on a leading axis, every leaf its own buffer (donation)."""
    states = _jitted_init(agent)(jax.random.split(jax.random.key(0), num_seeds), batch)
    return jax.tree_util.tree_map(jnp.copy, states)


def measure_matmuls(args) -> dict:
    n = args.matmul_size
    a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(2), (n, n), jnp.float32)
    variants = {
        "float32_highest": lambda a, b: jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST),
        "float32_default": lambda a, b: jnp.dot(a, b),  # May use TF32 on NVIDIA GPUs: compare with HIGHEST.
        "bfloat16_f32_accumulation": lambda a, b: jnp.dot(
            a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), preferred_element_type=jnp.float32
        ),
    }
    figures = {"n": n}
    for name, fn in variants.items():
        call, compile_s = compiled(jax.jit(fn), args, a, b)
        seconds = timed(lambda call=call: call(a, b).block_until_ready(), args)
        figures[name] = {"tflops": 2.0 * n**3 / seconds / 1e12, "ms": 1e3 * seconds, "compile_s": compile_s}
    return figures


def measure_update(agent, config, args, num_seeds: int) -> dict:
    batch = fake_batch(0, config.batch_size, args.obs_dim, config.horizon, args.action_dim)
    n = args.updates_per_call

    def updates(state, batch):
        return jax.lax.scan(lambda s, _: agent.update(s, batch), state, None, length=n)[0]

    holder = {"state": seed_states(agent, batch, num_seeds)}
    call, compile_s = compiled(
        jax.jit(over_seeds(updates, in_axes=(0, None)), donate_argnums=0), args, holder["state"], batch
    )

    def run():
        holder["state"] = call(holder["state"], batch)
        jax.block_until_ready(holder["state"])

    steps_per_s = n / timed(run, args)
    return {"seeds": num_seeds, "steps_per_s": steps_per_s, "seed_steps_per_s": steps_per_s * num_seeds,
            "compile_s": compile_s}  # fmt: skip


def measure_chunk(agent, config, args, dataset, num_seeds: int) -> dict:
    sample = functools.partial(
        sample_chunks, batch_size=config.batch_size, horizon=config.horizon, discount=config.discount
    )
    chunk = make_train_chunk(agent, sample, args.updates_per_call, seed_batching="vmap")
    batch = fake_batch(0, config.batch_size, args.obs_dim, config.horizon, args.action_dim)
    holder = {"state": seed_states(agent, batch, num_seeds)}
    keys = jax.random.split(jax.random.key(3), num_seeds)
    call, compile_s = compiled(chunk, args, holder["state"], dataset, keys)

    def run():
        holder["state"], metrics = call(holder["state"], dataset, keys)
        jax.block_until_ready((holder["state"], metrics))

    steps_per_s = args.updates_per_call / timed(run, args)
    return {"seeds": num_seeds, "steps_per_s": steps_per_s, "seed_steps_per_s": steps_per_s * num_seeds,
            "compile_s": compile_s}  # fmt: skip


def measure_act(agent, config, args, num_seeds: int, batch_size: int, sweep: bool) -> dict:
    """One guided-action call: `batch_size` observations of one seed, or (sweep) every seed's whole sweep
    decision, `batch_size` = weights × episodes observations per seed with one weight per observation."""
    batch = fake_batch(0, config.batch_size, args.obs_dim, config.horizon, args.action_dim)
    rng = np.random.default_rng(batch_size)
    key = jax.random.key(4)
    if sweep:
        states = seed_states(agent, batch, num_seeds)
        observations = jnp.asarray(rng.normal(size=(num_seeds, batch_size, args.obs_dim)), jnp.float32)
        weights = jnp.repeat(jnp.asarray(SWEEP_WEIGHTS, jnp.float32), args.sweep_episodes)
        keys = jax.random.split(key, num_seeds)
        fn = jax.jit(over_seeds(agent.act, in_axes=(0, 0, 0, None)))
        example = (states, observations, keys, weights)
    else:
        states = seed_states(agent, batch, 1)
        states = jax.tree_util.tree_map(lambda x: x[0], states)
        observations = jnp.asarray(rng.normal(size=(batch_size, args.obs_dim)), jnp.float32)
        fn = jax.jit(agent.act)
        example = (states, observations, key, jnp.float32(config.guidance_weight))
    call, compile_s = compiled(fn, args, *example)
    seconds = timed(lambda: call(*example).block_until_ready(), args)
    actions = batch_size * (num_seeds if sweep else 1)
    return {"observations": actions, "latency_ms": 1e3 * seconds, "actions_per_s": actions / seconds,
            "compile_s": compile_s}  # fmt: skip


def machine() -> dict:
    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "memory_bytes": (stats or {}).get("bytes_limit"),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "host": platform.platform(),
        "cpu_count": os.cpu_count(),
    }


def figure_plan(args, dataset_fn):
    """(name, thunk) of every figure, most wanted first."""
    seeds = args.num_seeds
    plan = []
    for dtype in args.compute_dtypes:
        config = agent_config(args, dtype)
        agent = agents.make("qgf", config)
        plan += [
            (f"{dtype}/update/1", functools.partial(measure_update, agent, config, args, 1)),
            (f"{dtype}/update/{seeds}", functools.partial(measure_update, agent, config, args, seeds)),
            (f"{dtype}/chunk/1", lambda a=agent, c=config: measure_chunk(a, c, args, dataset_fn(), 1)),
            (f"{dtype}/chunk/{seeds}", lambda a=agent, c=config: measure_chunk(a, c, args, dataset_fn(), seeds)),
        ]
        for b in (int(x) for x in args.act_batches.split(",")):
            plan.append((f"{dtype}/act/{b}", functools.partial(measure_act, agent, config, args, 1, b, False)))
        sweep_batch = len(SWEEP_WEIGHTS) * args.sweep_episodes
        plan.append(
            (f"{dtype}/sweep/{seeds}x{len(SWEEP_WEIGHTS)}x{args.sweep_episodes}",
             functools.partial(measure_act, agent, config, args, seeds, sweep_batch, True))
        )  # fmt: skip
    return plan


def format_table(results: dict) -> str:
    lines = [f"{results['machine']['device_kind']} ({results['machine']['platform']}), jax {results['machine']['jax']}"]
    matmul = results.get("matmul", {})
    for name, figure in matmul.items():
        if isinstance(figure, dict):
            lines.append(f"  matmul {matmul['n']}³ {name:<28} {figure['tflops']:10.2f} TFLOP/s")
    for name, figure in results["figures"].items():
        if "skipped" in figure:
            lines.append(f"  {name:<36} skipped ({figure['skipped']})")
        elif "steps_per_s" in figure:
            rate = f"{figure['steps_per_s']:10.1f} steps/s ({figure['seed_steps_per_s']:.1f} seed-steps/s)"
            lines.append(f"  {name:<36} {rate}   compile {figure['compile_s']:.1f} s")
        else:
            rate = f"{figure['actions_per_s']:10.1f} actions/s, {figure['latency_ms']:.2f} ms/call"
            lines.append(f"  {name:<36} {rate}   compile {figure['compile_s']:.1f} s")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    results = {
        "command": "python -m bench.accelerator " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "compiler_options")},
        "matmul": measure_matmuls(args),
        "figures": {},
    }
    write_json(args.out, results)
    dataset = {}

    def dataset_fn():  # Made once, on first use (a million rows take a few seconds on the host).
        if not dataset:
            dataset.update(random_dataset(args.dataset_rows, args.obs_dim, args.action_dim))
        return dataset

    for name, measure in figure_plan(args, dataset_fn):
        if time.perf_counter() - start > 60 * args.budget_minutes:
            results["figures"][name] = {"skipped": f"past --budget-minutes={args.budget_minutes}"}
        else:
            results["figures"][name] = measure()
            print(name, results["figures"][name], flush=True)
        write_json(args.out, results)
    results["total_s"] = time.perf_counter() - start
    write_json(args.out, results)
    print(format_table(results))
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
