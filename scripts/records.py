"""A study's run records, kept beside its document: `python -m scripts.records --preset=study-1000ep` copies the
CSV and JSON files of every run dir under runs/study-1000ep (config, train.csv, eval.csv, episodes.csv,
step_times.csv, and those of each evaluation under eval/) into docs/study-1000ep/records/, in the same layout and
without checkpoints, datasets, event files or figures. A cell's records are a few hundred kB where its checkpoints
are hundreds of MB, so they can be committed as cells finish, and `python -m scripts.study
--preset=study-1000ep --runs=docs/study-1000ep/records` writes the study's tables from them after the run dirs are
gone (a machine replaced between sessions took 4 h of part 2's rung 2 with it).
"""

import argparse
import glob
import os
import shutil

import configs
from runner.run_dir import write_json
from scripts import study, sweep

RECORD_SUFFIXES = (".csv", ".json")
SKIPPED_DIRS = ("checkpoints",)


def default_records(preset: str) -> str:
    """Where a study part's records go: records/ beside its tables (docs/records/ for part 1)."""
    return os.path.join(study.default_out(preset), "records")


def record_files(run: str) -> list:
    """The record files of one run dir, as paths relative to it: its own and its evaluations' CSV and JSON."""
    found = []
    for directory, subdirs, files in os.walk(run):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIPPED_DIRS)
        found += [
            os.path.relpath(os.path.join(directory, name), run)
            for name in sorted(files)
            if name.endswith(RECORD_SUFFIXES)
        ]
    return found


def copy_atomically(source: str, target: str) -> None:
    """`target` is either its old content or `source`'s, never a part (a copy cut by a stop leaves a .tmp file)."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(source, target + ".tmp")
    os.replace(target + ".tmp", target)


def copy_records(runs: str, out: str) -> list:
    """Copies the record files of every run dir under `runs` (scripts.sweep's layout <task>/<agent>/seed<S>) to
    the same paths under `out`; returns the run dirs copied. Files already under `out` that the runs no longer
    hold stay."""
    runs_found = sorted(glob.glob(os.path.join(glob.escape(runs), "*", "*", "seed*")))
    copied = []
    for run in runs_found:
        if not os.path.isfile(os.path.join(run, "config.json")):
            continue  # not a run dir main.py started
        relative = os.path.relpath(run, runs)
        for name in record_files(run):
            copy_atomically(os.path.join(run, name), os.path.join(out, relative, name))
        copied.append(relative)
    if copied:  # scripts.study then knows a records tree: its commands finish a cell under the runs' root
        write_json(os.path.join(out, study.RECORDS_FILE), {"runs": runs, "run_dirs": copied})
    return copied


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="study", help="the study's part, or a rung of part 2, as scripts.study")
    parser.add_argument("--runs", default=None, help="the run dirs (scripts.sweep's --root; default: the preset's)")
    parser.add_argument("--out", default=None, help="where the records go (default: records/ beside the tables)")
    args = parser.parse_args(argv)
    try:
        configs.preset_parts(args.preset)
    except configs.ConfigError as error:
        raise SystemExit(f"error: --preset: {error}") from None
    runs = args.runs or sweep.study_root(args.preset)
    out = args.out or default_records(args.preset)
    if not os.path.isdir(runs):
        raise SystemExit(f"error: --runs={runs} is not a directory; give the study's run dirs (scripts.sweep's --root)")
    if os.path.abspath(out) == os.path.abspath(runs):
        raise SystemExit("error: --out is --runs; the records go to another directory")
    copied = copy_records(runs, out)
    if not copied:
        raise SystemExit(f"error: no run dirs (<task>/<agent>/seed<S> with a config.json) under --runs={runs}")
    print(f"Copied the records of {len(copied)} run dir(s) from {runs} to {out}:")
    for relative in copied:
        print(f"  {relative}")


if __name__ == "__main__":
    main()
