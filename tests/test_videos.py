"""Evaluation videos: which episodes are recorded, that only their envs render, off-screen rendering of real
OGBench episodes, and MP4 / GIF files with one frame per step."""

import json
import os
import sys
import types

import numpy as np
import pytest

import configs
import envs
from envs.vector_env import LocalEpisodes
from runner import videos

SINGLE = TINY_TASK = "cube-single-play-singletask-task1-v0"


def _distinct_frames(n, height, width):
    """Frames that differ from one another (a GIF merges identical consecutive frames)."""
    frames = np.zeros((n, height, width, 3), np.uint8)
    for t in range(n):
        frames[t, :, : (t + 1) * width // n] = (255, 40 * t % 256, 0)
    return frames


def _frame_count(path):
    if path.endswith(".gif"):
        from PIL import Image

        with Image.open(path) as image:
            return image.n_frames, image.size
    import av

    with av.open(path) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return len(decoded), decoded[0].shape


def test_mp4_holds_every_frame_and_even_sides(tmp_path):
    pytest.importorskip("av")  # requirements.txt installs it; the GIF test covers a machine without
    path = videos.write_video(str(tmp_path / "clip"), _distinct_frames(7, 31, 33), fps=20)
    assert path.endswith("clip.mp4") and os.listdir(tmp_path) == ["clip.mp4"]
    assert _frame_count(path) == (7, (32, 34, 3))  # H.264 4:2:0 needs even sides: the last row/column repeats


def test_gif_without_pyav(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    with pytest.warns(UserWarning, match="pip install av"):
        path = videos.write_video(str(tmp_path / "clip"), _distinct_frames(5, 24, 30))
    assert path.endswith("clip.gif") and _frame_count(path) == (5, (30, 24))


def test_recorded_episodes_round_robin_over_tasks():
    # Goal-conditioned: 2 weights × 5 tasks × 2 episodes; 3 videos per weight show tasks 1, 2, 3.
    assert videos.recorded_episodes(2, 5, 2, 3) == [
        (0, 0, 0, 0),
        (2, 0, 1, 0),
        (4, 0, 2, 0),
        (10, 1, 0, 0),
        (12, 1, 1, 0),
        (14, 1, 2, 0),
    ]
    # Single-task: the first episodes of each weight.
    assert videos.recorded_episodes(2, 1, 3, 2) == [(0, 0, 0, 0), (1, 0, 0, 1), (3, 1, 0, 0), (4, 1, 0, 1)]
    assert videos.check_videos_per_weight(10, 5, 2) is None
    assert "than the 10 episodes each weight runs" in videos.check_videos_per_weight(11, 5, 2)
    assert "must be 0" in videos.check_videos_per_weight(-1, 1, 2)


def test_no_gl_library_is_one_line_naming_what_to_install(monkeypatch):
    monkeypatch.setattr(videos.ctypes.util, "find_library", lambda name: None)
    environ = {}
    with pytest.raises(videos.RenderingUnavailable, match=r"apt-get install libegl1") as error:
        videos.choose_gl_backend(environ)
    assert "\n" not in str(error.value) and "MUJOCO_GL" not in environ


class _FakeEnv:
    """Counts renders; steps end the episode after 3 actions."""

    def __init__(self):
        self.renders, self.t = 0, 0
        quality = types.SimpleNamespace(shadowsize=4096, offsamples=4)
        self.unwrapped = types.SimpleNamespace(model=types.SimpleNamespace(vis=types.SimpleNamespace(quality=quality)))
        self.unwrapped._renderer = None

    def reset(self, seed, options=None):
        self.t = 0
        return np.zeros(2, np.float32), {}

    def render(self):
        self.renders += 1
        self.unwrapped._renderer = self.unwrapped._renderer or types.SimpleNamespace(close=lambda: None)
        return np.full((4, 4, 3), self.t, np.uint8)

    def step(self, action):
        self.t += 1
        return np.full(2, self.t, np.float32), 0.0, False, self.t >= 3, {"success": 1.0}


def test_only_recorded_slots_render_and_release_their_renderer():
    fake_envs = [_FakeEnv(), _FakeEnv(), _FakeEnv()]
    episodes = LocalEpisodes(SINGLE, {}, fake_envs)
    episodes.reset([(0, None), (1, None), (2, None)], [False, True, False])
    _, done = episodes.step(np.arange(3), np.zeros((3, 5, 5)), None)
    assert done.all()
    assert [e.renders for e in fake_envs] == [0, 4, 0]  # the reset state, then one per step
    recorded = fake_envs[1].unwrapped
    assert (recorded.model.vis.quality.shadowsize, recorded.model.vis.quality.offsamples) == (0, 0)
    assert recorded._renderer is None  # closed when the episode ended: cached envs hold no GL context
    results = episodes.results()
    assert results[0][3] is None and results[2][3] is None
    np.testing.assert_array_equal(results[1][3][:, 0, 0, 0], [0, 1, 2, 3])


def test_recorded_ogbench_episodes_become_videos(tmp_path, monkeypatch):
    """Real off-screen rendering in spawned workers (which import MuJoCo with the chosen MUJOCO_GL), of the
    recorded episodes only; each video has one frame per step plus the reset state."""
    environ = {k: v for k, v in os.environ.items() if k != "MUJOCO_GL"}
    try:
        backend = videos.choose_gl_backend(environ)
    except videos.RenderingUnavailable as error:
        pytest.skip(f"no off-screen rendering here: {error}")
    monkeypatch.setenv("MUJOCO_GL", backend)  # for the workers spawned below only; restored after the test

    def policy(observations, episode_ids):
        return np.random.default_rng(0).uniform(-1, 1, (len(observations), 2, 5))

    # Small frames, and env kwargs of their own: a fresh worker pool, spawned after MUJOCO_GL was set.
    results = envs.evaluate(
        policy,
        SINGLE,
        3,
        seed=3,
        max_steps=5,
        record_frames=[0, 2],
        num_workers=2,
        env_kwargs={"width": 48, "height": 32},
    )
    frames = results["frames"]
    assert frames[1] is None
    for i in (0, 2):
        assert frames[i].shape == (results["lengths"][i] + 1, 32, 48, 3) and frames[i].dtype == np.uint8
        assert frames[i].std() > 0  # a scene, not a blank buffer
    written = videos.write_videos(
        str(tmp_path),
        4,
        [
            {"guidance_weight": 0.1, "task": "all", "episode": i, "success": results["success"][i], "frames": frames[i]}
            for i in (0, 2)
        ],
    )
    assert [w["path"] for w in written] == ["videos/step4/w0.1-ep0.mp4", "videos/step4/w0.1-ep2.mp4"]
    count, shape = _frame_count(str(tmp_path / written[0]["path"]))
    assert (count, shape) == (6, (32, 48, 3))
    links = videos.format_video_links(written)
    assert "[w0.1-ep2.mp4](videos/step4/w0.1-ep2.mp4)" in links and "task" not in links


FAKE_WANDB = """
import json, os
__version__ = "0.21.0"
class _Run:
    def __init__(self, **kwargs):
        self.kwargs, self.rows = kwargs, []
    def log(self, data, step):
        self.rows.append([step, data])
    def finish(self):
        kept = {k: self.kwargs[k] for k in ("project", "mode", "group", "name", "dir", "id")}
        with open(os.environ["FAKE_WANDB_LOG"], "a") as f:
            f.write(json.dumps({**kept, "seed": self.kwargs["config"]["seed"], "rows": self.rows}) + "\\n")
def init(**kwargs):
    return _Run(**kwargs)
"""


def test_eval_only_writes_videos_linked_from_the_report_and_logs_to_wandb(finished_run, tmp_path):
    """main.py --eval_only with one video per weight and --wandb (a fake wandb package that records its calls)."""
    from conftest import read_csv, run_main

    (tmp_path / "wandb").mkdir()
    (tmp_path / "wandb" / "__init__.py").write_text(FAKE_WANDB)
    log = tmp_path / "wandb_calls.jsonl"
    process = run_main(
        "--eval_only",
        f"--restore={finished_run}",
        "--eval_reset_seed=7",  # its own eval dir: eval/qgf-bo1-reset7
        "--eval_episodes=1",
        "--guidance_weights=0.1",  # one weight, one video: rendering costs ~30 ms a frame on a CPU
        "--eval_videos=1",
        "--wandb",
        "--wandb_mode=offline",
        "--progress=false",
        extra_env={"PYTHONPATH": str(tmp_path), "FAKE_WANDB_LOG": str(log), "MUJOCO_GL": ""},
    )
    if "warning: --eval_videos" in process.stdout:
        pytest.skip(f"no off-screen rendering here: {process.stdout.split('warning: ')[1].splitlines()[0]}")
    out = os.path.join(finished_run, "eval", "qgf-bo1-reset7")
    rows = read_csv(os.path.join(out, "eval.csv"))
    report = open(os.path.join(out, "report.md")).read()
    ((row),) = rows
    assert float(row["guidance_weight"]) == 0.1 and os.listdir(os.path.join(out, "videos", "step4")) == ["w0.1-ep0.mp4"]
    assert "(videos/step4/w0.1-ep0.mp4)" in report
    count, shape = _frame_count(os.path.join(out, "videos", "step4", "w0.1-ep0.mp4"))
    assert count == int(float(row["length"])) + 1 and shape == (200, 200, 3)  # reset state + every step
    (run,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert (run["project"], run["mode"], run["dir"], run["seed"]) == ("qgf", "offline", out, 0)
    assert (
        run["group"].startswith(f"{TINY_TASK}/qgf/") and run["id"] == open(os.path.join(out, "wandb_id")).read().strip()
    )
    ((step, logged),) = run["rows"]  # one log call per step
    assert step == 4 and logged == {
        "eval/success_w0.1_task_all": float(row["success"]),
        "eval/return_w0.1_task_all": float(row["return"]),
    }


def test_bad_video_counts_and_missing_wandb_fail_before_any_data(monkeypatch):
    from runner.config import Options, resolve

    task = dict(env=TINY_TASK, preset="demo", eval_episodes=2)
    with pytest.raises(configs.ConfigError, match=r"--eval_videos=3 asks for more videos .* than the 2 episodes"):
        resolve(Options(**task, eval_videos=3))
    assert resolve(Options(**task, eval_videos=2)).eval_videos == 2
    gc_task = dict(agent="gcqgf", env="cube-single-play-v0", preset="demo", eval_episodes=1)
    assert resolve(Options(**gc_task, eval_videos=5)).eval_videos == 5  # five tasks × one episode
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(configs.ConfigError, match="pip install wandb"):
        resolve(Options(**task, wandb=True))
    assert resolve(Options(**task)).wandb is None
