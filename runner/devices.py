"""Where a run's arrays live: seeds, or one seed's batch, spread over every device JAX sees.

`main.py` keeps a leading seed axis on every agent state (size 1 for one seed). With several devices (GPUs,
TPU cores, or CPU devices forced with `XLA_FLAGS=--xla_force_host_platform_device_count=N`) the seeds are
sharded over a 'seeds' mesh axis when there are several, else each update's batch is sharded over a 'data'
mesh axis (data parallel: the parameters are replicated and XLA inserts the gradient all-reduce). One
device needs no mesh. The dataset is replicated. The same program runs unchanged on 1 or N devices; on
several hosts `jax.distributed.initialize()` (main.py's `--distributed`) makes `jax.devices()` span them.
"""

import dataclasses

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import configs
from agents.training import SEED_BATCHINGS


@dataclasses.dataclass(frozen=True)
class Placement:
    mesh: Mesh | None
    seeds: NamedSharding | None  # Of arrays with a leading seed axis (states, keys, metrics).
    replicated: NamedSharding | None  # Of the dataset.
    batch: NamedSharding | None  # Of one update's batch inside the seed vmap (its leading axis is B).

    @property
    def description(self) -> str:
        if self.mesh is None:
            return "1 device"
        (axis,) = self.mesh.axis_names
        return f"{self.mesh.size} {jax.devices()[0].platform} devices, sharding the {axis}"

    def put_seeds(self, tree):
        return tree if self.seeds is None else jax.device_put(tree, self.seeds)

    def put_replicated(self, tree):
        return tree if self.replicated is None else jax.device_put(tree, self.replicated)

    def constrain_batch(self, batch):
        return batch if self.batch is None else jax.lax.with_sharding_constraint(batch, self.batch)


def placement(num_seeds: int, batch_size: int, devices=None) -> Placement:
    """Seeds over devices when there are several seeds, else the batch; raises ConfigError when the count
    does not divide evenly."""
    devices = jax.devices() if devices is None else devices
    count = len(devices)
    if count == 1:
        return Placement(None, None, None, None)
    if num_seeds > 1:
        if num_seeds % count:
            raise configs.ConfigError(
                f"--num_seeds={num_seeds} does not split over {count} devices; use a multiple of {count}, or "
                "make fewer devices visible (CUDA_VISIBLE_DEVICES)"
            )
        mesh = Mesh(devices, ("seeds",))
        return Placement(mesh, NamedSharding(mesh, P("seeds")), NamedSharding(mesh, P()), None)
    if batch_size % count:
        raise configs.ConfigError(
            f"--agent.batch_size={batch_size} does not split over {count} devices; use a multiple of {count}"
        )
    mesh = Mesh(devices, ("data",))
    return Placement(mesh, NamedSharding(mesh, P()), NamedSharding(mesh, P()), NamedSharding(mesh, P("data")))


def seed_batching(choice: str, devices=None) -> str:
    """The seed batching of agents.training.over_seeds for `--seed_batching=choice`: "auto" maps seeds one
    after another on a single CPU device (faster there, see bench/README.md) and vmaps them elsewhere (on
    accelerators, and over several devices, where the seed axis is what gets sharded)."""
    devices = jax.devices() if devices is None else devices
    if choice == "auto":
        return "map" if len(devices) == 1 and devices[0].platform == "cpu" else "vmap"
    if choice not in SEED_BATCHINGS:
        choices = ", ".join(("auto", *SEED_BATCHINGS))
        raise configs.ConfigError(f"unknown --seed_batching={choice!r}; choose one of {choices}")
    return choice
