"""bench.parity_outcomes: the pieces that need no official checkout (log parsing, pooling, the table, the document
section, the official command line), on small files written here. No training, no environment."""

import json
import math

import pytest

from bench import parity_outcomes as po


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_mean_se_uses_the_sample_deviation():
    mean, se = po.mean_se([1.0, 0.0, 1.0, 0.0])
    assert mean == 0.5
    assert se == pytest.approx(math.sqrt((4 * 0.25 / 3) / 4))
    assert math.isnan(po.mean_se([1.0])[1])
    assert math.isnan(po.mean_se([])[0])


def test_official_curves_join_a_resumed_runs_segments(tmp_path):
    run = tmp_path / "run"
    header = "training/bc_loss,training/critic_loss,training/value_loss,validation/critic/critic_loss,step\n"
    # The first segment ran to step 3000 but was killed; the checkpoint it resumed from is 2000.
    write(run / "train.until2000.csv", header + "0.5,10,1,9,1000\n0.4,11,2,9,2000\n0.3,12,3,9,3000\n")
    write(run / "train.csv", header + "0.2,13,4,9,3000\n0.1,14,5,9,4000\n")
    curves = po.official_curves(str(run))
    assert curves["critic loss"] == {1000: 10.0, 2000: 11.0, 3000: 13.0, 4000: 14.0}
    assert curves["BC (flow-matching) loss"][3000] == 0.2
    assert curves["value loss"][1000] == 1.0


def test_official_run_dir_and_checkpoints(tmp_path):
    run = tmp_path / "qgf" / po.RUN_GROUP / f"{po.RUN_GROUP}_qgf_cube-single-play-task2_seed01_abcd1234"
    for epoch in (20000, 10000):
        write(run / f"params_{epoch}.pkl", "")
    assert po.official_run_dir(str(tmp_path), 1) == str(run)
    assert po.official_run_dir(str(tmp_path), 0) is None
    assert po.checkpoints(str(run)) == [10000, 20000]


def test_our_episodes_keep_the_final_plain_qgf_rows(tmp_path):
    rows = [
        "step,estimator,best_of_n,guidance_weight,task,episode,reset_seed,success,return,length",
        "30000,qgf,1,0.0,all,0,0,1.0,-50.0,50",
        "30000,qgf,1,0.0,all,1,1,0.0,-200.0,200",
        "30000,qgf,1,0.04,all,0,0,1.0,-40.0,40",
        "30000,qgf,4,0.04,all,0,0,0.0,-200.0,200",  # best-of-4: not ours
        "10000,qgf,1,0.04,all,0,0,0.0,-200.0,200",  # an earlier evaluation
    ]
    write(tmp_path / "episodes.csv", "\n".join(rows) + "\n")
    episodes = po.our_episodes(str(tmp_path), 30000)
    assert sorted(episodes) == [0.0, 0.04]
    assert [e["success"] for e in episodes[0.0]] == [1.0, 0.0]
    assert episodes[0.04] == [{"success": 1.0, "return": -40.0, "length": 40.0}]


def test_official_episodes_read_one_file_per_weight(tmp_path):
    record = {"weight": 0.08, "epoch": 30000, "episodes": [{"success": 1.0, "return": -30.0, "length": 30}]}
    write(tmp_path / "w0.08.json", json.dumps(record))
    assert po.official_episodes(str(tmp_path)) == {0.08: record["episodes"]}


def episodes(successes, length=100):
    return [{"success": float(x), "return": -length * (1 - x) - 10.0, "length": length} for x in successes]


def test_summarise_pools_only_complete_seeds_and_flags_beyond_two_se():
    by_seed = {0: {0.1: episodes([1, 1, 1, 0])}, 1: {0.1: episodes([1, 1, 0, 0])}, 2: {0.1: episodes([1])}}
    row = po.summarise(by_seed, [0.1], expected=4)[0.1]
    assert row["seeds"] == [0, 1] and row["episodes"] == 8
    assert row["success"] == pytest.approx(5 / 8)
    other = po.summarise({0: {0.1: episodes([0, 0, 0, 0])}, 1: {0.1: episodes([0, 0, 0, 1])}}, [0.1], 4)[0.1]
    d = po.difference(row, other)
    assert d["success"] == pytest.approx(5 / 8 - 1 / 8)
    assert d["success_se"] == pytest.approx(math.sqrt(row["success_se"] ** 2 + other["success_se"] ** 2))
    assert d["success_beyond_2se"] == (abs(d["success"]) > 2 * d["success_se"])
    same = po.difference(row, row)
    assert same["success"] == 0 and not same["success_beyond_2se"]


def test_table_and_section_markers():
    ours = po.summarise({0: {0.0: episodes([0, 0, 1]), 0.1: episodes([1, 1, 1])}}, [0.0, 0.1], 3)
    official = po.summarise({0: {0.0: episodes([0, 0, 0]), 0.1: episodes([1, 1, 0])}}, [0.0, 0.1], 3)
    rows = {
        w: {"ours": ours[w], "official": official[w], "difference": po.difference(ours[w], official[w])} for w in ours
    }
    text = po.table(rows)
    lines = text.splitlines()
    assert len(lines) == 4 and lines[2].startswith("| 0 (BC) |") and lines[3].startswith("| 0.1 |")
    assert "33.3 ± 33.3" in lines[2] and "100.0" in lines[3]
    doc = "# Numerical parity\n\nlevel 1 text\n"
    once = po.replace_section(doc, "first")
    assert once.startswith(doc.rstrip("\n")) and "## Outcomes" in once and "first" in once
    notes = once.replace(po.GEN_END, po.GEN_END + "\nhand-written analysis")
    twice = po.replace_section(notes + "\ntrailing text\n", "second")
    assert "first" not in twice and "second" in twice and "level 1 text" in twice and "trailing text" in twice
    assert "hand-written analysis" in twice
    assert twice.count(po.BEGIN) == 1 and twice.count(po.GEN_BEGIN) == 1


def test_official_command_carries_the_study_settings():
    s = po.study_settings()
    assert s["weights"][0] == 0.0 and len(s["weights"]) == 10
    command = po.official_train_command("py", s, 2, "/save", "/data", restore=("/save/run", 20000))
    flags = dict(a.split("=", 1) for a in command[2:])
    assert flags["--agent.actor_hidden_dims"] == po.dims(s["hidden"])
    assert flags["--agent.value_network_kwargs.hidden_dims"] == po.dims(s["critic_hidden"])
    assert float(flags["--agent.discount"]) == s["discount"]
    assert int(flags["--agent.batch_size"]) == s["batch_size"]
    assert int(flags["--agent.horizon_length"]) == s["horizon"]
    assert int(flags["--offline_steps"]) == s["train_steps"]
    assert flags["--guidance_weights"].split(",")[0] == "0"
    assert flags["--restore_epoch"] == "20000" and flags["--seed"] == "2"
    ours = po.our_command(s, 2, "/runs/x")
    assert f"--preset={po.PRESET}" in ours and "--guidance_weights=" + po.weights_flag(s["weights"]) in ours


def test_a_regenerated_level_one_document_keeps_the_outcomes_section():
    old = po.replace_section("# old level 1\n", "the table")
    old = old.replace(po.GEN_END, po.GEN_END + "\nthe analysis")
    new = po.keep_section(old, "# new level 1\n")
    assert "# new level 1" in new and "the table" in new and "the analysis" in new and "old level 1" not in new
    assert po.replace_section(new, "new table").count("## Outcomes") == 1
    assert po.keep_section("# no outcomes yet\n", "# new\n") == "# new\n"


def test_collect_and_section_on_an_empty_output_folder(tmp_path):
    s = po.study_settings()
    result = po.collect(str(tmp_path), [0], s)
    assert po.finished_seeds(result, s["weights"], s["episodes"]) == {"ours": [], "official": []}
    text = po.section(result, s, [0], "parity_losses.png", str(tmp_path), "python -m bench.parity_outcomes")
    assert "ours none; official none" in text and "Not checked yet" in text
    assert text.count("\n| ") >= len(s["weights"])


def test_pins_text_reports_the_check(tmp_path):
    pins = {"versions": {"jax": "0.10.2"}, "error": "", "eval": {"evaluation_guidance_weight_0.0/success": "0.5"}}
    (tmp_path / "pins.json").write_text(json.dumps(pins))
    assert "without error" in po.pins_text(str(tmp_path)) and "jax 0.10.2" in po.pins_text(str(tmp_path))
    (tmp_path / "pins.json").write_text(json.dumps({**pins, "error": "AttributeError: x"}))
    assert "failed: `AttributeError: x`" in po.pins_text(str(tmp_path))


def test_stubs_are_importable_packages(tmp_path):
    import importlib.util
    import sys

    folder = po.write_stubs(str(tmp_path))
    for name in po.PIN_STUBS:
        spec = importlib.util.spec_from_file_location(f"stub_{name}", f"{folder}/{name}/__init__.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    assert module.init(project="x").config.update({}) is None  # the wandb stub: init, config.update
    assert "stub_wandb" not in sys.modules


def test_run_step_records_its_own_time_apart_from_the_wait(tmp_path):
    import os

    seconds = po.run_step(str(tmp_path), "noop", ["true"], str(tmp_path), dict(os.environ), lock="")
    (timing,) = json.loads((tmp_path / "timings.json").read_text())
    assert timing["step"] == "noop" and timing["exit"] == 0 and timing["seconds"] == seconds
    assert 0 <= timing["waited_s"] < 5 and 0 <= seconds < 5
    with pytest.raises(RuntimeError, match="failed with exit 1"):
        po.run_step(str(tmp_path), "fails", ["false"], str(tmp_path), dict(os.environ), lock="")


def test_the_current_jax_comparison_has_its_own_part_inside_the_outcomes_section():
    doc = po.replace_section("# level 1\n", "own-pins table")
    doc = doc.replace(po.GEN_END, po.GEN_END + "\nhand-written analysis")
    once = po.replace_section(doc, "current-jax table", current_jax=True)
    assert once.count(po.CURRENT_HEADING) == 1 and "own-pins table" in once and "hand-written analysis" in once
    assert once.index(po.GEN_END) < once.index(po.CURRENT_GEN_BEGIN) < once.index(po.END)
    twice = po.replace_section(once, "newer current-jax table", current_jax=True)
    assert "current-jax table\n" not in twice.replace("newer current-jax table", "")
    assert "newer current-jax table" in twice and twice.count(po.CURRENT_GEN_BEGIN) == 1
    assert po.replace_section(twice, "newer own-pins table").count("current-jax") >= 2  # The other part stays.
    # A regenerated level-1 document keeps both parts.
    kept = po.keep_section(twice, "# new level 1\n")
    assert "newer current-jax table" in kept and "own-pins table" in kept


def test_collect_reads_our_runs_from_another_output_folder(tmp_path, monkeypatch):
    s = po.study_settings()
    ours_out = tmp_path / "first"
    run = ours_out / "ours" / "seed0"
    run.mkdir(parents=True)
    (run / "episodes.csv").write_text("step,weight,episode,success,return\n")
    seen = []
    monkeypatch.setattr(po, "our_episodes", lambda run_dir, step: seen.append(run_dir) or {})
    po.collect(str(tmp_path / "second"), [0], s, ours_out=str(ours_out))
    assert seen == [str(run)]
    text = po.section(
        po.collect(str(tmp_path / "second"), [0], s), s, [0], "f.png", str(tmp_path), "cmd", current_jax=True
    )
    assert "this project's python" in text and "Not checked yet" not in text
