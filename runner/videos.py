"""Videos of evaluation episodes (`--eval_videos=N`): the off-screen OpenGL backend, which episodes of a sweep
are recorded, and their frames written as MP4 (H.264, through PyAV) or, where PyAV is missing, as GIF (Pillow).

The recorded episodes are ordinary episodes of the evaluation batch: only the envs that run them render
(envs.rollouts' `record_frames`), in whichever process steps them. MuJoCo reads its OpenGL backend from
`MUJOCO_GL` once, when it is first imported, so `choose_gl_backend` must run before that: main.py calls it
before any env exists, and spawned evaluation workers inherit the variable.
"""

import ctypes.util
import os
import subprocess
import sys
import warnings

import numpy as np

FPS = 20  # OGBench's manipulation envs act every 0.05 s: the videos play in real time
_LIBRARIES = {"egl": "EGL", "osmesa": "OSMesa"}  # off-screen backends, in order of preference
# Renders one frame: making a context alone succeeded with MUJOCO_GL=glfw on a headless machine, whose first render
# then failed in the evaluation.
_PROBE = (
    "import mujoco; model = mujoco.MjModel.from_xml_string('<mujoco/>'); renderer = mujoco.Renderer(model, 8, 8); "
    "renderer.update_scene(mujoco.MjData(model)); renderer.render(); renderer.close()"
)


class RenderingUnavailable(RuntimeError):
    """No off-screen OpenGL on this machine; the message says what to install."""


def choose_gl_backend(environ=None) -> str:
    """The backend MuJoCo renders off-screen with; sets `MUJOCO_GL` to it unless the user set one.

    'egl' where libEGL is found (a GPU's driver, or Mesa's software renderer), else 'osmesa' where libOSMesa
    is. A context is then made in a child process, so a missing or broken driver is found before any
    evaluation (and cannot crash this one). Raises RenderingUnavailable, saying what to install, when none works.
    """
    environ = os.environ if environ is None else environ
    backend = environ.get("MUJOCO_GL", "").strip().lower()
    if not backend:
        backend = next((b for b, lib in _LIBRARIES.items() if ctypes.util.find_library(lib)), "")
        if not backend:
            raise RenderingUnavailable(
                "no off-screen OpenGL library (libEGL or libOSMesa) found; install one, e.g. "
                "`apt-get install libegl1 libgl1-mesa-dri` (or libosmesa6)"
            )
        environ["MUJOCO_GL"] = backend
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE], env={**os.environ, **environ}, capture_output=True, text=True, timeout=120
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or [f"exit code {probe.returncode}"])[-1]
        raise RenderingUnavailable(
            f"MuJoCo cannot render off-screen with MUJOCO_GL={backend} ({last}); install EGL "
            "(`apt-get install libegl1 libgl1-mesa-dri`) or OSMesa (`apt-get install libosmesa6`), or set "
            "MUJOCO_GL to a backend that works here"
        )
    return backend


def check_gl_variable() -> None:
    """Raises RenderingUnavailable when MuJoCo cannot even be imported with the user's `MUJOCO_GL` (e.g. an unknown
    value, or osmesa without libOSMesa): every run imports it, with videos or without."""
    backend = os.environ.get("MUJOCO_GL", "")
    if not backend.strip():
        return
    probe = subprocess.run([sys.executable, "-c", "import mujoco"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or [f"exit code {probe.returncode}"])[-1]
        raise RenderingUnavailable(
            f"MuJoCo cannot be imported with MUJOCO_GL={backend} ({last}); unset MUJOCO_GL, or set it to a backend "
            "installed here (egl, osmesa)"
        )


def check_videos_per_weight(videos: int, tasks: int, episodes: int) -> str | None:
    """What is wrong with recording `videos` episodes of each weight out of its `tasks` × `episodes`, or None."""
    if videos < 0:
        return f"--eval_videos={videos} must be 0 (no videos) or more"
    if videos > tasks * episodes:
        return (
            f"--eval_videos={videos} asks for more videos per guidance weight than the {tasks * episodes} "
            f"episodes each weight runs; lower it or raise --eval_episodes"
        )
    return None


def recorded_episodes(num_weights: int, num_tasks: int, episodes: int, per_weight: int) -> list[tuple]:
    """(position in one seed's block of the sweep, weight index, task index, episode) of the episodes recorded:
    `per_weight` of each weight, taken round robin over the tasks (goal-conditioned envs have five), so N
    videos show N different goals before a second episode of one. Positions follow runner.evaluation's
    weight-major, then task-major layout."""
    recorded = []
    for j in range(num_weights):
        for i in range(per_weight):
            k, e = i % num_tasks, i // num_tasks
            recorded.append((j * num_tasks * episodes + k * episodes + e, j, k, e))
    return recorded


def video_name(weight: float, task: str, episode: int) -> str:
    return f"w{weight:g}" + ("" if task == "all" else f"-task{task}") + f"-ep{episode}"


def write_video(stem: str, frames: np.ndarray, fps: int = FPS) -> str:
    """Writes `frames` [T, H, W, 3] uint8 to `stem`.mp4 (H.264) or, without PyAV, `stem`.gif; returns the path.

    Written under a temporary name and renamed, so a video that exists is complete. A GIF merges identical
    consecutive frames into one longer frame (Pillow's encoder), so it may hold fewer frames than given.
    """
    try:
        import av
    except ImportError:
        av = None
        warnings.warn("PyAV is not installed (`pip install av`): evaluation videos are written as GIF", stacklevel=2)
    if av is None:
        from PIL import Image

        path = stem + ".gif"
        images = [Image.fromarray(f) for f in frames]
        images[0].save(
            path + ".tmp", format="GIF", save_all=True, append_images=images[1:], duration=1000 // fps, loop=0
        )
    else:
        path = stem + ".mp4"
        # H.264 with 4:2:0 chroma needs even sides: repeat the last row / column where one is odd.
        height, width = frames.shape[1:3]
        frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        with av.open(path + ".tmp", mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.height, stream.width = frames.shape[1:3]
            stream.pix_fmt = "yuv420p"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())  # flush the encoder's delayed frames
    os.replace(path + ".tmp", path)
    return path


def write_videos(out_dir: str, step: int, recordings: list[dict]) -> list[dict]:
    """Writes each recording ({guidance_weight, task, episode, success, frames}) under
    `out_dir`/videos/step<step>/; returns them without frames, with `path` relative to `out_dir`."""
    directory = os.path.join(out_dir, "videos", f"step{step}")
    os.makedirs(directory, exist_ok=True)
    written = []
    for recording in recordings:
        stem = os.path.join(
            directory, video_name(recording["guidance_weight"], recording["task"], recording["episode"])
        )
        path = write_video(stem, recording["frames"])
        entry = {k: v for k, v in recording.items() if k != "frames"}
        written.append({**entry, "path": os.path.relpath(path, out_dir)})
    return written


def format_video_links(videos: list[dict]) -> str:
    """The report's video section: one row per video, linked relative to the report."""
    goal_conditioned = any(v["task"] != "all" for v in videos)
    header = "| guidance weight |" + (" task |" if goal_conditioned else "") + " episode | success | video |"
    lines = ["## Videos", "", header, "|---" * (header.count("|") - 1) + "|"]
    for v in videos:
        task = f" {v['task']} |" if goal_conditioned else ""
        lines.append(
            f"| {v['guidance_weight']:g} |{task} {v['episode']} | {v['success']:.0f} | [{os.path.basename(v['path'])}]"
            f"({v['path']}) |"
        )
    return "\n".join(lines)
