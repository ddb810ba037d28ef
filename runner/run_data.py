"""The data of a run: the dataset (downloaded or generated when missing), checks that the agent fits it, and
its sampler."""

import functools
import hashlib
import os

import numpy as np

import configs
import envs
from envs.datasets import dataset_paths
from envs.download import DownloadError, download, slice_names
from runner.interrupt import keeping
from runner.slice_rotation import SliceRotation

# Where missing dataset files come from (--data); files present are always used as they are.
DATA_SOURCES = {
    "auto": "OGBench's server, else generated here, said not to be the official file",
    "download": "OGBench's server only",
    "generate": "generated here with OGBench's oracles, never downloaded",
    "local": "nowhere: a missing file is an error",
}


def load_data(env_name: str, run, data: str, progress: bool) -> tuple:
    """(env, train dataset, val dataset or None) of `env_name`, missing files first obtained as `data` says."""
    dataset_dir = os.path.expanduser(run.dataset_dir or envs.default_dataset_dir())
    obtain_missing_files(env_name, run, dataset_dir, data, progress)
    return envs.make_env_and_datasets(env_name, dataset_dir=dataset_dir, dataset_path=run.dataset_path or None)


def content_sha256(dataset: dict) -> str:
    """The sha256 of a dataset's arrays (each one's name, dtype, shape and bytes, in name order): the same for the
    same data however it was stored or obtained, so data generated again (a new machine) can be checked against
    the run that trained on it (data.json)."""
    digest = hashlib.sha256()
    for name in sorted(dataset):
        array = np.ascontiguousarray(dataset[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def placeholder_dataset(env_name: str, config) -> dict:
    """Zeros in the shapes of `env_name`'s dataset (its env's observation and action spaces), one episode just long
    enough for a batch and a chunk: all that building an agent whose parameters come from a checkpoint needs
    (`--eval_only`), without reading, downloading or generating the dataset."""
    env = envs.make_env(env_name)
    observation, action = env.observation_space.shape, env.action_space.shape
    env.close()
    n = max(config.batch_size, config.horizon) + 1
    terminals = np.zeros(n, np.float32)
    terminals[-1] = 1.0
    dataset = {
        "observations": np.zeros((n, *observation), np.float32),
        "actions": np.zeros((n, *action), np.float32),
        "terminals": terminals,
        "next_observations": np.zeros((n, *observation), np.float32),
    }
    if envs.parse_name(env_name).singletask:
        dataset.update(rewards=np.zeros(n, np.float32), masks=np.ones(n, np.float32))
    return dataset


def data_to_obtain(env_name: str, run, data: str) -> str:
    """What the run must first fetch before training, for its plan line ("" when its files are there): the
    download (whose time depends on the connection) or the generation, with the time this project's 2-core
    figures give (envs.generate measures it here once its first episodes are done)."""
    dataset_dir = os.path.expanduser(run.dataset_dir or envs.default_dataset_dir())
    if run.dataset_path:
        names, directory = _official_names(run.dataset_path)
        if names is None or data in ("local", "generate") or os.path.exists(run.dataset_path):
            return ""
        return f"download {len(names)} file(s) of OGBench's into {directory} (its time depends on the connection)"
    if all(os.path.exists(p) for p in dataset_paths(env_name, dataset_dir)) or data == "local":
        return ""
    name = envs.parse_name(env_name).dataset_name
    minutes = envs.expected_minutes(name, run.dataset_episodes or None, None, run.dataset_episode_steps)
    generate = f"generate {name} here (about {minutes:.0f} min by this project's 2-core CPU figures)"
    if data == "generate":
        return generate
    download_it = f"download {name} from OGBench (its time depends on the connection)"
    return download_it if data == "download" else f"{download_it}, or offline {generate}"


def obtain_missing_files(env_name: str, run, dataset_dir: str, data: str, progress: bool) -> None:
    """Downloads or generates the run's missing dataset files, as `data` (a DATA_SOURCES key) says.

    Without `run.dataset_path` the files are `<dataset_dir>/<dataset>.npz` and its `-val.npz`: downloaded
    ("auto", "download") or generated ("generate", and "auto" when the download fails). `run.dataset_path` is
    only downloaded, and only when it bears an OGBench name: `<dataset>.npz`, a slice
    `<family>-<type>-100m-v0/<family>-<type>-v0-NNN.npz`, or a slice directory `<family>-<type>-100m-v0`
    (every slice; a directory holding some is used as it is, except that "download" completes it).
    Whatever stays missing is named, with what to do, by the loader's DatasetMissingError.

    A file present is never removed or replaced: generation writes the pair, so when one of the two is present
    and the other cannot be downloaded, this raises DatasetMissingError naming the missing file and keeps the
    present one (a generated `-val.npz` beside an official training file would be a pair of two datasets).
    """
    path = run.dataset_path or None
    if path is None:
        pair = dataset_paths(env_name, dataset_dir)
        if all(os.path.exists(p) for p in pair):
            return
        names, directory = [envs.parse_name(env_name).dataset_name], dataset_dir
    else:
        names, directory = _official_names(path)
        if names is None:  # Not an OGBench name: nothing to download it from.
            return
        present = [n for n in names if os.path.exists(os.path.join(directory, n + ".npz"))]
        whole = [n for n in present if os.path.exists(os.path.join(directory, n + "-val.npz"))]
        if len(whole) == len(names) or (len(present) == len(names) and data != "download"):
            return  # (training reads the slices and the first -val file; "download" completes the directory)
        if present and data != "download":
            print(
                f"{path} holds {len(present)} of OGBench's {len(names)} slices; training on those "
                "(--data=download fetches the rest)",
                flush=True,
            )
            return
    if data == "local" or (path is not None and data == "generate"):
        return
    if data in ("auto", "download"):
        try:
            with keeping("the files downloaded completely are kept"):
                download(names, directory)
            return
        except DownloadError as error:
            if path is None and any(os.path.exists(p) for p in pair):  # e.g. the training file arrived, not -val
                raise _half_pair_error(pair, str(error)) from None
            if data == "download" or path is not None:
                instead = "; or --data=generate to generate it here (not the official file)" if path is None else ""
                if path is not None and run.get("dataset_size") == "100m" and not present:
                    instead = (
                        f"; the paper's runs train on these {len(names)} slices of 1M transitions (100M in all): "
                        "or train on OGBench's standard file with --dataset_size=standard"
                    )
                raise envs.DatasetMissingError(
                    f"{error}; check the connection, or set OGBENCH_DATASET_URL to a mirror{instead}"
                ) from None
            print(
                f"{error}. Generating it here with OGBench's oracles instead: OGBench's recipe, but other "
                "episodes than the official file's, so results are not directly comparable with the paper's "
                "(--data=download insists on the official file).",
                flush=True,
            )
    elif any(os.path.exists(p) for p in pair):
        missing = next(os.path.basename(p) for p in pair if not os.path.exists(p))
        raise _half_pair_error(pair, f"--data=generate cannot write {missing} alone")
    with keeping("the episodes generated so far are kept (and the checkpoints, if any, as they were)"):
        envs.generate_dataset(
            env_name,
            dataset_dir,
            episodes=run.dataset_episodes or None,
            seed=0,
            max_episode_steps=run.dataset_episode_steps,
            progress=progress,
        )


def _half_pair_error(pair: tuple, why: str) -> envs.DatasetMissingError:
    """The error for a dataset pair (training file, `-val.npz`) of which one is present and the other cannot be
    obtained (`why`): the present file is kept, never replaced by a generated pair."""
    present, missing = pair if os.path.exists(pair[0]) else pair[::-1]
    return envs.DatasetMissingError(
        f"{why}; {present}, present, is kept (generating here would replace it with a generated pair): put "
        f"OGBench's {os.path.basename(missing)} beside it, set OGBENCH_DATASET_URL to a mirror that has it, or move "
        f"{present} away to generate both here (not the official files)"
    )


def _official_names(path: str) -> tuple:
    """(OGBench names, the directory they download into) of a --dataset_path, or (None, None)."""
    path = os.path.normpath(os.path.expanduser(path))
    if not path.endswith(".npz"):
        names = slice_names(path)
        return (names, os.path.dirname(path)) if names else (None, None)
    parent, stem = os.path.dirname(path), os.path.basename(path)[: -len(".npz")]
    if slice_names(parent) is not None:
        return [f"{os.path.basename(parent)}/{stem}"], os.path.dirname(parent)
    try:
        envs.parse_name(stem)
    except ValueError:
        return None, None
    return [stem], parent


def slice_directory(run) -> str | None:
    """The run's directory of dataset slices (`run.dataset_path` naming a directory), or None."""
    return run.dataset_path if run.dataset_path and os.path.isdir(run.dataset_path) else None


def device_dataset(dataset: dict, config, where) -> dict:
    """A numpy dataset on the run's devices (`where`, a runner.devices.Placement) with the agent's bootstrap
    masks (`config.mask_convention`; gcqgf has none: its masks come from relabelled goals) and, where
    `config.clip_dataset_actions`, its actions clipped as the official loaders clip them."""
    if config.get("clip_dataset_actions", False):
        dataset = envs.with_clipped_actions(dataset)
    if "mask_convention" in config:
        dataset = envs.with_mask_convention(dataset, config.mask_convention)
    return where.put_replicated(envs.to_device_dataset(dataset))


def slice_rotation(run, config, env_name: str, env, where, first: dict) -> SliceRotation:
    """The rotation through the run's directory of slices (every `run.slice_every` steps), each slice read,
    relabelled (with `env`) and put on the devices like `first`, slice 0 already there."""
    load = lambda path: device_dataset(envs.load_file(path, env_name, env), config, where)
    return SliceRotation(envs.slice_paths(slice_directory(run)), run.slice_every, load, first=first)


def check_data_fits(dataset: dict, config) -> None:
    """Raises ConfigError when a batch or an action chunk is larger than the dataset allows."""
    transitions, ends = len(dataset["observations"]), np.flatnonzero(dataset["terminals"])
    longest = int(np.max(np.diff(np.concatenate([[-1], ends])))) if len(ends) else transitions
    if config.batch_size > transitions:
        raise configs.ConfigError(
            f"--agent.batch_size={config.batch_size} exceeds the dataset's {transitions} "
            "transitions; lower it or generate more episodes"
        )
    if config.horizon > longest:
        raise configs.ConfigError(
            f"--agent.horizon={config.horizon} is longer than the dataset's longest episode ({longest} steps); lower it"
        )


def check_agent_fits_task(agent_name: str, config, env_name: str) -> None:
    """Raises ConfigError when a single-task agent meets a goal-conditioned task or the reverse."""
    goal_conditioned = not envs.parse_name(env_name).singletask
    if goal_conditioned != config.get("goal_conditioned", False):
        kind = "goal-conditioned" if goal_conditioned else "single-task"
        raise configs.ConfigError(
            f"--env={env_name} is {kind}, which agent '{agent_name}' does not train on; use "
            + ("--agent=gcqgf" if goal_conditioned else "a ...-singletask-taskN-v0 task or --agent=qgf")
        )


def make_sampler(config, env_name: str):
    """`sample(device dataset, key) -> batch` of the agent: action chunks, with relabelled goals for a
    goal-conditioned task."""
    chunk = dict(batch_size=config.batch_size, horizon=config.horizon, discount=config.discount)
    if envs.parse_name(env_name).singletask:
        return functools.partial(envs.sample_chunks, **chunk)
    return envs.goal_sampler(config, env_name)
