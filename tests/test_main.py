"""End-to-end runs of main.py with tiny sizes: artifacts and --eval_only (kills and resumption: test_reliability)."""

import json
import os

import numpy as np
import pytest
from conftest import TINY_RUN_FLAGS, TINY_TASK, read_csv, run_main


def test_a_tiny_run_leaves_every_artifact(finished_run, tiny_dataset_dir):
    names = set(os.listdir(finished_run))
    assert {"config.json", "train.csv", "eval.csv", "episodes.csv", "report.md", "checkpoints"} <= names
    assert "success_vs_weight.png" in names
    assert any(n.startswith("events.out.tfevents") for n in names)
    config = json.load(open(os.path.join(finished_run, "config.json")))
    assert config["env"] == TINY_TASK and config["agent"] == "qgf" and config["guidance_weights"] == [0.0, 0.1]
    assert config["agent_config"]["actor_hidden_dims"] == [16, 16]
    train = read_csv(os.path.join(finished_run, "train.csv"))
    assert [int(r["step"]) for r in train] == [2, 4]
    assert all(np.isfinite(float(r["train/policy/bc_loss"])) and "val/critic/loss" in r for r in train)
    rows = read_csv(os.path.join(finished_run, "eval.csv"))
    assert [float(r["guidance_weight"]) for r in rows] == pytest.approx([0.0, 0.1])
    assert all(int(r["episodes"]) == 2 and 0.0 <= float(r["success"]) <= 1.0 for r in rows)
    report = open(os.path.join(finished_run, "report.md")).read()
    assert "0 (BC)" in report and "| 0.1 |" in report
    # The data it trained on, named in config.json (what it was to be) and data.json / report.md (what it loaded):
    # the tiny dataset's 2 episodes of 60 steps, 59 transitions each, under the demo's generated-data setting.
    assert config["dataset"]["kind"] == "generated here"
    assert config["dataset"]["path"].endswith("cube-single-play-v0.npz")
    data = json.load(open(os.path.join(finished_run, "data.json")))
    assert (data["kind"], data["transitions"], data["slices"]) == ("generated here", 2 * 59, 1)
    # ... and its arrays' fingerprint, which the same data loaded again gives (a dataset generated anew can be
    # checked against the run).
    import envs
    from runner.run_data import content_sha256

    _, loaded, _ = envs.make_env_and_datasets(TINY_TASK, dataset_dir=tiny_dataset_dir)
    assert data["content_sha256"] == content_sha256(loaded) and len(data["content_sha256"]) == 64
    assert f"Training data: generated here, `{data['path']}` (118 transitions)." in report
    # episodes.csv: every episode, its reset seed (the same per index across weights: paired), and eval.csv's
    # means and standard errors are theirs.
    episodes = read_csv(os.path.join(finished_run, "episodes.csv"))
    assert [(float(e["guidance_weight"]), int(e["reset_seed"])) for e in episodes] == [
        (w, s) for w in (0.0, 0.1) for s in (0, 1)
    ]
    for row in rows:
        mine = [e for e in episodes if float(e["guidance_weight"]) == float(row["guidance_weight"])]
        returns = [float(e["return"]) for e in mine]
        assert float(row["success"]) == pytest.approx(np.mean([float(e["success"]) for e in mine]))
        assert float(row["return"]) == pytest.approx(np.mean(returns))
        assert float(row["return_stderr"]) == pytest.approx(np.std(returns, ddof=1) / np.sqrt(2))
        assert all(int(e["step"]) == 4 and int(e["length"]) > 0 for e in mine)
    assert sorted(os.listdir(os.path.join(finished_run, "checkpoints")))[-1] == "4"
    # TensorBoard has what README lists: losses, steps/s, and success and return per weight.
    tags = tensorboard_tags(finished_run)
    assert {"train/policy/bc_loss", "steps_per_s", "eval/success_w0.1_task_all", "eval/return_w0.1_task_all"} <= tags


def tensorboard_tags(run_dir: str) -> set:
    """The scalar tags of a run dir's TensorBoard event files."""
    names = (n for n in os.listdir(run_dir) if n.startswith("events.out.tfevents"))
    return {
        value.tag
        for name in names
        for event in read_events(os.path.join(run_dir, name))
        for value in event.summary.value
    }


def read_events(path: str) -> list:
    """The Event protos of a TensorBoard event file (TFRecords: length, its CRC, the record, its CRC)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    data, events, offset = open(path, "rb").read(), [], 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        events.append(Event.FromString(data[offset + 12 : offset + 12 + length]))
        offset += 12 + length + 4
    return events


def test_the_data_fingerprint_follows_the_arrays_not_their_storage():
    from runner.run_data import content_sha256

    data = {"observations": np.arange(6, dtype=np.float32).reshape(3, 2), "rewards": np.zeros(3, np.float32)}
    same = {"rewards": data["rewards"].copy(), "observations": np.asfortranarray(data["observations"])}
    assert content_sha256(same) == content_sha256(data)
    for changed in (
        {**data, "rewards": data["rewards"] + np.float32([0, 0, 1e-6])},
        {**data, "rewards": data["rewards"].astype(np.float64)},
        {**data, "observations": data["observations"].reshape(2, 3)},
        {**data, "masks": np.ones(3, np.float32)},
    ):
        assert content_sha256(changed) != content_sha256(data)


def test_eval_only_reproduces_the_eval_row(finished_run, tmp_path):
    run_main("--eval_only", f"--restore={finished_run}", "--progress=false")
    original = read_csv(os.path.join(finished_run, "eval.csv"))
    again = read_csv(os.path.join(finished_run, "eval", "qgf-bo1-reset0", "eval.csv"))
    assert again == original
    # Another weight: its numbers go beside the first evaluation, which stays as it was; a rerun of either setting
    # finds its own folder again.
    other = run_main("--eval_only", f"--restore={finished_run}", "--progress=false", "--guidance_weights=0.3")
    variants = [d for d in os.listdir(os.path.join(finished_run, "eval")) if d.startswith("qgf-bo1-reset0-v")]
    assert "Evaluating the checkpoint at step 4." in other.stdout and "Resumed" not in other.stdout
    assert len(variants) == 1 and f"this one goes to {os.path.join(finished_run, 'eval', variants[0])}" in other.stdout
    assert read_csv(os.path.join(finished_run, "eval", "qgf-bo1-reset0", "eval.csv")) == original
    moved = read_csv(os.path.join(finished_run, "eval", variants[0], "eval.csv"))
    assert [float(r["guidance_weight"]) for r in moved] == [0.3]
    # Evaluating needs the checkpoint, not the training data: none is read (here: none is there), downloaded or
    # generated, and the report names the data the run trained on.
    run_main(
        "--eval_only", f"--restore={finished_run}", "--progress=false", f"--dataset_dir={tmp_path}", "--data=local"
    )
    assert len(os.listdir(os.path.join(finished_run, "eval"))) == 2 and os.listdir(tmp_path) == []
    assert read_csv(os.path.join(finished_run, "eval", "qgf-bo1-reset0", "eval.csv")) == original
    report = open(os.path.join(finished_run, "eval", "qgf-bo1-reset0", "report.md")).read()
    assert "Training data: generated here, `" in report and "(118 transitions)." in report


def test_goal_conditioned_run_writes_per_task_results(tiny_dataset_dir, tmp_path):
    run_dir = str(tmp_path / "gc")
    flags = [f for f in TINY_RUN_FLAGS if not f.startswith(("--eval_episodes", "--train_steps", "--eval_every"))]
    process = run_main(
        "--agent=gcqgf",
        "--env=cube-single-play-v0",
        f"--dataset_dir={tiny_dataset_dir}",
        f"--run_dir={run_dir}",
        *flags,
        "--eval_episodes=1",
        "--train_steps=6",  # three chunks: the second, compiled already, gives the estimate
        "--eval_every=6",
    )
    # What the run will do, before it starts; the time of its updates once measured (the data is there already).
    assert "This run: 6 updates (2 per compiled call; their time is measured here" in process.stdout
    assert "and 1 evaluation(s) of 2 weight(s) × 1 episodes" in process.stdout
    assert "Estimate, measured here: " in process.stdout and "so the 2 updates left take about " in process.stdout
    rows = read_csv(os.path.join(run_dir, "eval.csv"))
    assert [(float(r["guidance_weight"]), r["task"]) for r in rows] == [
        (w, t) for w in (0.0, 0.1) for t in ("1", "2", "3", "4", "5", "all")
    ]
    for r in rows:
        assert int(r["episodes"]) == (5 if r["task"] == "all" else 1)
    assert "task 5" in open(os.path.join(run_dir, "report.md")).read()


def test_agent_and_task_kinds_must_match(tiny_dataset_dir, tmp_path):
    process = run_main(
        "--agent=qgf",
        "--env=cube-single-play-v0",
        f"--dataset_dir={tiny_dataset_dir}",
        f"--run_dir={tmp_path / 'x'}",
        *TINY_RUN_FLAGS,
        check=False,
    )
    assert process.returncode != 0 and "--agent=gcqgf" in process.stderr
