"""Environments and data: OGBench envs, dataset generation and loading, chunk sampling, rollouts.

- `generate_dataset` / `python -m envs.generate`: OGBench's manipulation datasets, made offline.
- `make_env_and_datasets`: env + train / validation numpy datasets (single-task or goal-conditioned).
- `to_device_dataset`, `sample_chunks`, `sample_goal_chunks`: jit-able action-chunk batches;
  `goal_sampler(config, env_name)` binds the latter to an agent config.
- `evaluate`: batched evaluation rollouts of a chunked policy.

Names are imported on first use (table below), so generation worker processes, which import
`envs.generate`, do not pay for importing JAX.
"""

import importlib

_EXPORTS = {
    "DATASET_KEYS": "envs.chunks",
    "goal_sampler": "envs.chunks",
    "goal_success_fn": "envs.chunks",
    "sample_chunks": "envs.chunks",
    "sample_goal_chunks": "envs.chunks",
    "to_device_dataset": "envs.chunks",
    "DATASET_ACTION_CLIP_EPS": "envs.datasets",
    "DatasetFormatError": "envs.datasets",
    "DatasetMissingError": "envs.datasets",
    "MASK_CONVENTIONS": "envs.datasets",
    "check_slices": "envs.datasets",
    "make_env": "envs.datasets",
    "load_file": "envs.datasets",
    "make_env_and_datasets": "envs.datasets",
    "slice_paths": "envs.datasets",
    "with_clipped_actions": "envs.datasets",
    "with_mask_convention": "envs.datasets",
    "default_dataset_dir": "envs.generate",
    "expected_minutes": "envs.generate",
    "generate_command": "envs.generate",
    "generate_dataset": "envs.generate",
    "evaluate": "envs.rollouts",
    "FAMILIES": "envs.specs",
    "parse_name": "envs.specs",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__():
    return __all__
