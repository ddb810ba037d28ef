"""Every method from the same main.py, through the table runner (scripts.sweep, submitit's local executor)
and into the paper-style table (scripts.table), with tiny sizes.

By default: fql and edp train through main.py, then the sweep evaluates them (skipping the finished
training) and the table collects them. With QGF_SLOW_TESTS=1 also the whole grid of test-time methods on
one qgf run (about 20 main.py processes: minutes, not seconds).
"""

import csv
import os
import subprocess
import sys

import pytest
from conftest import ROOT, TINY_RUN_FLAGS, TINY_TASK, run_main

from scripts import sweep

# The sweep passes --preset itself; the guidance weights go to the training runs, so evaluations inherit them.
TRAIN_FLAGS = [f for f in TINY_RUN_FLAGS if not f.startswith(("--preset", "--progress", "--eval_episodes"))]


def run_sweep(root, dataset_dir, methods, *more):
    process = subprocess.run(
        [sys.executable, "-m", "scripts.sweep", f"--tasks={TINY_TASK}", f"--methods={methods}", "--seeds=0",
         f"--root={root}", "--preset=demo", "--eval_episodes=2", f"--dataset_dir={dataset_dir}",
         f"--extra={' '.join(TRAIN_FLAGS)}", "--executor=local", "--poll_s=0.5", *more],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )
    assert process.returncode == 0, f"{process.stdout[-3000:]}\n{process.stderr[-5000:]}"
    return process.stdout


def eval_rows(root, agent, estimator, best_of_n, reset):
    path = os.path.join(sweep.eval_dir(sweep.run_dir(str(root), TINY_TASK, agent, 0), estimator, best_of_n, reset), "eval.csv")
    with open(path) as f:
        return list(csv.DictReader(f))


def table_markdown(root, tmp_path):
    subprocess.run([sys.executable, "-m", "scripts.table", f"--runs={root}", "--name=tiny", f"--out_dir={tmp_path}"],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    return open(tmp_path / "tiny.md").read()


def test_fql_and_edp_train_with_main_then_the_sweep_evaluates_them(tiny_dataset_dir, tmp_path):
    root = tmp_path / "runs"
    for agent in ("fql", "edp"):
        # The command the sweep would run, so that the sweep finds the training done.
        run_main(f"--agent={agent}", f"--env={TINY_TASK}", "--seed=0", "--preset=demo", "--progress=false",
                 f"--run_dir={sweep.run_dir(str(root), TINY_TASK, agent, 0)}", f"--dataset_dir={tiny_dataset_dir}",
                 *TRAIN_FLAGS)
        run = sweep.run_dir(str(root), TINY_TASK, agent, 0)
        assert {"report.md", "eval.csv", "train.csv", "checkpoints"} <= set(os.listdir(run))
        with open(os.path.join(run, "train.csv")) as f:
            assert all(float(r["train/critic/loss"]) >= 0 for r in csv.DictReader(f))
        with open(os.path.join(run, "eval.csv")) as f:
            rows = list(csv.DictReader(f))
        assert [float(r["guidance_weight"]) for r in rows] == [0.0, 0.1] and float(rows[0]["flops_per_decision"]) > 0
        assert "FLOPs per decision" in open(os.path.join(run, "report.md")).read()

    out = run_sweep(root, tiny_dataset_dir, "fql,edp")
    assert "2 jobs in the grid, 0 already done." in out
    for agent in ("fql", "edp"):
        rows = eval_rows(root, agent, "none", 1, sweep.reported_reset_seed(0))
        assert [float(r["guidance_weight"]) for r in rows] == [0.0] and int(rows[0]["episodes"]) == 2
    assert "2 jobs in the grid, 2 already done." in run_sweep(root, tiny_dataset_dir, "fql,edp")

    markdown = table_markdown(root, tmp_path)
    assert "| task | FQL | EDP |" in markdown and f"| {TINY_TASK} |" in markdown


@pytest.mark.skipif(os.environ.get("QGF_SLOW_TESTS") != "1", reason="minutes: set QGF_SLOW_TESTS=1")
def test_every_test_time_method_evaluates_one_qgf_run(tiny_dataset_dir, tmp_path):
    root = tmp_path / "runs"
    methods = ["bc", "bfn4", "qfql", "bptt", "jacobian", "qgf", "qgf-bo4"]
    run_sweep(root, tiny_dataset_dir, ",".join(methods))
    for name in methods:
        method = sweep.METHODS[name]
        resets = [sweep.reported_reset_seed(0)] + ([sweep.heldout_reset_seed(0)] if method.sweep else [])
        for reset in resets:
            rows = eval_rows(root, "qgf", method.estimator, method.best_of_n, reset)
            assert [float(r["guidance_weight"]) for r in rows] == ([0.0, 0.1] if method.sweep else [0.0])
    markdown = table_markdown(root, tmp_path)
    assert "| task | BC | BFN-4 | QFQL | BPTT | QGF-Jacobian | QGF | QGF + BoN-4 |" in markdown
