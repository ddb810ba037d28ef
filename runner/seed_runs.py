"""The run directories of seeds trained together in one process: one per seed, each like a single run's.

Seed s of a `--num_seeds` run writes config.json, checkpoints/, train.csv, eval.csv, TensorBoard events and
the report into its own run dir, exactly as `main.py --seed=s` alone would, so evaluation, resumption and
the table runner treat it as a separate run. States in memory carry a leading seed axis; a checkpoint holds
one seed's slice.
"""

import jax
import jax.numpy as jnp
from tensorboardX import SummaryWriter

from runner.checkpoints import Checkpoints
from runner.run_dir import CsvLog
from runner.wandb_logger import ScalarWriters, WandbOptions, WandbWriter, import_wandb


def seed_slice(tree, i: int):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


class SeedRuns:
    def __init__(self, train_dirs: list[str], out_dirs: list[str]):
        self.train_dirs, self.out_dirs = train_dirs, out_dirs
        self.checkpoints = [Checkpoints(f"{d}/checkpoints") for d in train_dirs]

    def resume_step(self) -> int:
        """The latest step every seed has a checkpoint of (0 if one has none). A seed that saved later steps
        (the run was killed between two seeds' saves) drops them: resuming redoes them identically."""
        saved = [set(c.manager.all_steps()) for c in self.checkpoints]
        common = set.intersection(*saved)
        step = max(common) if common else 0
        for checkpoints, steps in zip(self.checkpoints, saved, strict=True):
            for later in sorted(s for s in steps if s > step):
                checkpoints.manager.delete(later)
        return step

    def restore(self, step: int, states):
        """`states` (the leading seed axis a template) restored from every seed's checkpoint of `step`."""
        restored = [c.restore(step, seed_slice(states, i)) for i, c in enumerate(self.checkpoints)]
        return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *restored)

    def save(self, step: int, states) -> None:
        for i, checkpoints in enumerate(self.checkpoints):
            # Host copies: a checkpoint holds no device layout, so any device count can restore it.
            checkpoints.save(step, jax.device_get(seed_slice(states, i)))

    def open_logs(
        self, step: int, train: bool, wandb: WandbOptions | None = None, seed_configs: list | None = None
    ) -> None:
        """train.csv (training runs), eval.csv and a TensorBoard writer per seed, with rows past `step` dropped;
        with `wandb`, each seed's scalars also go to a W&B run named by its dir, with `seed_configs[i]`."""
        self.train_logs = [CsvLog(f"{d}/train.csv", step) for d in self.train_dirs] if train else []
        self.eval_logs = [CsvLog(f"{d}/eval.csv", step if train else -1) for d in self.out_dirs]
        self.writers = [SummaryWriter(d) for d in self.out_dirs]
        if wandb is not None:
            module = import_wandb()
            seed_configs = seed_configs or [{} for _ in self.out_dirs]
            self.writers = [
                ScalarWriters([writer, WandbWriter(module, wandb, d, d, config)])
                for writer, d, config in zip(self.writers, self.out_dirs, seed_configs, strict=True)
            ]

    def close(self) -> None:
        for checkpoints in self.checkpoints:
            checkpoints.close()
        for writer in getattr(self, "writers", []):
            writer.close()
