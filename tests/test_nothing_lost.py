"""Issue 26: faults that a long run meets (a cut-short log row, a `checkpoints` that is not a directory, a changed
slice directory, damaged or vanishing checkpoints, out-of-range dataset actions) lose nothing written and end in
one line. Faults are injected for real: files truncated, replaced or deleted as a disk, a user or another process
would."""

import os
import shutil

import numpy as np
import pytest
from conftest import TINY_RUN_FLAGS, TINY_TASK, read_csv, run_main
from test_reliability import FILES, copy_dataset, last_error_line, rewrite_arrays

import envs
from runner.run_dir import CsvLog


def test_a_cut_short_last_row_is_dropped_on_resume(tmp_path, capsys):
    path = tmp_path / "train.csv"
    log = CsvLog(str(path), resume_step=0)
    for step in (100, 200, 300):
        log.write({"step": step, "steps_per_s": 9.5, "train/loss": 3.3668293952941, "val/loss": 1.25})
    whole = path.read_bytes()
    os.truncate(path, len(whole) - len("1.25\n") - 2)  # the machine stopped inside the last row's third field

    resumed = CsvLog(str(path), resume_step=300)
    assert "note: the last row of" in capsys.readouterr().out
    assert [r["step"] for r in read_csv(path)] == ["100", "200"]
    assert all(None not in r.values() and "" not in r.values() for r in read_csv(path))
    resumed.write({"step": 300, "steps_per_s": 9.5, "train/loss": 3.3668293952941, "val/loss": 1.25})
    assert path.read_bytes() == whole  # step 300, redone, written whole


def test_a_checkpoints_path_that_is_not_a_directory_keeps_the_logs(finished_run, tiny_dataset_dir, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    shutil.rmtree(run_dir / "checkpoints")
    (run_dir / "checkpoints").write_text("x\n")
    logs = {name: (run_dir / name).read_bytes() for name in ("train.csv", "eval.csv", "episodes.csv")}
    process = run_main(
        f"--env={TINY_TASK}", f"--dataset_dir={tiny_dataset_dir}", f"--run_dir={run_dir}", *TINY_RUN_FLAGS, check=False
    )
    last_error_line(process, f"{run_dir / 'checkpoints'} is not a directory", "move it away")
    assert {name: (run_dir / name).read_bytes() for name in logs} == logs
    assert (run_dir / "checkpoints").read_text() == "x\n" and not (run_dir / "run.lock").exists()


def test_dataset_actions_far_outside_the_action_range_are_refused(tiny_dataset_dir, tmp_path):
    data_dir = copy_dataset(tiny_dataset_dir, tmp_path / "data")
    path = os.path.join(data_dir, FILES[0])
    env = envs.make_env(TINY_TASK)
    envs.load_file(path, TINY_TASK, env)  # OGBench's range: accepted
    rewrite_arrays(path, lambda a: a.update(actions=a["actions"] * 10))  # unnormalised
    low, high = np.load(path)["actions"].min(), np.load(path)["actions"].max()
    with pytest.raises(envs.DatasetFormatError) as error:
        envs.load_file(path, TINY_TASK, env)
    message = str(error.value)
    assert message.startswith(f"{path}: actions range over [{low:.4g}, {high:.4g}], outside [-1, 1]"), message
    print(message)
