"""Smoke test of the throughput benchmark: a quick run writes every figure as a positive number."""

import json

import pytest

from bench import throughput


def test_quick_run_writes_positive_figures(tmp_path):
    out = tmp_path / "results" / "throughput.json"
    throughput.main(["--quick", "--out", str(out)])
    results = json.loads(out.read_text())

    assert {"command", "machine", "config", "matmul", "update", "act"} <= set(results)
    assert results["matmul"]["gflops"] > 0
    update = results["update"]
    for key in ("steps_per_s", "flops_per_update_analytic", "gflops_analytic", "fraction_of_peak"):
        assert update[key] > 0, key
    assert set(results["act"]) == {"1", "8"}
    for act in results["act"].values():
        for key in ("actions_per_s", "latency_ms", "flops_per_action_analytic", "gflops_analytic", "fraction_of_peak"):
            assert act[key] > 0, key
    # XLA's count is optional per backend; where present it must agree with the Dense-layer count to within 2×.
    for figure, unit in [(update, "update")] + [(a, "action") for a in results["act"].values()]:
        xla = figure[f"flops_per_{unit}_xla"]
        if xla is not None:
            assert 0.5 < xla / figure[f"flops_per_{unit}_analytic"] < 2.0


def test_seeds_bench_reports_both_ways_of_running_seeds(tmp_path):
    from bench import seeds

    out = tmp_path / "seeds.json"
    result = seeds.main(
        ["--seeds=2", "--hidden-dims=8", "--batch-size=8", "--steps-per-call=2", "--repeats=1", f"--out={out}"]
    )
    assert json.loads(out.read_text()) == result
    assert result["vmapped_seed_steps_per_s"] > 0 and result["sequential_seed_steps_per_s"] > 0
    assert result["vmapped_over_sequential"] == pytest.approx(
        result["vmapped_seed_steps_per_s"] / result["sequential_seed_steps_per_s"]
    )


def test_eval_sweep_bench_splits_its_time():
    from bench import eval_sweep

    result = eval_sweep.main(["--weights=0,0.1", "--episodes=1", "--hidden-dims=8", "--max-steps=5"])
    assert result["weights"] == 2 and result["mean_episode_length"] == 5
    assert 0 < result["policy_seconds"] < result["eval_seconds"]
    assert result["env_seconds"] == pytest.approx(result["eval_seconds"] - result["policy_seconds"])
