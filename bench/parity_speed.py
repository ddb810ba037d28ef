"""The official code's speed beside ours at the paper's size, on one machine (issue 27).

    python -m bench.parity_speed --official=<checkout of zhouzypaul/qgf@bc44a67> [--official_python=<python>]
        [--out=bench/results/parity_speed.json] [--rounds=2] [--quick]

Both codes name a top-level `agents` package, so each side runs in a process of its own
(`--side=ours|official`), the sides taking turns (ours, official, ours, official, ...) so that a drift of the
machine shows up as a difference between rounds rather than between codes. The official side imports only the
checkout (with `distrax`, which qgf does not use, stubbed where it is missing), run by `--official_python`
(default: this one; under this project's pins that is the official code on a current jax). Figures per side, at
the paper's size (4×1024 networks, batch 1024, two critics, H = 5, K = 10) with cube-double's dimensions (obs 40,
action 5), float32 at each code's default matmul precision:

- `update`: one update per jitted call on a batch already on the device (the call each main.py makes per step);
- `train_step`: what each main.py's loop does per update. Official: `Dataset.sample_sequence` on the host from a
  random 1M-row dataset, then `agent.update`. Ours: `make_train_chunk`, the batch drawn on the device and
  `--updates_per_call` updates scanned in one call;
- `act/B`: one guided `sample_actions` / `act` call (w = 0.1) on B observations.

Every figure is the median of repeated blocking calls after a warm-up (compilation excluded, reported apart).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from bench.output import write_json

DEFAULT_OUT = os.path.join("bench", "results", "parity_speed.json")
OBS_DIM, ACTION_DIM, HORIZON, HIDDEN, BATCH = 40, 5, 5, (1024,) * 4, 1024
QUICK = dict(hidden=(32, 32), batch=32, rows=20_000)
WEIGHT = 0.1


def seconds_per_call(call, repeats: int, min_seconds: float) -> float:
    """Median seconds of a blocking `call()` after two warm-up calls."""
    for _ in range(2):
        call()
    times, start = [], time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def random_rows(rows: int, seed: int = 0) -> dict:
    """Random transitions in episodes of 1000 steps, as numpy float32 (gathers do not depend on the values)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    terminals = np.zeros(rows, np.float32)
    terminals[999::1000] = 1.0
    return {
        "observations": rng.normal(size=(rows, OBS_DIM)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(rows, ACTION_DIM)).astype(np.float32),
        "next_observations": rng.normal(size=(rows, OBS_DIM)).astype(np.float32),
        "rewards": rng.uniform(size=rows).astype(np.float32),
        "terminals": terminals,
        "masks": 1.0 - terminals,
    }


def observations(batch: int):
    import numpy as np

    return np.random.default_rng(batch).normal(size=(batch, OBS_DIM)).astype(np.float32)


def official_side(checkout: str, size: dict, args) -> dict:
    """The official qgf agent's figures (its own `update` and `sample_actions`, its own host sampler)."""
    import importlib
    import types

    sys.path.insert(0, checkout)
    import jax
    import numpy as np

    try:
        importlib.import_module("distrax")
    except ImportError:  # Only the official Gaussian actors use distrax; qgf does not.
        stub = types.ModuleType("distrax")
        stub.Transformed = object
        sys.modules["distrax"] = stub
    qgf = importlib.import_module("agents.qgf")
    datasets = importlib.import_module("utils.datasets")

    config = qgf.get_config()
    config.actor_hidden_dims = size["hidden"]
    config.value_network_kwargs.hidden_dims = size["hidden"]
    config.batch_size = size["batch"]
    config.horizon_length, config.action_chunking = HORIZON, True
    agent = qgf.QGFAgent.create(0, np.zeros((1, OBS_DIM), np.float32), np.zeros((1, ACTION_DIM), np.float32), config)
    dataset = datasets.Dataset.create(**random_rows(size["rows"]))

    def sampled():
        return dataset.sample_sequence(config.batch_size, sequence_length=HORIZON, discount=config.discount)

    fixed = jax.device_put(sampled())
    holder = {"agent": agent}
    figures = {}

    start = time.perf_counter()
    jax.block_until_ready(holder["agent"].update(fixed))
    compile_s = time.perf_counter() - start

    def update(batch_fn):
        def call():
            holder["agent"], info = holder["agent"].update(batch_fn())
            jax.block_until_ready(info)

        return call

    figures["update"] = {"ms": 1e3 * seconds_per_call(update(lambda: fixed), args.repeats, args.min_seconds),
                         "compile_s": compile_s}  # fmt: skip
    figures["train_step"] = {"ms": 1e3 * seconds_per_call(update(sampled), args.repeats, args.min_seconds)}
    for b in args.act_batches:
        obs = jax.device_put(observations(b))
        key = jax.random.PRNGKey(1)
        start = time.perf_counter()
        jax.block_until_ready(holder["agent"].sample_actions(obs, seed=key, guidance_weight=WEIGHT))
        compile_s = time.perf_counter() - start
        ms = 1e3 * seconds_per_call(
            lambda obs=obs, key=key: jax.block_until_ready(
                holder["agent"].sample_actions(obs, seed=key, guidance_weight=WEIGHT)
            ),
            args.repeats,
            args.min_seconds,
        )
        figures[f"act/{b}"] = {"ms": ms, "compile_s": compile_s}
    return figures


def our_side(size: dict, args) -> dict:
    """Our qgf agent's figures (`agent.update`, main.py's training chunk, `agent.act`)."""
    import functools

    import jax
    import jax.numpy as jnp

    import agents
    import configs
    from agents.training import make_train_chunk
    from envs.chunks import sample_chunks, to_device_dataset

    config = configs.get_config("qgf", "paper")
    config.actor_hidden_dims = config.critic_hidden_dims = size["hidden"]
    config.batch_size = size["batch"]
    agent = agents.make("qgf", config)
    dataset = to_device_dataset(random_rows(size["rows"]))
    sample = functools.partial(sample_chunks, batch_size=config.batch_size, horizon=config.horizon,
                               discount=config.discount)  # fmt: skip
    fixed = jax.jit(sample)(dataset, jax.random.key(2))
    state = jax.jit(agent.init)(jax.random.key(0), fixed)
    figures = {}

    update = jax.jit(agent.update, donate_argnums=0)
    holder = {"state": jax.tree_util.tree_map(jnp.copy, state)}
    start = time.perf_counter()
    holder["state"], info = update(holder["state"], fixed)
    jax.block_until_ready(info)
    compile_s = time.perf_counter() - start

    def one_update():
        holder["state"], info = update(holder["state"], fixed)
        jax.block_until_ready(info)

    figures["update"] = {"ms": 1e3 * seconds_per_call(one_update, args.repeats, args.min_seconds),
                         "compile_s": compile_s}  # fmt: skip

    n = args.updates_per_call
    chunk = make_train_chunk(agent, sample, n, seed_batching="vmap")
    seeded = {"states": jax.tree_util.tree_map(lambda x: jnp.copy(x)[None], holder["state"])}
    keys = jax.random.split(jax.random.key(3), 1)
    start = time.perf_counter()
    seeded["states"], metrics = chunk(seeded["states"], dataset, keys)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start

    def one_chunk():
        seeded["states"], metrics = chunk(seeded["states"], dataset, keys)
        jax.block_until_ready(metrics)

    per_chunk = seconds_per_call(one_chunk, max(3, args.repeats // n), args.min_seconds)
    figures["train_step"] = {"ms": 1e3 * per_chunk / n, "compile_s": compile_s, "updates_per_call": n}

    act = jax.jit(agent.act)
    weight = jnp.float32(WEIGHT)
    for b in args.act_batches:
        obs = jnp.asarray(observations(b))
        key = jax.random.key(1)
        start = time.perf_counter()
        jax.block_until_ready(act(state, obs, key, weight))
        compile_s = time.perf_counter() - start
        ms = 1e3 * seconds_per_call(
            lambda obs=obs, key=key: jax.block_until_ready(act(state, obs, key, weight)), args.repeats, args.min_seconds
        )
        figures[f"act/{b}"] = {"ms": ms, "compile_s": compile_s}
    return figures


def side_main(args) -> None:
    import jax

    size = dict(QUICK) if args.quick else dict(hidden=HIDDEN, batch=BATCH, rows=1_000_000)
    figures = official_side(args.official, size, args) if args.side == "official" else our_side(size, args)
    device = jax.devices()[0]
    result = {
        "side": args.side,
        "jax": jax.__version__,
        "device": device.device_kind,
        "platform": device.platform,
        "size": {k: list(v) if isinstance(v, tuple) else v for k, v in size.items()},
        "figures": figures,
    }
    print("RESULT " + json.dumps(result), flush=True)


def run_side(python: str, side: str, args) -> dict:
    command = [
        *(python, "-m", "bench.parity_speed", f"--side={side}", f"--official={args.official}"),
        *(f"--repeats={args.repeats}", f"--min_seconds={args.min_seconds}"),
        f"--updates_per_call={args.updates_per_call}",
        "--act_batches=" + ",".join(map(str, args.act_batches)),
    ] + (["--quick"] if args.quick else [])
    # The project root on the path, so that `-m bench.parity_speed` imports under any python; the official side
    # then puts the checkout first, and never imports this project's packages.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise SystemExit(f"error: the {side} side failed (exit {done.returncode}):\n{tail}")
    return json.loads(lines[-1][len("RESULT ") :])


def summary(rounds: list[dict]) -> dict:
    """Per figure: each side's median over rounds (ms) and official / ours."""
    names = rounds[0]["ours"]["figures"].keys()
    out = {}
    for name in names:
        ours = statistics.median(r["ours"]["figures"][name]["ms"] for r in rounds)
        official = statistics.median(r["official"]["figures"][name]["ms"] for r in rounds)
        out[name] = {"ours_ms": ours, "official_ms": official, "official_over_ours": official / ours}
    return out


def format_table(result: dict) -> str:
    lines = [f"{'figure':<12} {'ours ms':>10} {'official ms':>12} {'official/ours':>14}"]
    for name, row in result["summary"].items():
        lines.append(
            f"{name:<12} {row['ours_ms']:>10.3f} {row['official_ms']:>12.3f} {row['official_over_ours']:>14.2f}"
        )
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", default="", help="a checkout of zhouzypaul/qgf@bc44a67")
    parser.add_argument("--official_python", default=sys.executable, help="python that runs the official side")
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--rounds", type=int, default=2, help="turns of (ours, official)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--min_seconds", type=float, default=2.0)
    parser.add_argument("--updates_per_call", type=int, default=100, help="our training chunk's scanned updates")
    parser.add_argument("--act_batches", default="1,1000")
    parser.add_argument("--quick", action="store_true", help="tiny networks and dataset: a smoke run in seconds")
    parser.add_argument("--side", choices=["ours", "official"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.official = os.path.abspath(os.path.expanduser(args.official))
    args.act_batches = [int(x) for x in args.act_batches.split(",") if x]
    if args.side != "ours" and not os.path.isfile(os.path.join(args.official, "agents", "qgf.py")):
        parser.error(f"--official={args.official} holds no agents/qgf.py: give a checkout of zhouzypaul/qgf@bc44a67")
    return args


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if args.side:
        side_main(args)
        return None
    rounds = []
    for i in range(args.rounds):
        rounds.append({"ours": run_side(sys.executable, "ours", args),
                       "official": run_side(args.official_python, "official", args)})  # fmt: skip
        print(f"round {i + 1}: " + json.dumps({s: r["figures"] for s, r in rounds[-1].items()}), flush=True)
    result = {
        "command": "python -m bench.parity_speed " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": rounds[0]["ours"]["device"],
        "jax": {"ours": rounds[0]["ours"]["jax"], "official": rounds[0]["official"]["jax"]},
        "rounds": rounds,
        "summary": summary(rounds),
    }
    write_json(args.out, result)
    print(format_table(result))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
