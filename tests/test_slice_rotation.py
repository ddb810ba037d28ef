"""Directories of dataset slices: the slice schedule, loading ahead on a thread, at most two slices alive, and the
start-up check that names a missing or damaged slice."""

import gc
import os
import threading
import weakref

import numpy as np
import pytest

import envs
from runner.slice_rotation import SliceRotation

TASK = "cube-single-play-singletask-task1-v0"


def write_slices(tiny_dataset_dir: str, directory, count: int) -> str:
    """`count` one-episode slices `<name>-000.npz`, ... cut from the tiny dataset (episodes taken in turn, the
    slice number added to the first observation entry so that each slice can be recognised)."""
    source = dict(np.load(os.path.join(tiny_dataset_dir, "cube-single-play-v0.npz")))
    ends = np.flatnonzero(source["terminals"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    os.makedirs(directory, exist_ok=True)
    for i in range(count):
        episode = i % len(ends)
        arrays = {k: v[starts[episode] : ends[episode] + 1].copy() for k, v in source.items()}
        arrays["observations"][:, 0] += 100 * i
        np.savez(os.path.join(directory, f"cube-single-play-v0-{i:03d}.npz"), **arrays)
    return str(directory)


class Loads:
    """A fake slice loader: the slice number as an array, with a record of which thread loaded what and of how
    many loaded slices were still alive when each load began."""

    def __init__(self, fail_on: str | None = None):
        self.calls, self.alive, self.most_alive_at_load, self.fail_on = [], [], 0, fail_on

    def __call__(self, path: str) -> dict:
        gc.collect()
        self.most_alive_at_load = max(self.most_alive_at_load, sum(ref() is not None for ref in self.alive))
        self.calls.append((path, threading.current_thread().name))
        if path == self.fail_on:
            raise envs.DatasetFormatError(f"{path} is damaged")
        array = np.full(3, int(path[1:]), np.float32)
        self.alive.append(weakref.ref(array))
        return {"x": array}


def test_the_slice_follows_the_step_and_the_next_one_loads_on_a_thread():
    loads = Loads()
    rotation = SliceRotation(["p0", "p1", "p2"], slice_every=4, load=loads)
    used = [int(rotation.dataset(step)["x"][0]) for step in range(0, 28, 2)]  # chunks of 2 steps
    rotation.close()
    assert used == [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2, 0, 0]
    assert [rotation.index(s) for s in (0, 3, 4, 11, 12)] == [0, 0, 1, 2, 0]
    assert loads.calls[0] == ("p0", threading.current_thread().name)  # the first slice: loaded before training
    # The load ahead of p1 after the last chunk may be cancelled by close() before it starts.
    assert [p for p, _ in loads.calls][:7] == ["p0", "p1", "p2", "p0", "p1", "p2", "p0"] and len(loads.calls) <= 8
    assert all(thread.startswith("slice-loader") for _, thread in loads.calls[1:])
    assert loads.most_alive_at_load <= 1  # so at most two slices exist once the load is done


def test_a_resumed_rotation_starts_on_the_slice_of_its_step():
    loads = Loads()
    rotation = SliceRotation(["p0", "p1", "p2"], slice_every=4, load=loads, first={"x": np.zeros(3)})
    assert rotation.dataset(8)["x"][0] == 2 and rotation.dataset(12)["x"][0] == 0
    rotation.close()
    assert [p for p, _ in loads.calls][:2] == ["p2", "p0"]


def test_a_slice_that_fails_to_load_stops_the_run_at_its_swap_with_its_error():
    rotation = SliceRotation(["p0", "p1"], slice_every=2, load=Loads(fail_on="p1"))
    assert rotation.dataset(0)["x"][0] == 0
    with pytest.raises(envs.DatasetFormatError, match="p1 is damaged"):
        rotation.dataset(2)
    rotation.close()


def test_every_slice_is_checked_at_start_and_a_bad_one_is_named(tiny_dataset_dir, tmp_path):
    directory = write_slices(tiny_dataset_dir, tmp_path / "slices", 3)
    name = lambda i: os.path.join(directory, f"cube-single-play-v0-{i:03d}.npz")
    env, first, val = envs.make_env_and_datasets(TASK, dataset_path=directory)
    assert (
        first["observations"][0, 0] < 50 and val is None and envs.slice_paths(directory) == [name(i) for i in range(3)]
    )

    arrays = dict(np.load(name(2)))
    np.savez(name(2), **{**arrays, "observations": arrays["observations"][:, :20]})
    with pytest.raises(envs.DatasetFormatError, match=f"{name(2)}: observations has shape"):
        envs.make_env_and_datasets(TASK, dataset_path=directory)
    with open(name(2), "r+b") as f:  # the end of the file (the archive's directory) is lost
        f.truncate(os.path.getsize(name(2)) // 2)
    with pytest.raises(envs.DatasetFormatError, match=f"{name(2)} is not an .npz archive"):
        envs.make_env_and_datasets(TASK, dataset_path=directory)
    os.remove(name(1))
    with pytest.raises(envs.DatasetMissingError, match=f"{name(1)} is missing"):
        envs.make_env_and_datasets(TASK, dataset_path=directory)


def slice_run_options(directory, run_dir, **overrides):
    from runner.config import Options

    agent = {"actor_hidden_dims": (16, 16), "critic_hidden_dims": (16, 16), "batch_size": 8, "denoising_steps": 3}
    settings = dict(train_steps=4, steps_per_call=2, log_every=2, eval_every=4, save_every=2, slice_every=2)
    settings.update({"allow_config_change": True, **overrides})
    return Options(
        env=TASK,
        preset="demo",
        dataset_path=directory,
        run_dir=str(run_dir),
        agent_overrides=agent,
        progress=False,
        **settings,
    )


def test_training_on_slices_cycles_them_logs_the_slice_and_resumes_on_its_slice(
    tiny_dataset_dir, tmp_path, monkeypatch
):
    """Rows every 2 steps, a slice every 2 steps, 3 slices: 0, 1, 2, 0, the last two after a resume at step 4."""
    from conftest import read_csv

    from runner.config import resolve
    from runner.session import Session
    from runner.train_loop import train

    monkeypatch.setattr(Session, "evaluate", lambda self, step: 0.0)  # the data path is what is tested here
    directory = write_slices(tiny_dataset_dir, tmp_path / "slices", 3)
    train(resolve(slice_run_options(directory, tmp_path / "run")))
    train(resolve(slice_run_options(directory, tmp_path / "run", train_steps=8)))
    rows = read_csv(tmp_path / "run" / "train.csv")
    assert [(int(r["step"]), int(r["data/slice"])) for r in rows] == [(2, 0), (4, 1), (6, 2), (8, 0)]


def test_a_slice_directory_changed_before_the_resume_is_refused_unless_allowed(tiny_dataset_dir, tmp_path, monkeypatch):
    """README's flow: train on a partial slice directory, stopped at step 4 (a checkpoint of step 2), complete the
    directory, resume. The resume names the change and the flag, and touches nothing; with the flag it goes on
    on the 4-slice schedule."""
    from conftest import read_csv

    from runner.config import resolve
    from runner.run_dir import ConfigMismatchError
    from runner.seed_runs import SeedRuns
    from runner.session import Session
    from runner.train_loop import train

    class Killed(BaseException):  # as a SIGKILL: before step 4's checkpoint is written
        pass

    save = SeedRuns.save

    def save_until_killed(self, step, states):
        if step == 4:
            raise Killed
        return save(self, step, states)

    monkeypatch.setattr(Session, "evaluate", lambda self, step: 0.0)
    monkeypatch.setattr(SeedRuns, "save", save_until_killed)
    directory = write_slices(tiny_dataset_dir, tmp_path / "slices", 3)
    options = slice_run_options(directory, tmp_path / "run", train_steps=8, allow_config_change=False)
    with pytest.raises(Killed):
        train(resolve(options))
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["2"]
    write_slices(tiny_dataset_dir, tmp_path / "slices", 4)  # the 4th slice arrives
    before = {name: (tmp_path / "run" / name).read_bytes() for name in ("train.csv", "slices.json")}

    with pytest.raises(ConfigMismatchError) as error:
        train(resolve(options))
    message = str(error.value)
    assert message.startswith(f"the slices in {directory} changed since {tmp_path / 'run'} began training on them")
    assert "(3 slices then, 4 now: cube-single-play-v0-003.npz added)" in message and "--allow_config_change" in message
    assert "\n" not in message
    print(message)
    assert {name: (tmp_path / "run" / name).read_bytes() for name in before} == before

    monkeypatch.setattr(SeedRuns, "save", save)
    train(resolve(slice_run_options(directory, tmp_path / "run", train_steps=8)))  # allow_config_change=True
    rows = read_csv(tmp_path / "run" / "train.csv")
    assert [(int(r["step"]), int(r["data/slice"])) for r in rows] == [(2, 0), (4, 1), (6, 2), (8, 3)]


def test_slice_every_must_be_a_multiple_of_steps_per_call(tiny_dataset_dir, tmp_path):
    import configs
    from runner.config import resolve

    directory = write_slices(tiny_dataset_dir, tmp_path / "slices", 2)
    with pytest.raises(configs.ConfigError, match="--slice_every=3 must be a multiple of --steps_per_call=2"):
        resolve(slice_run_options(directory, tmp_path / "run", slice_every=3))
    with pytest.raises(configs.ConfigError, match="--slice_every=0 must be at least 1"):
        resolve(slice_run_options(directory, tmp_path / "run", slice_every=0))
    file = os.path.join(tiny_dataset_dir, "cube-single-play-v0.npz")  # one file: slice_every plays no part
    assert resolve(slice_run_options(file, tmp_path / "run", slice_every=3)).run.slice_every == 3
