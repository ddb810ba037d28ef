"""Reliability (issue #8): damaged inputs end in one line `error: ...`, and a run or a dataset generation
killed at any moment, or stopped by a full disk, leaves what was there intact and resumes to the same result.

main.py runs are subprocesses (each costs a JAX start-up and compilation, so there are few); everything
that does not need main.py runs in-process.
"""

import errno
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import ROOT, TINY_RUN_FLAGS, TINY_TASK, run_main, slow

import envs
from envs import generate as gen
from runner.checkpoints import CheckpointError, Checkpoints
from runner.run_dir import read_csv

DATASET = "cube-single-play-v0"  # the dataset behind TINY_TASK
FILES = (f"{DATASET}.npz", f"{DATASET}-val.npz")
# The killed-run test trains 8 steps with a checkpoint every 2, and evaluates once, at the end, on one episode.
KILL_FLAGS = [*TINY_RUN_FLAGS, "--train_steps=8", "--eval_every=8", "--eval_episodes=1"]


def last_error_line(process, *fragments) -> str:
    """Checks a user error's exit: non-zero, no traceback, a last line `error: ...` holding `fragments`."""
    assert process.returncode != 0, process.stdout[-2000:]
    assert "Traceback" not in process.stderr, process.stderr[-3000:]
    line = process.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), process.stderr[-3000:]
    for fragment in fragments:
        assert fragment in line, line
    print(line)  # `pytest -rP` shows the message a user sees
    return line


def checkpoint_leaves(run_dir: str, step: int) -> list:
    restored = ocp.StandardCheckpointer().restore(os.path.join(run_dir, "checkpoints", str(step), "default"))
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(restored)]


def copy_dataset(tiny_dataset_dir: str, directory) -> str:
    os.makedirs(directory)
    for name in FILES:
        shutil.copy(os.path.join(tiny_dataset_dir, name), directory)
    return str(directory)


def rewrite_arrays(path: str, change) -> None:
    arrays = dict(np.load(path))
    change(arrays)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


# ---------------------------------------------------------------- damaged datasets


def truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def random_bytes(path):
    open(path, "wb").write(np.random.default_rng(0).bytes(os.path.getsize(path)))


def drop_observation_columns(path):
    rewrite_arrays(path, lambda a: a.update(observations=a["observations"][:, :20]))


def observations_as_text(path):
    rewrite_arrays(path, lambda a: a.update(observations=a["observations"].astype(str)))


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (truncate, "is not an .npz archive (truncated, or not a dataset file)"),
        (random_bytes, "is not an .npz archive (truncated, or not a dataset file)"),
        (drop_observation_columns, "observations has shape (120, 20), expected (120, 28)"),
        (observations_as_text, "observations has dtype <U"),
    ],
    ids=["truncated", "random-bytes", "observation-size", "dtype"],
)
def test_main_names_a_damaged_dataset_file_in_one_line(tiny_dataset_dir, tmp_path, damage, fragment):
    data_dir = copy_dataset(tiny_dataset_dir, tmp_path / "data")
    path = os.path.join(data_dir, FILES[0])
    damage(path)
    process = run_main(
        f"--env={TINY_TASK}", f"--dataset_dir={data_dir}", f"--run_dir={tmp_path / 'run'}", *TINY_RUN_FLAGS, check=False
    )
    last_error_line(process, path, fragment, "delete it and run again", f"--dir={data_dir}")


def flip_compressed_bytes(path):
    data = bytearray(open(path, "rb").read())
    data[200:2000] = bytes(b ^ 0x55 for b in data[200:2000])  # inside the first member's deflated data
    open(path, "wb").write(bytes(data))


def flip_stored_bytes(path):  # an uncompressed archive: the damage is found by the CRC check
    arrays = dict(np.load(path))
    np.savez(path, **arrays)
    data = bytearray(open(path, "rb").read())
    data[300] ^= 0xFF
    open(path, "wb").write(bytes(data))


def pickled_observations(path):
    arrays = dict(np.load(path))
    arrays["observations"] = np.array([None] * len(arrays["terminals"]), dtype=object)
    np.savez(path, **arrays)


def directory_instead(path):
    os.remove(path)
    os.mkdir(path)


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda p: open(p, "wb").close(), "is not an .npz archive"),
        (flip_compressed_bytes, "is damaged or not a dataset file (zlib.error: Error -3"),
        (flip_stored_bytes, "is damaged or not a dataset file (zipfile.BadZipFile: Bad CRC-32"),
        (pickled_observations, "Object arrays cannot be loaded"),
        (directory_instead, "is not a file"),
        (lambda p: rewrite_arrays(p, lambda a: a.pop("actions")), "missing keys ['actions']"),
        (lambda p: rewrite_arrays(p, lambda a: a.update(qvel=a["qvel"][:-1])), "qvel has shape (119, 20)"),
        (lambda p: rewrite_arrays(p, lambda a: a["terminals"].__setitem__(-1, False)), "does not end an episode"),
        (lambda p: rewrite_arrays(p, lambda a: a.update(terminals=a["terminals"] * 2.0)), "terminals must hold 0/1"),
        (
            lambda p: rewrite_arrays(p, lambda a: a.update(actions=a["actions"].astype(np.complex64))),
            "actions has dtype complex64",
        ),
    ],
    ids=["empty", "deflate", "crc", "pickle", "directory", "key", "rows", "last-row", "terminals", "complex"],
)
def test_loader_names_a_damaged_file_in_one_line(tiny_dataset_dir, tmp_path, damage, fragment):
    data_dir = copy_dataset(tiny_dataset_dir, tmp_path / "data")
    path = os.path.join(data_dir, FILES[0])
    damage(path)
    with pytest.raises(envs.DatasetFormatError) as error:
        envs.make_env_and_datasets(TINY_TASK, data_dir)
    message = str(error.value)
    assert "\n" not in message and message.startswith(path) and fragment in message, message
    assert f"python -m envs.generate --dataset={DATASET} --dir={data_dir}" in message, message


def test_a_missing_dataset_is_named_in_one_line(tmp_path):
    with pytest.raises(envs.DatasetMissingError) as error:
        envs.make_env_and_datasets(TINY_TASK, str(tmp_path))
    message = str(error.value)
    assert "\n" not in message and os.path.join(tmp_path, FILES[0]) in message, message
    assert f"`python -m envs.generate --dataset={DATASET} --dir={tmp_path}`" in message, message


def test_a_damaged_slice_or_own_file_is_not_promised_a_regeneration(tiny_dataset_dir, tmp_path):
    """Slices are never generated, nor is a file of the user's own name: their advice says what does help."""
    slices = tmp_path / "cube-single-play-100m-v0"
    own = tmp_path / "mine"
    for directory, names in ((slices, [f"{DATASET}-000.npz"]), (own, ["my-data.npz", "my-data-val.npz"])):
        directory.mkdir()
        for name in names:
            open(directory / name, "wb").close()
    with pytest.raises(envs.DatasetFormatError) as error:
        envs.make_env_and_datasets(TINY_TASK, dataset_path=str(slices))
    assert str(error.value).endswith(
        "delete it and rerun with --data=download to fetch it again (slices are never "
        "generated), or put OGBench's file there"
    ), str(error.value)
    with pytest.raises(envs.DatasetFormatError) as error:
        envs.make_env_and_datasets(TINY_TASK, dataset_path=str(own / "my-data.npz"))
    assert str(error.value).endswith(
        "is not an .npz archive (truncated, or not a dataset file); replace it with an intact copy"
    ), str(error.value)


def test_a_missing_file_of_the_users_own_name_is_not_promised_a_generation(tmp_path):
    (tmp_path / "my-data.npz").write_bytes(b"")
    with pytest.raises(envs.DatasetMissingError) as error:
        envs.make_env_and_datasets(TINY_TASK, dataset_path=str(tmp_path / "my-data.npz"))
    assert str(error.value) == (
        f"{tmp_path / 'my-data-val.npz'} not found; put it there (a --dataset_path file needs its -val.npz beside "
        "it), or name another --dataset_path"
    )


def test_main_names_a_horizon_longer_than_the_episodes(tiny_dataset_dir, tmp_path):
    process = run_main(
        f"--env={TINY_TASK}",
        f"--dataset_dir={tiny_dataset_dir}",
        f"--run_dir={tmp_path}",
        *TINY_RUN_FLAGS,
        "--agent.horizon=1000",
        check=False,
    )
    last_error_line(process, "--agent.horizon=1000", "longest episode (59 steps)", "lower it")


# ---------------------------------------------------------------- a run killed at any moment

# Runs main.py with orbax's commit of one step (the rename of `<step>.orbax-checkpoint-tmp` to `<step>`)
# stalled after every file is written, so that the test can kill it at exactly that moment.
STALLING_MAIN = """
import os, runpy, sys, time
from orbax.checkpoint._src.path import atomicity

commit = atomicity.AtomicRenameTemporaryPath.finalize

async def stalled_commit(self):
    if self.get_final().name == os.environ["STALL_STEP"]:
        open(os.environ["STALL_MARKER"], "w").close()
        time.sleep(600)
    return await commit(self)

atomicity.AtomicRenameTemporaryPath.finalize = stalled_commit
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def kill_when(command, ready, log_path, env=None, timeout=300):
    """Starts `command`, SIGKILLs it as soon as `ready()` holds; fails if it ends first."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + timeout
    try:
        while not ready():
            assert process.poll() is None, f"ended before the kill point:\n{open(log_path).read()[-3000:]}"
            assert time.time() < deadline, "the kill point never came"
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    return open(log_path).read()


def stalled_save(flags, tmp_path, step: int):
    """(command, env, marker path) of a main.py run whose commit of checkpoint `step` never finishes."""
    wrapper = tmp_path / "stalling_main.py"
    wrapper.write_text(STALLING_MAIN)
    marker = tmp_path / f"stalled-{step}"
    env = {**os.environ, "STALL_STEP": str(step), "STALL_MARKER": str(marker)}
    return [sys.executable, str(wrapper), os.path.join(ROOT, "main.py"), *flags], env, marker


def step_dirs(run_dir: str) -> list[str]:
    return sorted(os.listdir(os.path.join(run_dir, "checkpoints")))


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """Shares compiled programs between this module's main.py runs (the same programs, loaded, not rebuilt)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path_factory.mktemp("jax-cache")))
        patch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        patch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
        yield


@pytest.fixture(scope="module")
def reference_run(tiny_dataset_dir, tmp_path_factory, compile_cache):
    run_dir = str(tmp_path_factory.mktemp("reference") / "run")
    run_main(f"--env={TINY_TASK}", f"--dataset_dir={tiny_dataset_dir}", f"--run_dir={run_dir}", *KILL_FLAGS)
    return run_dir


@slow  # Kill-and-resume at three moments; the Ctrl-C and damaged-checkpoint tests resume in the default suite.
def test_a_run_killed_at_three_moments_resumes_to_the_same_final_state(
    reference_run, tiny_dataset_dir, tmp_path, compile_cache
):
    run_dir = str(tmp_path / "run")
    flags = [f"--env={TINY_TASK}", f"--dataset_dir={tiny_dataset_dir}", f"--run_dir={run_dir}", *KILL_FLAGS]
    plain = [sys.executable, os.path.join(ROOT, "main.py"), *flags]

    # 1. While orbax commits checkpoint 4: every file written, the directory not yet renamed.
    command, env, marker = stalled_save(flags, tmp_path, 4)
    kill_when(command, marker.exists, tmp_path / "1.log", env)
    assert step_dirs(run_dir) == ["2", "4.orbax-checkpoint-tmp"]

    # 2. Just after checkpoint 6 is committed (training step 8 or its evaluation is running).
    checkpoints = os.path.join(run_dir, "checkpoints")
    log = kill_when(plain, lambda: "6" in os.listdir(checkpoints), tmp_path / "2.log")
    assert "Resumed from the checkpoint at step 2." in log
    assert "4.orbax-checkpoint-tmp" not in step_dirs(run_dir)
    assert max(int(n) for n in step_dirs(run_dir) if n.isdigit()) == 6

    # 3. While orbax commits the final checkpoint, after the final evaluation wrote its rows and report.
    command, env, marker = stalled_save(flags, tmp_path, 8)
    log = kill_when(command, marker.exists, tmp_path / "3.log", env)
    assert "Resumed from the checkpoint at step 6." in log
    assert "8.orbax-checkpoint-tmp" in step_dirs(run_dir)

    resumed = run_main(*flags)
    assert "Resumed from the checkpoint at step 6." in resumed.stdout
    assert step_dirs(run_dir) == ["6", "8"]  # no temporary directory left
    # Every row once, as the uninterrupted run wrote it (but its speed).
    train, reference_train = (read_csv(os.path.join(d, "train.csv")) for d in (run_dir, reference_run))
    assert [int(r["step"]) for r in train] == [2, 4, 6, 8]
    assert [{**r, "steps_per_s": None} for r in train] == [{**r, "steps_per_s": None} for r in reference_train]
    assert read_csv(os.path.join(run_dir, "eval.csv")) == read_csv(os.path.join(reference_run, "eval.csv"))
    for got, want in zip(checkpoint_leaves(run_dir, 8), checkpoint_leaves(reference_run, 8), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_run_dir_with_another_config_is_refused_unless_allowed(reference_run, tmp_path, tiny_dataset_dir):
    run_dir = str(tmp_path / "run")
    shutil.copytree(reference_run, run_dir)
    flags = [f"--env={TINY_TASK}", f"--dataset_dir={tiny_dataset_dir}", f"--run_dir={run_dir}", *KILL_FLAGS]
    refused = run_main(*flags, "--agent.lr=0.001", check=False)
    last_error_line(
        refused, run_dir, "--agent.lr=0.001 (the run has 0.0003)", "--allow_config_change", "another --run_dir"
    )
    assert json.load(open(os.path.join(run_dir, "config.json")))["agent_config"]["lr"] == 0.0003

    allowed = run_main(*flags, "--agent.lr=0.001", "--allow_config_change")
    assert "Resumed from the checkpoint at step 8." in allowed.stdout
    assert json.load(open(os.path.join(run_dir, "config.json")))["agent_config"]["lr"] == 0.001


def test_an_unreadable_config_json_is_named(tmp_path):
    from runner.run_dir import ConfigMismatchError, write_config

    (tmp_path / "config.json").write_text('{"agent": "qg')  # cut short
    with pytest.raises(ConfigMismatchError, match=r"config.json cannot be read .*--allow_config_change"):
        write_config(str(tmp_path), {"agent": "qgf"})
    write_config(str(tmp_path), {"agent": "qgf"}, allow_change=True)
    assert json.load(open(tmp_path / "config.json")) == {"agent": "qgf"}


def test_a_stale_temporary_checkpoint_is_ignored_then_removed(tmp_path):
    directory = str(tmp_path / "checkpoints")
    state = {"w": np.arange(4.0, dtype=np.float32)}
    checkpoints = Checkpoints(directory)
    checkpoints.save(2, state)
    checkpoints.close()
    stale = os.path.join(directory, "4.orbax-checkpoint-tmp", "default")
    os.makedirs(stale)
    open(os.path.join(stale, "manifest.ocdbt"), "wb").write(b"half")

    checkpoints = Checkpoints(directory)
    assert checkpoints.latest_step() == 2
    np.testing.assert_array_equal(checkpoints.restore(2, state)["w"], state["w"])
    checkpoints.save(6, state)
    checkpoints.close()
    assert sorted(os.listdir(directory)) == ["2", "6"]


def test_a_checkpoint_of_another_state_is_named(tmp_path):
    checkpoints = Checkpoints(str(tmp_path))
    checkpoints.save(2, {"w": jax.numpy.zeros(3)})
    with pytest.raises(CheckpointError) as error:  # e.g. resumed with --allow_config_change and other sizes
        checkpoints.restore(2, {"w": jax.numpy.zeros(3), "b": jax.numpy.zeros(2)})
    checkpoints.close()
    message = str(error.value)
    assert "\n" not in message and f"step 2 in {tmp_path}" in message and "another --run_dir" in message, message
    print(message)


# ---------------------------------------------------------------- a full disk


def disk_full(path, arrays):
    """Writes the first half of the .npz file, then fails as a full disk does."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    with open(path, "wb") as f:
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def generate(directory, seed=0):
    return gen.generate_dataset(
        DATASET, str(directory), episodes=2, seed=seed, workers=1, max_episode_steps=30, progress=False
    )


def file_bytes(directory) -> dict:
    return {name: open(os.path.join(directory, name), "rb").read() for name in FILES}


@pytest.mark.parametrize("failing", ["train.npz", "val.npz"])
def test_a_full_disk_during_generation_keeps_the_old_dataset(tmp_path, monkeypatch, failing):
    generate(tmp_path, seed=1)
    before = file_bytes(tmp_path)
    real_save = gen._save_compressed
    monkeypatch.setattr(
        gen, "_save_compressed", lambda path, arrays: (disk_full if path.endswith(failing) else real_save)(path, arrays)
    )
    with pytest.raises(gen.DatasetWriteError) as error:
        generate(tmp_path, seed=0)
    message = str(error.value)
    assert error.value.errno == errno.ENOSPC and "\n" not in message, message
    assert f"no space left on the disk to write the {DATASET} dataset into {tmp_path}" in message, message
    kept = gen.episodes_dir(str(tmp_path), DATASET, 0, 30)
    assert f"files already there are unchanged and 3 finished episodes are kept in {kept}" in message, message
    # No work directory left; the finished episodes stay for the rerun, which writes the files from them.
    assert sorted(os.listdir(tmp_path)) == sorted([*FILES, os.path.basename(kept)])
    assert file_bytes(tmp_path) == before
    monkeypatch.undo()  # Space freed: the rerun writes the files from the kept episodes and removes them.
    generate(tmp_path, seed=0)
    assert sorted(os.listdir(tmp_path)) == sorted(FILES) and file_bytes(tmp_path) != before


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
        # What tensorstore, orbax's array writer, raises on a full disk.
        ValueError("RESOURCE_EXHAUSTED: Error writing local file: No space left on device [os_error_code='28']"),
    ],
    ids=["OSError", "tensorstore"],
)
def test_a_full_disk_during_a_checkpoint_save_keeps_the_previous_one(tmp_path, monkeypatch, error):
    from orbax.checkpoint._src.path import atomicity

    directory = str(tmp_path / "checkpoints")
    state = {"w": np.arange(4.0, dtype=np.float32)}
    checkpoints = Checkpoints(directory)
    checkpoints.save(2, state)

    async def full_disk_commit(self):
        raise error

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", full_disk_commit)
    with pytest.raises(CheckpointError) as raised:
        checkpoints.save(4, {"w": state["w"] + 1})
    message = str(raised.value)
    assert re.fullmatch(
        re.escape(f"no space left on the disk to save the checkpoint of step 4 in {directory} (a checkpoint needs ")
        + r"about 16 bytes, [0-9.]+ [KMG]?B(ytes)? is free\); "
        + re.escape("the checkpoint of step 2 is intact: free some space and rerun the same command to resume"),
        message,
    ), message
    print(message)
    monkeypatch.undo()
    assert os.listdir(directory) == ["2"]  # the partial step-4 directory is gone, its space freed

    resumed = Checkpoints(directory)
    assert resumed.latest_step() == 2
    np.testing.assert_array_equal(resumed.restore(2, state)["w"], state["w"])
    resumed.close()


# ---------------------------------------------------------------- a killed dataset generation

# Runs `python -m envs.generate` with one moment of the write stalled, so that the test can kill it there:
# `writing` stops halfway through writing the training file in the work directory; `renaming` stops after
# the validation file was renamed into place and before the training file is.
STALLING_GENERATE = """
import os, sys, time
from envs import generate as gen

def stall():
    open(os.environ["STALL_MARKER"], "w").close()
    time.sleep(600)

save, replace = gen._save_compressed, os.replace
if os.environ["STALL_AT"] == "writing":
    def half_written(path, arrays):
        save(path, arrays)
        if path.endswith("train.npz"):
            os.truncate(path, os.path.getsize(path) // 2)
            stall()
    gen._save_compressed = half_written
else:
    def renaming(src, dst):
        if dst.endswith(sys.argv[1] + ".npz"):
            stall()
        replace(src, dst)
    os.replace = renaming
gen.main(["--dataset=" + sys.argv[1], "--dir=" + sys.argv[2], "--episodes=2", "--max_episode_steps=30",
          "--workers=1", "--seed=0", "--no_progress"])
"""


def partial_dirs(directory) -> list[str]:
    return [n for n in os.listdir(directory) if ".partial." in n]


def test_a_killed_generation_leaves_old_files_or_none_and_is_cleaned_up(tmp_path):
    reference = tmp_path / "reference"
    generate(reference, seed=0)
    data_dir = tmp_path / "data"
    generate(data_dir, seed=1)  # an older dataset, being replaced
    old = file_bytes(data_dir)
    env = {**os.environ, "PYTHONPATH": ROOT, "STALL_MARKER": str(tmp_path / "stalled")}
    command = [sys.executable, "-c", STALLING_GENERATE, DATASET, str(data_dir)]

    # 1. Killed while writing: the old files are untouched; a work directory is left behind.
    kill_when(command, (tmp_path / "stalled").exists, tmp_path / "1.log", {**env, "STALL_AT": "writing"})
    assert file_bytes(data_dir) == old
    assert len(partial_dirs(data_dir)) == 1
    first = partial_dirs(data_dir)[0]

    # 2. Killed between the two renames: no training file (so main.py generates the pair again), never a
    # new validation file beside the old training file. The first work directory was removed at start.
    os.remove(tmp_path / "stalled")
    kill_when(command, (tmp_path / "stalled").exists, tmp_path / "2.log", {**env, "STALL_AT": "renaming"})
    assert not os.path.exists(data_dir / FILES[0])
    assert open(data_dir / FILES[1], "rb").read() == file_bytes(reference)[FILES[1]]
    assert len(partial_dirs(data_dir)) == 1 and partial_dirs(data_dir)[0] != first

    # 3. Generating again leaves exactly an uninterrupted generation's files, and nothing else.
    generate(data_dir, seed=0)
    assert sorted(os.listdir(data_dir)) == sorted(FILES)
    assert file_bytes(data_dir) == file_bytes(reference)


def test_a_running_generation_keeps_its_work_directory(tmp_path):
    work_dir, lock = gen._claim_work_dir(str(tmp_path), DATASET)
    try:
        gen._claim_work_dir(str(tmp_path), DATASET)[1].close()  # another generation starting meanwhile
        assert os.path.isdir(work_dir)
    finally:
        lock.close()
    gen._claim_work_dir(str(tmp_path), DATASET)[1].close()  # its lock released: it is stale now
    assert not os.path.exists(work_dir)


# ---------------------------------------------------------------- two runs, a damaged checkpoint, Ctrl-C (issue #15)


def test_a_second_run_on_a_run_dir_in_use_stops_at_once(reference_run, tiny_dataset_dir, tmp_path, compile_cache):
    run_dir = tmp_path / "run"
    flags = [f"--env={TINY_TASK}", f"--dataset_dir={tiny_dataset_dir}", f"--run_dir={run_dir}", *KILL_FLAGS]
    flags.append("--eval_episodes=6")  # a longer final evaluation keeps the first run busy (train.csv is unchanged)
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "main.py"), *flags], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.time() + 120
        while not (run_dir / "run.lock").exists():
            assert first.poll() is None and time.time() < deadline, open(tmp_path / "first.log").read()[-3000:]
            time.sleep(0.01)
        second = run_main(*flags, check=False)
        assert first.poll() is None, "the first run ended before the second was refused: nothing was tested"
    finally:
        first.wait(timeout=300)
    last_error_line(second, f"{run_dir} is in use by process {first.pid} on host", "another --run_dir")
    assert first.returncode == 0, open(tmp_path / "first.log").read()[-3000:]
    # The first run's logs are whole: every row once, as an undisturbed run writes them.
    train, reference = (read_csv(os.path.join(d, "train.csv")) for d in (run_dir, reference_run))
    assert [int(r["step"]) for r in train] == [2, 4, 6, 8]
    assert [{**r, "steps_per_s": None} for r in train] == [{**r, "steps_per_s": None} for r in reference]
    assert not (run_dir / "run.lock").exists()


def test_a_damaged_latest_checkpoint_is_named_and_the_run_resumes_from_the_one_before(
    reference_run, tiny_dataset_dir, tmp_path, compile_cache
):
    run_dir = str(tmp_path / "run")
    shutil.copytree(reference_run, run_dir)
    step_8 = os.path.join(run_dir, "checkpoints", "8", "default")
    data_dirs = [d for d, _, _ in os.walk(step_8) if os.path.basename(d) == "d"]  # orbax's array files
    largest = max((os.path.join(d, name) for d in data_dirs for name in os.listdir(d)), key=os.path.getsize)
    data = bytearray(open(largest, "rb").read())
    data[len(data) // 2 : len(data) // 2 + 256] = bytes(256)  # 256 bytes overwritten, as a bad disk sector would
    open(largest, "wb").write(bytes(data))

    flags = [f"--env={TINY_TASK}", f"--dataset_dir={tiny_dataset_dir}", f"--run_dir={run_dir}", *KILL_FLAGS]
    resumed = run_main(*flags)
    warning = [line for line in resumed.stdout.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "the checkpoint of step 8 in" in warning[0] and "is damaged (" in warning[0], warning
    assert warning[0].endswith("resuming from step 6 instead (step 8 is deleted and will be redone)"), warning
    assert "Resumed from the checkpoint at step 6." in resumed.stdout
    # Steps 7..8 redone: the same weights, logs and evaluation as the undamaged run.
    for got, want in zip(checkpoint_leaves(run_dir, 8), checkpoint_leaves(reference_run, 8), strict=True):
        np.testing.assert_array_equal(got, want)
    assert read_csv(os.path.join(run_dir, "eval.csv")) == read_csv(os.path.join(reference_run, "eval.csv"))


def test_ctrl_c_during_an_evaluation_saves_that_step_and_the_rerun_evaluates_it_first(
    tiny_dataset_dir, tmp_path, compile_cache
):
    """Ctrl-C while the sweep of step 4 runs: a checkpoint of step 4 (not a save step) and one line; the
    rerun evaluates step 4 (abandoned) before going on, so eval.csv holds steps 4 and 6 once each."""
    run_dir = tmp_path / "run"
    flags = [f"--env={TINY_TASK}", f"--dataset_dir={tiny_dataset_dir}", f"--run_dir={run_dir}", *TINY_RUN_FLAGS]
    flags += ["--train_steps=6", "--save_every=6", "--eval_every=4", "--eval_episodes=1"]
    with open(tmp_path / "stopped.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "main.py"), *flags], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log
        )
    try:
        deadline = time.time() + 180
        train_csv = run_dir / "train.csv"
        while not (train_csv.exists() and "\n4," in train_csv.read_text()):  # step 4 logged: its sweep starts
            assert process.poll() is None and time.time() < deadline, open(tmp_path / "stopped.log").read()[-3000:]
            time.sleep(0.005)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = open(tmp_path / "stopped.log").read()
    assert process.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == "stopped at step 4; rerun the same command to resume", stderr[-2000:]
    assert step_dirs(str(run_dir)) == ["4"]  # --save_every=6: only the Ctrl-C saved
    assert not (run_dir / "eval.csv").exists() or "\n4," not in (run_dir / "eval.csv").read_text()
    assert not (run_dir / "run.lock").exists()

    resumed = run_main(*flags)
    assert "Resumed from the checkpoint at step 4." in resumed.stdout
    assert [int(r["step"]) for r in read_csv(run_dir / "eval.csv")] == [4, 4, 6, 6]  # two weights each
    assert [int(r["step"]) for r in read_csv(run_dir / "train.csv")] == [2, 4, 6]


def test_evaluating_a_run_without_a_checkpoint_is_one_line(reference_run, tmp_path, compile_cache):
    run_dir = tmp_path / "untrained"
    run_dir.mkdir()
    shutil.copy(os.path.join(reference_run, "config.json"), run_dir)
    process = run_main("--eval_only", f"--restore={run_dir}", "--progress=false", check=False)
    last_error_line(process, f"{run_dir} has no checkpoint to evaluate; train it first")
    assert os.listdir(run_dir) == ["config.json"]  # evaluating creates nothing in the run it reads
