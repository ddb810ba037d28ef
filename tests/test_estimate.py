"""The time estimates a run prints: what it will do before it starts, then its time measured on this machine."""

import types

import ml_collections

from runner import estimate
from runner.estimate import Estimate, evaluation_steps, format_duration


def test_durations_and_evaluation_steps():
    assert [format_duration(s) for s in (42, 720, 3 * 3600 + 1200, 4 * 86400 + 6 * 3600)] == [
        "42 s",
        "12 min",
        "3 h 20 min",
        "4 d 6 h",
    ]
    assert evaluation_steps(0, 500_000, 100_000) == [100_000, 200_000, 300_000, 400_000, 500_000]
    assert evaluation_steps(250_000, 500_000, 100_000) == [300_000, 400_000, 500_000]
    assert evaluation_steps(0, 1_000, 300) == [300, 600, 900, 1_000]  # and the last step
    assert evaluation_steps(1_000, 1_000, 300) == []


def test_the_paper_run_on_a_cpu_is_estimated_from_measured_chunks_and_told_what_to_use_instead():
    # The paper's run (500k updates, 1000 per call, 5 evaluations) at README's CPU rate: 1000 updates in 750 s.
    clock = Estimate(train_steps=500_000, eval_every=100_000, on_cpu=True)
    assert clock.chunk(1_000, 1_000, 900.0) == []  # it compiled: no estimate from it
    assert clock.postfix(1_000) == "measuring"
    lines = clock.chunk(2_000, 1_000, 750.0)
    assert lines[0] == (
        "Estimate, measured here: 1.33 updates/s, so the 498000 updates left take about 4 d 8 h, plus 5 "
        "evaluation(s), whose time is stated once the first has run."
    )
    assert lines[1].startswith("note: that is long for a CPU: a GPU runs it far faster (pip install -r requirements")
    assert "--preset=study" in lines[1] and len(lines) == 2
    assert clock.chunk(3_000, 1_000, 750.0) == []  # said once
    assert clock.postfix(3_000) == "4 d 8 h + evaluations"  # the updates' time; the evaluations not known yet
    # The first evaluation measured: the estimate of the whole run is restated, with the evaluations in it.
    assert clock.evaluation(100_000, 600.0) == [
        "Estimate: an evaluation takes about 10 min here, so the rest of the run (400000 updates and 4 "
        "evaluation(s)) takes about 3 d 12 h."
    ]
    assert clock.left(100_000) == 400_000 * 0.75 + 4 * 600.0
    assert clock.postfix(100_000) == "3 d 12 h"
    assert clock.evaluation(200_000, 600.0) == []


def test_a_short_run_or_an_accelerator_gets_no_hint():
    fast = Estimate(train_steps=20_000, eval_every=20_000, on_cpu=True)
    fast.chunk(500, 500, 30.0)
    assert fast.chunk(1_000, 500, 5.0) == [
        "Estimate, measured here: 100 updates/s, so the 19000 updates left take about 3 min, plus 1 evaluation(s), "
        "whose time is stated once the first has run."
    ]
    gpu = Estimate(train_steps=500_000, eval_every=100_000, on_cpu=False)
    gpu.chunk(1_000, 1_000, 60.0)
    assert len(gpu.chunk(2_000, 1_000, 750.0)) == 1


def test_the_plan_line_names_the_data_to_generate(tmp_path):
    run = ml_collections.ConfigDict(
        dict(
            train_steps=500_000,
            steps_per_call=1_000,
            eval_every=100_000,
            eval_episodes=30,
            dataset_dir=str(tmp_path),
            dataset_path="",
            dataset_episodes=0,
            dataset_episode_steps=1001,
        )
    )
    plan = types.SimpleNamespace(
        run=run, env_name="cube-double-play-singletask-task2-v0", data="generate", weights=[0.0] + [0.01] * 9
    )
    assert estimate.run_plan_line(plan) == (
        "This run: generate cube-double-play-v0 here (about 33 min by this project's 2-core CPU figures); then "
        "500000 updates (1000 per compiled call; their time is measured here after the first compiled chunk), and 5 "
        "evaluation(s) of 10 weight(s) × 30 episodes (their time is stated once the first has run)."
    )
    plan.data = "auto"
    assert estimate.run_plan_line(plan).startswith(
        "This run: download cube-double-play-v0 from OGBench (its time depends on the connection), or offline "
        "generate cube-double-play-v0 here (about 33 min"
    )
    for name in ("cube-double-play-v0.npz", "cube-double-play-v0-val.npz"):
        (tmp_path / name).write_bytes(b"")
    assert estimate.run_plan_line(plan).startswith("This run: 500000 updates")
