"""Dataset generation and loading: OGBench's format, offline loading, determinism, atomic writes."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import envs
from envs import generate as gen

STEPS = 30  # rows per episode in these tests (OGBench: 1001)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("ogbench_data"))
    gen.generate_dataset(
        "cube-single-play-v0", d, episodes=3, seed=0, workers=1, max_episode_steps=STEPS, progress=False
    )
    gen.generate_dataset(
        "puzzle-3x3-noisy-v0", d, episodes=2, seed=0, workers=1, max_episode_steps=STEPS, progress=False
    )
    return d


@pytest.mark.parametrize(
    "name, episodes, ob_dim, nq, buttons",
    [("cube-single-play-v0", 3, 28, 21, None), ("puzzle-3x3-noisy-v0", 2, 55, None, 9)],
)
def test_files_have_ogbench_format(data_dir, name, episodes, ob_dim, nq, buttons):
    for suffix, num in [("", episodes), ("-val", 1)]:
        with np.load(os.path.join(data_dir, f"{name}{suffix}.npz")) as f:
            expected = {"observations", "actions", "terminals", "qpos", "qvel"} | (
                {"button_states"} if buttons else set()
            )
            assert set(f.files) == expected
            rows = num * STEPS
            assert f["observations"].dtype == np.float32 and f["observations"].shape == (rows, ob_dim)
            assert f["actions"].dtype == np.float32 and f["actions"].shape == (rows, 5)
            assert np.abs(f["actions"]).max() <= 1.0
            assert f["terminals"].dtype == bool
            np.testing.assert_array_equal(np.flatnonzero(f["terminals"]), np.arange(STEPS - 1, rows, STEPS))
            assert f["qpos"].dtype == np.float32 and f["qvel"].dtype == np.float32
            if nq is not None:
                assert f["qpos"].shape == (rows, nq)
            if buttons:
                assert f["button_states"].dtype == np.int64 and f["button_states"].shape == (rows, buttons)


def test_ogbench_loads_generated_files_offline(data_dir):
    import ogbench

    ds = ogbench.utils.load_dataset(os.path.join(data_dir, "cube-single-play-v0.npz"))
    assert ds["observations"].shape == (3 * (STEPS - 1), 28)
    env, train, val = ogbench.make_env_and_datasets("puzzle-3x3-noisy-singletask-task1-v0", dataset_dir=data_dir)
    assert train["rewards"].shape == (2 * (STEPS - 1),) and val["masks"].shape == (STEPS - 1,)
    # Our loader returns exactly what OGBench's returns.
    _, ours, _ = envs.make_env_and_datasets("puzzle-3x3-noisy-singletask-task1-v0", data_dir)
    assert set(ours) == set(train)
    for k in ours:
        np.testing.assert_array_equal(ours[k], train[k])


def test_singletask_reward_is_zero_exactly_at_ogbench_success(data_dir, tmp_path):
    # Put the cube on task 1's goal in one row, then compare the loaded rewards with the env's own
    # success test on every stored simulator state.
    name = "cube-single-play-singletask-task1-v0"
    env = envs.make_env(name)
    env.reset()
    goal_xyz = env.unwrapped._data.mocap_pos[0].copy()
    arrays = dict(np.load(os.path.join(data_dir, "cube-single-play-v0.npz")))
    arrays["qpos"][5, 14:17] = goal_xyz
    for suffix in ["", "-val"]:
        src = dict(np.load(os.path.join(data_dir, f"cube-single-play-v0{suffix}.npz")))
        np.savez_compressed(tmp_path / f"cube-single-play-v0{suffix}.npz", **(arrays if suffix == "" else src))
    _, train, _ = envs.make_env_and_datasets(name, str(tmp_path))
    raw = ~arrays["terminals"]  # the rows load_dataset keeps
    successes = []
    for qpos, qvel in zip(arrays["qpos"][raw], arrays["qvel"][raw], strict=True):
        env.unwrapped.set_state(qpos.astype(np.float64), qvel.astype(np.float64))
        successes.append(all(env.unwrapped._compute_successes()))
    successes = np.array(successes)
    assert successes[5]
    np.testing.assert_array_equal(train["rewards"] == 0, successes)
    np.testing.assert_array_equal(train["masks"], 1.0 - successes)


def test_missing_dataset_error_names_the_command(tmp_path):
    with pytest.raises(envs.DatasetMissingError, match="python -m envs.generate --dataset=cube-double-play-v0"):
        envs.make_env_and_datasets("cube-double-play-singletask-task2-v0", str(tmp_path))


def test_validation_rejects_wrong_files(data_dir, tmp_path):
    arrays = dict(np.load(os.path.join(data_dir, "cube-single-play-v0.npz")))
    for suffix in ["", "-val"]:  # cube-single data under a cube-double name: wrong sizes
        np.savez(tmp_path / f"cube-double-play-v0{suffix}.npz", **arrays)
    with pytest.raises(envs.DatasetFormatError, match="observations has shape"):
        envs.make_env_and_datasets("cube-double-play-v0", str(tmp_path))
    del arrays["actions"]
    np.savez(tmp_path / "cube-single-play-v0.npz", **arrays)
    np.savez(tmp_path / "cube-single-play-v0-val.npz", **arrays)
    with pytest.raises(envs.DatasetFormatError, match="missing keys"):
        envs.make_env_and_datasets("cube-single-play-v0", str(tmp_path))


def test_slices_directory(data_dir, tmp_path):
    src = dict(np.load(os.path.join(data_dir, "cube-single-play-v0.npz")))
    for i in range(2):
        np.savez(tmp_path / f"slice-{i}.npz", **{k: v[i * STEPS : (i + 1) * STEPS] for k, v in src.items()})
    np.savez(tmp_path / "slice-val.npz", **{k: v[2 * STEPS :] for k, v in src.items()})
    env, first, val = envs.make_env_and_datasets("cube-single-play-v0", dataset_path=str(tmp_path))
    np.testing.assert_array_equal(first["observations"][0], src["observations"][0])
    np.testing.assert_array_equal(val["observations"][0], src["observations"][2 * STEPS])
    assert envs.slice_paths(str(tmp_path)) == [str(tmp_path / f"slice-{i}.npz") for i in range(2)]


def _read_all(d, name):
    return {s: dict(np.load(os.path.join(d, f"{name}{s}.npz"))) for s in ["", "-val"]}


def test_same_seed_same_file_for_any_worker_count(tmp_path):
    kw = dict(episodes=2, max_episode_steps=12, progress=False)
    gen.generate_dataset("cube-single-noisy-v0", str(tmp_path / "a"), seed=3, workers=1, **kw)
    gen.generate_dataset("cube-single-noisy-v0", str(tmp_path / "b"), seed=3, workers=2, **kw)
    gen.generate_dataset("cube-single-noisy-v0", str(tmp_path / "c"), seed=4, workers=1, **kw)
    a, b, c = (_read_all(str(tmp_path / x), "cube-single-noisy-v0") for x in "abc")
    for s in a:
        for k in a[s]:
            np.testing.assert_array_equal(a[s][k], b[s][k])
    assert not np.array_equal(a[""]["actions"], c[""]["actions"])


def test_failure_before_rename_leaves_no_file(tmp_path, monkeypatch):
    real = gen._save_compressed

    def fail_on_val(path, arrays):
        if path.endswith("val.npz"):
            raise OSError("disk full (injected)")
        real(path, arrays)

    monkeypatch.setattr(gen, "_save_compressed", fail_on_val)
    with pytest.raises(OSError, match="injected"):
        gen.generate_dataset(
            "cube-single-play-v0", str(tmp_path), episodes=1, max_episode_steps=5, workers=1, progress=False
        )
    # Neither file, nor the partial work directory; the finished episode is kept for the rerun.
    assert os.listdir(tmp_path) == [os.path.basename(gen.episodes_dir(str(tmp_path), "cube-single-play-v0", 0, 5))]


def test_an_interrupted_generation_resumes_to_the_same_files(tmp_path, monkeypatch, capsys):
    kw = dict(episodes=3, seed=2, workers=1, max_episode_steps=12, progress=False)
    name = "cube-single-noisy-v0"
    gen.generate_dataset(name, str(tmp_path / "whole"), **kw)
    whole = {f: open(tmp_path / "whole" / f, "rb").read() for f in sorted(os.listdir(tmp_path / "whole"))}
    assert sorted(whole) == [f"{name}-val.npz", f"{name}.npz"]  # and no directory of kept episodes

    real_save, real_episode = gen._save_episode, gen._Collector.episode

    def stop_at_the_third(directory, index, episode):
        if index == 2:
            raise KeyboardInterrupt  # Ctrl-C while the third episode is in flight
        real_save(directory, index, episode)

    monkeypatch.setattr(gen, "_save_episode", stop_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        gen.generate_dataset(name, str(tmp_path / "cut"), **kw)
    kept = gen.episodes_dir(str(tmp_path / "cut"), name, 2, 12)
    assert gen.finished_episodes(kept, 4) == [0, 1] and not any(
        f.endswith(".npz") for f in os.listdir(tmp_path / "cut")
    )
    assert "its 2 finished episodes are kept in" in gen.stopped_message(name, str(tmp_path / "cut"), 2, 12)

    collected = []
    monkeypatch.setattr(gen, "_save_episode", real_save)
    monkeypatch.setattr(gen._Collector, "episode", lambda self, s, i: collected.append(i) or real_episode(self, s, i))
    capsys.readouterr()
    gen.generate_dataset(name, str(tmp_path / "cut"), **kw)
    assert collected == [2, 3]  # only the episodes that were not finished
    assert "; 2 finished episodes kept from an interrupted generation" in capsys.readouterr().out
    assert {f: open(tmp_path / "cut" / f, "rb").read() for f in sorted(os.listdir(tmp_path / "cut"))} == whole


def test_the_measured_pace_after_the_first_episodes():
    assert gen.measured_line(2, 60.0, 218, 2) == (
        "Measured here: 2.0 episodes/min with 2 worker(s); about 109 min left for the other 218 episodes."
    )
    assert gen.measured_line(2, 6.0, 3, 2).endswith("about 9 s left for the other 3 episodes.")
    now = [0.0]
    bar = gen._Progress(10, 4, 2, False, "x", clock=lambda: now[0])
    printed = []
    bar.bar.write = printed.append
    now[0] = 30.0
    bar.update(12)
    assert printed == []  # one worker's first episode only
    bar.update(12)
    assert printed == [gen.measured_line(2, 30.0, 4, 2)]
    bar.update(12)
    assert len(printed) == 1


def start_generation(directory):
    """A generation of far more episodes than can finish before the test's interrupt, however busy the machine."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "envs.generate",
            "--dataset=cube-single-play-v0",
            "--episodes=500",
            "--max_episode_steps=100",
            f"--dir={directory}",
            "--workers=2",
            "--no_progress",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={key: value for key, value in os.environ.items() if key != "DISPLAY"},
    )


def test_a_stopped_generation_leaves_no_final_file_and_keeps_its_finished_episodes(tmp_path):
    # A pytest-xdist worker ignores SIGINT, and an ignored signal stays ignored across exec: the child would never
    # raise KeyboardInterrupt. A handled one is reset to its default at exec, so SIGINT is handled while the child
    # starts (rather than reset in the child by `preexec_fn`, which runs Python between the fork and the exec of
    # this multithreaded process: JAX warns that this may deadlock).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = start_generation(tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert proc.stdout.readline().startswith("Generating")
    kept = gen.episodes_dir(str(tmp_path), "cube-single-play-v0", 0, 100)
    deadline = time.time() + 60
    while not (os.path.isdir(kept) and gen.finished_episodes(kept, 550)) and time.time() < deadline:
        time.sleep(0.2)  # until the workers have finished an episode
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    names = os.listdir(tmp_path)
    assert not any(n.endswith(".npz") for n in names), names
    # As main.py: the shell's status of a Ctrl-C, one line saying what is kept, and none of the start-up noise.
    assert proc.returncode == 130, err
    kept_now = len(gen.finished_episodes(kept, 550))
    assert kept_now > 0 and err.strip().splitlines()[-1] == gen.stopped_message(
        "cube-single-play-v0", str(tmp_path), 0, 100
    )
    assert f"its {kept_now} finished episodes are kept" in err
    assert "DISPLAY" not in err and "float32" not in err and "Traceback" not in err, err


# What scripts/device_packages.sh leaves out of the archive a GPU machine gets (dm_control's wheel alone is over half
# of what a device call carries): OGBench's environments and oracles must not need it.
LEFT_OUT_OF_THE_DEVICE_ARCHIVE = (
    "dm_control.locomotion", "dm_control.suite", "dm_control.blender", "labmaze", "mujoco.studio"
)  # fmt: skip


def test_generation_and_every_study_family_run_without_what_the_device_archive_leaves_out(tmp_path):
    script = f"""
import sys, runpy
LEFT_OUT = {LEFT_OUT_OF_THE_DEVICE_ARCHIVE!r}
class Block:
    def find_spec(self, name, path=None, target=None):
        if any(name == p or name.startswith(p + ".") for p in LEFT_OUT):
            raise ImportError(name + " is left out of the device archive")
sys.meta_path.insert(0, Block())
from envs.generate import quiet_known_warnings
quiet_known_warnings()
from envs.datasets import make_env
for task in ("cube-single-play-singletask-task2-v0", "scene-play-singletask-task1-v0",
             "puzzle-3x3-play-singletask-task2-v0"):
    env = make_env(task)
    env.reset(seed=0)
    for _ in range(3):
        env.step(env.action_space.sample())
sys.argv = ["envs.generate", "--dataset=cube-double-play-v0", "--episodes=1", "--max_episode_steps=20",
            "--workers=1", "--no_progress", "--dir={tmp_path}"]
runpy.run_module("envs.generate", run_name="__main__")
"""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "cube-double-play-v0.npz").exists() and (tmp_path / "cube-double-play-v0-val.npz").exists()
