"""Load OGBench manipulation datasets (downloaded or generated here) with their environment.

Never downloads: a missing file raises `DatasetMissingError` naming the generate command.
Single-task names get `rewards` and `masks` from OGBench's own relabelling, so success means
exactly what OGBench means. A directory of `.npz` slices (OGBench's 100M-transition datasets)
is checked whole at start (`check_slices`, headers only) and read one slice at a time.

Returned datasets are OGBench's regular layout (numpy, one row per transition):
`observations`, `actions`, `next_observations`, `terminals` (float32, 1 on the last transition of
each trajectory), plus `rewards` and `masks` for single-task names.
"""

import glob
import os
import re
import zipfile
import zlib

import numpy as np
from numpy.lib import format as fmt

from envs.generate import DEFAULT_DATASET_DIR, generate_command
from envs.specs import parse_name

REQUIRED_KEYS = ("observations", "actions", "terminals")
# OGBench's actions lie in [-1, 1] (the env's action space); the agents clip into it, so a dataset beyond it by
# more than rounding (e.g. unnormalised actions) would be silently cut: refused instead.
ACTION_BOUND_SLACK = 0.01
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
    standard = {f"{parse_name(env_name).dataset_name}{s}.npz" for s in ("", "-val")}
    if missing and not {os.path.basename(p) for p in paths} <= standard:  # a --dataset_path of the user's own name
        raise DatasetMissingError(
            f"{', '.join(missing)} not found; put it there (a --dataset_path file needs its -val.npz beside it), "
            "or name another --dataset_path"
        )
    if missing:
        raise DatasetMissingError(
            f"dataset for {env_name} not found: {', '.join(missing)}; generate it (no download is attempted) with "
            f"`{generate_command(env_name, dataset_dir)}` (add --episodes=N --max_episode_steps=M for a small demo "
            "dataset), or place OGBench's files there"
        )


def _regenerate_hint(path: str, env_name: str | None) -> str:
    """What to do about a bad dataset file (one line, for error messages). Only a file under OGBench's standard name
    in a dataset dir is generated when missing: a slice of a 100M directory is only ever downloaded, and a file of
    another name comes from nowhere."""
    name = os.path.basename(path)
    if os.path.basename(os.path.dirname(os.path.abspath(path))).endswith("-100m-v0"):
        return (
            "delete it and rerun with --data=download to fetch it again (slices are never generated), or put "
            "OGBench's file there"
        )
    standard = env_name and name in {f"{parse_name(env_name).dataset_name}{s}.npz" for s in ("", "-val")}
    if not standard:
        return "replace it with an intact copy"
    command = f" (or run `{generate_command(env_name, os.path.dirname(path) or '.')}`)"
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


def _required_keys(env, need_info: bool) -> list:
    required = list(REQUIRED_KEYS)
    if need_info:
        required.append("qpos")
        if hasattr(env.unwrapped, "_cur_button_states"):
            required.append("button_states")
    return required


def _check_archive(path: str, hint: str) -> None:
    """Raise DatasetFormatError unless `path` is a readable zip archive (an .npz file)."""
    if not os.path.isfile(path):
        raise DatasetFormatError(f"{path} is not a file; {hint}")
    if not os.access(path, os.R_OK):
        raise DatasetFormatError(f"{path} is not readable (permission denied); fix its permissions")
    if not zipfile.is_zipfile(path):
        raise DatasetFormatError(f"{path} is not an .npz archive (truncated, or not a dataset file); {hint}")


def _check_layout(path: str, layout: dict, env, need_info: bool, hint: str) -> None:
    """Check each array's (shape, dtype) in `layout` against `env`: one row per transition everywhere."""
    shape, dtype = layout["terminals"]
    if len(shape) != 1 or shape[0] < 2:
        raise DatasetFormatError(f"{path}: terminals must be a vector of at least 2 rows, got shape {shape}; {hint}")
    if dtype.kind not in "b" + _REAL_KINDS:
        raise DatasetFormatError(f"{path}: terminals must hold 0/1 (or booleans), got dtype {dtype}; {hint}")
    n = shape[0]
    ob_dim = env.observation_space.shape[0]
    action_dim = env.action_space.shape[0]
    expected = {"observations": (n, ob_dim), "actions": (n, action_dim)}
    if need_info:
        expected["qpos"] = (n, env.unwrapped._model.nq)
        if "qvel" in layout:
            expected["qvel"] = (n, env.unwrapped._model.nv)
        if "button_states" in layout:
            expected["button_states"] = (n, env.unwrapped._num_buttons)
    for k, want in expected.items():
        shape, dtype = layout[k]
        if tuple(shape) != want:
            raise DatasetFormatError(
                f"{path}: {k} has shape {tuple(shape)}, expected {want} for {env.spec.id} "
                f"(observation size {ob_dim}, action size {action_dim}); {hint}"
            )
        kinds = "biu" if k == "button_states" else _REAL_KINDS
        if dtype.kind not in kinds:
            raise DatasetFormatError(
                f"{path}: {k} has dtype {dtype}, expected "
                + ("integers" if k == "button_states" else "real numbers (float32 in OGBench's files)")
                + f"; {hint}"
            )


def validate_file(path: str, env, need_info: bool, env_name: str | None = None) -> None:
    """Check an OGBench `.npz` file against `env`; raise DatasetFormatError naming the file and what to do.

    Checks that the file is a complete, readable archive (every array it is loaded from is read, so a
    damaged one is found here), then the keys, shapes and dtypes, and that the last row ends an episode.
    """
    hint = _regenerate_hint(path, env_name)
    _check_archive(path, hint)
    try:
        with np.load(path, allow_pickle=False) as file:
            keys = set(file.files)
            required = _required_keys(env, need_info)
            missing = [k for k in required if k not in keys]
            if missing:
                raise DatasetFormatError(f"{path}: missing keys {missing} (it has {sorted(keys)}); {hint}")
            optional = [k for k in INFO_KEYS if need_info and k in keys and k not in required]
            arrays = {k: file[k] for k in required + optional}
    except DatasetFormatError:
        raise
    except _READ_ERRORS as e:
        raise DatasetFormatError(f"{path} is damaged or not a dataset file ({_one_line(e)}); {hint}") from e

    _check_layout(path, {k: (v.shape, v.dtype) for k, v in arrays.items()}, env, need_info, hint)
    terminals = arrays["terminals"]
    if not np.isin(terminals, (0, 1)).all():
        raise DatasetFormatError(f"{path}: terminals must hold 0/1 (or booleans); {hint}")
    if not terminals[-1]:
        raise DatasetFormatError(f"{path}: the last row does not end an episode (terminals[-1] is 0); {hint}")
    # A NaN or inf would otherwise surface only as a non-finite loss after the first compiled chunk of training.
    for k, array in arrays.items():
        finite = np.isfinite(array).reshape(len(array), -1).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise DatasetFormatError(
                f"{path}: {k} holds non-finite values (NaN or inf) in {len(bad)} row(s), the first is row {bad[0]}; "
                f"{hint}"
            )
    actions = arrays["actions"]
    if np.abs(actions).max() > 1.0 + ACTION_BOUND_SLACK:
        raise DatasetFormatError(
            f"{path}: actions range over [{actions.min():.4g}, {actions.max():.4g}], outside [-1, 1], the range of "
            "OGBench's actions (unnormalised?); rescale them into [-1, 1], or put OGBench's file there"
        )


def validate_header(path: str, env, need_info: bool, env_name: str | None = None) -> None:
    """`validate_file`'s checks of keys, shapes and dtypes, read from the archive's directory and the arrays'
    `.npy` headers only: milliseconds for a 1 GB slice, so every slice of a 100M directory is checked at start.
    A member damaged inside its compressed data is found only when the slice is loaded (by `validate_file`)."""
    hint = _regenerate_hint(path, env_name)
    _check_archive(path, hint)
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name[: -len(".npy")]: name for name in archive.namelist() if name.endswith(".npy")}
            required = _required_keys(env, need_info)
            missing = [k for k in required if k not in members]
            if missing:
                raise DatasetFormatError(f"{path}: missing keys {missing} (it has {sorted(members)}); {hint}")
            layout = {}
            for k in required + [k for k in INFO_KEYS if need_info and k in members and k not in required]:
                with archive.open(members[k]) as member:
                    version = fmt.read_magic(member)
                    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                    shape, _, dtype = read(member)
                layout[k] = (shape, dtype)
    except DatasetFormatError:
        raise
    except _READ_ERRORS as e:
        raise DatasetFormatError(f"{path} is damaged or not a dataset file ({_one_line(e)}); {hint}") from e
    _check_layout(path, layout, env, need_info, hint)


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


# A numbered slice name: `<stem><digits>.npz` (OGBench's 100M slices are numbered with a fixed width).
_NUMBERED_SLICE = re.compile(r"^(?P<stem>.*?)(?P<number>\d+)\.npz$")


def slice_paths(directory: str) -> list:
    """Training slices of a directory of `.npz` files, sorted by name (`-val.npz` files excluded), as the
    official loader lists them. Raises DatasetMissingError when there is none, or when numbered slices
    (`<name>-000.npz`, `<name>-001.npz`, ...) skip a number: the message names the missing file."""
    paths = sorted(p for p in glob.glob(os.path.join(directory, "*.npz")) if not p.endswith("-val.npz"))
    if not paths:
        raise DatasetMissingError(f"no .npz slices in {directory}; put OGBench's dataset slices there")
    numbered = [_NUMBERED_SLICE.match(os.path.basename(p)) for p in paths]
    if all(numbered) and len({m["stem"] for m in numbered}) == 1:
        stem, width = numbered[0]["stem"], len(numbered[0]["number"])
        numbers = sorted(int(m["number"]) for m in numbered)
        for expected, number in zip(range(numbers[0], numbers[0] + len(numbers)), numbers, strict=True):
            if number != expected:
                missing = os.path.join(directory, f"{stem}{expected:0{width}d}.npz")
                raise DatasetMissingError(
                    f"{missing} is missing: the slices in {directory} skip from {expected - 1} to {number}; "
                    "put the file back (OGBench's 100M datasets are complete directories)"
                )
    return paths


def check_slices(paths: list, env_name: str, env) -> None:
    """Every slice's keys, shapes and dtypes from its headers (seconds for 100 slices of 1 GB), so a
    missing or malformed slice fails at start and not hours into a run."""
    for path in paths:
        validate_header(path, env, need_info=parse_name(env_name).singletask, env_name=env_name)


MASK_CONVENTIONS = ("success", "trajectory_end")


def with_mask_convention(dataset: dict, convention: str) -> dict:
    """`dataset` with the bootstrap masks of `convention` (a new dict; the arrays are shared).

    "success" keeps OGBench's relabelled masks: 0 on the states that solve the task, so success is
    absorbing and a trajectory's time-limit end bootstraps. "trajectory_end" is the official QGF 100M
    loader's: masks = 1 - terminals, so bootstrapping continues through success states and stops at the
    last transition of every recorded trajectory. Goal-conditioned datasets have no masks to change.
    """
    if convention not in MASK_CONVENTIONS:
        raise ValueError(f"unknown mask convention {convention!r}; choose one of {MASK_CONVENTIONS}")
    if convention == "success":
        return dataset
    if "masks" not in dataset:
        raise ValueError("mask convention 'trajectory_end' needs a single-task dataset (with rewards and masks)")
    return {**dataset, "masks": 1.0 - np.asarray(dataset["terminals"], np.float32)}


# The official loaders clip every dataset action into [-1 + ε, 1 - ε] (for every agent but FQL and CFGRL).
DATASET_ACTION_CLIP_EPS = 1e-5


def with_clipped_actions(dataset: dict, eps: float = DATASET_ACTION_CLIP_EPS) -> dict:
    """`dataset` with its actions clipped into [-1 + eps, 1 - eps] (a new dict; the other arrays are shared).

    OGBench's actions already lie in [-1, 1]; the official loaders keep them strictly inside it, so this moves an
    action by at most `eps`, and only where it sits on a bound.
    """
    return {**dataset, "actions": np.clip(dataset["actions"], -1.0 + eps, 1.0 - eps)}


def make_env_and_datasets(
    env_name: str, dataset_dir: str | None = None, dataset_path: str | None = None, env_kwargs: dict | None = None
) -> tuple:
    """(env, train_dataset, val_dataset) for a single-task or goal-conditioned OGBench name.

    Files are `<dataset_dir>/<dataset>.npz` and `<dataset>-val.npz` (OGBench's names and default
    directory). `dataset_path` overrides that: a `.npz` file (its validation file beside it, named
    `-val.npz`), or a directory of slices: every slice's headers are checked (`check_slices`), the first
    slice is returned (runner.slice_rotation moves through the others), and the validation set is the
    directory's first `-val.npz` file, or None.
    """
    env = make_env(env_name, **(env_kwargs or {}))
    if dataset_path is not None and os.path.isdir(dataset_path):
        paths = slice_paths(dataset_path)
        check_slices(paths, env_name, env)
        val = sorted(glob.glob(os.path.join(dataset_path, "*-val.npz")))
        return env, load_file(paths[0], env_name, env), load_file(val[0], env_name, env) if val else None
    if dataset_path is not None:
        paths = (dataset_path, dataset_path[: -len(".npz")] + "-val.npz")
    else:
        paths = dataset_paths(env_name, dataset_dir)
    _check_exists(paths, env_name, dataset_dir)
    return env, load_file(paths[0], env_name, env), load_file(paths[1], env_name, env)
