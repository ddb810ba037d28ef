"""Every method from the same main.py, through the table runner (scripts.sweep, submitit's local executor)
and into the paper-style table (scripts.table), with tiny sizes.

By default: the sweep trains fql and edp through main.py (their own final evaluations are the reported
ones), skips them when rerun, and the table collects them. With QGF_SLOW_TESTS=1 also qgf and every
test-time method on its run (13 main.py processes: minutes, not seconds).
"""

import csv
import os
import subprocess
import sys

from conftest import ROOT, TINY_RUN_FLAGS, TINY_TASK, slow

import configs
from scripts import sweep

# The sweep passes --preset itself; the guidance weights go to the training runs, so evaluations inherit them.
TRAIN_FLAGS = [f for f in TINY_RUN_FLAGS if not f.startswith(("--preset", "--progress", "--eval_episodes"))]


def run_sweep(root, dataset_dir, methods, *more):
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.sweep",
            f"--tasks={TINY_TASK}",
            f"--methods={methods}",
            "--seeds=0",
            f"--root={root}",
            "--preset=demo",
            "--eval_episodes=2",
            f"--dataset_dir={dataset_dir}",
            f"--extra={' '.join(TRAIN_FLAGS)}",
            "--executor=local",
            "--poll_s=0.5",
            *more,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert process.returncode == 0, f"{process.stdout[-3000:]}\n{process.stderr[-5000:]}"
    return process.stdout


def eval_rows(root, agent, estimator, best_of_n, reset):
    """The rows of one evaluation; the training run's own for the method it evaluates itself on reported episodes."""
    run = sweep.run_dir(str(root), TINY_TASK, agent, 0)
    path = os.path.join(sweep.eval_dir(run, estimator, best_of_n, reset), "eval.csv")
    trained = configs.get_config(agent)
    if (estimator, best_of_n) == (trained.estimator, trained.best_of_n) and reset == sweep.reported_reset_seed(0):
        path = os.path.join(run, "eval.csv")
    with open(path) as f:
        return list(csv.DictReader(f))


def table_markdown(root, tmp_path):
    subprocess.run(
        [sys.executable, "-m", "scripts.table", f"--runs={root}", "--name=tiny", f"--out_dir={tmp_path}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return open(tmp_path / "tiny.md").read()


def test_the_sweep_trains_fql_and_edp_with_main_and_the_table_collects_them(tiny_dataset_dir, tmp_path):
    root = tmp_path / "runs"
    out = run_sweep(root, tiny_dataset_dir, "fql,edp")
    assert "2 jobs in the grid, 0 already done." in out
    for agent in ("fql", "edp"):
        run = sweep.run_dir(str(root), TINY_TASK, agent, 0)
        assert {"report.md", "eval.csv", "train.csv", "checkpoints"} <= set(os.listdir(run))
        with open(os.path.join(run, "train.csv")) as f:
            train = list(csv.DictReader(f))
        assert [int(r["step"]) for r in train] == [2, 4] and all(float(r["train/critic/loss"]) >= 0 for r in train)
        with open(os.path.join(run, "eval.csv")) as f:
            rows = list(csv.DictReader(f))
        assert [float(r["guidance_weight"]) for r in rows] == [0.0, 0.1] and int(rows[0]["episodes"]) == 2
        assert float(rows[0]["flops_per_decision"]) > 0
        assert "FLOPs per decision" in open(os.path.join(run, "report.md")).read()
        assert not os.path.exists(os.path.join(run, "eval"))  # Its own final evaluation is the reported one.
    assert "2 jobs in the grid, 2 already done." in run_sweep(root, tiny_dataset_dir, "fql,edp")

    markdown = table_markdown(root, tmp_path)
    assert "| task | FQL | EDP |" in markdown and f"| {TINY_TASK} |" in markdown


@slow
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
            assert {(r["estimator"], int(r["best_of_n"])) for r in rows} == {(method.estimator, method.best_of_n)}
            assert all(float(r["flops_per_decision"]) > 0 for r in rows)
    markdown = table_markdown(root, tmp_path)
    assert "| task | BC | BFN-4 | QFQL | BPTT | QGF-Jacobian | QGF | QGF + BoN-4 |" in markdown


def test_flops_per_decision_counts_every_loop_step_and_matches_the_analytic_count():
    import jax
    import jax.numpy as jnp

    import agents
    from bench.flops import guided_action_flops
    from runner.flops import flops_per_decision

    matrix = jnp.eye(8)

    def five_matmuls(state, observations, key, weights, goals, unroll=False):
        return jax.lax.scan(lambda x, _: (x @ state, None), observations, None, length=5, unroll=unroll)[0]

    # Per observation: 5 steps of a [1, 8] × [8, 8] product, 2·8·8 FLOPs each (XLA counts a rolled body once:
    # the count is right only because flops_per_decision passes unroll=True).
    assert flops_per_decision(five_matmuls, matrix, jnp.ones((3, 8)), None, jnp.zeros(3), None) == 5 * 2 * 8 * 8

    config = configs.get_config("qgf")
    config.update(actor_hidden_dims=(32, 32), critic_hidden_dims=(32, 32), horizon=2, denoising_steps=3)
    batch = {
        "observations": jnp.zeros((2, 6)),
        "actions": jnp.zeros((2, 2, 3)),
        "rewards": jnp.zeros((2, 2)),
        "masks": jnp.ones((2, 2)),
        "valid": jnp.ones((2, 2)),
        "next_observations": jnp.zeros((2, 2, 6)),
    }
    flops = {}
    for estimator, best_of_n in (("none", 1), ("qgf", 1), ("qgf", 4)):
        config.update(estimator=estimator, best_of_n=best_of_n)
        agent = agents.make("qgf", config)
        state = jax.jit(agent.init)(jax.random.PRNGKey(0), batch)
        flops[estimator, best_of_n] = flops_per_decision(
            agent.act, state, batch["observations"], jax.random.PRNGKey(1), jnp.zeros(2), None
        )
        # XLA also counts LayerNorm, GELU, noise and clipping, which at width 32 rival the Dense layers.
        analytic = guided_action_flops(config, obs_dim=6, action_dim=3)
        assert analytic < flops[estimator, best_of_n] < 2.5 * analytic, (estimator, best_of_n, flops, analytic)
    assert 4 <= flops["qgf", 4] / flops["qgf", 1] < 5 and flops["qgf", 1] > 2 * flops["none", 1]
