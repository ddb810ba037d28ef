"""Generate OGBench manipulation datasets offline with the scripted oracles shipped in `ogbench`.

Follows OGBench's published recipe (its `data_gen_scripts`), in its exact file format, so that
`ogbench.make_env_and_datasets` (which skips the download when the files exist) and this
project's loader read the result unchanged:

- env: `gymnasium.make(<family>-v0, terminate_at_goal=False, mode='data_collection',
  max_episode_steps=1001)`: one episode is 1001 rows, the last with `terminals=True`;
- `play`: plan oracles (noise 0.1, smoothing 0.5); `noisy`: Markov oracles (min_norm 0.4) with
  Gaussian noise of per-episode level xi ~ U(0, 0.1) times [1, 1, 1, 3, 10] per action dimension,
  and a uniformly random action with probability 0.1 (cube, scene) or 0.2 (puzzle);
- a new target (`set_new_target(p_stack=...)`) whenever the oracle reports done; scene episodes
  that fail OGBench's health check (cube out of view) are collected again;
- rows: `observations` (s_t), `actions` (a_t), `terminals` (bool, last row of an episode),
  `qpos`/`qvel` (the simulator state of s_t), `button_states` (int64, scene and puzzle).

Each episode draws its randomness from `SeedSequence([seed, episode_index])`, so a file depends
only on the seed (and, trivially, on nothing else: the worker count does not change it).

Each finished episode is kept at once (written atomically) in `<dir>/.<dataset>.episodes-seed<S>-steps<T>/`,
so a generation stopped or killed loses only the episodes in flight: the next generation with the same seed
and episode length collects only the missing ones, and writes the same files as an uninterrupted one (the
directory is removed once the files are in place). The files are written in a locked work directory
`<dir>/.<dataset>.partial.*` and renamed into place when both are complete; the work directory of a killed
generation is removed by the next generation of that dataset, and a full disk leaves the existing files as
they were (`DatasetWriteError`).
Usage: `python -m envs.generate --dataset=cube-single-play-v0 [--episodes=N] [--dir=DIR]
[--seed=S] [--workers=W] [--max_episode_steps=1001]`.
"""

import argparse
import errno
import fcntl
import multiprocessing
import multiprocessing.connection
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings

import numpy as np

from envs.orphans import end_with_parent, ignore_stop_signals
from envs.specs import FAMILIES, parse_name

DEFAULT_DATASET_DIR = "~/.ogbench/data"  # OGBench's default, where its loader looks
PLAN_NOISE = 0.1  # plan oracles: noise level added to the plan
PLAN_NOISE_SMOOTHING = 0.5  # plan oracles: Gaussian smoothing (in steps) of that noise
MARKOV_MIN_NORM = 0.4  # Markov oracles: minimum norm of the relative position they move along
MARKOV_MAX_NOISE = 0.1  # Markov oracles: per-episode noise level xi ~ U(0, MARKOV_MAX_NOISE)
MARKOV_NOISE_SCALE = np.array([1.0, 1.0, 1.0, 3.0, 10.0])  # xi multiplier per action dimension
SCENE_CUBE_MAX_STEP = 100  # scene's Markov cube oracle gives up after this many steps (see note)
# Generation speed of one worker measured on this project's 2-core CPU box (shared, so a
# conservative figure; play datasets), used only to print an expected duration.
MEASURED_STEPS_PER_S = {"cube": 280.0, "scene": 190.0, "puzzle": 150.0}


def default_dataset_dir() -> str:
    return os.path.expanduser(DEFAULT_DATASET_DIR)


def generate_command(name: str, dataset_dir: str | None = None) -> str:
    """The shell command that generates the dataset behind `name` (used in error messages)."""
    dataset_name = parse_name(name).dataset_name
    cmd = f"python -m envs.generate --dataset={dataset_name}"
    if dataset_dir is not None and os.path.expanduser(dataset_dir) != default_dataset_dir():
        cmd += f" --dir={dataset_dir}"
    return cmd


def _make_oracles(env, kind: str, dataset_type: str) -> dict:
    """Oracles by OGBench task name ('cube', 'button', 'drawer', 'window')."""
    if dataset_type == "play":
        from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
        from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
        from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
        from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

        kw = dict(env=env, noise=PLAN_NOISE, noise_smoothing=PLAN_NOISE_SMOOTHING)
        if kind == "cube":
            return {"cube": CubePlanOracle(**kw)}
        if kind == "scene":
            return {
                "cube": CubePlanOracle(**kw),
                "button": ButtonPlanOracle(**kw),
                "drawer": DrawerPlanOracle(**kw),
                "window": WindowPlanOracle(**kw),
            }
        return {"button": ButtonPlanOracle(gripper_always_closed=True, **kw)}

    from ogbench.manipspace.oracles.markov.button_markov import ButtonMarkovOracle
    from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle
    from ogbench.manipspace.oracles.markov.drawer_markov import DrawerMarkovOracle
    from ogbench.manipspace.oracles.markov.window_markov import WindowMarkovOracle

    kw = dict(env=env, min_norm=MARKOV_MIN_NORM)
    if kind == "cube":
        return {"cube": CubeMarkovOracle(**kw)}
    if kind == "scene":
        # Note: ogbench 1.2.2's CubeMarkovOracle.reset sets its step limit back to 200, so this
        # argument (OGBench's recipe) has no effect with the installed package.
        return {
            "cube": CubeMarkovOracle(max_step=SCENE_CUBE_MAX_STEP, **kw),
            "button": ButtonMarkovOracle(**kw),
            "drawer": DrawerMarkovOracle(**kw),
            "window": WindowMarkovOracle(**kw),
        }
    return {"button": ButtonMarkovOracle(gripper_always_closed=True, **kw)}


def _scene_is_healthy(qpos: np.ndarray) -> bool:
    """OGBench's scene check: the cube stays in view unless it is inside the drawer."""
    cube_xyz = qpos[:, 14:17]
    too_far_right = cube_xyz[:, 1] >= 0.29
    too_far_left = (cube_xyz[:, 1] <= -0.3) & ((cube_xyz[:, 2] < 0.06) | (cube_xyz[:, 2] > 0.08))
    return not (too_far_right.any() or too_far_left.any())


class _Collector:
    """One environment and its oracles, collecting whole episodes."""

    def __init__(self, dataset_name: str, max_episode_steps: int):
        import gymnasium
        import ogbench.manipspace  # noqa: F401  (registers the environments)

        parsed = parse_name(dataset_name)
        self.spec = FAMILIES[parsed.family]
        self.dataset_type = parsed.dataset_type
        self.env = gymnasium.make(
            parsed.env_id, terminate_at_goal=False, mode="data_collection", max_episode_steps=max_episode_steps
        )
        self.oracles = _make_oracles(self.env, self.spec.kind, self.dataset_type)
        self.has_buttons = hasattr(self.env.unwrapped, "_cur_button_states")

    def episode(self, seed: int, episode_index: int) -> dict:
        """Collect episode `episode_index` (retried while scene's health check fails)."""
        seeds = np.random.SeedSequence([seed, episode_index]).generate_state(2)
        # The oracles draw from NumPy's global generator: seed it, and give it back afterwards.
        saved_state = np.random.get_state()
        np.random.seed(seeds[0])
        try:
            env_seed = int(seeds[1])
            while True:
                rows = self._try_episode(env_seed)
                env_seed = None  # a retry continues the environment's random stream
                if self.spec.kind != "scene" or _scene_is_healthy(rows["qpos"]):
                    return rows
        finally:
            np.random.set_state(saved_state)

    def _try_episode(self, env_seed) -> dict:
        env, spec = self.env, self.spec
        ob, info = env.reset(seed=env_seed)
        low, high = spec.p_stack
        p_stack = np.random.uniform(low, high) if high > low else low
        noisy = self.dataset_type == "noisy"
        p_random = spec.p_random_action if noisy else 0.0
        xi = np.random.uniform(0.0, MARKOV_MAX_NOISE) if noisy else 0.0
        oracle = self.oracles[info["privileged/target_task"]]
        oracle.reset(ob, info)

        rows = {k: [] for k in ("observations", "actions", "terminals", "qpos", "qvel")}
        if self.has_buttons:
            rows["button_states"] = []
        done = False
        while not done:
            if np.random.rand() < p_random:
                action = np.random.uniform(-1.0, 1.0, size=5)
            else:
                action = np.asarray(oracle.select_action(ob, info), dtype=np.float64)
                if noisy:
                    action = action + np.random.normal(0.0, xi * MARKOV_NOISE_SCALE, size=action.shape)
            action = np.clip(action, -1.0, 1.0)
            next_ob, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            if oracle.done:
                # As in OGBench, the new target's info only reaches the oracle through its reset;
                # its next action still sees this step's info.
                target_ob, target_info = env.unwrapped.set_new_target(p_stack=p_stack)
                oracle = self.oracles[target_info["privileged/target_task"]]
                oracle.reset(target_ob, target_info)
            rows["observations"].append(ob)
            rows["actions"].append(action)
            rows["terminals"].append(done)
            rows["qpos"].append(info["prev_qpos"])
            rows["qvel"].append(info["prev_qvel"])
            if self.has_buttons:
                rows["button_states"].append(info["prev_button_states"])
            ob = next_ob
        return {k: np.asarray(v, dtype=_DTYPES[k]) for k, v in rows.items()}


_DTYPES = {
    "observations": np.float32,
    "actions": np.float32,
    "terminals": bool,
    "qpos": np.float32,
    "qvel": np.float32,
    "button_states": np.int64,
}


def quiet_known_warnings() -> None:
    """Hides known, harmless start-up noise (no display for GLFW; gymnasium's float32 action bounds) in every
    process that makes environments (main.py's too); call it before the first environment imports MuJoCo."""
    warnings.filterwarnings("ignore", message=".*DISPLAY environment variable is missing.*")
    warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32.*")


def episodes_dir(dataset_dir: str, dataset_name: str, seed: int, max_episode_steps: int) -> str:
    """Where a generation keeps its finished episodes until the dataset's files are in place: an episode depends
    on the seed, its index and the episode length only, so any generation with these settings can use them."""
    return os.path.join(dataset_dir, f".{dataset_name}.episodes-seed{seed}-steps{max_episode_steps}")


def _episode_path(directory: str, index: int) -> str:
    return os.path.join(directory, f"episode-{index:07d}.npz")


def finished_episodes(directory: str, total: int) -> list:
    """The indices below `total` whose episode file is in `directory` (files are complete: written atomically)."""
    found = []
    for name in os.listdir(directory):
        stem = name[len("episode-") : -len(".npz")]
        if name.startswith("episode-") and name.endswith(".npz") and stem.isdigit() and int(stem) < total:
            found.append(int(stem))
    return sorted(found)


def _save_episode(directory: str, index: int, episode: dict) -> None:
    """Writes one episode (uncompressed) under a temporary name, then renames it: a kill leaves it whole or absent."""
    path = _episode_path(directory, index)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:  # a file object: np.savez would otherwise append '.npz'
        np.savez(f, **episode)
    os.replace(tmp, path)


def _collect(dataset_name, seed, indices, max_episode_steps, directory, report) -> None:
    """Collect the episodes `indices`, each saved into `directory` as soon as it is finished."""
    quiet_known_warnings()
    collector = _Collector(dataset_name, max_episode_steps)
    for index in indices:
        episode = collector.episode(seed, index)
        _save_episode(directory, index, episode)
        report(len(episode["terminals"]))


def _worker(dataset_name, seed, indices, max_episode_steps, directory, conn, worker_id, parent_pid) -> None:
    end_with_parent(parent_pid)  # first: a parent killed by SIGKILL cannot stop its workers
    ignore_stop_signals()
    try:
        _collect(dataset_name, seed, indices, max_episode_steps, directory, lambda steps: conn.send(("steps", steps)))
        conn.send(("done", worker_id))
    except OSError as error:
        if error.errno not in _DISK_FULL_ERRNOS:
            conn.send(("error", traceback.format_exc()))
            raise
        conn.send(("disk full", error.strerror))  # the parent reports it in one line
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        raise


_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_WORK_DIR_LOCK = ".lock"
_LOCKLESS_GRACE_S = 600  # a work dir without a lock file is another run's only in its first instant


class DatasetWriteError(OSError):
    """The disk filled up while writing a dataset; the message names the directory and what to do."""

    def __str__(self) -> str:
        return self.strerror


def _claim_work_dir(dataset_dir: str, dataset_name: str):
    """A fresh `.<dataset>.partial.*` work directory, locked while this process lives; stale ones removed.

    A generation that was killed leaves its work directory (part files, half-written outputs) behind. Its
    lock died with it, so the next generation of the same dataset removes it; a work directory whose lock
    is held belongs to a generation still running (another process) and is left alone.
    """
    prefix = f".{dataset_name}.partial."
    for name in os.listdir(dataset_dir):
        path = os.path.join(dataset_dir, name)
        if name.startswith(prefix) and os.path.isdir(path):
            _remove_if_abandoned(path)
    work_dir = tempfile.mkdtemp(prefix=prefix, dir=dataset_dir)
    lock = open(os.path.join(work_dir, _WORK_DIR_LOCK), "w")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return work_dir, lock


def _share_episodes_dir(path: str):
    """Creates (or joins) the directory of kept episodes, holding a shared lock on it while this generation uses
    it: generations of the same settings running at once share it, and the last to finish removes it."""
    lock_path = os.path.join(path, _WORK_DIR_LOCK)
    while True:
        os.makedirs(path, exist_ok=True)
        try:
            lock = open(lock_path, "a")
        except FileNotFoundError:  # removed meanwhile by a generation that finished
            continue
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            if os.path.samestat(os.fstat(lock.fileno()), os.stat(lock_path)):
                return lock
        except FileNotFoundError:
            pass
        lock.close()  # a directory removed while this one waited: join a new one


def _release_episodes_dir(path: str, lock, remove: bool) -> None:
    """Removes the kept episodes when no other generation uses them (else the last one to finish does)."""
    if remove:
        fcntl.flock(lock, fcntl.LOCK_UN)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another generation of the same settings is still collecting
            pass
        else:
            shutil.rmtree(path, ignore_errors=True)
    lock.close()


def _remove_if_abandoned(work_dir: str) -> None:
    try:
        lock = open(os.path.join(work_dir, _WORK_DIR_LOCK))
    except FileNotFoundError:  # killed before it took its lock, or made by an older version
        if time.time() - os.path.getmtime(work_dir) > _LOCKLESS_GRACE_S:
            shutil.rmtree(work_dir, ignore_errors=True)
        return
    except OSError:
        return
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: a generation in progress
            return
        shutil.rmtree(work_dir, ignore_errors=True)


def _disk_full_error(dataset_name: str, dataset_dir: str, detail: str, kept_dir: str, total: int) -> DatasetWriteError:
    kept = len(finished_episodes(kept_dir, total)) if os.path.isdir(kept_dir) else 0
    return DatasetWriteError(
        errno.ENOSPC,
        f"no space left on the disk to write the {dataset_name} dataset into {dataset_dir} ({detail}); the files "
        f"already there are unchanged and {kept} finished episodes are kept in {kept_dir}: free some space and run "
        "again (or write it into another directory)",
    )


def _save_compressed(path: str, arrays: dict) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would otherwise append '.npz'
        np.savez_compressed(f, **arrays)


def _split(indices: list, workers: int) -> list:
    """`indices` in at most `workers` contiguous, non-empty blocks of nearly equal size."""
    bounds = np.linspace(0, len(indices), workers + 1).round().astype(int)
    return [indices[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def measured_line(episodes: int, seconds: float, left: int, workers: int) -> str:
    """The estimate printed once the first episodes of a generation are done: its pace here and the time left."""
    per_minute = episodes / max(seconds, 1e-9) * 60.0
    minutes = left / per_minute
    time_left = f"{minutes * 60:.0f} s" if minutes < 1 else f"{minutes:.0f} min"
    return (
        f"Measured here: {per_minute:.1f} episodes/min with {workers} worker(s); about {time_left} left for the other "
        f"{left} episodes."
    )


class _Progress:
    def __init__(self, total_episodes: int, done: int, workers: int, enabled: bool, desc: str, clock=time.time):
        from tqdm import tqdm

        self.bar = tqdm(
            total=total_episodes, initial=done, unit="ep", desc=desc, disable=not enabled, dynamic_ncols=True
        )
        self.left = total_episodes - done
        self.workers = min(workers, max(self.left, 1))
        self.episodes = 0  # finished by this process
        self.steps = 0
        self.clock = clock
        self.start = clock()

    def update(self, steps: int) -> None:
        self.steps += steps
        self.episodes += 1
        self.bar.update(1)
        elapsed = max(self.clock() - self.start, 1e-9)
        self.bar.set_postfix(steps_per_s=f"{self.steps / elapsed:.0f}")
        if self.episodes == self.workers and self.episodes < self.left:  # every worker's first episode is done
            self.bar.write(measured_line(self.episodes, elapsed, self.left - self.episodes, self.workers))

    def close(self) -> None:
        self.bar.close()


def expected_minutes(name: str, episodes: int | None = None, workers: int | None = None, max_episode_steps=1001):
    """Expected wall-clock minutes for `generate_dataset` with these settings on this project's box."""
    parsed = parse_name(name)
    episodes = parsed.spec.num_episodes if episodes is None else episodes
    total = episodes + max(1, episodes // 10)
    return _minutes(parsed.spec.kind, total, max(1, min(workers or os.cpu_count() or 1, total)), max_episode_steps)


def _minutes(kind: str, episodes: int, workers: int, max_episode_steps: int) -> float:
    return episodes * max_episode_steps / (MEASURED_STEPS_PER_S[kind] * workers) / 60.0


def generate_dataset(
    name: str,
    dataset_dir: str | None = None,
    episodes: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    max_episode_steps: int = 1001,
    progress: bool = True,
) -> tuple:
    """Generate `<dir>/<dataset>.npz` and `<dir>/<dataset>-val.npz`; return their paths.

    `name` is a dataset name (`cube-single-play-v0`) or an env name built on it
    (`cube-single-play-singletask-task1-v0`). `episodes` (default: OGBench's count for the
    family) go to the training file and `max(1, episodes // 10)` more to the validation file.
    `workers` processes (default: one per core) each collect a contiguous block of episodes.
    """
    parsed = parse_name(name)
    dataset_name = parsed.dataset_name
    dataset_dir = os.path.expanduser(dataset_dir or DEFAULT_DATASET_DIR)
    episodes = parsed.spec.num_episodes if episodes is None else int(episodes)
    if episodes < 1 or max_episode_steps < 2:
        raise ValueError("Need at least one episode of at least two steps.")
    num_val = max(1, episodes // 10)
    total = episodes + num_val
    workers = max(1, min(workers or os.cpu_count() or 1, total))
    train_path = os.path.join(dataset_dir, f"{dataset_name}.npz")
    val_path = os.path.join(dataset_dir, f"{dataset_name}-val.npz")
    kept_dir = episodes_dir(dataset_dir, dataset_name, seed, max_episode_steps)
    done = finished_episodes(kept_dir, total) if os.path.isdir(kept_dir) else []
    missing = sorted(set(range(total)) - set(done))
    workers = max(1, min(workers, len(missing)))
    minutes = _minutes(parsed.spec.kind, len(missing), workers, max_episode_steps)
    kept = f"; {len(done)} finished episodes kept from an interrupted generation" if done else ""
    print(
        f"Generating {dataset_name}: {episodes} + {num_val} (val) episodes of {max_episode_steps} steps with "
        f"{workers} worker(s), seed {seed}, into {dataset_dir}{kept} (expected about {minutes:.1f} min by this "
        "project's 2-core CPU figures; measured here after the first episodes).",
        flush=True,
    )

    kept_lock = _share_episodes_dir(kept_dir)
    work_dir, lock = _claim_work_dir(dataset_dir, dataset_name)
    bar = _Progress(total, len(done), workers, progress, dataset_name)
    try:
        blocks = _split(missing, workers)
        if len(blocks) == 1:
            _collect(dataset_name, seed, blocks[0], max_episode_steps, kept_dir, bar.update)
        elif blocks:
            _run_workers(dataset_name, seed, blocks, max_episode_steps, kept_dir, bar)
        bar.close()

        parts = []
        for index in range(total):
            with np.load(_episode_path(kept_dir, index)) as f:
                parts.append({k: f[k] for k in f.files})
        lengths = [len(p["terminals"]) for p in parts]
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        del parts
        num_train_rows = int(sum(lengths[:episodes]))
        tmp_train = os.path.join(work_dir, "train.npz")
        tmp_val = os.path.join(work_dir, "val.npz")
        _save_compressed(tmp_train, {k: v[:num_train_rows] for k, v in merged.items()})
        _save_compressed(tmp_val, {k: v[num_train_rows:] for k, v in merged.items()})
        # Both files are complete. Remove an older training file, then rename the validation file, then
        # the training file: a run stopped in between leaves no training file (what every loader checks,
        # and what makes main.py generate the pair again), never a new file paired with an old one.
        if os.path.exists(train_path):
            os.remove(train_path)
        os.replace(tmp_val, val_path)
        os.replace(tmp_train, train_path)
        _release_episodes_dir(kept_dir, kept_lock, remove=True)  # its episodes are in the files now
    except OSError as error:
        if error.errno not in _DISK_FULL_ERRNOS or isinstance(error, DatasetWriteError):
            raise
        raise _disk_full_error(dataset_name, dataset_dir, error.strerror or str(error), kept_dir, total) from error
    finally:
        bar.close()
        shutil.rmtree(work_dir, ignore_errors=True)
        lock.close()
        kept_lock.close()
    elapsed = time.time() - bar.start
    print(
        f"Wrote {train_path} ({num_train_rows} rows) and {val_path} ({len(merged['terminals']) - num_train_rows} "
        f"rows) in {elapsed / 60:.1f} min ({len(merged['terminals']) / max(elapsed, 1e-9):.0f} steps/s).",
        flush=True,
    )
    return train_path, val_path


def _run_workers(dataset_name, seed, blocks, max_episode_steps, directory, bar) -> None:
    # 'spawn': the caller may have JAX (threads) loaded, which does not survive fork. One pipe per worker, not a
    # Queue: a Queue's semaphores outlive a parent ended at once (main.py's Ctrl-C), and Python then warns of them.
    ctx = multiprocessing.get_context("spawn")
    receivers, senders, procs = {}, [], []
    for i, indices in enumerate(blocks):
        receiver, sender = ctx.Pipe(duplex=False)
        procs.append(
            ctx.Process(
                target=_worker,
                args=(dataset_name, seed, indices, max_episode_steps, directory, sender, i, os.getpid()),
                daemon=True,
            )
        )
        receivers[receiver] = procs[-1]
        senders.append(sender)
    for p in procs:
        p.start()
    for sender in senders:  # the workers hold theirs: a worker's end is the end of its pipe
        sender.close()
    try:
        while receivers:
            for conn in multiprocessing.connection.wait(list(receivers), timeout=1.0):
                try:
                    kind, payload = conn.recv()
                except EOFError:  # ended without a word: killed
                    proc = receivers.pop(conn)
                    proc.join(timeout=5.0)
                    raise RuntimeError(f"A generation worker died with exit code {proc.exitcode}.") from None
                if kind == "steps":
                    bar.update(payload)
                elif kind == "done":
                    receivers.pop(conn)
                    conn.close()
                elif kind == "disk full":
                    raise OSError(errno.ENOSPC, payload)
                else:
                    raise RuntimeError(f"A generation worker failed:\n{payload}")
        for p in procs:
            p.join()
    finally:
        # Workers first: one still sending into a pipe closed under it would print a BrokenPipeError's traceback
        # after the parent's own last line (a Ctrl-C's "stopped ..." message).
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
        for conn in receivers:
            conn.close()


def stopped_message(name: str, dataset_dir: str, seed: int, max_episode_steps: int) -> str:
    """The line a generation stopped by Ctrl-C ends with: what is kept and what to do."""
    dataset_name = parse_name(name).dataset_name
    kept_dir = episodes_dir(os.path.expanduser(dataset_dir), dataset_name, seed, max_episode_steps)
    kept = len(finished_episodes(kept_dir, sys.maxsize)) if os.path.isdir(kept_dir) else 0
    return (
        f"stopped (Ctrl-C) before {dataset_name} was complete; the files already there are unchanged and its {kept} "
        f"finished episodes are kept in {kept_dir}: rerun the same command to go on"
    )


def main(argv=None) -> None:
    quiet_known_warnings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, help="e.g. cube-single-play-v0")
    parser.add_argument("--episodes", type=int, default=None, help="training episodes (default: OGBench's)")
    parser.add_argument("--dir", default=DEFAULT_DATASET_DIR, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    parser.add_argument("--max_episode_steps", type=int, default=1001, help="rows per episode (OGBench: 1001)")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    try:
        parse_name(args.dataset)
    except ValueError as error:
        sys.exit(f"error: --dataset: {error}")
    for name, least in (("episodes", 1), ("workers", 1), ("max_episode_steps", 2)):
        value = getattr(args, name)
        if value is not None and value < least:
            sys.exit(f"error: --{name}={value} must be at least {least}")
    try:
        generate_dataset(
            args.dataset,
            args.dir,
            episodes=args.episodes,
            seed=args.seed,
            workers=args.workers,
            max_episode_steps=args.max_episode_steps,
            progress=not args.no_progress,
        )
    except DatasetWriteError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:  # its work directory is removed; files already there are unchanged
        print(stopped_message(args.dataset, args.dir, args.seed, args.max_episode_steps), file=sys.stderr, flush=True)
        sys.exit(130)  # the shell's status of a Ctrl-C, as main.py's
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTDIR):  # --dir, or a directory above it, is a file
            what = f"{error.strerror}: {error.filename}"
            sys.exit(f"error: --dir={args.dir} is not a directory ({what}); choose another --dir")
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        sys.exit(
            f"error: cannot write into {os.path.expanduser(args.dir)} ({error.strerror}: {error.filename}); "
            "choose another --dir"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
