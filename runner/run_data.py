"""The data of a run: the dataset (generated when missing), checks that the agent fits it, and its sampler."""

import functools
import os

import numpy as np

import configs
import envs
from runner.slice_rotation import SliceRotation


def load_data(env_name: str, run, generate_missing: bool, progress: bool) -> tuple:
    """(env, train dataset, val dataset or None) of `env_name`, generating a missing dataset unless told not to."""
    dataset_dir = os.path.expanduser(run.dataset_dir or envs.default_dataset_dir())
    try:
        return envs.make_env_and_datasets(env_name, dataset_dir=dataset_dir, dataset_path=run.dataset_path or None)
    except envs.DatasetMissingError:
        if not generate_missing or run.dataset_path:
            raise
    envs.generate_dataset(
        env_name,
        dataset_dir,
        episodes=run.dataset_episodes or None,
        seed=0,
        max_episode_steps=run.dataset_episode_steps,
        progress=progress,
    )
    return envs.make_env_and_datasets(env_name, dataset_dir=dataset_dir)


def slice_directory(run) -> str | None:
    """The run's directory of dataset slices (`run.dataset_path` naming a directory), or None."""
    return run.dataset_path if run.dataset_path and os.path.isdir(run.dataset_path) else None


def device_dataset(dataset: dict, config, where) -> dict:
    """A numpy dataset on the run's devices (`where`, a runner.devices.Placement) with the agent's bootstrap
    masks (`config.mask_convention`; gcqgf has none: its masks come from relabelled goals)."""
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
