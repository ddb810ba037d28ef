"""The run directories of seeds trained together in one process: one per seed, each like a single run's.

Seed s of a `--num_seeds` run writes config.json, checkpoints/, train.csv, eval.csv, episodes.csv, TensorBoard
events and the report into its own run dir, exactly as `main.py --seed=s` alone would, so evaluation, resumption and
the table runner treat it as a separate run. States in memory carry a leading seed axis; a checkpoint holds
one seed's slice.
"""

import os

import jax
import jax.numpy as jnp

from runner.checkpoints import CheckpointDamagedError, CheckpointError, CheckpointGoneError, Checkpoints
from runner.run_dir import CsvLog
from runner.tensorboard_log import TensorBoardLog
from runner.wandb_logger import ScalarWriters, WandbOptions, WandbWriter, import_wandb

# How often evaluating a run that is still training lists its steps anew when one is deleted while read; each
# try takes a second or less, and that run deletes a step per save.
_RELISTS = 5


def seed_slice(tree, i: int):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


class SeedRuns:
    def __init__(self, train_dirs: list[str], out_dirs: list[str], read_only: bool = False):
        """`read_only`: evaluating saved runs, whose checkpoints are read, never cleaned up or deleted."""
        self.train_dirs, self.out_dirs, self.read_only = train_dirs, out_dirs, read_only
        self.checkpoints = [Checkpoints(f"{d}/checkpoints", read_only=read_only) for d in train_dirs]

    def resume_step(self) -> int:
        """The latest step every seed has a checkpoint of (0 if one has none). A seed that saved later steps
        (the run was killed between two seeds' saves) drops them: resuming redoes them identically."""
        saved = [set(c.all_steps()) for c in self.checkpoints]
        common = set.intersection(*saved)
        step = max(common) if common else 0
        for checkpoints, steps in zip(self.checkpoints, saved, strict=True):
            for later in sorted(s for s in steps if s > step and not self.read_only):
                checkpoints.delete(later)
        return step

    def resume(self, states) -> tuple[int, object]:
        """(step, states) restored from the newest step that every seed has an intact checkpoint of, or
        (0, `states`) when there is none. A damaged checkpoint is reported in one line and
        the step before it is tried; a training run then deletes the damaged step, which it redoes. Raises
        CheckpointDamagedError naming every step when none is intact. Evaluating (`read_only`) a run that is still
        training, whose saves delete its older steps, a step deleted while read is no damage: the steps are listed
        anew."""
        self.resume_step()  # drops the steps that not every seed saved
        for _ in range(_RELISTS):
            try:
                return self._resume_from_newest_intact(states)
            except CheckpointGoneError:
                for checkpoints in self.checkpoints:
                    checkpoints.reload()
        raise CheckpointError(
            f"the checkpoints in {self.checkpoints[0].directory} were deleted while being read, {_RELISTS} times "
            "(the run that owns them saves faster than they are read?); evaluate its final checkpoint once it ends"
        )

    def _resume_from_newest_intact(self, states) -> tuple[int, object]:
        steps = sorted(set.intersection(*(set(c.all_steps()) for c in self.checkpoints)), reverse=True)
        damaged = []  # (step, CheckpointDamagedError), newest first
        for i, step in enumerate(steps):
            try:
                restored = self.restore(step, states)
            except CheckpointDamagedError as error:
                damaged.append((step, error))
                if i + 1 < len(steps):
                    instead = (
                        f"evaluating step {steps[i + 1]}" if self.read_only else f"resuming from step {steps[i + 1]}"
                    )
                    redone = "" if self.read_only else f" (step {step} is deleted and will be redone)"
                    print(f"warning: {error.what}; {instead} instead{redone}", flush=True)
                continue
            if damaged and not self.read_only:
                for checkpoints in self.checkpoints:
                    for later in (s for s in checkpoints.all_steps() if s > step):
                        checkpoints.delete(later)
            return step, restored
        if len(damaged) == 1:
            step, error = damaged[0]
            raise CheckpointDamagedError(error.what, self._advice([step]))
        if damaged:
            directories = " and ".join(dict.fromkeys(c.directory for c in self.checkpoints))
            raise CheckpointDamagedError(
                f"every checkpoint in {directories} is damaged: "
                + ", ".join(f"step {step} ({error.detail})" for step, error in damaged),
                self._advice([step for step, _ in damaged]),
            )
        return 0, states

    def _advice(self, steps: list[int]) -> str:
        """What to do when no step is intact: delete the damaged ones (every seed's) and train them again."""
        paths = [c.step_dir(step) for step in steps for c in self.checkpoints if os.path.isdir(c.step_dir(step))]
        delete = f"delete {' and '.join(paths)}"
        if self.read_only:
            return f"no intact checkpoint to evaluate: {delete} and rerun the training command to redo them"
        return f"{delete} to train again from step 0, or choose another --run_dir"

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
        """train.csv (training runs), eval.csv, episodes.csv (one row per evaluated episode) and a TensorBoard
        writer per seed, with rows past `step` dropped;
        with `wandb`, each seed's scalars also go to a W&B run named by its dir, with `seed_configs[i]`."""
        self.train_logs = [CsvLog(f"{d}/train.csv", step) for d in self.train_dirs] if train else []
        self.eval_logs = [CsvLog(f"{d}/eval.csv", step if train else -1) for d in self.out_dirs]
        self.episode_logs = [CsvLog(f"{d}/episodes.csv", step if train else -1) for d in self.out_dirs]
        self.writers = [TensorBoardLog(d) for d in self.out_dirs]
        if wandb is not None:
            module = import_wandb()
            seed_configs = seed_configs or [{} for _ in self.out_dirs]
            self.writers = [
                ScalarWriters([writer, WandbWriter(module, wandb, d, d, config)])
                for writer, d, config in zip(self.writers, self.out_dirs, seed_configs, strict=True)
            ]

    def evaluated(self, step: int) -> bool:
        """Whether every seed's eval.csv has the rows of `step` (a Ctrl-C may have abandoned its evaluation)."""
        return all(log.has_step(step) for log in self.eval_logs)

    def close(self) -> None:
        """Closes the checkpoints and the writers, every one even when one fails (a full disk); then raises the
        first failure."""
        failures = []
        for close in [c.close for c in self.checkpoints] + [w.close for w in getattr(self, "writers", [])]:
            try:
                close()
            except Exception as error:
                failures.append(error)
        if failures:
            raise failures[0]
