"""The study's protocol (docs/study.md): its preset, and the sweep that runs one cell of it."""

import csv
import os
import sys

import configs
from scripts import sweep


def test_study_preset_composes_after_the_family_preset():
    qgf = configs.get_config("qgf", "cube-double+study")
    assert qgf.actor_hidden_dims == (256, 256, 256) and qgf.batch_size == 256
    assert qgf.discount == configs.STUDY_DISCOUNT == 0.99
    # The family preset's official network choices stay; the grid is the paper's scaled by 10 (γ 0.999 -> 0.99).
    assert qgf.time_embedding == "sinusoidal" and qgf.guidance_critic == "target"
    assert qgf.guidance_weights == tuple(round(10 * w, 6) for w in configs.PAPER_GUIDANCE_WEIGHTS)
    assert qgf.guidance_weights[:3] == (0.0, 0.04, 0.08)
    # FQL's α per family: the study's three families outside the paper carry the FQL paper's values.
    families = ("cube-single", "cube-double", "puzzle-3x3", "scene")
    assert [configs.get_config("fql", f"{f}+study").alpha for f in families] == [300.0, 300.0, 1000.0, 300.0]
    run = configs.get_run_config("cube-double+study", "qgf")
    assert (run.env_name, run.eval_episodes, run.dataset_episodes) == ("cube-double-play-singletask-task1-v0", 30, 200)
    assert run.dataset_dir.endswith("qgf-study-200ep")


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


def test_run_steps_skips_done_steps_and_records_wall_times(tmp_path):
    run = str(tmp_path / "run")
    os.makedirs(run)
    output = os.path.join(run, "eval", "x", "eval.csv")
    write = f"import os; os.makedirs({os.path.dirname(output)!r}, exist_ok=True); open({output!r}, 'w').write('done')"
    step = sweep.Step((sys.executable, "-c", write), run, output)
    assert sweep.run_steps([step]) == [step.command()]
    assert sweep.run_steps([step]) == []  # Done: skipped, nothing recorded twice.
    with open(os.path.join(run, "step_times.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["output"] for r in rows] == [os.path.join("eval", "x", "eval.csv")]
    assert float(rows[0]["seconds"]) > 0
