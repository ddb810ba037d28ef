"""Where the time of one update, one training chunk or one guided action goes, op by op, from a jax.profiler trace.

    python -m bench.profile                          # the update: 512×4 networks, batch 256
    python -m bench.profile --what=chunk             # updates with the on-device batch sampler (main.py's loop)
    python -m bench.profile --seeds=8                # 8 seeds vmapped in one call (per step: all 8 seeds' updates)
    python -m bench.profile --what=act --act-batch=1 # one guided action (K Euler steps)
    python -m bench.profile --quick                  # a smoke run with tiny sizes

The compiled computation is traced with `jax.profiler.trace` (the trace stays in `--trace-dir` for Perfetto or
TensorBoard), and every op of the trace is put in one class by its HLO instruction:

- `matmuls`: dots (XLA:CPU runs most as YNNPACK fusions);
- `network elementwise`: the other ops of the networks, forward and backward (LayerNorm, GELU, biases);
- `copies and transposes`: layout changes, and copies of loop-carried state;
- `sampler`: the batch sampler's gathers (`--what=chunk`);
- `optimizer, target, loss and rest`: everything else (Adam, the Polyak target, losses, random numbers).

Per class it prints the op time per step summed over threads; ops run concurrently on several cores, so the
shares (of the summed op time) say where the work is, and `wall ms per step` what a step costs.
"""

import argparse
import collections
import functools
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import agents
from agents.training import make_train_chunk
from bench.output import write_json
from bench.throughput import bench_config, fake_batch
from envs.chunks import sample_chunks, to_device_dataset

NETWORK_SCOPES = ("VelocityField", "Critic", "Value", "MLP")
CLASSES = ("matmuls", "network elementwise", "copies and transposes", "sampler", "optimizer, target, loss and rest")
RUNTIME_EVENTS = re.compile(r"^(Thunk|\$|Pjit|Common|Parse|Handle|while|conditional|call$|Slinky|end: )")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--what", choices=("update", "chunk", "act"), default="update")
    parser.add_argument("--hidden-dims", default="512,512,512,512")
    parser.add_argument("--batch-size", type=int, default=256, help="update batch")
    parser.add_argument("--act-batch", type=int, default=1, help="observations per guided action call")
    parser.add_argument("--obs-dim", type=int, default=40)
    parser.add_argument("--action-dim", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="updates per compiled call (update, chunk)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds vmapped in one call (update, chunk)")
    parser.add_argument("--calls", type=int, default=4, help="traced calls")
    parser.add_argument("--dataset-rows", type=int, default=100_000, help="rows of the chunk mode's random dataset")
    parser.add_argument("--top", type=int, default=12, help="slowest ops to list")
    parser.add_argument("--trace-dir", default=None, help="where the trace goes (default: a new temporary dir)")
    parser.add_argument("--out", default=None, help="JSON file of the breakdown")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.hidden_dims, args.batch_size, args.steps, args.calls, args.dataset_rows = "32,32", 32, 2, 2, 2000
    # bench_config reads these names.
    args.horizon = args.num_critics = args.denoising_steps = None
    args.estimator, args.best_of_n = "qgf", 1
    return args


def random_dataset(rows: int, obs_dim: int, action_dim: int, seed: int = 0) -> dict:
    """A device dataset of random transitions in episodes of 1000 steps (gathers do not depend on the values)."""
    rng = np.random.default_rng(seed)
    terminals = np.zeros(rows)
    terminals[999::1000] = 1.0
    return to_device_dataset(
        {
            "observations": rng.normal(size=(rows, obs_dim)).astype(np.float32),
            "actions": rng.uniform(-1, 1, size=(rows, action_dim)).astype(np.float32),
            "next_observations": rng.normal(size=(rows, obs_dim)).astype(np.float32),
            "terminals": terminals,
            "rewards": rng.uniform(size=rows).astype(np.float32),
        }
    )


def build(args):
    """(compiled, call, per_call): a compiled computation, a blocking call of it and the steps it does per call."""
    config = bench_config(args)
    config.batch_size = args.batch_size
    agent = agents.make("qgf", config)
    batch = fake_batch(0, config.batch_size, args.obs_dim, config.horizon, args.action_dim)
    state = jax.tree_util.tree_map(jnp.copy, jax.jit(agent.init)(jax.random.key(0), batch))
    if args.what == "act":
        observations = jnp.asarray(np.random.default_rng(1).normal(size=(args.act_batch, args.obs_dim)), jnp.float32)
        key, weight = jax.random.key(2), jnp.float32(config.guidance_weight)
        compiled = jax.jit(agent.act).lower(state, observations, key, weight).compile()
        return compiled, lambda: compiled(state, observations, key, weight).block_until_ready(), 1
    init_keys = jax.random.split(jax.random.key(0), args.seeds)
    holder = {"state": jax.tree_util.tree_map(jnp.copy, jax.jit(jax.vmap(agent.init, (0, None)))(init_keys, batch))}
    if args.what == "chunk":
        dataset = random_dataset(args.dataset_rows, args.obs_dim, args.action_dim)
        sample = functools.partial(
            sample_chunks, batch_size=config.batch_size, horizon=config.horizon, discount=config.discount
        )
    else:
        dataset, sample = None, lambda dataset, key: batch
    chunk = make_train_chunk(agent, sample, args.steps)
    keys = jax.random.split(jax.random.key(3), args.seeds)
    compiled = chunk.lower(holder["state"], dataset, keys).compile()

    def call():
        holder["state"], metrics = compiled(holder["state"], dataset, keys)
        jax.block_until_ready((holder["state"], metrics))

    return compiled, call, args.steps


def hlo_instructions(hlo_text: str) -> dict:
    """Instruction name -> (opcode, op_name metadata, whether it is a YNNPACK/XNNPACK fusion)."""
    found = {}
    for line in hlo_text.splitlines():
        match = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = \S+ ([\w\-]+)\(", line)
        if match:
            op_name = re.search(r'op_name="([^"]*)"', line)
            library = '"kind":"__ynn_fusion"' in line or '"kind":"__xnn_fusion"' in line
            found[match.group(1)] = (match.group(2), op_name.group(1) if op_name else "", library)
    return found


def classify(name: str, instructions: dict) -> str:
    opcode, op_name, library = instructions.get(name, ("", "", False))
    if library or opcode in ("dot", "custom-call") or name.startswith(("dot", "ynn_fusion", "xnn_fusion")):
        return "matmuls"
    if opcode in ("copy", "transpose") or name.startswith(("copy", "transpose")):
        return "copies and transposes"
    if "sample" in op_name:
        return "sampler"
    if any(scope in op_name for scope in NETWORK_SCOPES):
        return "network elementwise"
    return "optimizer, target, loss and rest"


def op_durations(trace_dir: str) -> collections.Counter:
    """Summed duration (µs) per op name of the newest Perfetto trace under `trace_dir`."""
    files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True), key=os.path.getmtime)
    if not files:
        raise FileNotFoundError(f"jax.profiler wrote no *.trace.json.gz under {trace_dir}")
    with gzip.open(files[-1]) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    totals = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and not RUNTIME_EVENTS.match(event.get("name", "")):
            totals[event["name"]] += event.get("dur", 0)
    return totals


def main(argv=None) -> dict:
    args = parse_args(argv)
    compiled, call, per_call = build(args)
    instructions = hlo_instructions(compiled.as_text())
    for _ in range(2):
        call()
    start = time.perf_counter()
    for _ in range(args.calls):
        call()
    wall_ms = 1e3 * (time.perf_counter() - start) / (args.calls * per_call)
    trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="qgf-profile-")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(args.calls):
            call()
    steps = args.calls * per_call
    durations = op_durations(trace_dir)
    per_class = collections.Counter({c: 0.0 for c in CLASSES})
    for name, micros in durations.items():
        per_class[classify(name, instructions)] += micros / 1e3 / steps
    total = sum(per_class.values())
    unit = "action call" if args.what == "act" else "update"
    result = {
        "what": args.what,
        "hidden_dims": args.hidden_dims,
        "batch": args.act_batch if args.what == "act" else args.batch_size,
        "seeds": 1 if args.what == "act" else args.seeds,
        "wall_ms_per_step": wall_ms,
        "op_ms_per_step": total,
        "classes_ms_per_step": dict(per_class),
        "slowest_ops_ms_per_step": {name: micros / 1e3 / steps for name, micros in durations.most_common(args.top)},
        "trace_dir": trace_dir,
    }
    print(
        f"{args.what} ({args.hidden_dims}, batch {result['batch']}, {result['seeds']} seed(s)): "
        f"wall {wall_ms:.3f} ms per {unit} untraced; op time summed over threads {total:.3f} ms per {unit}"
    )
    for name in CLASSES:
        print(f"  {per_class[name]:9.3f} ms  {100 * per_class[name] / max(total, 1e-12):5.1f} %  {name}")
    print(f"slowest ops (ms per {unit}):")
    for name, ms in result["slowest_ops_ms_per_step"].items():
        print(f"  {ms:9.3f}  {name}  [{classify(name, instructions)}]")
    print(f"trace: {trace_dir}")
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
