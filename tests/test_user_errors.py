"""Bad input ends in a one-line error naming the bad value, a non-zero exit and no traceback."""

import math
import os

import numpy as np
import pytest
from conftest import TINY_RUN_FLAGS, TINY_TASK, run_main

import configs
import guidance
from agents.training import NonFiniteLossError, check_finite


def assert_user_error(process, *fragments):
    assert process.returncode != 0
    assert "Traceback" not in process.stderr, process.stderr[-2000:]
    last_line = process.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: "), process.stderr[-2000:]
    for fragment in fragments:
        assert fragment in last_line, last_line


def test_estimator_names_match_the_guidance_registry():
    assert sorted(configs.ESTIMATOR_NAMES) == sorted(guidance.ESTIMATORS)


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("horizon", 0, "--agent.horizon=0 must be >= 1"),
        ("denoising_steps", 0, "--agent.denoising_steps=0 must be >= 1"),
        ("expectile", 1.0, "--agent.expectile=1.0 must lie in (0, 1)"),
        ("expectile", 0.0, "--agent.expectile=0.0 must lie in (0, 1)"),
        ("discount", 0.0, "--agent.discount=0.0 must lie in (0, 1]"),
        ("discount", 1.5, "--agent.discount=1.5 must lie in (0, 1]"),
        ("estimator", "qfg", "did you mean 'qgf'?"),
        ("best_of_n", 0, "--agent.best_of_n=0 must be >= 1"),
    ],
)
def test_out_of_range_agent_settings_are_named(field, value, fragment):
    config = configs.get_config("qgf")
    config[field] = value
    with pytest.raises(configs.ConfigError) as error:
        configs.check_config(config, [0.0])
    assert fragment in str(error.value)


@pytest.mark.parametrize("weight", [math.nan, -0.1, math.inf])
def test_bad_guidance_weights_are_named(weight):
    with pytest.raises(configs.ConfigError, match="guidance weight .* must be a finite number >= 0"):
        configs.check_config(configs.get_config("qgf"), [0.0, weight])


def test_unknown_names_list_the_valid_ones_and_suggest_the_closest():
    with pytest.raises(configs.ConfigError, match=r"unknown preset 'papr' \(did you mean 'paper'\?\)"):
        configs.get_config("qgf", "papr")
    with pytest.raises(configs.ConfigError, match=r"unknown agent 'qgff' \(did you mean 'qgf'\?\); choose one of"):
        configs.get_config("qgff")


def test_non_finite_metrics_stop_with_the_step_and_loss():
    check_finite({"critic/loss": np.float32(1.0)}, 0, 10, None)
    with pytest.raises(NonFiniteLossError, match=r"non-finite critic/loss in training steps 11..20.*step 10 is kept"):
        check_finite({"critic/loss": np.float32(np.nan), "policy/bc_loss": np.float32(0.1)}, 10, 20, 10)


@pytest.mark.parametrize(
    "flags, fragments",
    [
        (["--agent=qfg"], ["unknown agent 'qfg'", "did you mean 'qgf'?"]),
        (["--env=cube-singel-play-singletask-task1-v0"], ["--env", "cube-singel"]),
        (["--preset=dmeo"], ["unknown preset 'dmeo'", "did you mean 'demo'?"]),
        (["--guidance_weights=0,nan"], ["guidance weight nan"]),
        (["--agent.horizon=0"], ["--agent.horizon=0 must be >= 1"]),
        # Both come before any dataset is loaded or generated (a fresh machine has none).
        (["--log_every=250", "--steps_per_call=500"], ["--log_every=250 must be a multiple of --steps_per_call=500"]),
        (["--num_seeds=2", "--seed_batching=batch"], ["unknown --seed_batching='batch'"]),
    ],
)
def test_main_reports_bad_names_and_values_in_one_line(flags, fragments, tmp_path):
    assert_user_error(run_main(f"--run_dir={tmp_path}", *flags, check=False), *fragments)


def test_main_prints_the_generate_command_for_a_missing_dataset(tmp_path):
    process = run_main(
        f"--env={TINY_TASK}",
        f"--dataset_dir={tmp_path}",
        "--data=local",
        f"--run_dir={tmp_path / 'run'}",
        check=False,
    )
    assert process.returncode != 0 and "Traceback" not in process.stderr
    assert "python -m envs.generate --dataset=cube-single-play-v0" in process.stderr


def test_batch_larger_than_the_dataset_is_named(tiny_dataset_dir, tmp_path):
    process = run_main(
        f"--env={TINY_TASK}",
        f"--dataset_dir={tiny_dataset_dir}",
        f"--run_dir={tmp_path}",
        *TINY_RUN_FLAGS,
        "--agent.batch_size=100000",
        check=False,
    )
    assert_user_error(process, "--agent.batch_size=100000 exceeds the dataset's")


def test_a_nan_in_the_data_is_named_when_it_is_loaded(tiny_dataset_dir, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for name in ("cube-single-play-v0.npz", "cube-single-play-v0-val.npz"):
        arrays = dict(np.load(os.path.join(tiny_dataset_dir, name)))
        arrays["observations"][::2] = np.nan
        np.savez(data_dir / name, **arrays)
    run_dir = tmp_path / "run"
    process = run_main(
        f"--env={TINY_TASK}", f"--dataset_dir={data_dir}", f"--run_dir={run_dir}", *TINY_RUN_FLAGS, check=False
    )
    # Before any compilation or training step (it used to surface as a non-finite loss after the first chunk).
    path = data_dir / "cube-single-play-v0.npz"
    assert_user_error(process, f"{path}: observations holds non-finite values (NaN or inf) in 60 row(s), the first is")
    assert not (run_dir / "checkpoints").exists()


def plan_error(**options) -> str:
    from runner.config import Options, resolve

    with pytest.raises(configs.ConfigError) as error:
        resolve(Options(**options))
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(train_steps=-500), "--train_steps=-500 must be at least 1"),
        (dict(train_steps=-5), "--train_steps=-5 must be at least 1"),  # not "a multiple of --steps_per_call"
        (dict(steps_per_call=0), "--steps_per_call=0 must be at least 1"),
        (dict(eval_every=0), "--eval_every=0 must be at least 1"),
        (dict(log_every=-1000), "--log_every=-1000 must be at least 1"),
        (dict(save_every=0), "--save_every=0 must be at least 1"),
        (dict(eval_episodes=0), "--eval_episodes=0 must be at least 1"),
        (dict(save_every=750), "--save_every=750 must be a multiple of --steps_per_call=500"),
    ],
)
def test_every_step_count_and_interval_is_checked_before_anything_runs(options, message):
    assert plan_error(**options) == message


def test_a_bad_restore_dir_is_named(tmp_path):
    missing = tmp_path / "missing"
    assert plan_error(eval_only=True, restore=str(missing)).startswith(f"--restore={missing} is not a directory")
    assert plan_error(eval_only=True, restore=str(tmp_path)).startswith(f"{tmp_path} holds no config.json")
    (tmp_path / "config.json").write_text('{"agent": "qg')
    assert plan_error(eval_only=True, restore=str(tmp_path)).startswith(
        f"{tmp_path / 'config.json'} cannot be read (JSONDecodeError: Unterminated string"
    )
    (tmp_path / "config.json").write_text('{"agent": "qgf"}')
    assert plan_error(eval_only=True, restore=str(tmp_path)) == (
        f"{tmp_path / 'config.json'} is not a run's config.json (it lacks preset, env, seed, agent_config, run)"
    )


def test_main_reports_the_step_checks_unknown_agent_fields_and_unwritable_dirs(tmp_path):
    """The three paths through main.py itself: run settings, `--agent.<field>` names, a run dir it cannot write."""
    assert_user_error(run_main(f"--run_dir={tmp_path}", "--train_steps=-500", check=False), "--train_steps=-500")
    assert_user_error(
        run_main(f"--run_dir={tmp_path}", "--agent.horizn=3", check=False),
        "unknown --agent.horizn (did you mean 'horizon'?); agent 'qgf' has the fields",
    )
    # Root may write anywhere a mode forbids; /sys refuses everyone a new directory.
    unwritable = tmp_path / "read-only"
    unwritable.mkdir(mode=0o555)
    run_dir = "/sys/qgf-run" if os.geteuid() == 0 else str(unwritable / "run")
    assert_user_error(run_main(f"--run_dir={run_dir}", check=False), "cannot write", "choose a writable directory")


def test_a_run_saved_before_a_setting_existed_is_evaluated_with_its_default_not_the_presets(tmp_path, capsys):
    """The paper preset now sets `time_embedding=sinusoidal`; a paper run written before the field existed trained
    with the raw time input (the default), so evaluating it must restore that, and say so."""
    import json

    from runner.config import Options, resolve

    training = resolve(Options(agent="qgf", env=TINY_TASK, preset="paper", run_dir=str(tmp_path / "new")))
    assert training.config.time_embedding == "sinusoidal"
    saved = json.loads(json.dumps(training.seed_configs[0]))
    del saved["agent_config"]["time_embedding"], saved["run"]["slice_every"]
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(saved))
    plan = resolve(Options(agent="qgf", eval_only=True, restore=str(run_dir)))
    assert plan.config.time_embedding == configs.get_config("qgf").time_embedding == "raw"
    assert plan.config.actor_output_init == "lecun_normal"  # Saved settings are kept as they were.
    assert plan.preset == "paper" and plan.run.slice_every == configs.run_config().slice_every
    assert "predates the settings time_embedding, slice_every" in capsys.readouterr().out


# ---------------------------------------------------------------- issue #26: the probe's remaining tracebacks


@pytest.mark.parametrize(
    "options, fragment",
    [
        (dict(agent_overrides={"activation": "relux"}), "unknown --agent.activation='relux' (did you mean 'relu'?)"),
        (dict(agent_overrides={"actor_hidden_dims": (0,)}), "--agent.actor_hidden_dims=(0,) must be one width >= 1"),
        (dict(agent_overrides={"critic_hidden_dims": ()}), "--agent.critic_hidden_dims=() must be one width >= 1"),
        (dict(num_seeds=100000), "--num_seeds=100000 needs about 800000 open files, more than this process may open"),
        (dict(guidance_weights=[]), "--guidance_weights is empty; give one weight or more"),
    ],
)
def test_the_probes_agent_settings_are_named_before_anything_is_made(options, fragment, tmp_path):
    run_dir = tmp_path / "run"
    assert fragment in plan_error(env=TINY_TASK, preset="demo", run_dir=str(run_dir), **options)
    assert not run_dir.exists()


def test_a_run_dir_that_cannot_be_one_is_named(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    message = plan_error(env=TINY_TASK, preset="demo", run_dir=str(a_file))
    assert message == f"--run_dir={a_file} is a file, not a directory; choose another --run_dir"
    long_name = str(tmp_path / ("r" * 300))
    assert "the file system allows 255" in plan_error(env=TINY_TASK, preset="demo", run_dir=long_name)


def test_a_field_of_a_field_that_has_none_is_named():
    from runner.config import check_agent_arguments

    with pytest.raises(configs.ConfigError, match="^--agent.actor_hidden_dims.x: --agent.actor_hidden_dims has no"):
        check_agent_arguments("qgf", ["main.py", "--agent.actor_hidden_dims.x=3"])
    # absl would join the two: (16, 16, 0), a network of three layers no one asked for.
    with pytest.raises(configs.ConfigError, match=r"^--agent.actor_hidden_dims is given twice; give it once"):
        check_agent_arguments("qgf", ["main.py", "--agent.actor_hidden_dims=(16,16)", "--agent.actor_hidden_dims=(0,)"])
    check_agent_arguments("qgf", ["main.py", "--agent.lr=0.1", "--agent.lr=0.2"])  # a number: the last one counts


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda c: c["agent_config"].update(horizon="five"), "holds a value of the wrong type (edited by hand?)"),
        (lambda c: c["agent_config"].update(actor_hidden_dims="abc"), "holds a value of the wrong type"),
        (lambda c: c.update(run="oops"), 'config.json: run is "oops", not a dict (edited by hand?)'),
        (lambda c: c.update(seed="1"), 'config.json: seed is "1", not a whole number'),
    ],
)
def test_a_hand_edited_config_json_is_named(edit, fragment, tmp_path):
    import json

    from runner.config import Options, resolve

    saved = resolve(Options(env=TINY_TASK, preset="demo", run_dir=str(tmp_path))).seed_configs[0]
    saved = json.loads(json.dumps(saved))
    edit(saved)
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert fragment in plan_error(eval_only=True, restore=str(tmp_path))


def test_main_refuses_stray_arguments_and_distributed_without_a_cluster(tmp_path):
    assert_user_error(
        run_main(f"--run_dir={tmp_path}/run", "--seed", "1", "2", check=False),
        "unexpected argument(s) 2; main.py takes flags only",
    )
    distributed = run_main(f"--run_dir={tmp_path}/run", "--distributed", check=False, extra_env={"SLURM_JOB_ID": ""})
    assert_user_error(distributed, "--distributed: ", "drop --distributed on one machine")
    # Not JAX's complaint that the backend was started first: then no cluster would work either.
    assert "must be called before any JAX calls" not in distributed.stderr, distributed.stderr
    assert not os.path.exists(tmp_path / "run")


def test_main_names_a_lock_file_that_is_a_directory_and_a_bad_mujoco_gl(tiny_dataset_dir, tmp_path):
    flags = [f"--env={TINY_TASK}", f"--dataset_dir={tiny_dataset_dir}", *TINY_RUN_FLAGS]
    (tmp_path / "locked" / "run.lock").mkdir(parents=True)
    assert_user_error(
        run_main(*flags, f"--run_dir={tmp_path}/locked", check=False), "run.lock is a directory", "remove it"
    )
    bad_gl = run_main(*flags, f"--run_dir={tmp_path}/gl", check=False, extra_env={"MUJOCO_GL": "bogus"})
    assert_user_error(bad_gl, "MuJoCo cannot be imported with MUJOCO_GL=bogus", "unset MUJOCO_GL")
    assert not os.path.exists(tmp_path / "gl" / "checkpoints")


def test_the_scripts_name_a_mistyped_task_preset_or_output_path(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    from scripts import study, sweep, table

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for argv, fragment in [
        (["--tasks=cube-singel-play-singletask-task1-v0"], "error: --tasks: Unsupported name 'cube-singel"),
        (["--tasks="], "error: --tasks: Unsupported name ''"),
        ([f"--tasks={TINY_TASK}", "--preset=papr"], "error: --preset=papr: unknown preset 'papr'"),
    ]:
        with pytest.raises(SystemExit, match=f"^{fragment}"):
            sweep.main([*argv, f"--root={tmp_path}/runs", "--dry_run"])
    with pytest.raises(SystemExit, match="^error: --tasks: Unsupported name 'scen'"):
        study.main(["--tasks=scen", f"--runs={tmp_path}", f"--out={tmp_path}/out"])
    with pytest.raises(SystemExit, match=f"^error: --out={a_file} is a file"):
        study.main([f"--runs={tmp_path}", f"--out={a_file}"])
    with pytest.raises(SystemExit, match=f"^error: --out_dir={a_file} is a file"):
        table.main([f"--runs={tmp_path}", "--name=x", f"--out_dir={a_file}"])
    for where in (a_file, a_file / "below"):
        process = subprocess.run(
            [sys.executable, "-m", "envs.generate", "--dataset=cube-single-play-v0", f"--dir={where}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert_user_error(process, f"--dir={where} is not a directory", "choose another --dir")


def test_evaluating_another_agents_run_is_named_without_a_false_note(tmp_path, capsys):
    """`--eval_only --agent=qgf --restore=<an fql run>`: the agent is named, with no note that the run 'predates'
    the settings only qgf has."""
    import json

    from runner.config import Options, resolve

    saved = resolve(Options(agent="fql", env=TINY_TASK, preset="demo", run_dir=str(tmp_path))).seed_configs[0]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    capsys.readouterr()
    message = plan_error(agent="qgf", eval_only=True, restore=str(tmp_path))
    assert message == f"{tmp_path} holds a 'fql' run; drop --agent=qgf"
    assert "predates" not in capsys.readouterr().out


def test_training_into_a_restore_dir_of_another_config_hints_at_eval_only(tmp_path):
    """`--restore=RUN` without `--eval_only` trains into RUN; a config that differs says how to evaluate it."""
    import json

    from runner.config import Options, resolve
    from runner.run_dir import ConfigMismatchError
    from runner.session import open_session

    saved = resolve(Options(env=TINY_TASK, preset="demo", run_dir=str(tmp_path))).seed_configs[0]
    (tmp_path / "config.json").write_text(json.dumps({**saved, "seed": 5}))
    with pytest.raises(ConfigMismatchError) as error:
        open_session(resolve(Options(env=TINY_TASK, preset="demo", restore=str(tmp_path))))
    message = str(error.value)
    assert message.startswith(f"{tmp_path} holds a run with a different config: seed=0 (the run has 5)"), message
    assert message.endswith("; to evaluate it instead, add --eval_only (--restore without it trains into the run)")
    assert sorted(os.listdir(tmp_path)) == ["config.json"]


def test_a_second_evaluation_of_the_same_settings_is_not_told_to_choose_a_run_dir(tmp_path):
    import json

    from runner.config import Options, resolve
    from runner.run_lock import RunDirLockedError, RunLock
    from runner.session import lock_run_dirs

    saved = resolve(Options(env=TINY_TASK, preset="demo", run_dir=str(tmp_path))).seed_configs[0]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    plan = resolve(Options(eval_only=True, restore=str(tmp_path)))
    with RunLock(plan.out_dirs[0]):  # the first evaluation
        with pytest.raises(RunDirLockedError) as error:
            lock_run_dirs(plan)
    message = str(error.value)
    assert message.endswith(
        "wait for that run to end (or stop it), or evaluate with other settings (they go to another folder)"
    ), message
