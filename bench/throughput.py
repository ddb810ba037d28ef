"""Throughput of the qgf agent on this machine: update steps/s, guided actions/s, and their share of matmul peak.

    python -m bench.throughput                 # the default config (512×4 networks, batch 256)
    python -m bench.throughput --quick         # a few-second smoke run with tiny sizes

Every figure is the median over repeats of a jitted call, compile and warm-up excluded. Updates run as
one jitted `lax.scan` of `--updates-per-call` steps on a fixed device batch; actions are one jitted
`agent.act` per call. FLOPs per update / per action come from `bench.flops` (Dense layers only) and,
beside them, from XLA's `cost_analysis` of the compiled computation (everything, elementwise included).
The peak is a jitted float32 `jnp.dot` of two square matrices measured in the same run.
"""

import argparse
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
from bench.flops import forward_flops, guided_action_flops, update_flops
from bench.output import write_json
from runner.flops import flops_per_decision, xla_flops

DEFAULT_OUT = os.path.join("bench", "results", "throughput.json")
QUICK_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT, help="where the JSON goes")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run of a few seconds")
    parser.add_argument("--obs-dim", type=int, default=40)
    parser.add_argument("--action-dim", type=int, default=5)
    parser.add_argument("--horizon", type=int, default=None, help="H (default: the config's)")
    parser.add_argument(
        "--hidden-dims", default=None, help="e.g. 512,512,512,512 for every network (default: the config's)"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="update batch (default: the config's)")
    parser.add_argument("--num-critics", type=int, default=None, help="critic ensemble size (default: the config's)")
    parser.add_argument("--denoising-steps", type=int, default=None, help="K (default: the config's)")
    parser.add_argument("--estimator", default="qgf")
    parser.add_argument(
        "--compute-dtype", default="float32", choices=("float32", "bfloat16"), help="the networks' matmul dtype"
    )
    parser.add_argument("--best-of-n", type=int, default=1, help="guided candidates per action (best-of-N)")
    parser.add_argument("--act-batches", default="1,50,1000", help="observations per act call, comma separated")
    parser.add_argument("--updates-per-call", type=int, default=10, help="update steps in one scanned call")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per figure (at least)")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="keep repeating a figure until this much time")
    parser.add_argument("--matmul-size", type=int, default=2048, help="n of the n×n×n float32 peak matmul")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.hidden_dims = args.hidden_dims or "32,32"
        args.batch_size = args.batch_size or 32
        args.act_batches = "1,8"
        args.updates_per_call = 2
        args.repeats = 2
        args.min_seconds = 0.0
        args.matmul_size = 256
    # A smoke run is dominated by compilation: skip XLA's expensive optimisations (its figures are then
    # not representative, only present).
    args.compiler_options = QUICK_COMPILER_OPTIONS if args.quick else None
    return args


def bench_config(args: argparse.Namespace):
    """The default qgf config with the command line's size overrides applied."""
    config = configs.get_config("qgf")
    if args.hidden_dims:
        dims = tuple(int(d) for d in args.hidden_dims.split(","))
        config.actor_hidden_dims = dims
        config.critic_hidden_dims = dims
    for flag, field in [
        ("batch_size", "batch_size"),
        ("horizon", "horizon"),
        ("num_critics", "num_critics"),
        ("denoising_steps", "denoising_steps"),
    ]:
        if getattr(args, flag) is not None:
            setattr(config, field, getattr(args, flag))
    config.estimator = args.estimator
    config.best_of_n = args.best_of_n
    config.compute_dtype = getattr(args, "compute_dtype", "float32")  # bench.profile's arguments have none.
    return config


def fake_batch(seed: int, batch_size: int, obs_dim: int, horizon: int, action_dim: int) -> dict:
    """A qgf batch of random numbers with the right shapes (throughput does not depend on the values).

    Drawn with numpy, so that making it compiles nothing.
    """
    rng = np.random.default_rng(seed)
    batch = {
        "observations": rng.normal(size=(batch_size, obs_dim)),
        "actions": rng.uniform(-1.0, 1.0, size=(batch_size, horizon, action_dim)),
        "rewards": np.cumsum(rng.uniform(size=(batch_size, horizon)), axis=1),
        "masks": np.ones((batch_size, horizon)),
        "valid": np.ones((batch_size, horizon)),
        "next_observations": rng.normal(size=(batch_size, horizon, obs_dim)),
    }
    return {k: jnp.asarray(v, jnp.float32) for k, v in batch.items()}


def time_calls(call, repeats: int, min_seconds: float, warmup: int = 2) -> list[float]:
    """Seconds of each timed `call()` (which must block until its result is ready), after `warmup` calls."""
    for _ in range(warmup):
        call()
    times, start = [], time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_seconds and len(times) < 10_000):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return times


def while_body_counted_once() -> bool:
    """Whether XLA's cost analysis counts a `lax.scan` body once, whatever its trip count.

    It does on the backends seen so far, which lets one compiled call of a scan be costed per step
    (no second compilation of an unscanned variant); checked here, on a tiny scan, so a change in
    XLA shows up as a missing figure rather than a wrong one.
    """
    a = jnp.ones((8, 8), jnp.float32)

    def three_matmuls(a):
        return jax.lax.scan(lambda c, _: (c @ a, None), a, None, length=3)[0]

    flops = xla_flops(jax.jit(three_matmuls).lower(a).compile())
    return flops is not None and abs(flops - 2 * 8**3) < 0.5 * 2 * 8**3


def measure_matmul(n: int, repeats: int, min_seconds: float) -> dict:
    a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(2), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    times = time_calls(lambda: dot(a, b).block_until_ready(), repeats, min_seconds)
    seconds = statistics.median(times)
    flops = 2.0 * n**3
    return {"n": n, "flops_per_call": flops, "seconds_median": seconds, "gflops": flops / seconds / 1e9}


def measure_update(agent, config, state, batch, args, per_step_costing: bool, peak_gflops: float) -> dict:
    """Update steps/s of `args.updates_per_call` updates scanned in one jitted call on a fixed batch."""
    n = args.updates_per_call
    # `init` shares the critic's parameter buffers with the target critic; donation needs distinct ones.
    state = jax.tree_util.tree_map(jnp.copy, state)

    def updates(state, batch):
        def body(state, _):
            state, metrics = agent.update(state, batch)
            return state, metrics

        state, metrics = jax.lax.scan(body, state, None, length=n)
        return state, jax.tree_util.tree_map(lambda m: m[-1], metrics)

    compiled = jax.jit(updates, donate_argnums=0).lower(state, batch).compile(args.compiler_options)
    holder = {"state": state}

    def call():
        holder["state"], metrics = compiled(holder["state"], batch)
        jax.block_until_ready((holder["state"], metrics))

    times = time_calls(call, args.repeats, args.min_seconds)
    seconds = statistics.median(times) / n
    analytic = float(update_flops(config, args.obs_dim, args.action_dim))
    xla = xla_flops(compiled) if per_step_costing else None  # The scan's body: one update.
    return _rates(
        {
            "batch_size": config.batch_size,
            "updates_per_call": n,
            "calls_timed": len(times),
            "steps_per_s": 1.0 / seconds,
        },
        "update",
        seconds,
        analytic,
        xla,
        peak_gflops,
    )


def measure_act(agent, config, state, args, batch_size: int, peak_gflops: float) -> dict:
    """Guided actions/s and latency of one jitted `agent.act` on `batch_size` observations."""
    observations = jnp.asarray(
        np.random.default_rng(args.seed + batch_size).normal(size=(batch_size, args.obs_dim)), jnp.float32
    )
    key = jax.random.key(args.seed + 1)
    weight = jnp.asarray(config.guidance_weight, jnp.float32)
    compiled = jax.jit(agent.act).lower(state, observations, key, weight).compile(args.compiler_options)
    times = time_calls(
        lambda: compiled(state, observations, key, weight).block_until_ready(), args.repeats, args.min_seconds
    )
    seconds = statistics.median(times)
    analytic = float(guided_action_flops(config, args.obs_dim, args.action_dim))
    # XLA's count of the call unrolled (its rolled Euler scan would count one step; the observations' share of the
    # first layers, computed before the scan, once), on one observation: compiled once for every batch size.
    weights = jnp.full((batch_size,), weight)
    xla = flops_per_decision(agent.act, state, observations, key, weights)
    return _rates(
        {
            "batch_size": batch_size,
            "calls_timed": len(times),
            "latency_ms": 1e3 * seconds,
            "actions_per_s": batch_size / seconds,
            "matmul_at_batch": measure_shape_ceilings(config, batch_size, args, peak_gflops),
        },
        "action",
        seconds / batch_size,
        analytic,
        xla,
        peak_gflops,
    )


def _matmul_chain(x: jax.Array, *kernels: jax.Array) -> jax.Array:
    """x @ k_1 @ k_2 @ ... as straight-line code, each product depending on the last."""
    for kernel in kernels:
        x = jnp.matmul(x, kernel)
    return x


def measure_shape_ceilings(config, batch_size: int, args, peak_gflops: float) -> dict:
    """GFLOP/s of a guided action's hidden-layer matmuls alone at `batch_size` rows: the velocity field's
    [B, W] × [W, W] and the critic ensemble's batched [E, B, W] × [E, W, W], each a jitted chain of dependent
    products through as many distinct kernels as the two networks' hidden layers hold (so that, as in `act`, the
    weights stream through the caches rather than sit in them). The 2048³ peak is not what small B allows; these
    say what it does."""
    width, ensemble = config.critic_hidden_dims[0], config.num_critics
    # The [W, W] kernels one Euler step multiplies by: the velocity field's and every critic's hidden-to-hidden.
    kernels = len(config.actor_hidden_dims) - 1 + ensemble * (len(config.critic_hidden_dims) - 1)
    shapes = {
        f"[{batch_size},{width}]x[{width},{width}]": ((batch_size, width), (max(kernels, 1), width, width)),
        f"[{ensemble},{batch_size},{width}]x[{ensemble},{width},{width}]": (
            (ensemble, batch_size, width),
            (max(kernels // ensemble, 1), ensemble, width, width),
        ),
    }
    ceilings = {}
    for name, (lhs_shape, kernels_shape) in shapes.items():
        lhs = jax.random.normal(jax.random.key(3), lhs_shape, jnp.float32)
        stack = jax.random.normal(jax.random.key(4), kernels_shape, jnp.float32) / width**0.5
        stack = list(stack)  # Separate arguments: a scan's per-step slice of the stack would copy each kernel.
        compiled = jax.jit(_matmul_chain).lower(lhs, *stack).compile()
        seconds = statistics.median(
            time_calls(lambda: compiled(lhs, *stack).block_until_ready(), args.repeats, args.min_seconds)  # noqa: B023
        )
        gflops = 2.0 * np.prod(lhs_shape) * width * kernels_shape[0] / seconds / 1e9
        ceilings[name] = {"kernels": kernels_shape[0], "gflops": gflops, "fraction_of_peak": gflops / peak_gflops}
    return ceilings


def _rates(result: dict, unit: str, seconds_per_item: float, analytic: float, xla: float | None, peak: float) -> dict:
    """Adds FLOPs per item (analytic and XLA's), achieved GFLOP/s and the fraction of the matmul peak."""
    result[f"flops_per_{unit}_analytic"] = analytic
    result["gflops_analytic"] = analytic / seconds_per_item / 1e9
    result["fraction_of_peak"] = result["gflops_analytic"] / peak
    result[f"flops_per_{unit}_xla"] = xla
    result["gflops_xla"] = None if xla is None else xla / seconds_per_item / 1e9
    result["fraction_of_peak_xla"] = None if xla is None else result["gflops_xla"] / peak
    return result


def format_table(results: dict) -> str:
    peak = results["matmul"]
    rows = [
        (
            f"matmul {peak['n']}³ f32",
            f"start {peak['gflops_start']:.0f}, end {peak['gflops_end']:.0f}",
            f"{1e3 * peak['seconds_median']:.1f}",
            f"{peak['flops_per_call']:.3g}",
            f"{peak['flops_per_call']:.3g}",
            f"{peak['gflops']:.1f}",
            "100.0",
        )
    ]
    update = results["update"]
    rows.append(
        (
            f"update B={update['batch_size']} (scan {update['updates_per_call']})",
            f"{update['steps_per_s']:.2f} steps/s",
            f"{1e3 / update['steps_per_s']:.1f}",
            f"{update['flops_per_update_analytic']:.3g}",
            _maybe(update["flops_per_update_xla"], ".3g"),
            f"{update['gflops_analytic']:.1f}",
            f"{100 * update['fraction_of_peak']:.1f}",
        )
    )
    for act in results["act"].values():
        rows.append(
            (
                f"guided act B={act['batch_size']} K={results['config']['denoising_steps']}",
                f"{act['actions_per_s']:.1f} actions/s",
                f"{act['latency_ms']:.2f}",
                f"{act['flops_per_action_analytic']:.3g}",
                _maybe(act["flops_per_action_xla"], ".3g"),
                f"{act['gflops_analytic']:.1f}",
                f"{100 * act['fraction_of_peak']:.1f}",
            )
        )
        for shape, ceiling in act.get("matmul_at_batch", {}).items():
            rows.append(
                (
                    f"  matmul {shape}",
                    "",
                    "",
                    "",
                    "",
                    f"{ceiling['gflops']:.1f}",
                    f"{100 * ceiling['fraction_of_peak']:.1f}",
                )
            )
    header = ("figure", "rate", "ms/call", "FLOP/item", "FLOP/item XLA", "GFLOP/s", "% peak")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(
        c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False))
    )  # noqa: E731
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def _maybe(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def main(argv=None) -> dict:
    args = parse_args(argv)
    config = bench_config(args)
    agent = agents.make("qgf", config)
    matmul = measure_matmul(args.matmul_size, args.repeats, args.min_seconds)
    peak = matmul["gflops"]  # Re-measured at the end; the fractions are then taken against the higher of the two.
    batch = fake_batch(args.seed, config.batch_size, args.obs_dim, config.horizon, args.action_dim)
    init_key = jax.random.key(args.seed)
    state = jax.jit(agent.init).lower(init_key, batch).compile(args.compiler_options)(init_key, batch)
    per_step_costing = while_body_counted_once()
    results = {
        "command": "python -m bench.throughput " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
        },
        "config": {
            "obs_dim": args.obs_dim,
            "action_dim": args.action_dim,
            "horizon": config.horizon,
            "actor_hidden_dims": list(config.actor_hidden_dims),
            "critic_hidden_dims": list(config.critic_hidden_dims),
            "num_critics": config.num_critics,
            "batch_size": config.batch_size,
            "denoising_steps": config.denoising_steps,
            "estimator": config.estimator,
            "best_of_n": config.best_of_n,
            "compute_dtype": config.compute_dtype,
            "activation": config.activation,
            "layer_norm": [config.actor_layer_norm, config.critic_layer_norm],
            "forward_flops_per_sample": forward_flops(config, args.obs_dim, args.action_dim),
        },
        "matmul": matmul,
        "update": measure_update(agent, config, state, batch, args, per_step_costing, peak),
        "act": {
            str(b): measure_act(agent, config, state, args, b, peak)
            for b in (int(x) for x in args.act_batches.split(","))
        },
    }
    end = measure_matmul(args.matmul_size, args.repeats, args.min_seconds)
    matmul.update(gflops_start=peak, gflops_end=end["gflops"], gflops=max(peak, end["gflops"]))
    matmul["seconds_median"] = matmul["flops_per_call"] / matmul["gflops"] / 1e9
    for figure in [results["update"], *results["act"].values()]:
        rescale = peak / matmul["gflops"]
        figure["fraction_of_peak"] *= rescale
        for ceiling in figure.get("matmul_at_batch", {}).values():
            ceiling["fraction_of_peak"] *= rescale
        if figure["fraction_of_peak_xla"] is not None:
            figure["fraction_of_peak_xla"] *= rescale
    write_json(args.out, results)
    print(format_table(results))
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
