"""Load OGBench manipulation datasets (downloaded or generated here) with their environment.

Never downloads: a missing file raises `DatasetMissingError` naming the generate command.
Single-task names get `rewards` and `masks` from OGBench's own relabelling, so success means
exactly what OGBench means. A directory of `.npz` slices (OGBench's 100M-transition datasets)
is read one slice at a time through `DatasetSlices`.

Returned datasets are OGBench's regular layout (numpy, one row per transition):
`observations`, `actions`, `next_observations`, `terminals` (float32, 1 on the last transition of
each trajectory), plus `rewards` and `masks` for single-task names.
"""

import glob
import os

import numpy as np

from envs.generate import DEFAULT_DATASET_DIR, generate_command
from envs.specs import parse_name

REQUIRED_KEYS = ("observations", "actions", "terminals")


class DatasetMissingError(FileNotFoundError):
    """The dataset files are not on disk; the message says how to generate them."""


class DatasetFormatError(ValueError):
    """A dataset file exists but does not have OGBench's keys or shapes for this environment."""


def make_env(env_name: str, **env_kwargs):
    """The OGBench evaluation env for a dataset-style name (`cube-double-play-singletask-task2-v0`)."""
    import gymnasium
    import ogbench.manipspace  # noqa: F401  (registers the environments)

    return gymnasium.make(parse_name(env_name).env_id, **env_kwargs)


def dataset_paths(env_name: str, dataset_dir: str | None = None) -> tuple:
    """(train, val) file paths of the dataset behind `env_name`."""
    dataset_dir = os.path.expanduser(dataset_dir or DEFAULT_DATASET_DIR)
    name = parse_name(env_name).dataset_name
    return os.path.join(dataset_dir, f"{name}.npz"), os.path.join(dataset_dir, f"{name}-val.npz")


def _check_exists(paths, env_name, dataset_dir) -> None:
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise DatasetMissingError(
            f"Dataset for {env_name} not found: {', '.join(missing)}. Generate it (no download is attempted) with:\n"
            f"  {generate_command(env_name, dataset_dir)}\n"
            f"(add --episodes=N --max_episode_steps=M for a small demo dataset), or place OGBench's files there."
        )


def validate_file(path: str, env, need_info: bool) -> None:
    """Check keys and shapes of an OGBench `.npz` file against `env`; raise DatasetFormatError."""
    try:
        file = np.load(path)
    except Exception as e:  # a truncated or foreign file
        raise DatasetFormatError(f"{path}: not a readable .npz file ({e}).") from e
    with file:
        keys = set(file.files)
        required = list(REQUIRED_KEYS)
        if need_info:
            required.append("qpos")
            if hasattr(env.unwrapped, "_cur_button_states"):
                required.append("button_states")
        missing = [k for k in required if k not in keys]
        if missing:
            raise DatasetFormatError(f"{path}: missing keys {missing} (has {sorted(keys)}).")
        shapes = {k: file[k].shape for k in required}
    n = shapes["terminals"][0] if len(shapes["terminals"]) == 1 else None
    if n is None or n < 2:
        raise DatasetFormatError(f"{path}: terminals must be a vector of at least 2 rows, got {shapes['terminals']}.")
    ob_dim = env.observation_space.shape[0]
    action_dim = env.action_space.shape[0]
    expected = {"observations": (n, ob_dim), "actions": (n, action_dim)}
    if need_info:
        expected["qpos"] = (n, env.unwrapped._model.nq)
        if "button_states" in shapes:
            expected["button_states"] = (n, env.unwrapped._num_buttons)
    for k, shape in expected.items():
        if shapes[k] != shape:
            raise DatasetFormatError(
                f"{path}: {k} has shape {shapes[k]}, expected {shape} for {env.spec.id} "
                f"(observation size {ob_dim}, action size {action_dim})."
            )


def load_file(path: str, env_name: str, env) -> dict:
    """Validate and load one OGBench file; relabel rewards and masks for single-task names."""
    from ogbench.relabel_utils import relabel_dataset
    from ogbench.utils import load_dataset

    parsed = parse_name(env_name)
    validate_file(path, env, need_info=parsed.singletask)
    dataset = load_dataset(path, add_info=parsed.singletask)
    if not np.any(dataset["terminals"][-1:]):
        raise DatasetFormatError(f"{path}: the last row must end an episode (terminals[-1] is False).")
    if parsed.singletask:
        relabel_dataset(parsed.env_id, env, dataset)
        for k in ("qpos", "qvel", "button_states"):
            dataset.pop(k, None)
    return dataset


def slice_paths(directory: str) -> list:
    """Training slices of a directory of `.npz` files (sorted; `-val.npz` files excluded)."""
    paths = sorted(p for p in glob.glob(os.path.join(directory, "*.npz")) if not p.endswith("-val.npz"))
    if not paths:
        raise DatasetMissingError(f"No .npz slices in {directory}.")
    return paths


def make_env_and_datasets(
    env_name: str, dataset_dir: str | None = None, dataset_path: str | None = None, env_kwargs: dict | None = None
) -> tuple:
    """(env, train_dataset, val_dataset) for a single-task or goal-conditioned OGBench name.

    Files are `<dataset_dir>/<dataset>.npz` and `<dataset>-val.npz` (OGBench's names and default
    directory). `dataset_path` overrides that: a `.npz` file (its validation file beside it, named
    `-val.npz`), or a directory of slices (the first slice is returned; use `DatasetSlices` to
    move through the others; the validation set is the directory's first `-val.npz` file, or None).
    """
    env = make_env(env_name, **(env_kwargs or {}))
    if dataset_path is not None and os.path.isdir(dataset_path):
        slices = DatasetSlices(dataset_path, env_name, env, swap_every=0)
        return env, slices.current, slices.load_validation()
    if dataset_path is not None:
        paths = (dataset_path, dataset_path[: -len(".npz")] + "-val.npz")
    else:
        paths = dataset_paths(env_name, dataset_dir)
    _check_exists(paths, env_name, dataset_dir)
    return env, load_file(paths[0], env_name, env), load_file(paths[1], env_name, env)


class DatasetSlices:
    """Cycle through a directory of dataset slices, loading the next one every `swap_every` steps.

    `slices.current` is the loaded slice; call `slices.maybe_advance(step)` once per training step:
    it returns the new dataset when it swapped (so the caller can move it to the device), else None.
    """

    def __init__(self, directory: str, env_name: str, env, swap_every: int):
        self.directory = directory
        self.paths = slice_paths(directory)
        self.env_name = env_name
        self.env = env
        self.swap_every = swap_every
        self.index = 0
        self.current = load_file(self.paths[0], env_name, env)

    def maybe_advance(self, step: int):
        if self.swap_every <= 0 or step <= 0 or step % self.swap_every or len(self.paths) == 1:
            return None
        self.index = (self.index + 1) % len(self.paths)
        self.current = load_file(self.paths[self.index], self.env_name, self.env)
        return self.current

    def load_validation(self):
        val = sorted(glob.glob(os.path.join(self.directory, "*-val.npz")))
        return load_file(val[0], self.env_name, self.env) if val else None
