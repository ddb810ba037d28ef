"""Seeds·steps/s of N seeds in one compiled call, vmapped or mapped (agents.training.over_seeds), against N
seeds run one after another, and of the same work on 1 against 2 (forced) CPU devices.

    python -m bench.seeds                                  # 8 seeds, 512×4 networks, batch 256
    python -m bench.seeds --hidden-dims=64,64 --batch-size=64
    python -m bench.seeds --devices=2                      # the same, in a process with 2 forced CPU devices

Updates run through `agents.training.make_train_chunk`, the loop `main.py` runs, on a fixed random batch
(throughput does not depend on the values). "Sequential" is the same compiled chunk with one seed, called
once per seed; the three are timed round-robin. With several devices the seeds are sharded over them
(runner.devices), and the one seed of the sequential runs has its batch sharded (data parallel). Each
figure is the median over repeats.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

from bench.output import write_json


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--hidden-dims", default="512,512,512,512")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--obs-dim", type=int, default=40)
    parser.add_argument("--action-dim", type=int, default=5)
    parser.add_argument("--steps-per-call", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", type=int, default=1, help="forced CPU devices (a subprocess sets XLA_FLAGS)")
    parser.add_argument("--out", default=None, help="JSON file of the figures")
    return parser.parse_args(argv)


def measure(args) -> dict:
    import jax
    import jax.numpy as jnp

    import agents
    import configs
    from agents.training import make_train_chunk
    from bench.throughput import fake_batch
    from runner.devices import placement

    config = configs.get_config("qgf")
    dims = tuple(int(d) for d in args.hidden_dims.split(","))
    config.update(actor_hidden_dims=dims, critic_hidden_dims=dims, batch_size=args.batch_size)
    agent = agents.make("qgf", config)
    batch = fake_batch(0, args.batch_size, args.obs_dim, config.horizon, args.action_dim)

    def timed_call(num_seeds: int, batching: str):
        """A blocking call of one chunk of `steps_per_call` updates of `num_seeds` seeds, placed as main.py does."""
        where = placement(num_seeds, args.batch_size)
        data = where.put_replicated(batch)
        chunk = make_train_chunk(
            agent, lambda dataset, key: dataset, args.steps_per_call, where.constrain_batch, batching
        )
        keys = where.put_seeds(jax.random.split(jax.random.key(0), num_seeds))
        # Distinct buffers per leaf: init shares the critic's with the target critic, and the chunk donates.
        states = jax.tree_util.tree_map(jnp.copy, jax.jit(jax.vmap(lambda k: agent.init(k, batch)))(keys))
        holder = [where.put_seeds(states)]

        def call():
            holder[0], metrics = chunk(holder[0], data, keys)
            jax.block_until_ready((holder[0], metrics))

        call()  # Compiles.
        return call

    calls = {
        "vmapped": timed_call(args.seeds, "vmap"),
        "mapped": timed_call(args.seeds, "map"),
        "one seed": timed_call(1, "vmap"),
    }
    times = {name: [] for name in calls}
    for _ in range(args.repeats):  # Round-robin, so that a load change hits every variant alike.
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    vmapped, mapped = statistics.median(times["vmapped"]), statistics.median(times["mapped"])
    sequential = args.seeds * statistics.median(times["one seed"])
    steps = args.seeds * args.steps_per_call
    return {
        "command": "python -m bench.seeds " + " ".join(sys.argv[1:]),
        "devices": len(jax.devices()),
        "seeds": args.seeds,
        "hidden_dims": list(dims),
        "batch_size": args.batch_size,
        "vmapped_seed_steps_per_s": steps / vmapped,
        "mapped_seed_steps_per_s": steps / mapped,
        "sequential_seed_steps_per_s": steps / sequential,
        "vmapped_over_sequential": sequential / vmapped,
        "mapped_over_sequential": sequential / mapped,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.devices > 1 and f"device_count={args.devices}" not in os.environ.get("XLA_FLAGS", ""):
        flags = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
        command = [sys.executable, "-m", "bench.seeds", *(sys.argv[1:] if argv is None else argv)]
        subprocess.run(command, env={**os.environ, "XLA_FLAGS": flags}, check=True)
        return {}
    result = measure(args)
    print(
        f"{result['seeds']} seeds, {result['hidden_dims']} networks, batch {result['batch_size']}, "
        f"{result['devices']} device(s), seed·steps/s: vmapped {result['vmapped_seed_steps_per_s']:.1f} "
        f"({result['vmapped_over_sequential']:.2f}× sequential), mapped {result['mapped_seed_steps_per_s']:.1f} "
        f"({result['mapped_over_sequential']:.2f}×), sequential {result['sequential_seed_steps_per_s']:.1f}"
    )
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
