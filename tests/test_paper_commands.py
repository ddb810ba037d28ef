"""README's command for the paper's run resolves to the settings the official launch scripts passed.

The table below restates, for every family × method the official scripts ran (zhouzypaul/qgf at bc44a67,
`scripts/bc_iql_train.py` and `scripts/exp_*.py`; BASELINES.md §0, §2.6, §2.9, §3.7), the values those scripts set.
Each README command is resolved (runner.config.resolve, what `main.py --dry_run` prints) and compared field by field,
so a changed coefficient in configs.py, a preset that stops being the default, or a grid that gains w = 0 fails here.
"""

import json
import os
import re
import subprocess
import sys

import pytest

import configs
from runner.config import Options, resolve
from scripts import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = ("cube-triple", "cube-quadruple", "puzzle-4x4", "scene")
NINE_WEIGHTS = (0.004, 0.008, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12)

# Every script: 4×1024 networks (actor and critic / value), batch 1024, γ 0.999, expectile 0.9, chunks of H = 5, 10
# flow steps, 500k updates, 30 episodes, an evaluation every 100k, the family's 100M slices rotated every 1000.
COMMON_AGENT = dict(
    actor_hidden_dims=(1024,) * 4, critic_hidden_dims=(1024,) * 4, batch_size=1024, discount=0.999, expectile=0.9,
    horizon=5,
)  # fmt: skip
COMMON_RUN = dict(train_steps=500_000, eval_episodes=30, eval_every=100_000, slice_every=1000, dataset_size="100m")

# family -> agent -> the settings that script passed beyond COMMON_AGENT (one column per family, FAMILIES' order).
PER_FAMILY = {
    "fql": {"alpha": (1000.0, 1000.0, 1000.0, 300.0), "critic_loss": ("iql",) * 4},
    "edp": {"bc_weight": (100.0, 300.0, 300.0, 30.0)},
    "qam": {"inv_temp": (0.1,) * 4},
    "dac": {"alpha": (100.0, 100.0, 300.0, 100.0)},
    "qsm": {"inv_temp": (0.1,) * 4, "alpha": (10.0,) * 4},
    "cfgrl": {"guidance_weights": ((1.0, 2.0, 3.0, 5.0, 10.0, 15.0),) * 4},
    "robust_q": {"guidance_weights": (NINE_WEIGHTS,) * 4},
    # bc_iql_train.py trains the base; the QGF / QGF-Jacobian / QFQL scripts evaluate it over the nine weights.
    "qgf": {"guidance_weights": (NINE_WEIGHTS,) * 4, "denoising_steps": (10,) * 4},
}
GRADSTEP = {"cube-triple": (0.01, 3), "cube-quadruple": (0.01, 3), "puzzle-4x4": (0.01, 3), "scene": (0.01, 5)}


def readme_paper_commands() -> dict:
    """family -> the task of README's `python main.py --agent=qgf --env=<task>` line for that family."""
    with open(os.path.join(ROOT, "README.md")) as f:
        tasks = re.findall(r"^\s+python main\.py --agent=qgf --env=(\S+-play-singletask-task\d-v0)\s*$", f.read(), re.M)
    return {task.split("-play-")[0]: task for task in tasks}


def test_readme_gives_the_paper_command_of_each_family():
    assert set(FAMILIES) <= set(readme_paper_commands())


@pytest.mark.parametrize("agent", sorted(PER_FAMILY))
@pytest.mark.parametrize("family", FAMILIES)
def test_the_paper_command_resolves_to_the_official_scripts_settings(family, agent):
    task = readme_paper_commands()[family]
    plan = resolve(Options(agent=agent, env=task))
    config = plan.config
    assert plan.preset == family
    for field, value in COMMON_AGENT.items():
        assert (tuple(config[field]) if isinstance(value, tuple) else config[field]) == value, field
    for field, values in PER_FAMILY[agent].items():
        expected = values[FAMILIES.index(family)]
        actual = plan.weights if field == "guidance_weights" else config[field]
        assert (tuple(actual) if isinstance(expected, tuple) else actual) == expected, field
    for field, value in COMMON_RUN.items():
        assert plan.run[field] == value, field
    slices = os.path.join(os.path.expanduser("~/.ogbench/data"), f"{family}-play-100m-v0")
    assert plan.run.dataset_path == slices
    assert plan.seed_configs[0]["dataset"] == {
        "kind": "100M slices", "path": slices, "expected_transitions": 100_000_000
    }  # fmt: skip
    assert all(w > 0 for w in plan.weights) or agent not in ("qgf", "robust_q")


@pytest.mark.parametrize("family", FAMILIES)
def test_gradstep_evaluates_with_the_family_step_size_and_steps(family):
    assert sweep.grad_step_setting(readme_paper_commands()[family]) == GRADSTEP[family]


def test_a_family_preset_of_another_family_is_one_error():
    with pytest.raises(configs.ConfigError, match="--preset=scene holds the scene family's coefficients, but "):
        resolve(Options(agent="qgf", env="cube-triple-play-singletask-task1-v0", preset="scene"))
    # A size preset or the study's protocol composes after the task's family preset.
    sized = resolve(Options(agent="fql", env="cube-triple-play-singletask-task2-v0", preset="size-0.8m"))
    assert sized.preset == "cube-triple+size-0.8m" and sized.config.alpha == 1000.0
    assert sized.config.actor_hidden_dims == (512,) * 4
    study = resolve(Options(agent="qgf", env="puzzle-3x3-play-singletask-task2-v0", preset="study"))
    assert study.preset == "puzzle-3x3+study" and study.run.dataset_size == "standard" and not study.run.dataset_path
    # An explicit generic preset is taken as given.
    assert resolve(Options(agent="fql", env="puzzle-4x4-play-singletask-task1-v0", preset="paper")).config.alpha == 300


def test_families_without_100m_slices_train_on_the_standard_file_and_say_so():
    plan = resolve(Options(agent="qgf", env="cube-single-play-singletask-task2-v0"))
    assert plan.preset == "cube-single" and plan.run.dataset_size == "standard" and not plan.run.dataset_path
    dataset = plan.seed_configs[0]["dataset"]
    assert dataset["kind"] == "standard file" and dataset["path"].endswith("cube-single-play-v0.npz")
    with pytest.raises(configs.ConfigError, match="OGBench publishes no 100M slices of cube-single"):
        resolve(Options(agent="qgf", env="cube-single-play-singletask-task2-v0", dataset_size="100m"))
    standard = resolve(Options(agent="qgf", env="scene-play-singletask-task1-v0", dataset_size="standard"))
    assert standard.seed_configs[0]["dataset"]["kind"] == "standard file" and not standard.run.dataset_path


def test_absent_slices_that_cannot_be_fetched_stop_the_run_in_one_line(tmp_path):
    options = dict(agent="qgf", env="cube-triple-play-singletask-task1-v0", dataset_dir=str(tmp_path))
    for data in ("local", "generate"):
        with pytest.raises(configs.ConfigError) as error:
            resolve(Options(**options, data=data))
        message = str(error.value)
        assert str(tmp_path / "cube-triple-play-100m-v0") in message and "100M transitions" in message
        assert "--dataset_size=standard" in message and "\n" not in message
    (tmp_path / "cube-triple-play-100m-v0").mkdir()
    (tmp_path / "cube-triple-play-100m-v0" / "cube-triple-play-v0-000.npz").write_bytes(b"")
    assert resolve(Options(**options, data="local")).run.dataset_path == str(tmp_path / "cube-triple-play-100m-v0")


def test_dry_run_prints_the_resolved_run_and_creates_nothing(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "main.py", "--agent=fql", "--env=puzzle-4x4-play-singletask-task1-v0", "--dry_run"]
    result = subprocess.run(
        command + [f"--run_dir={run_dir}"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "OGBENCH_DATASET_URL": "http://127.0.0.1:9/"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    (run,) = shown["runs"]
    assert run["run_dir"] == str(run_dir) and not run_dir.exists()
    config = run["config"]
    assert config["preset"] == "puzzle-4x4" and config["agent_config"]["alpha"] == 1000.0
    assert config["dataset"]["kind"] == "100M slices" and config["dataset"]["path"].endswith("puzzle-4x4-play-100m-v0")
    mismatch = subprocess.run(
        [sys.executable, "main.py", "--preset=scene", "--env=cube-triple-play-singletask-task1-v0", "--dry_run"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert mismatch.returncode != 0 and mismatch.stderr.strip().count("\n") == 0
    assert mismatch.stderr.startswith("error: --preset=scene") and "cube-triple" in mismatch.stderr


def test_guided_methods_choose_among_positive_weights_only():
    from scripts import table

    # No positive weight succeeds on the held-out episodes: the tie takes the smallest positive weight, never BC's.
    per_seed = {
        0: {"reported": {0.0: 0.3, 0.004: 0.0, 0.008: 0.0}, "heldout": {0.0: 0.2, 0.004: 0.0, 0.008: 0.0}},
        1: {"reported": {0.0: 0.1, 0.004: 0.0, 0.008: 0.1}, "heldout": {0.0: 0.4, 0.004: 0.0, 0.008: 0.0}},
    }
    assert table.choose_weight("qgf", per_seed) == 0.004
    assert table.per_seed_best("qgf", per_seed) == [0.0, 0.1]  # The paper's convention: positive weights too.
    assert table.choose_weight("qgf", {0: {"reported": {0.0: 0.5}, "heldout": {0.0: 0.5}}}) is None
    assert table.choose_weight("bc", per_seed) == 0.0  # BC is its own method, at w = 0.


def test_report_marks_the_best_positive_weight_not_bc():
    from runner.report import format_table

    rows = [
        {"guidance_weight": w, "success": s, "success_stderr": 0.0, "return": 0.0, "length": 1, "episodes": 2}
        for w, s in ((0.0, 0.9), (0.03, 0.5), (0.1, 0.2))
    ]
    lines = format_table(rows).splitlines()
    assert "◀ best" in lines[3] and "◀ best" not in lines[2] and lines[2].startswith("| 0 (BC) |")


def test_report_marks_no_best_when_nothing_distinguishes_the_weights():
    from runner.report import best_weight, format_table
    from scripts import table

    def rows(*pairs):
        return [
            {"guidance_weight": w, "success": s, "success_stderr": 0.0, "return": 0.0, "length": 1, "episodes": 2}
            for w, s in pairs
        ]

    assert "◀ best" not in format_table(rows((0.0, 0.0), (0.03, 0.0), (0.1, 0.0)))  # every weight at 0 %
    assert "◀ best" not in format_table(rows((0.0, 0.5), (0.03, 0.2), (0.1, 0.2)))  # the positive weights tie
    # A tie for the highest success goes to the smaller weight, as scripts.table.choose_weight chooses.
    tied = rows((0.0, 0.1), (0.1, 0.4), (0.03, 0.4), (0.01, 0.2))
    assert best_weight(tied) == 0.03
    success = {r["guidance_weight"]: r["success"] for r in tied}
    per_seed = {0: {"reported": success, "heldout": success}}
    assert table.choose_weight("qgf", per_seed) == 0.03
    assert [line for line in format_table(tied).splitlines() if "◀ best" in line][0].startswith("| 0.03 |")


def test_the_success_plot_labels_its_error_bars_as_standard_errors():
    import matplotlib.pyplot as plt

    from runner.report import success_figure

    rows = [
        {"guidance_weight": w, "success": s, "success_stderr": 0.1, "return": 0.0, "length": 1, "episodes": 20}
        for w, s in ((0.0, 0.1), (0.1, 0.5))
    ]
    fig = success_figure(rows, "QGF", "cube-double-play-singletask-task2-v0")
    ax = fig.axes[0]
    assert ax.get_title() == "QGF on cube-double-play-singletask-task2-v0"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["success ± standard error"]
    plt.close(fig)


def test_gradstep_evaluations_with_other_step_sizes_keep_their_own_folders():
    from runner.run_dir import EVAL_TAG, eval_tag

    tags = {eval_tag("none", 1, 0, 3, alpha) for alpha in (0.01, 0.03, 1e-05)}
    assert len(tags) == 3 and "none-bo1-gs3-a0.01-reset0" in tags
    parsed = EVAL_TAG.match("none-bo1-gs3-a1e-05-reset500")
    assert (parsed["grad_steps"], parsed["grad_step_size"], parsed["reset"]) == ("3", "1e-05", "500")
    assert EVAL_TAG.match("none-bo1-gs3-reset0")["grad_step_size"] is None  # Folders written before α joined.
    assert eval_tag("qgf", 4, 0) == "qgf-bo4-reset0"


def test_the_table_names_the_data_each_task_trained_on(tmp_path):
    from scripts import table

    def run(name, env, dataset, loaded=None):
        directory = tmp_path / name
        directory.mkdir()
        (directory / "config.json").write_text(json.dumps({"env": env, "dataset": dataset}))
        if loaded is not None:
            (directory / "data.json").write_text(json.dumps(loaded))

    slices = {"kind": "100M slices", "path": "/d/scene-play-100m-v0", "expected_transitions": 100_000_000}
    run("a", "scene-play-singletask-task1-v0", slices)
    generated = {"kind": "generated here", "path": "/d/cube-single-play-v0.npz", "expected_transitions": 50_000}
    run("b", "cube-single-play-singletask-task1-v0", generated, {**generated, "transitions": 118, "slices": 1})
    data = table.training_data(str(tmp_path))
    assert data["scene-play-singletask-task1-v0"] == ["100M slices, 100,000,000 transitions (`/d/scene-play-100m-v0`)"]
    cube = data["cube-single-play-singletask-task1-v0"]
    assert cube == ["generated here, 118 transitions (`/d/cube-single-play-v0.npz`)"]


def test_every_report_row_names_the_method_that_produced_it():
    from runner.report import format_table, method_label, zero_weight_label

    row = dict(guidance_weight=0.0, success=0.5, success_stderr=0.1, **{"return": -1.0}, length=100, episodes=4)
    assert zero_weight_label("qgf", "qgf") == "0 (BC)" and zero_weight_label("qgf", "none", 8) == "0 (best-of-8)"
    for agent, label in (("fql", "— (FQL)"), ("qam", "— (QAM)"), ("dac", "— (DAC)"), ("edp", "— (EDP)")):
        table = format_table([row], zero=zero_weight_label(agent))
        assert f"| {label} |" in table and "BC" not in table
    gradstep = zero_weight_label("qgf", "none", 1, 3, 0.01)
    assert gradstep == "0 (GradStep L = 3, α = 0.01)" and "BC" not in gradstep
    assert method_label("qgf", "none", 1, 3, 0.01) == "GradStep L = 3, α = 0.01"
    assert method_label("qgf", "noisy") == "QFQL" and method_label("qgf", "qgf", 4) == "QGF + best-of-4"
    assert method_label("edp", "qgf") == "EDP + QGF guidance" and zero_weight_label("edp", "qgf") == "0 (EDP)"


def test_sweep_dry_run_checks_every_training_command_with_main(tmp_path, capsys):
    task = "scene-play-singletask-task1-v0"
    root = f"--root={tmp_path}"
    with pytest.raises(SystemExit) as refused:
        sweep.main([f"--tasks={task}", "--methods=bc,fql", "--train_steps=200", root, "--dry_run"])
    message = str(refused.value)
    assert message.startswith("2 of 2 training command(s) refused:")
    assert "error: --train_steps=200 must be a multiple of --steps_per_call=1000" in message
    sweep.main([f"--tasks={task}", "--methods=bc", root, "--dry_run"])
    assert "main.py --dry_run accepts the 1 training command(s)." in capsys.readouterr().out
    assert not any(tmp_path.iterdir())  # Nothing was written.
