"""Smoke test of the throughput benchmark: a quick run writes every figure as a positive number."""

import json
import os

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
        # What the batch allows: the hidden layers' matmul alone, the velocity field's shape and the critics' batched.
        assert len(act["matmul_at_batch"]) == 2
        assert all(ceiling["gflops"] > 0 for ceiling in act["matmul_at_batch"].values())
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
    for way in ("vmapped", "mapped"):
        assert result[f"{way}_seed_steps_per_s"] > 0 and result["sequential_seed_steps_per_s"] > 0
        assert result[f"{way}_over_sequential"] == pytest.approx(
            result[f"{way}_seed_steps_per_s"] / result["sequential_seed_steps_per_s"]
        )


def test_eval_sweep_bench_splits_its_time():
    from bench import eval_sweep

    result = eval_sweep.main(["--weights=0,0.1", "--episodes=1", "--hidden-dims=8", "--max-steps=5"])
    assert result["weights"] == 2 and result["mean_episode_length"] == 5
    assert 0 < result["policy_seconds"] < result["eval_seconds"]
    assert result["env_seconds"] == pytest.approx(result["eval_seconds"] - result["policy_seconds"])


@pytest.mark.parametrize("what", ["update", "chunk", "act"])
def test_profile_puts_every_op_in_one_class(tmp_path, what):
    from bench import profile

    result = profile.main(["--quick", f"--what={what}", f"--trace-dir={tmp_path / 'trace'}"])
    classes = result["classes_ms_per_step"]
    assert set(classes) == set(profile.CLASSES)
    assert sum(classes.values()) == pytest.approx(result["op_ms_per_step"])
    assert classes["matmuls"] > 0 and classes["network elementwise"] > 0
    assert (classes["sampler"] > 0) == (what == "chunk")  # only the chunk samples batches
    assert result["wall_ms_per_step"] > 0


def test_profile_classifies_hlo_instructions():
    from bench.profile import classify, hlo_instructions

    hlo = "\n".join(
        [
            '  %ynn_fusion.3 = f32[4,8]{1,0} fusion(%a, %b), kind=kCustom, calls=%f, metadata={op_name="jit(u)/Dense_0/'
            'dot_general"}, backend_config={"fusion_config":{"kind":"__ynn_fusion"}}',
            '  %add_tanh_fusion = f32[4,8]{1,0} fusion(%c), kind=kLoop, calls=%g, metadata={op_name="jit(u)/jvp(Critic)'
            '/vmap(VmapMLP_0)/tanh"}',
            "  %copy.7 = f32[8,8]{1,0} copy(%d)",
            '  %gather_fusion = f32[4,5]{1,0} fusion(%e), kind=kLoop, calls=%h, metadata={op_name="jit(c)/while/body/'
            'jit(sample_chunks)/gather"}',
            '  %multiply_add_fusion.2 = f32[8,8]{1,0} fusion(%p, %q), kind=kLoop, calls=%i, metadata={op_name="jit(u)/'
            'while/body/add"}',
        ]
    )
    instructions = hlo_instructions(hlo)
    assert [classify(name, instructions) for name in instructions] == [
        "matmuls",
        "network elementwise",
        "copies and transposes",
        "sampler",
        "optimizer, target, loss and rest",
    ]


# Packages the GPU image of the device checks lacks (ml_collections travels as a wheel, see bench/README.md).
NOT_ON_THE_DEVICE_IMAGE = ("ogbench", "mujoco", "gymnasium", "tensorboardX", "submitit", "wandb")


def run_without_what_the_device_image_lacks(module: str, argv: list):
    """`python -m <module> <argv>` in a fresh process in which the packages the device image lacks cannot be
    imported."""
    import subprocess
    import sys

    blocker = (
        "import sys, runpy\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {NOT_ON_THE_DEVICE_IMAGE!r}:\n"
        "            raise ImportError(f'{name} is not on the device image')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.argv = [{module!r}] + {list(argv)!r}\n"
        f"runpy.run_module({module!r}, run_name='__main__')\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-c", blocker], cwd=root, capture_output=True, text=True, timeout=300)


def test_accelerator_quick_run_on_cpu_imports_only_what_the_device_image_has(tmp_path):
    """`python -m bench.accelerator --quick` in a fresh process in which the packages the device image lacks
    cannot be imported: it must finish and write every figure, each positive (float32 only, to keep CI short:
    tests/test_mixed_precision.py covers bfloat16)."""
    out = tmp_path / "accelerator.json"
    process = run_without_what_the_device_image_lacks(
        "bench.accelerator", ["--quick", "--compute-dtypes=float32", "--out", str(out)]
    )
    assert process.returncode == 0, process.stderr[-3000:]
    results = json.loads(out.read_text())

    for name in ("float32_highest", "float32_default", "bfloat16_f32_accumulation"):
        assert results["matmul"][name]["tflops"] > 0, name
    expected = {
        f"float32/{what}" for what in ("update/1", "update/2", "chunk/1", "chunk/2", "act/1", "act/8", "sweep/2x9x2")
    }
    assert set(results["figures"]) == expected
    for name, figure in results["figures"].items():
        assert figure["compile_s"] > 0, name
        rate = figure.get("steps_per_s", figure.get("actions_per_s"))
        assert rate > 0, name
    assert results["figures"]["float32/sweep/2x9x2"]["observations"] == 2 * 9 * 2
    assert results["figures"]["float32/update/2"]["seed_steps_per_s"] == pytest.approx(
        2 * results["figures"]["float32/update/2"]["steps_per_s"]
    )


def test_parity_speed_our_side_runs_on_what_the_device_image_has():
    """The GPU check of issue 27 runs our side of `bench.parity_speed` on the device image: every figure must come
    back positive, with its compile time, in the one RESULT line the orchestrating process reads."""
    process = run_without_what_the_device_image_lacks(
        "bench.parity_speed", ["--side=ours", "--quick", "--repeats=2", "--min_seconds=0", "--act_batches=1,8"]
    )
    assert process.returncode == 0, process.stderr[-3000:]
    (line,) = [x for x in process.stdout.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line[len("RESULT ") :])
    assert result["side"] == "ours" and result["size"]["hidden"] == [32, 32]
    assert set(result["figures"]) == {"update", "train_step", "act/1", "act/8"}
    for name, figure in result["figures"].items():
        assert figure["ms"] > 0 and figure["compile_s"] > 0, name


def test_parity_speed_summary_takes_medians_over_rounds_and_the_ratio():
    from bench.parity_speed import summary

    def side(update_ms):
        return {"figures": {"update": {"ms": update_ms}}}

    rounds = [{"ours": side(u), "official": side(o)} for u, o in ((1.0, 3.0), (2.0, 5.0), (9.0, 4.0))]
    row = summary(rounds)["update"]
    assert (row["ours_ms"], row["official_ms"]) == (2.0, 4.0)
    assert row["official_over_ours"] == 2.0


@pytest.mark.skipif(not os.environ.get("QGF_OFFICIAL_CHECKOUT"), reason="QGF_OFFICIAL_CHECKOUT names no checkout")
def test_parity_speed_against_the_official_checkout(tmp_path):
    from bench import parity_speed

    out = tmp_path / "parity_speed.json"
    argv = [f"--official={os.environ['QGF_OFFICIAL_CHECKOUT']}", "--quick", "--rounds=1", "--repeats=2",
            "--min_seconds=0", "--act_batches=1", f"--out={out}"]  # fmt: skip
    if os.environ.get("QGF_OFFICIAL_PYTHON"):
        argv.append(f"--official_python={os.environ['QGF_OFFICIAL_PYTHON']}")
    result = parity_speed.main(argv)
    assert json.loads(out.read_text())["summary"] == result["summary"]
    for name, row in result["summary"].items():
        assert row["official_ms"] > 0 and row["ours_ms"] > 0, name
        assert row["official_over_ours"] == pytest.approx(row["official_ms"] / row["ours_ms"]), name
