"""Training steps/s on a directory of dataset slices, rotating every `--slice-every` steps, against the same
training on one slice, back to back in one process (runner.train, evaluation left out).

    python -m bench.slices                              # 4 slices of 48,000 rows, the demo preset, 4000 steps
    python -m bench.slices --rows=1000000 --compressed  # also times loading one slice of OGBench's 100M size

Slices are made from a small generated cube-single dataset, its episodes repeated to `--rows` rows (each
slice's first observation entry shifted by its number, so they differ). The one-slice run trains on a
directory holding slice 0 alone. Steps/s is total steps over total time of the train.csv rows after the
first (which includes compilation). `load_seconds` is one slice read, relabelled, with its masks and on the
device: what the background thread does while a slice trains, so the swap is hidden while it takes less than
`slice_every / steps_per_s`.
"""

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from bench.output import write_json

TASK = "cube-single-play-singletask-task1-v0"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--rows", type=int, default=48_000, help="rows per slice (OGBench's 100M slices: 1M)")
    parser.add_argument("--compressed", action="store_true", help="np.savez_compressed, as OGBench's files")
    parser.add_argument("--slice-every", type=int, default=1000)
    parser.add_argument("--steps-per-call", type=int, default=500)
    parser.add_argument("--train-steps", type=int, default=4000)
    parser.add_argument("--log-every", type=int, default=500)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--out", default="bench/results/slices.json", help="JSON file of the figures")
    return parser.parse_args(argv)


def write_slices(directory: str, count: int, rows: int, compressed: bool) -> list[str]:
    """`count` slices `cube-single-play-v0-000.npz`, ... of `rows` rows (whole episodes, the last one cut to
    end the file), from a 4-episode dataset generated in `directory`."""
    from envs import generate_dataset

    source_dir = os.path.join(directory, "source")
    generate_dataset(
        "cube-single-play-v0", source_dir, episodes=4, seed=0, workers=1, max_episode_steps=100, progress=False
    )
    source = dict(np.load(os.path.join(source_dir, "cube-single-play-v0.npz")))
    repeats = -(-rows // len(source["terminals"]))
    tiled = {k: np.concatenate([v] * repeats)[:rows] for k, v in source.items()}
    tiled["terminals"][-1] = True
    save = np.savez_compressed if compressed else np.savez
    paths = []
    for i in range(count):
        arrays = {**tiled, "observations": tiled["observations"].copy()}
        arrays["observations"][:, 0] += i
        paths.append(os.path.join(directory, "slices", f"cube-single-play-v0-{i:03d}.npz"))
        os.makedirs(os.path.dirname(paths[-1]), exist_ok=True)
        save(paths[-1], **arrays)
    return paths


def load_seconds(path: str, preset: str) -> float:
    """One slice as the rotation's thread loads it (read, validated, relabelled, masks, on the device)."""
    import jax

    import configs
    import envs
    from runner.devices import placement
    from runner.run_data import device_dataset

    config = configs.get_config("qgf", preset)
    env = envs.make_env(TASK)
    start = time.perf_counter()
    jax.block_until_ready(device_dataset(envs.load_file(path, TASK, env), config, placement(1, config.batch_size)))
    return time.perf_counter() - start


def steps_per_second(train_csv: str) -> tuple[float, list[int]]:
    """(steps/s over the rows after the first, the data/slice column or [])."""
    from runner.run_dir import read_csv

    rows = read_csv(train_csv)
    later = rows[1:]
    steps = [int(r["step"]) - int(p["step"]) for p, r in zip(rows, later, strict=False)]
    seconds = sum(s / float(r["steps_per_s"]) for s, r in zip(steps, later, strict=True))
    return sum(steps) / seconds, [int(r["data/slice"]) for r in rows if r.get("data/slice")]


def measure(args) -> dict:
    from runner.config import Options, resolve
    from runner.session import Session
    from runner.train_loop import train

    Session.evaluate = lambda self, step: 0.0  # Evaluation is not what is measured.
    work = tempfile.mkdtemp(prefix="bench-slices-")
    try:
        paths = write_slices(work, args.slices, args.rows, args.compressed)
        one = os.path.join(work, "one-slice")
        os.makedirs(one)
        os.symlink(paths[0], os.path.join(one, os.path.basename(paths[0])))
        figures = {
            "slices": args.slices,
            "rows_per_slice": args.rows,
            "compressed": args.compressed,
            "slice_mb": os.path.getsize(paths[0]) / 2**20,
            "load_seconds": load_seconds(paths[1], args.preset),
        }
        for name, directory in (("one_slice", one), ("rotation", os.path.dirname(paths[0]))):
            run_dir = os.path.join(work, "runs", name)
            options = Options(
                env=TASK,
                preset=args.preset,
                dataset_path=directory,
                run_dir=run_dir,
                train_steps=args.train_steps,
                steps_per_call=args.steps_per_call,
                log_every=args.log_every,
                eval_every=args.train_steps,
                save_every=args.train_steps,
                slice_every=args.slice_every,
                progress=False,
            )
            train(resolve(options))
            rate, used = steps_per_second(os.path.join(run_dir, "train.csv"))
            figures[name] = {"steps_per_s": rate, "data_slice": used}
        figures["rotation_over_one_slice"] = figures["rotation"]["steps_per_s"] / figures["one_slice"]["steps_per_s"]
        return figures
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    figures = measure(args)
    write_json(args.out, figures)
    print(
        f"steps/s: one slice {figures['one_slice']['steps_per_s']:.1f}, rotating through {args.slices} slices "
        f"{figures['rotation']['steps_per_s']:.1f} (ratio {figures['rotation_over_one_slice']:.3f}); slices used "
        f"{figures['rotation']['data_slice']}; one slice ({figures['slice_mb']:.0f} MB) loads in "
        f"{figures['load_seconds']:.2f} s"
    )


if __name__ == "__main__":
    main()
