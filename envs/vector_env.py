"""Evaluation episodes stepped in this process (`LocalEpisodes`) or over spawned workers (`WorkerPool`).

Both expose the same three calls, so `envs.rollouts.evaluate` runs one loop over either:
`reset(starts, record_frames) -> (observations [n, O], goals [n, O] or None)` for slots 0..n-1 (with
`record_frames` one bool per slot: only those slots' envs render),
`step(slots, chunks, max_steps) -> (observations [len(slots), O], done [len(slots)])`, and
`results() -> [(success, return, length, frames or None)]` per slot. Every chunk is executed by
`Episode.run_chunk`, in whichever process holds the env, so the two give identical results.

Workers are 'spawn'ed (the parent has JAX loaded, which does not survive fork) and import only this
module, numpy and OGBench (and, as 'spawn' does, the caller's `__main__`, which must guard its entry
point with `if __name__ == '__main__':`). Slot s lives on worker `s % W` (round robin, so a batch laid
out in blocks, such as a guidance sweep, spreads its slow and fast blocks over all workers). A worker
error is raised in the parent as a `WorkerError` with the worker's traceback; a dead or silent worker
raises one instead of hanging. Workers end with their parent (envs.orphans), even one killed by SIGKILL.
"""

import ctypes
import gc
import multiprocessing
import os
import time
import traceback

import numpy as np

from envs.datasets import make_env
from envs.orphans import end_with_parent, ignore_stop_signals

REPLY_TIMEOUT_S = 1800.0  # longest wait for one worker reply (e.g. building hundreds of envs), then raise
POLL_S = 1.0  # how often a waiting parent checks that its workers are alive


class Episode:
    """One episode on one env: reset from a seed (and task), then chunks executed open loop until it ends."""

    def __init__(self, env, reset_seed: int, task_id, record_frames: bool):
        self.env = env
        options = None if task_id is None else dict(task_id=int(task_id))
        self.observation, info = env.reset(seed=int(reset_seed), options=options)
        self.goal = None if task_id is None else info["goal"]
        self.returns = np.float32(0.0)
        self.length = 0
        self.success = 0.0
        self.frames = [_first_frame(env)] if record_frames else None

    def run_chunk(self, chunk, max_steps) -> bool:
        """Execute the actions of `chunk` [H, A] until the episode ends; return whether it ended."""
        for action in chunk:
            ob, reward, terminated, truncated, info = self.env.step(action)
            self.observation = ob
            self.returns = np.float32(self.returns + reward)
            self.length += 1
            if self.frames is not None:
                self.frames.append(self.env.render())
            if terminated or truncated or (max_steps is not None and self.length >= max_steps):
                self.success = float(info["success"])
                if self.frames is not None:
                    _release_renderer(self.env)
                return True
        return False

    def result(self) -> tuple:
        return self.success, self.returns, self.length, None if self.frames is None else np.stack(self.frames)


def _first_frame(env):
    """The first frame of a recorded episode, rendered without shadows or multisampling: OGBench's defaults
    (a 4096² shadow map, 4× multisampling) cost ~0.14 s per 200×200 frame on a software (llvmpipe) renderer,
    ~0.02 s without. The renderer reads these settings when it is created, at this first render."""
    quality = env.unwrapped.model.vis.quality
    quality.shadowsize, quality.offsamples = 0, 0
    return env.render()


def _release_renderer(env) -> None:
    """Closes the off-screen renderer that OGBench keeps on an env after its first render (its GL context and
    buffers, ~100 MB): evaluation envs are cached across evaluations, and only recorded episodes need one."""
    unwrapped = env.unwrapped
    if getattr(unwrapped, "_renderer", None) is not None:
        unwrapped._renderer.close()
        unwrapped._renderer = None


def make_eval_env(env_name: str, env_kwargs: dict, sibling=None):
    """An evaluation env that shares `sibling`'s (an env of the same name in this process) inverse-kinematics
    controller instead of holding its own.

    A manipulation env holds ~110 MB: its compiled MuJoCo model (~63 MB, of which ~20 MB are the floor and
    skybox textures and ~25 MB mesh collision trees), its MjData (~15 MB) and Python's model tree; OGBench also
    gives every env a second model and data of the arm alone (~45 MB) for its inverse kinematics. That
    controller's `solve` only reads its arguments (its data is scratch), so envs stepped one after another in a
    process can share one. (No off-screen renderer exists until a frame is rendered.)
    """
    env = make_env(env_name, **env_kwargs)
    if sibling is not None and hasattr(sibling.unwrapped, "_ik"):
        env.unwrapped._ik = sibling.unwrapped._ik
    return env


def return_free_memory() -> None:
    """Gives the heap that MuJoCo's compiler freed (~40 MB per env built) back to the OS; glibc keeps it."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


class LocalEpisodes:
    """Slots of episodes on a list of envs in this process (grown on demand with `make_env`)."""

    def __init__(self, env_name: str, env_kwargs: dict, envs=None):
        self.env_name = env_name
        self.env_kwargs = env_kwargs
        self.envs = [] if envs is None else envs
        self.episodes = []

    def reset(self, starts, record_frames) -> tuple:
        """`starts`: one (reset seed, task id or None) per slot; `record_frames`: one bool per slot."""
        if len(self.envs) < len(starts):
            while len(self.envs) < len(starts):
                self.envs.append(make_eval_env(self.env_name, self.env_kwargs, self.envs[0] if self.envs else None))
            return_free_memory()
        self.episodes = [
            Episode(env, s, t, record) for env, (s, t), record in zip(self.envs, starts, record_frames, strict=False)
        ]
        observations = np.stack([e.observation for e in self.episodes]) if self.episodes else None
        goals = np.stack([e.goal for e in self.episodes]) if self.episodes and starts[0][1] is not None else None
        return observations, goals

    def step(self, slots, chunks, max_steps) -> tuple:
        done = np.array([self.episodes[s].run_chunk(c, max_steps) for s, c in zip(slots, chunks, strict=True)], bool)
        observations = np.stack([self.episodes[s].observation for s in slots]) if len(slots) else None
        return observations, done

    def results(self) -> list:
        return [e.result() for e in self.episodes]


class WorkerError(RuntimeError):
    """An evaluation worker failed (the message holds its traceback), died, or sent no reply."""


def _worker(conn, env_name: str, env_kwargs: dict, parent_pid: int) -> None:
    """Serve ('reset' | 'step' | 'results', *args) requests on `LocalEpisodes` until 'close'."""
    end_with_parent(parent_pid)  # a parent killed mid-request cannot tell its busy workers to stop
    ignore_stop_signals()
    episodes = LocalEpisodes(env_name, env_kwargs)
    commands = {"reset": episodes.reset, "step": episodes.step, "results": episodes.results}
    try:
        while True:
            command, *args = conn.recv()
            if command == "close":
                return
            try:
                reply = ("ok", commands[command](*args))
            except Exception:  # reported to the parent, which raises it
                reply = ("error", traceback.format_exc())
            conn.send(reply)
    except (EOFError, OSError):  # the parent went away
        return


class WorkerPool:
    """`num_workers` spawned processes holding the envs of one env name; slot s lives on worker s % W."""

    def __init__(self, env_name: str, env_kwargs: dict, num_workers: int):
        ctx = multiprocessing.get_context("spawn")
        self.num_workers = num_workers
        self.conns, self.procs = [], []
        self.num_slots = 0
        try:
            for _ in range(num_workers):
                parent_conn, child_conn = ctx.Pipe()
                args = (child_conn, env_name, env_kwargs, os.getpid())
                proc = ctx.Process(target=_worker, args=args, daemon=True)
                self.conns.append(parent_conn)
                self.procs.append(proc)
                proc.start()
                child_conn.close()
        except BaseException:  # e.g. spawn refused from an unguarded `__main__`: stop the ones started
            self.close()
            raise

    def alive(self) -> bool:
        return all(proc.is_alive() for proc in self.procs)

    def _request(self, requests: dict) -> dict:
        """Send {worker: (command, *args)} to all, then gather {worker: reply}; workers run in parallel."""
        for w, request in requests.items():
            try:
                self.conns[w].send(request)
            except OSError:
                raise WorkerError(f"Evaluation worker {w} is gone (exit code {self.procs[w].exitcode}).") from None
        return {w: self._receive(w) for w in requests}

    def _receive(self, w: int):
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while not self.conns[w].poll(POLL_S):
            if not self.procs[w].is_alive():
                raise WorkerError(f"Evaluation worker {w} died (exit code {self.procs[w].exitcode}).")
            if time.monotonic() > deadline:
                raise WorkerError(f"Evaluation worker {w} sent no reply in {REPLY_TIMEOUT_S:.0f} s.")
        try:
            status, payload = self.conns[w].recv()
        except (EOFError, OSError):
            raise WorkerError(f"Evaluation worker {w} closed its pipe (exit code {self.procs[w].exitcode}).") from None
        if status == "error":
            raise WorkerError(f"Evaluation worker {w} failed:\n{payload}")
        return payload

    def _split(self, slots) -> dict:
        """{worker: positions in `slots` of the slots it holds}, for workers holding any."""
        slots = np.asarray(slots, np.int64)
        parts = {w: np.flatnonzero(slots % self.num_workers == w) for w in range(self.num_workers)}
        return {w: p for w, p in parts.items() if len(p)}

    def reset(self, starts, record_frames) -> tuple:
        self.num_slots = len(starts)
        parts = self._split(np.arange(len(starts)))
        replies = self._request(
            {w: ("reset", [starts[i] for i in p], [record_frames[i] for i in p]) for w, p in parts.items()}
        )
        observations = _scatter(parts, {w: r[0] for w, r in replies.items()}, len(starts))
        goals = None if starts[0][1] is None else _scatter(parts, {w: r[1] for w, r in replies.items()}, len(starts))
        return observations, goals

    def step(self, slots, chunks, max_steps) -> tuple:
        slots = np.asarray(slots, np.int64)
        parts = self._split(slots)
        replies = self._request(
            {w: ("step", slots[p] // self.num_workers, chunks[p], max_steps) for w, p in parts.items()}
        )
        observations = _scatter(parts, {w: r[0] for w, r in replies.items()}, len(slots))
        done = _scatter(parts, {w: r[1] for w, r in replies.items()}, len(slots))
        return observations, done

    def results(self) -> list:
        parts = self._split(np.arange(self.num_slots))
        replies = self._request({w: ("results",) for w in parts})
        results = [None] * self.num_slots
        for w, p in parts.items():
            for i, result in zip(p, replies[w], strict=True):
                results[i] = result
        return results

    def close(self) -> None:
        for conn, proc in zip(self.conns, self.procs, strict=True):
            try:
                if proc.is_alive():
                    conn.send(("close",))
            except OSError:  # already gone
                pass
            conn.close()
        for proc in self.procs:
            if proc.pid is None:  # never started
                continue
            proc.join(timeout=5.0)
            if proc.is_alive():
                proc.terminate()
                proc.join()


def _scatter(parts: dict, values: dict, n: int) -> np.ndarray:
    """Reassemble per-worker arrays into one array of `n` rows in the original order."""
    first = next(iter(values.values()))
    out = np.empty((n,) + first.shape[1:], first.dtype)
    for w, p in parts.items():
        out[p] = values[w]
    return out
