"""Issue 26: faults that a long run meets (a cut-short log row, a `checkpoints` that is not a directory, a changed
slice directory, damaged or vanishing checkpoints, out-of-range dataset actions) lose nothing written and end in
one line. Faults are injected for real: files truncated, replaced or deleted as a disk, a user or another process
would."""

import gc
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_RUN_FLAGS, TINY_TASK, read_csv, run_main
from test_reliability import FILES, copy_dataset, last_error_line, rewrite_arrays

import envs
from runner import checkpoints
from runner.checkpoints import CheckpointDamagedError
from runner.run_dir import CsvLog
from runner.seed_runs import SeedRuns


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


# ---------------------------------------------------------------- damaged and vanishing checkpoints


def seed_states(value: float) -> dict:
    """A state with a leading seed axis of one, like the runner's: weights of mean `value` (random, so that their
    files are not compressed to a few bytes) and a count `value`."""
    weights = value + jax.random.normal(jax.random.PRNGKey(0), (1, 1024))
    return {"w": weights, "opt": {"count": jnp.full((1,), int(value), jnp.int32)}}


def saved_run(run_dir, steps=(2, 4)) -> SeedRuns:
    runs = SeedRuns([str(run_dir)], [str(run_dir)])
    for step in steps:
        runs.save(step, seed_states(step))
    return runs


def largest_array_file(step_dir) -> str:
    files = [
        os.path.join(d, n) for d, _, names in os.walk(step_dir / "default") if os.path.basename(d) == "d" for n in names
    ]
    return max(files, key=os.path.getsize)


def overwrite_bytes(path) -> None:
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2 : len(data) // 2 + 256] = bytes(256)  # as a bad disk sector would
    open(path, "wb").write(bytes(data))


def remove_metadata(step_dir) -> None:
    os.remove(step_dir / "default" / "_METADATA")


def remove_checksums(step_dir) -> None:  # its arrays intact: only the checksums could tell a damage
    shutil.rmtree(step_dir / "checksums")


def rename_a_checksum(step_dir) -> None:
    path = step_dir / "checksums" / "metadata"
    digests = json.loads(path.read_text())
    json.dump({k + "x": v for k, v in digests.items()}, open(path, "w"))


@pytest.mark.parametrize(
    "damage, detail",
    [
        (remove_metadata, "default/_METADATA is missing"),
        (remove_checksums, "its checksums item is missing"),
        (rename_a_checksum, "checksum mismatch in ['opt']['count']"),
    ],
    ids=["metadata-deleted", "checksums-deleted", "checksum-key-damaged"],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_intact_one_before(tmp_path, capsys, damage, detail):
    saved_run(tmp_path).close()
    damage(tmp_path / "checkpoints" / "4")
    runs = SeedRuns([str(tmp_path)], [str(tmp_path)])
    step, restored = runs.resume(seed_states(0))
    runs.close()
    assert step == 2
    np.testing.assert_array_equal(restored["w"], seed_states(2)["w"])
    warning = capsys.readouterr().out.strip()
    assert warning.startswith("warning: the checkpoint of step 4 in") and f"is damaged ({detail}" in warning, warning
    assert warning.endswith("resuming from step 2 instead (step 4 is deleted and will be redone)"), warning
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]


@pytest.mark.parametrize("read_only", [False, True], ids=["training", "eval_only"])
def test_two_damaged_checkpoints_are_both_named_with_advice_for_both(tmp_path, capsys, read_only):
    saved_run(tmp_path).close()
    remove_metadata(tmp_path / "checkpoints" / "4")
    overwrite_bytes(largest_array_file(tmp_path / "checkpoints" / "2"))
    runs = SeedRuns([str(tmp_path)], [str(tmp_path / "eval" if read_only else tmp_path)], read_only=read_only)
    with pytest.raises(CheckpointDamagedError) as error:
        runs.resume(seed_states(0))
    runs.close()
    message, directory = str(error.value), tmp_path / "checkpoints"
    assert message.startswith(f"every checkpoint in {directory} is damaged: step 4 (default/_METADATA is missing), ")
    assert ", step 2 (Encountered error while reading array index" in message, message
    assert f"delete {directory / '4'} and {directory / '2'}" in message and "\n" not in message, message
    assert ("evaluat" in capsys.readouterr().out) == read_only  # the warning's fallback: "evaluating step 2"
    assert sorted(os.listdir(directory)) == ["2", "4"]  # nothing deleted before the user says so
    print(message)


class _Suspend:
    def __await__(self):
        yield


async def _cleanup_raises():
    try:
        await _Suspend()
    finally:
        raise RuntimeError("cleanup of an abandoned read")


def _abandon_a_coroutine() -> None:
    """What a failed orbax restore leaves: a suspended coroutine whose cleanup raises when it is collected."""
    coroutine = _cleanup_raises()
    coroutine.send(None)
    del coroutine
    gc.collect()


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_held_output_holds_exceptions_raised_in_collected_coroutines(capsys):
    """A failed restore's abandoned orbax reads raise as they are collected, where nothing can catch them: held
    with the rest of its output, they are dropped with it (the damage is one line) or passed on after the block."""
    with checkpoints._held_output() as held:
        _abandon_a_coroutine()
        held.drop()
    assert capsys.readouterr().err == ""
    with checkpoints._held_output():
        _abandon_a_coroutine()
        assert capsys.readouterr().err == ""
    err = capsys.readouterr().err
    assert "Exception ignored in: <coroutine object _cleanup_raises" in err
    assert "RuntimeError: cleanup of an abandoned read" in err


def test_evaluating_a_run_that_is_still_training_takes_no_deleted_step_for_damage(tmp_path, capsys):
    """The training run saves steps 6 and 8 (so its max_to_keep=2 deletes 2 and 4) just as the evaluation starts
    reading step 4: the evaluation lists the steps anew and restores step 8, without a word of damage."""
    trainer = saved_run(tmp_path)
    reader = SeedRuns([str(tmp_path)], [str(tmp_path / "eval")], read_only=True)
    manager = reader.checkpoints[0].manager
    read_metadata = manager.item_metadata

    def trainer_saves_meanwhile(step):
        if step == 4 and sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]:
            trainer.save(6, seed_states(6))
            trainer.save(8, seed_states(8))
            assert sorted(os.listdir(tmp_path / "checkpoints")) == ["6", "8"]
        return read_metadata(step)

    manager.item_metadata = trainer_saves_meanwhile
    step, restored = reader.resume(seed_states(0))
    reader.close()
    trainer.close()
    assert step == 8
    np.testing.assert_array_equal(restored["w"], seed_states(8)["w"])
    assert "damaged" not in capsys.readouterr().out


def test_a_line_added_to_a_log_by_hand_is_named_and_dropped_on_resume(tmp_path, capsys):
    path = tmp_path / "train.csv"
    log = CsvLog(str(path), resume_step=0)
    for step in (100, 200):
        log.write({"step": step, "steps_per_s": 9.5, "train/loss": 3.25})
    with open(path, "a") as f:
        f.write("lr lowered here by hand\n")
    log.write({"step": 300, "steps_per_s": 9.5, "train/loss": 3.25})
    CsvLog(str(path), resume_step=300)
    out = capsys.readouterr().out
    assert f"note: 1 line(s) of {path} are not log rows (lr lowered here by hand); they are dropped" in out, out
    assert [r["step"] for r in read_csv(path)] == ["100", "200", "300"]


def test_a_log_a_full_disk_cannot_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    import csv
    import errno

    import runner.run_dir

    class FullDisk(csv.DictWriter):
        def writeheader(self):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runner.run_dir.csv, "DictWriter", FullDisk)
    log = CsvLog(str(tmp_path / "train.csv"), resume_step=0)
    with pytest.raises(OSError, match="No space left"):
        log.write({"step": 2, "train/loss": 1.0})
    assert os.listdir(tmp_path) == []
