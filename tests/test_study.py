"""The study's protocol (docs/study.md): its preset, and the sweep that runs one cell of it."""

import csv
import json
import os
import sys

import numpy as np
import pytest

import configs
from scripts import sweep


def test_study_preset_composes_after_the_family_preset():
    qgf = configs.get_config("qgf", "cube-double+study")
    assert qgf.actor_hidden_dims == (256, 256, 256) and qgf.batch_size == 256
    assert qgf.discount == configs.STUDY_DISCOUNT == 0.99
    # The family preset's official network choices stay; the grid is the paper's scaled by 10 (γ 0.999 -> 0.99).
    assert qgf.time_embedding == "sinusoidal" and qgf.guidance_critic == "target"
    assert qgf.guidance_weights == tuple(round(10 * w, 6) for w in configs.PAPER_GUIDANCE_WEIGHTS)
    assert qgf.guidance_weights[:3] == (0.04, 0.08, 0.1) and len(qgf.guidance_weights) == 9
    # FQL's α per family: the study's three families outside the paper carry the FQL paper's values.
    families = ("cube-single", "cube-double", "puzzle-3x3", "scene")
    assert [configs.get_config("fql", f"{f}+study").alpha for f in families] == [300.0, 300.0, 1000.0, 300.0]
    run = configs.get_run_config("cube-double+study", "qgf")
    assert (run.env_name, run.eval_episodes, run.dataset_episodes) == ("cube-double-play-singletask-task1-v0", 30, 200)
    assert run.dataset_dir.endswith("qgf-study-200ep") and run.dataset_size == "standard"


def test_sweep_study_plans_the_cell_of_one_task_and_seed():
    args = sweep.parse_args(["--preset=study", "--tasks=puzzle-3x3-play-singletask-task2-v0", "--seeds=0"])
    assert args.methods == list(sweep.STUDY_METHODS) and args.root == sweep.STUDY_ROOT
    jobs = sweep.plan(args)
    trainings = [job[0].argv for job in jobs]
    assert [a for argv in trainings for a in argv if a.startswith("--agent=")] == ["--agent=qgf", "--agent=fql"]
    for argv in trainings:
        assert "--preset=puzzle-3x3+study" in argv and "--data=generate" in argv
    evaluations = [step.argv for job in jobs for step in job[1:]]
    # BC, BFN-4, BFN-16 once; QFQL and QGF-Jacobian on held-out and reported episodes; QGF on held-out only
    # (its reported episodes are the training run's own final evaluation); FQL is its run's own evaluation.
    assert len(evaluations) == 3 + 2 * 2 + 1
    assert all(a != "--data=generate" for argv in evaluations for a in argv)
    # Any other preset keeps its meaning.
    other = sweep.parse_args(["--preset=paper", "--tasks=scene-play-singletask-task1-v0"])
    assert sweep.task_preset("scene-play-singletask-task1-v0", other.preset) == "paper"
    assert other.root == "runs/sweep" and other.methods == list(sweep.METHODS)


def test_part_two_is_part_one_on_a_thousand_generated_episodes():
    one, two = (configs.get_run_config(f"cube-double+{p}", "qgf") for p in ("study", "study-1000ep"))
    assert (two.dataset_episodes, two.dataset_size) == (1000, "standard")
    assert two.dataset_dir.endswith("qgf-study-1000ep") and one.dataset_dir.endswith("qgf-study-200ep")
    differing = {key for key in one if one[key] != two[key]}
    assert differing == {"dataset_episodes", "dataset_dir"}
    assert configs.get_config("qgf", "cube-double+study-1000ep") == configs.get_config("qgf", "cube-double+study")
    args = sweep.parse_args(["--preset=study-1000ep", "--tasks=cube-double-play-singletask-task2-v0", "--seeds=0"])
    assert args.methods == list(sweep.STUDY_METHODS) and args.root == "runs/study-1000ep"
    for job in sweep.plan(args):
        assert "--preset=cube-double+study-1000ep" in job[0].argv and "--data=generate" in job[0].argv


def test_part_two_rungs_are_the_study_preset_joined_with_one_change():
    """Part 2's rungs (issue 28, step 2): `study-1000ep+size-0.8m` and `study-1000ep+paper-discount` change only
    their rung's settings, and a sweep of them runs the study's methods on its generated data in its own root."""
    base = configs.get_config("qgf", "cube-double+study-1000ep")
    wide = configs.get_config("qgf", "cube-double+study-1000ep+size-0.8m")
    assert {k for k in base if base[k] != wide[k]} == {"actor_hidden_dims", "critic_hidden_dims"}
    assert wide.actor_hidden_dims == wide.critic_hidden_dims == (512,) * 4
    far = configs.get_config("qgf", "cube-double+study-1000ep+paper-discount")
    assert {k for k in base if base[k] != far[k]} == {"discount", "guidance_weights"}
    assert (far.discount, far.guidance_weights) == (0.999, configs.PAPER_GUIDANCE_WEIGHTS)
    # CFGRL's own grid stays; a goal-conditioned agent keeps its γ, as under the paper's preset.
    cfgrl = configs.get_config("cfgrl", "cube-double+study-1000ep")
    assert configs.get_config("cfgrl", "cube-double+study-1000ep+paper-discount").guidance_weights == (
        cfgrl.guidance_weights
    )
    assert configs.get_config("gcqgf", "study-1000ep+paper-discount").discount == 0.99
    assert configs.get_run_config("cube-double+study-1000ep+paper-discount") == configs.get_run_config(
        "cube-double+study-1000ep"
    )
    longer, run = (configs.get_run_config(f"cube-double+study-1000ep{p}") for p in ("+updates-90k", ""))
    assert {k for k in run if run[k] != longer[k]} == {"train_steps"}
    assert (longer.train_steps, longer.eval_every) == (90_000, 30_000)  # also evaluated at 30k and 60k
    assert configs.get_config("qgf", "cube-double+study-1000ep+updates-90k") == base
    assert [configs.study_part(p) for p in ("study", "study-1000ep+size-0.8m", "size-0.8m", None)] == [
        "study",
        "study-1000ep",
        None,
        None,
    ]
    task = "cube-double-play-singletask-task2-v0"
    args = sweep.parse_args(["--preset=study-1000ep+paper-discount", f"--tasks={task}", "--seeds=0"])
    assert args.methods == list(sweep.STUDY_METHODS) and args.root == "runs/study-1000ep+paper-discount"
    for job in sweep.plan(args):
        assert "--preset=cube-double+study-1000ep+paper-discount" in job[0].argv and "--data=generate" in job[0].argv


def test_study_tables_refuse_a_preset_without_a_study_part(tmp_path, capsys):
    from scripts import study as study_module

    for preset, expected in (("size-0.8m", "holds no study preset"), ("study-2000ep", "unknown preset")):
        with pytest.raises(SystemExit) as refused:
            study_module.main([f"--preset={preset}", f"--out={tmp_path}"])
        assert expected in str(refused.value) and preset in str(refused.value)


def test_a_job_skips_done_steps_and_records_wall_times(tmp_path):
    run = str(tmp_path / "run")
    os.makedirs(run)
    output = os.path.join(run, "eval", "x", "eval.csv")
    write = f"import os; os.makedirs({os.path.dirname(output)!r}, exist_ok=True); open({output!r}, 'w').write('done')"
    step = sweep.Step((sys.executable, "-c", write), run, output)
    assert sweep.Job([step])() == [step.command()]
    assert sweep.Job([step])() == []  # Done: skipped, nothing recorded twice.
    with open(os.path.join(run, "step_times.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["output"] for r in rows] == [os.path.join("eval", "x", "eval.csv")]
    assert float(rows[0]["seconds"]) > 0


def test_a_training_step_records_the_checkpoint_it_resumed_from_and_old_records_gain_the_column(tmp_path):
    run = str(tmp_path / "run")
    os.makedirs(os.path.join(run, "checkpoints", "2000"))
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump({"run": {"train_steps": 3000}}, f)
    with open(os.path.join(run, "step_times.csv"), "w", newline="") as f:  # written before from_step existed
        csv.writer(f).writerows([["output", "seconds", "finished", "command"], ["eval/a/eval.csv", "5.0", "t", "c"]])
    finish = f"import os; os.makedirs({os.path.join(run, 'checkpoints', '3000')!r})"
    step = sweep.Step((sys.executable, "-c", finish), run, "")
    assert not step.done() and step.saved_step() == 2000
    assert sweep.Job([step])() == [step.command()]
    assert step.done()
    with open(os.path.join(run, "step_times.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [(r["output"], r["from_step"]) for r in rows] == [("eval/a/eval.csv", ""), ("train", "2000")]
    assert rows[0]["seconds"] == "5.0" and float(rows[1]["seconds"]) > 0


# scripts.study on a hand-made run tree as scripts.sweep lays it out: one task's seeds 0 and 1 finished, seed 2
# training, another task not started. Four episodes per weight; outcomes are (success, return) per episode.
TASK, OTHER_TASK = "cube-single-play-singletask-task2-v0", "scene-play-singletask-task1-v0"
TRAIN_STEPS = 3000
WIN, LOSS = (1.0, -50.0), (0.0, -200.0)
EVAL_FIELDS = [
    "step", "estimator", "best_of_n", "guidance_weight", "task", "success", "success_stderr", "return",
    "return_stderr", "length", "episodes", "flops_per_decision",
]  # fmt: skip
EPISODE_FIELDS = ["step", "estimator", "best_of_n", "guidance_weight", "task", "episode", "reset_seed", "success",
                  "return", "length"]  # fmt: skip


def outcomes(successes):
    return [WIN if s else LOSS for s in successes]


def write_evaluation(directory, estimator, best_of_n, reset, per_weight, flops, reverse=False):
    """eval.csv and episodes.csv as main.py writes them; `per_weight` maps a weight to its episodes' outcomes,
    episode e resetting with seed reset + e. `reverse` writes the episodes in reverse order (pairing must go by
    reset seed, not by row)."""
    os.makedirs(directory, exist_ok=True)
    tag = {"step": TRAIN_STEPS, "estimator": estimator, "best_of_n": best_of_n}
    episodes = [
        {
            **tag,
            "guidance_weight": w,
            "task": "all",
            "episode": e,
            "reset_seed": reset + e,
            "success": s,
            "return": r,
            "length": 200,
        }  # fmt: skip
        for w, results in per_weight.items()
        for e, (s, r) in enumerate(results)
    ]
    with open(os.path.join(directory, "episodes.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, EPISODE_FIELDS)
        writer.writeheader()
        writer.writerows(episodes[::-1] if reverse else episodes)
    with open(os.path.join(directory, "eval.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, EVAL_FIELDS)
        writer.writeheader()
        for w, results in per_weight.items():
            success, returns = np.array([s for s, _ in results]), np.array([r for _, r in results])
            se = lambda x: np.std(x, ddof=1) / np.sqrt(len(x))  # noqa: E731
            writer.writerow(
                {
                    **tag,
                    "guidance_weight": w,
                    "task": "all",
                    "success": success.mean(),
                    "success_stderr": se(success),
                    "return": returns.mean(),
                    "return_stderr": se(returns),
                    "length": 200,
                    "episodes": len(results),
                    "flops_per_decision": flops,
                }  # fmt: skip
            )


def write_training_run(root, task, agent, seed, losses, finished=True, steps_per_s=20.0):
    """config.json, train.csv (val/critic/loss every 1000 steps, at `steps_per_s`) and, when finished, the final
    checkpoint's dir."""
    run = sweep.run_dir(str(root), task, agent, seed)
    os.makedirs(run, exist_ok=True)
    estimator = "qgf" if agent == "qgf" else "none"
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump({"agent": agent, "env": task, "seed": seed, "run": {"train_steps": TRAIN_STEPS},
                   "agent_config": {"estimator": estimator, "best_of_n": 1}}, f)  # fmt: skip
    with open(os.path.join(run, "train.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, ["step", "steps_per_s", "train/critic/loss", "val/critic/loss"])
        writer.writeheader()
        writer.writerows({"step": 1000 * (i + 1), "steps_per_s": steps_per_s, "train/critic/loss": 0.1,
                          "val/critic/loss": v} for i, v in enumerate(losses))  # fmt: skip
    if finished:
        os.makedirs(os.path.join(run, "checkpoints", str(TRAIN_STEPS)))
    return run


def write_step_times(run, rows):
    """step_times.csv as scripts.sweep writes it: rows (output, seconds, from_step), or (output, seconds) for the
    format before from_step."""
    with open(os.path.join(run, "step_times.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["output", "seconds", "finished", "command", *(["from_step"] if len(rows[0]) == 3 else [])])
        writer.writerows([r[0], r[1], "2026-01-01T00:00:00", "python main.py ...", *r[2:]] for r in rows)


# Per seed, QGF's reported episodes at w = 0.2 and 0.4 (its own final evaluation) and held-out ones, and BC's.
QGF_REPORTED = {0: {0.2: [1, 1, 1, 0], 0.4: [1, 0, 1, 0]}, 1: {0.2: [1, 1, 1, 0], 0.4: [1, 1, 0, 0]}}
QGF_HELDOUT = {0.2: [0, 0, 0, 0], 0.4: [1, 1, 0, 0]}  # Held-out episodes favour w = 0.4, the reported ones w = 0.2.
BC_REPORTED = {0: [0, 1, 0, 0], 1: [0, 0, 1, 1]}
FLOPS = {"bc": 1e6, "bfn4": 4e6, "bfn16": 1.6e7, "qfql": 2e6, "jacobian": 3e6, "qgf": 2.5e6, "fql": 1e5}


def write_finished_cell(root, seed):
    run = write_training_run(root, TASK, "qgf", seed, [3.0, 1.0, 2.0])
    reported, heldout = sweep.reported_reset_seed(seed), sweep.heldout_reset_seed(seed)
    write_evaluation(run, "qgf", 1, reported, {w: outcomes(s) for w, s in QGF_REPORTED[seed].items()}, FLOPS["qgf"])
    times = [("train", 600.0)]
    evaluations = [
        ("bc", "none", 1, reported, {0.0: outcomes(BC_REPORTED[seed])}),
        ("bfn4", "none", 4, reported, {0.0: outcomes([0, 0, 0, 0])}),
        ("bfn16", "none", 16, reported, {0.0: outcomes([0, 0, 0, 0])}),
        ("qgf", "qgf", 1, heldout, {w: outcomes(s) for w, s in QGF_HELDOUT.items()}),
        *[
            (m, e, 1, r, {0.0: outcomes([0] * 4), 0.4: outcomes([0] * 4)})
            for m, e in (("qfql", "noisy"), ("jacobian", "jacobian"))
            for r in (reported, heldout)
        ],  # fmt: skip
    ]
    for method, estimator, best_of_n, reset, per_weight in evaluations:
        where = sweep.eval_dir(run, estimator, best_of_n, reset)
        write_evaluation(where, estimator, best_of_n, reset, per_weight, FLOPS[method], reverse=method == "bc")
        times.append((os.path.relpath(os.path.join(where, "eval.csv"), run), 30.0))
    write_step_times(run, times)
    fql = write_training_run(root, TASK, "fql", seed, [1.0, 0.5, 0.5])
    write_evaluation(fql, "none", 1, reported, {0.0: outcomes([0, 0, 0, 0])}, FLOPS["fql"])
    write_step_times(fql, [("train", 300.0)])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The tree, and what scripts.study wrote from it: (runs, out, csv rows, markdown)."""
    from scripts import study

    runs, out = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("docs")
    for seed in (0, 1):
        write_finished_cell(runs, seed)
    write_training_run(runs, TASK, "qgf", 2, [4.0], finished=False)  # Seed 2 is training: at step 1000.
    csv_path, md_path = study.write_study(str(runs), str(out), tasks=(TASK, OTHER_TASK), seeds=(0, 1, 2))
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    return runs, out, rows, open(md_path).read()


def test_study_csv_has_a_row_per_task_method_seed_weight_and_episode_set(study):
    _, _, rows, _ = study
    # Per seed: BC, BFN-4, BFN-16, FQL one row each; QFQL and QGF-Jacobian 2 weights × 2 episode sets; QGF 2 × 2.
    assert len(rows) == 2 * (4 + 3 * 4)
    key = {(r["method"], r["seed"], r["episode_set"], float(r["guidance_weight"])): r for r in rows}
    heldout = key[("qgf", "0", "heldout", 0.4)]
    assert float(heldout["success"]) == 0.5 and float(heldout["return"]) == -125.0 and heldout["episodes"] == "4"
    assert float(heldout["success_stderr"]) == pytest.approx(np.std([1, 1, 0, 0], ddof=1) / 2)
    assert float(heldout["eval_wall_s"]) == 30.0 and float(heldout["flops_per_decision"]) == 2.5e6
    own = key[("qgf", "1", "reported", 0.2)]  # The training run's own evaluation: timed with its training.
    assert float(own["success"]) == 0.75 and own["eval_wall_s"] == ""
    # The weight chosen on held-out success is marked, for QGF 0.4 (not 0.2, the best on the reported episodes). QFQL
    # and QGF-Jacobian succeed nowhere, and the tie still takes a positive weight: w = 0 is BC's row, never a guided
    # method's choice.
    assert {(r["method"], float(r["guidance_weight"])) for r in rows if r["heldout_choice"] == "1"} == {
        ("bc", 0.0), ("bfn4", 0.0), ("bfn16", 0.0), ("qfql", 0.4), ("jacobian", 0.4), ("qgf", 0.4), ("fql", 0.0)
    }  # fmt: skip


def test_study_md_reports_the_held_out_choice_beside_the_optimistic_best(study):
    *_, markdown = study
    # QGF at w = 0.4: 50 % on both seeds' reported episodes; per seed the best reported weight (0.2) gives 75 %.
    assert "|  | QGF | 0.4 | 50.0 ± 0.0 | 2 | 75.0 ± 0.0 |" in markdown
    assert f"| {TASK} | BC | (none) | 37.5 ± 12.5 | 2 | 37.5 ± 12.5 |" in markdown
    assert "|  | QGF | 0.4 | -125.0 ± 0.0 | 2 | -87.5 ± 0.0 |" in markdown  # Return, chosen on held-out return.


def test_paired_difference_of_qgf_and_bc_on_the_same_reset_seeds(study):
    from scripts import study as study_module

    runs, *_, markdown = study
    evaluations = study_module.latest_evaluations(str(runs))
    qgf = study_module.outcomes_at(evaluations, TASK, "qgf", 0.4)
    bc = study_module.outcomes_at(evaluations, TASK, "bc", 0.0)
    d = study_module.paired_difference(qgf, bc, "success")
    # Episode by episode (BC's rows are stored in reverse): seed 0 [1,0,1,0] − [0,1,0,0] = [1,−1,1,0], seed 1
    # [1,1,0,0] − [0,0,1,1] = [1,1,−1,−1]. Mean 1/8; sum of squared deviations 6.875, so the s.e. is
    # sqrt(6.875 / 7 / 8) = 0.3504; the per-seed means 0.25 and 0 have s.e. 0.125.
    assert d == {"mean": 0.125, "stderr": pytest.approx(0.35038, abs=1e-5), "pairs": 8, "seeds": 2,
                 "seed_stderr": pytest.approx(0.125)}  # fmt: skip
    # Return: each win is worth 150 more than a loss here, so the difference is 150 times success's.
    assert study_module.paired_difference(qgf, bc, "return")["mean"] == pytest.approx(150 * 0.125)
    assert (
        "| QGF − BC | +12.5 ± 35.0 (seeds: ± 12.5) | 0.4, (none) | 8 (2) | +18.8 ± 52.6 (seeds: ± 18.8) |" in markdown
    )


def test_study_md_lists_finished_and_missing_cells_critic_losses_and_wall_times(study):
    runs, out, _, markdown = study
    assert "2 of 6 cells (task × seed) finished" in markdown
    assert f"| {TASK} | done | done | 0 of 10 steps done; qgf trained to step 1000 |" in markdown
    assert f"| {OTHER_TASK} | missing | missing | missing |" in markdown
    assert f"Missing (nothing run yet): {OTHER_TASK} seed 0, {OTHER_TASK} seed 1, {OTHER_TASK} seed 2." in markdown
    # The critics' losses by third of the logged steps (one step each here), and validation over training (0.1).
    assert f"| {TASK} | qgf | 0 | 1000–3000 | 3, 1, 2 | 0.1, 0.1, 0.1 | 30.00, 10.00, 20.00 |" in markdown
    assert f"| {TASK} | qgf | 2 | 1000–1000 (running) | 4, nan, nan | 0.1, nan, nan | 40.00, nan, nan |" in markdown
    # Wall time per cell: fql trains 5 min, qgf 10 min, 8 evaluations of 30 s, 19 min in all; both cells 38.
    assert f"| {TASK} | 0 | 5.0 | 10.0 | 4.0 (8) | 19.0 |" in markdown
    assert "| **all** | | **10.0** | **20.0** | **8.0 (16)** | **38.0** |" in markdown
    assert f"    python -m scripts.sweep --preset=study --tasks={TASK} --seeds=2 --root={runs}" in markdown
    for name in (f"success_vs_weight_{TASK}.png", f"critic_val_loss_{TASK}.png", "success_vs_flops.png"):
        assert f"(study/{name})" in markdown and os.path.getsize(os.path.join(out, "study", name)) > 0


def test_a_training_step_cut_and_resumed_counts_its_earlier_attempts_updates(tmp_path):
    from scripts import study

    # Three runs, each logging 1000-step intervals (train.csv). QGF was cut and resumed from the checkpoint at
    # 2000: its row holds the last attempt (600 s) and train.csv adds the two intervals before it at 2 steps/s
    # (1000 s). QFQL's row predates `from_step` and its train.csv (3 × 500 s) sums to more than the row: a resumed
    # run timed by train.csv alone. FQL ran once: its row (300 s, with loading the data) stays.
    qgf = write_training_run(tmp_path, TASK, "qgf", 0, [3.0, 1.0, 2.0], steps_per_s=2.0)
    write_step_times(qgf, [("train", 600.0, 2000), ("eval/x/eval.csv", 60.0, "")])
    qfql = write_training_run(tmp_path, TASK, "qfql", 0, [3.0, 1.0, 2.0], steps_per_s=2.0)
    write_step_times(qfql, [("train", 600.0)])
    fql = write_training_run(tmp_path, TASK, "fql", 0, [1.0, 0.5, 0.5])
    write_step_times(fql, [("train", 300.0, 0)])
    assert study.training_loop_seconds(qgf) == pytest.approx(1500.0)
    assert study.training_loop_seconds(qgf, up_to=2000) == pytest.approx(1000.0)
    times = study.cell_wall_times(str(tmp_path), TASK, 0)
    assert times == {
        "train": {"fql": 300.0, "qfql": 1500.0, "qgf": 1600.0},
        "marks": {"fql": "", "qfql": "‡", "qgf": "†"},
        "eval": 60.0,
        "evals": 1,
    }
    assert f"| {TASK} | 0 | 5.0 | 25.0‡ | 26.7† | 1.0 (1) | 57.7 |" in study.wall_table(str(tmp_path), [TASK], [0])


def test_the_report_holds_only_the_seeds_asked_for(study, tmp_path):
    """Seed 0's results stay out of a report on seed 1, though its run dirs lie beside seed 1's."""
    from scripts import study as study_module

    runs, *_ = study
    csv_path, md_path = study_module.write_study(str(runs), str(tmp_path), tasks=(TASK,), seeds=(1,))
    with open(csv_path) as f:
        assert {r["seed"] for r in csv.DictReader(f)} == {"1"}
    markdown = open(md_path).read()
    # BC: seed 1's 2 of 4; seed 0's were 1 of 4, and both together 37.5 ± 12.5.
    assert f"| {TASK} | BC | (none) | 50.0 (1 seed) | 1 | 50.0 (1 seed) |" in markdown
    assert "| BC | 2 of 4 | 2 of 4 |" in markdown and "seed 0" not in markdown
    assert "| qgf | 0 |" not in markdown and "| qgf | 1 | 1000–3000 |" in markdown  # The critics' rows.


def test_a_rerun_replaces_only_the_generated_part(study, tmp_path):
    from scripts import study as study_module

    runs, *_ = study
    before = "# The study\r\n\r\nThe lead's prose, ünïcode, CRLF line endings.\r\n\r\n" + study_module.BEGIN
    after = study_module.END + "\r\nMore prose after the generated part.\r\n"
    path = tmp_path / "study.md"
    path.write_bytes((before + "\nan outdated table\n" + after).encode())
    study_module.write_study(str(runs), str(tmp_path), tasks=(TASK,), seeds=(0,))
    first = path.read_bytes()
    assert first.startswith(before.encode()) and first.endswith(after.encode()) and b"outdated" not in first
    assert b"|  | QGF | 0.4 | 50.0" in first
    study_module.write_study(str(runs), str(tmp_path), tasks=(TASK,), seeds=(0,))
    assert path.read_bytes() == first
    # Without the markers nothing is written: the document is the lead's.
    path.write_bytes(b"# Only prose\n")
    with pytest.raises(SystemExit, match="study:generated:begin"):
        study_module.write_study(str(runs), str(tmp_path), tasks=(TASK,), seeds=(0,))
    assert path.read_bytes() == b"# Only prose\n"


def test_runs_without_an_evaluation_leave_the_study_as_it_was(study, tmp_path, capsys):
    """A mistyped --runs (a directory without cells), runs still training, or seeds not run yet never replace the
    results."""
    from scripts import study as study_module

    finished, out, _, _ = study
    before = {name: (out / name).read_bytes() for name in ("study.csv", "study.md")}
    figures = sorted(os.listdir(out / "study"))
    training = tmp_path / "training"
    write_training_run(training, TASK, "qgf", 0, [4.0], finished=False)  # train.csv and a config, no eval.csv
    for runs, seeds in ((tmp_path / "empty", "0,1,2"), (training, "0,1,2"), (finished, "3")):
        runs.mkdir(exist_ok=True)
        with pytest.raises(SystemExit) as exit_:
            study_module.main([f"--runs={runs}", f"--out={out}", "--dataset_dir=", f"--seeds={seeds}"])
        message = str(exit_.value.code)
        expected = f"error: no evaluations of seeds [{seeds.replace(',', ', ')}] found under --runs={runs} "
        assert message.startswith(expected) and "\n" not in message
        assert "left as they were" in message
        print(message)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert sorted(os.listdir(out / "study")) == figures


def test_records_without_checkpoints_give_the_same_tables(study, tmp_path, capsys):
    """scripts.records keeps a study's CSV and JSON files without checkpoints; the tables written from them are the
    tables of the run dirs, finished cells included (their training is known done by its final evaluation)."""
    from scripts import records
    from scripts import study as study_module

    runs, out, _, markdown = study
    kept = tmp_path / "records"
    records.main([f"--runs={runs}", f"--out={kept}"])
    runs_copied = [
        f"{TASK}/{agent}/seed{seed}" for agent, seeds in (("fql", (0, 1)), ("qgf", (0, 1, 2))) for seed in seeds
    ]
    assert capsys.readouterr().out.split("\n")[1:-1] == [f"  {r}" for r in runs_copied]
    kept_files = {os.path.relpath(os.path.join(d, n), kept) for d, _, names in os.walk(kept) for n in names}
    heldout = sweep.eval_dir(os.path.join(TASK, "qgf", "seed0"), "qgf", 1, sweep.heldout_reset_seed(0))
    expected = {"config.json", "train.csv", "eval.csv", "episodes.csv", "step_times.csv"}
    assert {os.path.join(TASK, "qgf", "seed0", name) for name in expected} <= kept_files
    assert {os.path.join(heldout, "eval.csv"), os.path.join(heldout, "episodes.csv")} <= kept_files
    assert os.path.isdir(os.path.join(runs, TASK, "qgf", "seed0", "checkpoints"))
    assert not any("checkpoints" in path or path.endswith(".tmp") for path in kept_files)
    assert json.load(open(kept / study_module.RECORDS_FILE))["run_dirs"] == runs_copied
    again = tmp_path / "docs"
    csv_path, md_path = study_module.write_study(str(kept), str(again), tasks=(TASK, OTHER_TASK), seeds=(0, 1, 2))
    assert open(csv_path).read() == (out / "study.csv").read_text()
    # ... but for the commands that finish a cell: records hold no checkpoints, so those name the runs' root.
    written = open(md_path).read()
    assert f"--root={kept}" not in written and f"--seeds=2 --root={runs}" in markdown
    finish = markdown.replace(f" --root={runs}", "")
    assert written == finish.replace(str(runs), str(kept)).replace(str(out), str(again))
    with pytest.raises(SystemExit, match="is not a directory"):
        records.main([f"--runs={tmp_path / 'nowhere'}", f"--out={kept}"])


def test_one_weight_table_picks_the_weight_best_on_heldout_episodes_over_tasks():
    from scripts import study

    # Task a prefers w = 0.1 (held-out 100 %), task b w = 0.2; averaged over tasks, 0.1 (75 %) beats 0.2 (62.5 %).
    success = {
        ("a", "qgf"): {0: {"reported": {0.0: 0.0, 0.1: 1.0, 0.2: 0.5}, "heldout": {0.0: 0.0, 0.1: 1.0, 0.2: 0.5}}},
        ("b", "qgf"): {0: {"reported": {0.0: 0.0, 0.1: 0.5, 0.2: 0.75}, "heldout": {0.0: 0.25, 0.1: 0.5, 0.2: 0.75}}},
    }
    lines = study.one_weight_table(success, ["a", "b"])
    assert "| 0.1 ◀ shared choice | 100.0 (100.0) | 50.0 (50.0) | 75.0 (75.0) |" in lines
    assert "| 0.2 | 50.0 (50.0) | 75.0 (75.0) | 62.5 (62.5) |" in lines
    assert lines[-1].endswith("a: 0.1, b: 0.2.")
    assert study.one_weight_table({}, ["a"]) == ["No QGF evaluation yet."]


def test_goal_coverage_counts_episodes_reaching_the_goal_and_transitions_there():
    from scripts import study

    # Three episodes (terminals at 2, 5, 8): the first reaches the goal twice, the third once, the second never.
    rewards = np.array([-1, 0, 0, -2, -1, -1, -1, -1, 0])
    terminals = np.array([0, 0, 1, 0, 0, 1, 0, 0, 1])
    assert study.goal_coverage(rewards, terminals) == {"episodes": 3, "reaching": 2, "share": 3 / 9}
    assert study.coverage_table({}) == ["No dataset found."]


def test_part_two_names_its_own_preset_and_sees_the_same_cells_finished(study, tmp_path):
    """`scripts.study --preset=study-1000ep` (part 2): the cells' plan is the study-1000ep sweep's (the same steps, so
    the same cells count as finished), and the document's commands name that preset and its root."""
    from scripts import study as study_module

    runs, _, _, part_one = study
    _, md_path = study_module.write_study(str(runs), str(tmp_path), tasks=(TASK,), seeds=(0, 1), preset="study-1000ep")
    part_two = open(md_path).read()
    assert "2 of 2 cells (task × seed) finished" in part_two and "`scripts.sweep --preset=study-1000ep`" in part_two
    assert f"python -m scripts.sweep --preset=study-1000ep --tasks={TASK} --seeds=0 --root={runs}" in part_two
    assert "--preset=study-1000ep" not in part_one and f"--preset=study --tasks={TASK} --seeds=0" in part_one
    assert study_module.sweep_command(TASK, 1, "runs/study-1000ep", "study-1000ep").endswith("--seeds=1")
    # The command that writes the tables again names the preset, and the tasks and seeds that differ from the
    # part's own (part 2: cube-double and puzzle task 2), in the header and under "Commands" alike.
    again = f"python -m scripts.study --preset=study-1000ep --runs={runs} --out={tmp_path} --tasks={TASK} --seeds=0,1"
    assert part_two.count(again) == 2, part_two
    assert study_module.default_tasks("study-1000ep+size-0.8m") == study_module.PART_TWO_TASKS
    part_two_defaults = (
        "runs/study-1000ep",
        "docs/study-1000ep",
        "study-1000ep",
        study_module.PART_TWO_TASKS,
        (0, 1, 2),
    )
    assert study_module.study_command(*part_two_defaults) == "python -m scripts.study --preset=study-1000ep"
    assert study_module.study_command("runs/study", "docs", "study", study_module.STUDY_TASKS, (0, 1, 2)) == (
        "python -m scripts.study"
    )


def test_each_part_writes_its_tables_into_its_own_folder(monkeypatch, tmp_path):
    """Part 2's (or a rung's) tables never land on part 1's docs/study.md: `--out` defaults to docs/<preset>/."""
    from scripts import study as study_module

    written = []
    monkeypatch.setattr(study_module, "write_study", lambda *args: written.append(args) or ("csv", "md"))
    for preset, out in (("study", "docs"), ("study-1000ep", "docs/study-1000ep"), ("study-1000ep+size-0.8m", None)):
        study_module.main([f"--preset={preset}", f"--runs={tmp_path}", "--dataset_dir="])
        assert written[-1][1] == (out or os.path.join("docs", preset))
    assert written[1][2] == list(study_module.PART_TWO_TASKS) and written[0][2] == list(study_module.STUDY_TASKS)


PUZZLE = "puzzle-3x3-play-singletask-task2-v0"  # Starts with one light wrong: 200 steps untouched return −200.
HELD, PRESSED = (0.0, -200.0), (0.0, -260.0)


def test_study_counts_successes_and_the_puzzle_episodes_left_untouched(study, tmp_path):
    """Per method and seed over every weight and both episode sets, then per weight: episodes that succeeded, and
    episodes whose return is the start's reward held for every step. Only puzzle tasks get the second table (a cube
    task's −200 is no such sign)."""
    from scripts import study as study_module

    runs = tmp_path / "runs"
    run = write_training_run(runs, PUZZLE, "qgf", 0, [1.0])
    reported, heldout = sweep.reported_reset_seed(0), sweep.heldout_reset_seed(0)
    write_evaluation(run, "qgf", 1, reported, {0.1: [HELD, PRESSED, WIN, HELD], 0.4: [HELD] * 4}, 1e6)
    write_evaluation(sweep.eval_dir(run, "qgf", 1, heldout), "qgf", 1, heldout,
                     {0.1: [PRESSED] * 4, 0.4: [HELD, HELD, HELD, PRESSED]}, 1e6)  # fmt: skip
    write_evaluation(sweep.eval_dir(run, "none", 1, reported), "none", 1, reported,
                     {0.0: [PRESSED, HELD, PRESSED, PRESSED]}, 1e6)  # fmt: skip
    _, md_path = study_module.write_study(str(runs), str(tmp_path / "docs"), tasks=(PUZZLE,), seeds=(0,))
    text = open(md_path).read()
    assert f"## Puzzle left untouched: {PUZZLE}" in text and "start's reward (-1: " in text
    assert "| QGF | 9 of 16 | 9 of 16 |" in text and "| BC | 1 of 4 | 1 of 4 |" in text
    assert "| 0.1 | 2 of 8 |" in text and "| 0.4 | 7 of 8 |" in text
    assert "| QGF | 1 of 16 | 1 of 16 |" in text and "| 0.1 | 1 of 8 |" in text  # successes, before the untouched
    assert text.index("## Successes over every weight") < text.index("## Puzzle left untouched")
    assert "Puzzle left untouched" not in study[3]  # the cube task's losses return −200 too
    # The cube fixture's successes: QGF per seed 5 reported + 2 held-out of 16; seed 2 has not evaluated.
    assert "| QGF | 7 of 16 | 7 of 16 | — | 14 of 32 |" in study[3]
    assert study_module.count_table({}, [0]) == ["No episodes.csv in these evaluations (runs before commit 58b68d9 "
                                                 "wrote none)."]  # fmt: skip
    assert study_module.puzzle_start_reward("puzzle-3x3-play-singletask-task1-v0") == -6.0
    assert study_module.puzzle_start_reward(TASK) is None


def test_study_shows_a_run_evaluated_at_several_steps_step_by_step(tmp_path):
    """A run whose eval.csv holds several steps (eval_every below its training steps, as part 2's updates-90k rung):
    success and return per weight at each step, from the one run."""
    from scripts import study as study_module

    runs = tmp_path / "runs"
    run = write_training_run(runs, TASK, "qgf", 0, [1.0])
    write_evaluation(run, "qgf", 1, sweep.reported_reset_seed(0), {0.1: [WIN, LOSS, LOSS, LOSS]}, 1e6)
    with open(os.path.join(run, "eval.csv")) as f:
        rows = list(csv.DictReader(f))
    earlier = [{**r, "step": TRAIN_STEPS // 3, "success": 0.0, "return": -200.0} for r in rows]
    with open(os.path.join(run, "eval.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, EVAL_FIELDS)
        writer.writeheader()
        writer.writerows(earlier + rows)
    _, md_path = study_module.write_study(str(runs), str(tmp_path / "docs"), tasks=(TASK,), seeds=(0,))
    text = open(md_path).read()
    assert f"{TASK}, QGF, seed 0:" in text
    assert f"| weight | step {TRAIN_STEPS // 3} | step {TRAIN_STEPS} |" in text
    assert "| 0.1 | 0.0 (-200.0) | 25.0 (-162.5) |" in text
    # No held-out evaluation yet: the one-weight table names no shared choice (it marked the smallest weight).
    assert "none yet (no held-out evaluation)" in text and "◀ shared choice" not in text
