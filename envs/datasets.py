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
import zipfile
import zlib

import numpy as np

from envs.generate import DEFAULT_DATASET_DIR, generate_command
from envs.specs import parse_name

REQUIRED_KEYS = ("observations", "actions", "terminals")
INFO_KEYS = ("qpos", "qvel", "button_states")  # simulator state, read for single-task relabelling


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
            f"dataset for {env_name} not found: {', '.join(missing)}; generate it (no download is attempted) with "
            f"`{generate_command(env_name, dataset_dir)}` (add --episodes=N --max_episode_steps=M for a small demo "
            "dataset), or place OGBench's files there"
        )


def _regenerate_hint(path: str, env_name: str | None) -> str:
    """What to do about a bad dataset file (one line, for error messages)."""
    command = f" (or run `{generate_command(env_name, os.path.dirname(path) or '.')}`)" if env_name else ""
    return f"delete it and run again to have it generated anew{command}, or put OGBench's file there"


def _one_line(error: BaseException) -> str:
    name = type(error).__name__
    if type(error).__module__ not in ("builtins", "numpy"):
        name = f"{type(error).__module__}.{name}"  # zlib.error, zipfile.BadZipFile
    return " ".join(f"{name}: {error}".split())


# Errors that reading a damaged .npz file raises: a truncated or foreign file (BadZipFile, EOFError,
# OSError), a damaged member (zlib.error, BadZipFile for a bad CRC), an unreadable array (ValueError).
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error)
_REAL_KINDS = "fiu"  # float, signed and unsigned integer dtypes


def validate_file(path: str, env, need_info: bool, env_name: str | None = None) -> None:
    """Check an OGBench `.npz` file against `env`; raise DatasetFormatError naming the file and what to do.

    Checks that the file is a complete, readable archive (every array it is loaded from is read, so a
    damaged one is found here), then the keys, shapes and dtypes, and that the last row ends an episode.
    """
    hint = _regenerate_hint(path, env_name)
    if not os.path.isfile(path):
        raise DatasetFormatError(f"{path} is not a file; {hint}")
    if not os.access(path, os.R_OK):
        raise DatasetFormatError(f"{path} is not readable (permission denied); fix its permissions")
    if not zipfile.is_zipfile(path):
        raise DatasetFormatError(f"{path} is not an .npz archive (truncated, or not a dataset file); {hint}")
    try:
        with np.load(path, allow_pickle=False) as file:
            keys = set(file.files)
            required = list(REQUIRED_KEYS)
            if need_info:
                required.append("qpos")
                if hasattr(env.unwrapped, "_cur_button_states"):
                    required.append("button_states")
            missing = [k for k in required if k not in keys]
            if missing:
                raise DatasetFormatError(f"{path}: missing keys {missing} (it has {sorted(keys)}); {hint}")
            optional = [k for k in INFO_KEYS if need_info and k in keys and k not in required]
            arrays = {k: file[k] for k in required + optional}
    except DatasetFormatError:
        raise
    except _READ_ERRORS as e:
        raise DatasetFormatError(f"{path} is damaged or not a dataset file ({_one_line(e)}); {hint}") from e

    terminals = arrays["terminals"]
    if terminals.ndim != 1 or len(terminals) < 2:
        raise DatasetFormatError(
            f"{path}: terminals must be a vector of at least 2 rows, got shape {terminals.shape}; {hint}"
        )
    n = len(terminals)
    if terminals.dtype.kind not in "b" + _REAL_KINDS or not np.isin(terminals, (0, 1)).all():
        raise DatasetFormatError(f"{path}: terminals must hold 0/1 (or booleans), got dtype {terminals.dtype}; {hint}")
    if not terminals[-1]:
        raise DatasetFormatError(f"{path}: the last row does not end an episode (terminals[-1] is 0); {hint}")
    ob_dim = env.observation_space.shape[0]
    action_dim = env.action_space.shape[0]
    expected = {"observations": (n, ob_dim), "actions": (n, action_dim)}
    if need_info:
        expected["qpos"] = (n, env.unwrapped._model.nq)
        if "qvel" in arrays:
            expected["qvel"] = (n, env.unwrapped._model.nv)
        if "button_states" in arrays:
            expected["button_states"] = (n, env.unwrapped._num_buttons)
    for k, shape in expected.items():
        if arrays[k].shape != shape:
            raise DatasetFormatError(
                f"{path}: {k} has shape {arrays[k].shape}, expected {shape} for {env.spec.id} "
                f"(observation size {ob_dim}, action size {action_dim}); {hint}"
            )
        kinds = "biu" if k == "button_states" else _REAL_KINDS
        if arrays[k].dtype.kind not in kinds:
            raise DatasetFormatError(
                f"{path}: {k} has dtype {arrays[k].dtype}, expected "
                + ("integers" if k == "button_states" else "real numbers (float32 in OGBench's files)")
                + f"; {hint}"
            )


def load_file(path: str, env_name: str, env) -> dict:
    """Validate and load one OGBench file; relabel rewards and masks for single-task names."""
    from ogbench.relabel_utils import relabel_dataset
    from ogbench.utils import load_dataset

    parsed = parse_name(env_name)
    validate_file(path, env, need_info=parsed.singletask, env_name=env_name)
    try:
        dataset = load_dataset(path, add_info=parsed.singletask)
    except _READ_ERRORS as e:  # the file changed since it was validated
        raise DatasetFormatError(
            f"{path} is damaged or not a dataset file ({_one_line(e)}); {_regenerate_hint(path, env_name)}"
        ) from e
    if parsed.singletask:
        relabel_dataset(parsed.env_id, env, dataset)
        for k in INFO_KEYS:
            dataset.pop(k, None)
    return dataset


def slice_paths(directory: str) -> list:
    """Training slices of a directory of `.npz` files (sorted; `-val.npz` files excluded)."""
    paths = sorted(p for p in glob.glob(os.path.join(directory, "*.npz")) if not p.endswith("-val.npz"))
    if not paths:
        raise DatasetMissingError(f"no .npz slices in {directory}; put OGBench's dataset slices there")
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
