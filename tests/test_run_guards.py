"""Reliability (issue #15), in-process parts: the run-directory lock, checksummed checkpoints and resumption
from the newest intact one, non-finite datasets refused at load, generation's arguments and orphaned
workers, evaluation envs sharing what they can, and the best-of-N label of the report.

main.py's side of the same (two runs on one run dir, a damaged checkpoint, Ctrl-C, bad step counts) is in
test_reliability.py and test_user_errors.py, which share their runs.
"""

import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, TINY_TASK
from test_main import read_events
from test_reliability import FILES, copy_dataset, rewrite_arrays

import envs
from envs.vector_env import LocalEpisodes
from runner.checkpoints import CheckpointDamagedError, CheckpointError, Checkpoints
from runner.report import format_table
from runner.run_lock import LOCK_NAME, RunDirLockedError, RunLock
from runner.seed_runs import SeedRuns

# ---------------------------------------------------------------- the run-directory lock


def test_a_second_lock_on_a_run_dir_names_the_holder(tmp_path):
    with RunLock(str(tmp_path)) as first:
        assert first.took_over is None
        with pytest.raises(RunDirLockedError) as error:
            RunLock(str(tmp_path))
        message = str(error.value)
        assert f"{tmp_path} is in use by process {os.getpid()} on host " in message, message
        assert "choose another --run_dir" in message and "\n" not in message
    assert not os.path.exists(tmp_path / LOCK_NAME)  # released and removed
    RunLock(str(tmp_path)).release()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys, time; sys.path.insert(0, {ROOT!r}); from runner.run_lock import RunLock; "
            f"lock = RunLock({str(tmp_path)!r}); print('locked', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirLockedError, match=f"in use by process {holder.pid} "):
            RunLock(str(tmp_path))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert json.load(open(tmp_path / LOCK_NAME))["pid"] == holder.pid  # the file outlives its holder
    lock = RunLock(str(tmp_path))
    assert lock.took_over is not None and f"process {holder.pid} on host" in lock.took_over
    assert json.load(open(tmp_path / LOCK_NAME))["pid"] == os.getpid()
    lock.release()


def test_a_lock_that_a_full_disk_cannot_write_leaves_no_file(tmp_path, monkeypatch):
    import errno

    def full_disk(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full_disk)
    with pytest.raises(OSError, match="No space left"):
        RunLock(str(tmp_path))
    assert os.listdir(tmp_path) == []  # no empty run.lock left behind


# ---------------------------------------------------------------- checksummed checkpoints


def small_state(value: float) -> dict:
    w = np.random.default_rng(int(value)).normal(size=(64, 32)).astype(np.float32)  # incompressible bytes
    return {"policy": {"w": jnp.asarray(w) + value, "b": jnp.arange(32.0)}, "step": jnp.int32(value)}


def data_files(directory: str, step: int) -> list[str]:
    """The array files of a step, the largest first."""
    files = glob.glob(os.path.join(directory, str(step), "default", "**", "d", "*"), recursive=True)
    return sorted(files, key=os.path.getsize, reverse=True)


def overwrite_256_bytes(path: str) -> None:
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    data[middle : middle + 256] = bytes(b ^ 0xA5 for b in data[middle : middle + 256])
    open(path, "wb").write(bytes(data))


def truncate_half(path: str) -> None:
    os.truncate(path, os.path.getsize(path) // 2)


@pytest.fixture
def two_steps(tmp_path):
    """A seed's checkpoints of steps 2 and 4 (states 1.0 and 2.0), closed; its run dir."""
    runs = SeedRuns([str(tmp_path)], [str(tmp_path)])
    template = jax_seed_axis(small_state(0.0))
    runs.save(2, jax_seed_axis(small_state(1.0)))
    runs.save(4, jax_seed_axis(small_state(2.0)))
    runs.close()
    return str(tmp_path), template


def jax_seed_axis(state):
    import jax

    return jax.tree_util.tree_map(lambda x: x[None], state)


@pytest.mark.parametrize("damage", [overwrite_256_bytes, truncate_half, os.remove], ids=["bytes", "cut", "deleted"])
def test_a_damaged_latest_checkpoint_resumes_from_the_one_before(two_steps, damage, capsys):
    run_dir, template = two_steps
    directory = os.path.join(run_dir, "checkpoints")
    damage(data_files(directory, 4)[0])

    runs = SeedRuns([run_dir], [run_dir])
    step, states = runs.resume(template)
    runs.close()
    assert step == 2
    np.testing.assert_array_equal(np.asarray(states["policy"]["w"])[0], small_state(1.0)["policy"]["w"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"warning: the checkpoint of step 4 in {directory} is damaged ("), lines[0]
    assert lines[0].endswith("resuming from step 2 instead (step 4 is deleted and will be redone)"), lines[0]
    assert sorted(os.listdir(directory)) == ["2"]


def test_a_damaged_checkpoint_is_one_line_without_the_tracebacks_of_its_pending_reads(tmp_path, capfd, monkeypatch):
    """A failed restore leaves orbax's other reads pending: their callbacks find its event loop closed and print
    tracebacks (the probe: 100 to 700 lines after a correct fallback). None reaches the user."""
    import gc
    import threading

    # Python's own report of errors it cannot raise (pytest's turns them into warnings): to stderr, as in main.py.
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    rng = np.random.default_rng(0)
    state = {f"layer{i}": jnp.asarray(rng.normal(size=(40, 100)), jnp.float32) for i in range(100)}  # many reads
    checkpoints = Checkpoints(str(tmp_path))
    checkpoints.save(2, state)
    truncate_half(next(f for f in data_files(str(tmp_path), 2) if "ocdbt.process_0" in f))  # the arrays' file
    # Whether orbax's own late output comes varies from run to run; a stand-in for it always comes: a callback on
    # another thread that reports onto stderr 0.1 s after the restore failed, as tensorstore's do.
    restore = checkpoints.manager.restore

    def failing_restore(*args, **kwargs):
        try:
            return restore(*args, **kwargs)
        finally:
            late = "Traceback (most recent call last):\nRuntimeError: Event loop is closed\n"
            threading.Timer(0.1, lambda: sys.stderr.write(late)).start()

    monkeypatch.setattr(checkpoints.manager, "restore", failing_restore)
    for _ in range(5):
        with pytest.raises(CheckpointDamagedError, match="is damaged"):
            checkpoints.restore(2, state)
    time.sleep(0.5)
    gc.collect()
    checkpoints.close()
    stderr = capfd.readouterr().err
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-3000:]


def test_other_bytes_in_a_well_formed_checkpoint_fail_its_checksum(two_steps):
    """Files that read without error but hold other values (here: step 2's arrays under step 4's name) are
    found by the checksums alone; orbax would restore them silently."""
    import shutil

    run_dir, template = two_steps
    directory = os.path.join(run_dir, "checkpoints")
    shutil.rmtree(os.path.join(directory, "4", "default"))
    shutil.copytree(os.path.join(directory, "2", "default"), os.path.join(directory, "4", "default"))
    checkpoints = Checkpoints(directory)
    mismatch = r"step 4 .* is damaged \(checksum mismatch in \['policy'\]\['w'\], \['step'\]\)"
    with pytest.raises(CheckpointDamagedError, match=mismatch):
        checkpoints.restore(4, small_state(0.0))
    checkpoints.close()


def test_no_intact_checkpoint_is_an_error_with_what_to_do(two_steps):
    run_dir, template = two_steps
    directory = os.path.join(run_dir, "checkpoints")
    for step in (2, 4):
        overwrite_256_bytes(data_files(directory, step)[0])
    runs = SeedRuns([run_dir], [run_dir])
    with pytest.raises(CheckpointDamagedError) as error:
        runs.resume(template)
    runs.close()
    message = str(error.value)
    # Both damaged steps named, with advice for both (the probe's "two damaged steps get advice about one").
    assert message.startswith(f"every checkpoint in {directory} is damaged: step 4 (checksum mismatch"), message
    assert f"delete {os.path.join(directory, '4')} and {os.path.join(directory, '2')} to train again" in message
    assert sorted(os.listdir(directory)) == ["2", "4"]  # nothing deleted when nothing could be resumed


def test_evaluating_a_damaged_checkpoint_reads_the_one_before_and_deletes_nothing(two_steps, capsys):
    run_dir, template = two_steps
    directory = os.path.join(run_dir, "checkpoints")
    overwrite_256_bytes(data_files(directory, 4)[0])
    runs = SeedRuns([run_dir], [run_dir], read_only=True)
    assert runs.resume(template)[0] == 2
    runs.close()
    assert capsys.readouterr().out.strip().endswith("evaluating step 2 instead")
    assert sorted(os.listdir(directory)) == ["2", "4"]


def test_a_checkpoint_of_other_sizes_is_not_called_damaged(tmp_path):
    checkpoints = Checkpoints(str(tmp_path))
    checkpoints.save(2, small_state(1.0))
    other = small_state(1.0)
    other["policy"]["w"] = jnp.zeros((64, 16))
    with pytest.raises(CheckpointError) as error:
        checkpoints.restore(2, other)
    checkpoints.close()
    assert not isinstance(error.value, CheckpointDamagedError)
    assert "(policy/w: saved (64, 32), this run's (64, 16)): it holds another agent state" in str(error.value)


def _fill_the_disk(monkeypatch) -> None:
    import errno

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)


def test_logs_that_a_full_disk_cannot_close_fail_once_and_close_every_file(tmp_path, monkeypatch):
    """The TensorBoard file's last flush fails on a full disk: closing the run's logs raises that error (main.py's
    one line), the event file is closed all the same, and a second close does nothing."""
    import errno

    runs = SeedRuns([str(tmp_path)], [str(tmp_path)])
    runs.open_logs(0, train=True)
    writer = runs.writers[0]
    writer.add_scalar("train/loss", 1.0, 2)
    opened = open_files_under(tmp_path)
    assert writer.path in opened
    _fill_the_disk(monkeypatch)
    with pytest.raises(OSError) as error:
        runs.close()
    assert error.value.errno == errno.ENOSPC
    assert writer.path not in open_files_under(tmp_path)
    writer.close()


def test_a_full_disk_while_training_raises_at_the_next_flush_instead_of_hanging(tmp_path, monkeypatch):
    """tensorboardX's own writer met a full disk on its thread, which died, and the scalars after that filled its
    queue of ten and then blocked forever: a run hung at its next log. Ours writes on the caller's thread: the flush
    that meets the full disk raises there, and the events written before it are in the file."""
    import errno

    from runner.tensorboard_log import TensorBoardLog

    writer = TensorBoardLog(str(tmp_path), flush_seconds=3600)
    for step in range(3):
        writer.add_scalar("train/loss", float(step), step)
    writer.flush()
    _fill_the_disk(monkeypatch)
    writer.flush_seconds = 0.0  # the next scalar flushes
    with pytest.raises(OSError) as error:
        for step in range(3, 15):  # past tensorboardX's queue of ten
            writer.add_scalar("train/loss", float(step), step)
    assert error.value.errno == errno.ENOSPC
    with pytest.raises(OSError):
        writer.close()
    assert [(e.step, e.summary.value[0].simple_value) for e in read_events(writer.path)[1:4]] == [
        (0, 0.0),
        (1, 1.0),
        (2, 2.0),
    ]


def open_files_under(directory) -> set:
    """The paths under `directory` that this process holds open (its /proc/self/fd links)."""
    paths = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(directory)):
                paths.add(target)
    return paths


def test_a_full_disk_is_found_before_writing_and_names_the_space_needed(tmp_path, monkeypatch):
    import shutil

    import runner.checkpoints as checkpoints_module

    checkpoints = Checkpoints(str(tmp_path))
    checkpoints.save(2, small_state(1.0))
    usage = shutil.disk_usage(str(tmp_path))
    monkeypatch.setattr(checkpoints_module.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    start = time.monotonic()
    with pytest.raises(CheckpointError) as error:
        checkpoints.save(4, small_state(2.0))
    assert time.monotonic() - start < 60  # generous: the point is "not a two-minute hang"
    checkpoints.close()
    # 64*32 + 32 float32 and one int32: 8324 bytes.
    assert "(a checkpoint needs about 8.3 KB, 1.0 KB is free); the checkpoint of step 2 is intact" in str(error.value)
    assert os.listdir(tmp_path) == ["2"]


# ---------------------------------------------------------------- datasets


@pytest.mark.parametrize("key, value", [("observations", np.nan), ("actions", np.inf)])
def test_a_non_finite_dataset_is_refused_at_load(tiny_dataset_dir, tmp_path, key, value):
    data_dir = copy_dataset(tiny_dataset_dir, tmp_path / "data")
    path = os.path.join(data_dir, FILES[0])
    rewrite_arrays(path, lambda a: a[key].__setitem__((slice(7, None, 50), 3), value))
    with pytest.raises(envs.DatasetFormatError) as error:
        envs.make_env_and_datasets(TINY_TASK, data_dir)
    message = str(error.value)
    # 120 rows: rows 7, 57 and 107.
    assert message.startswith(f"{path}: {key} holds non-finite values (NaN or inf) in 3 row(s), the first is row 7;")
    assert "delete it and run again" in message and "\n" not in message


# ---------------------------------------------------------------- dataset generation


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--dataset=cube-singel-play-v0"], "error: --dataset: Unsupported name 'cube-singel-play-v0'"),
        (["--dataset=cube-single-play-v0", "--episodes=0"], "error: --episodes=0 must be at least 1"),
        (["--dataset=cube-single-play-v0", "--workers=0"], "error: --workers=0 must be at least 1"),
    ],
)
def test_generate_names_bad_arguments_in_one_line(tmp_path, flags, fragment):
    process = subprocess.run(
        [sys.executable, "-m", "envs.generate", *flags, f"--dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True
    )
    assert process.returncode != 0 and "Traceback" not in process.stderr, process.stderr
    assert process.stderr.strip().splitlines()[-1].startswith(fragment), process.stderr
    assert os.listdir(tmp_path) == []


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process parents from /proc")
def test_generation_workers_end_when_their_parent_is_killed(tmp_path):
    parent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "envs.generate",
            "--dataset=cube-single-play-v0",
            f"--dir={tmp_path}",
            "--episodes=8",
            "--workers=2",
            "--no_progress",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while len(workers := [p for p in children(parent.pid) if alive(p)]) < 2:
            assert parent.poll() is None and time.time() < deadline, "the workers never started"
            time.sleep(0.1)
        time.sleep(1.0)  # the workers are past their start-up
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.time() + 10
    while any(alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.1)
    left = [p for p in workers if alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "workers outlived their killed parent"


# ---------------------------------------------------------------- evaluation


def test_evaluation_envs_share_one_ik_controller_with_the_same_results():
    """Three slots in one process hold one inverse-kinematics controller, and an episode stepped on an env
    that shares it (between the steps of another) equals the same episode on an env of its own."""
    rng = np.random.default_rng(0)
    chunks = rng.uniform(-1, 1, size=(6, 4, 5))
    shared = LocalEpisodes(TINY_TASK, {})
    shared.reset([(7, None), (8, None), (9, None)], record_frames=[False] * 3)
    assert len({id(env.unwrapped._ik) for env in shared.envs}) == 1
    alone = LocalEpisodes(TINY_TASK, {})
    alone.reset([(8, None)], record_frames=[False])
    for chunk in chunks:
        observations, _ = shared.step([0, 1, 2], np.stack([chunk, chunk, -chunk]), None)
        single, _ = alone.step([0], chunk[None], None)
        np.testing.assert_array_equal(observations[1], single[0])


def test_evaluation_reports_episodes_as_they_end():
    done = []
    zeros = lambda observations, ids: np.zeros((len(observations), 4, 5))  # noqa: E731
    envs.evaluate(zeros, TINY_TASK, 3, max_steps=8, num_envs=2, num_workers=1, on_episodes_done=done.append)
    assert done == [2, 1]  # two waves, each ending together at step 8
    from envs import rollouts

    assert sum(len(cached) for cached in rollouts._ENV_CACHE.values()) >= 2
    rollouts.release_envs()
    assert not rollouts._ENV_CACHE


def test_the_weight_0_row_of_best_of_n_is_not_called_bc():
    row = dict(guidance_weight=0.0, success=0.5, success_stderr=0.1, **{"return": -1.0}, length=100, episodes=4)
    assert "| 0 (BC) |" in format_table([row])
    table = format_table([row], best_of_n=8)
    assert "| 0 (best-of-8) |" in table and "BC" not in table


# ---------------------------------------------------------------- Ctrl-C


def test_ctrl_c_is_deferred_once_then_left_to_the_os():
    from runner.interrupt import StopRequested, deferred_stop

    before = signal.getsignal(signal.SIGINT)
    with deferred_stop() as stop:
        stop.check()  # nothing requested: no effect
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # Python runs the handler between bytecodes
        assert stop.requested
        # A second Ctrl-C now ends the process at once, even inside a long compiled call.
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL
        with pytest.raises(StopRequested):
            stop.check()
    assert signal.getsignal(signal.SIGINT) is before
