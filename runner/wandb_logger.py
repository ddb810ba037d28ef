"""Weights & Biases as an optional logger (`--wandb`), beside train.csv/eval.csv and TensorBoard.

wandb is not a dependency of this project: it is imported only when `--wandb` is given, and its absence is one
clear error. Each seed's output dir is one W&B run (as it is one TensorBoard log), with the seed's resolved
config; the seeds of one command share a W&B group. The run's W&B id is kept in `<dir>/wandb_id`, so rerunning
the command (which resumes the run) continues the same W&B run; steps redone after a resume are at or below
W&B's last step, and W&B ignores them (their values are those already logged).
"""

import dataclasses
import os
import re
import uuid

import configs

MIN_VERSION = (0, 19, 10)  # wandb.init(reinit="create_new"): one open run per seed in one process
MODES = ("online", "offline", "disabled")


@dataclasses.dataclass(frozen=True)
class WandbOptions:
    project: str = "qgf"
    entity: str | None = None  # None: the W&B account's default entity
    mode: str | None = None  # one of MODES; None: wandb's default (WANDB_MODE, else online)
    group: str | None = None  # the W&B group of the runs opened with these options


def check_mode(mode: str | None) -> None:
    if mode is not None and mode not in MODES:
        raise configs.ConfigError(f"--wandb_mode={mode!r} is not one of {', '.join(MODES)}")


def import_wandb():
    """The wandb module, or a ConfigError naming the install command."""
    try:
        import wandb
    except ImportError:
        raise configs.ConfigError("--wandb needs the wandb package: `pip install wandb` (or drop --wandb)") from None
    version = getattr(wandb, "__version__", "0")
    if _release(version) < MIN_VERSION:
        raise configs.ConfigError(
            f"--wandb needs wandb >= {'.'.join(map(str, MIN_VERSION))} (found {version}): `pip install -U wandb`"
        )
    return wandb


def _release(version: str) -> tuple:
    """(major, minor, patch) of a version string such as '0.21.0' or '0.19.10rc1'."""
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", version)
    return tuple(int(part or 0) for part in match.groups()) if match else (0, 0, 0)


def run_id(out_dir: str) -> str:
    """The W&B id of the run logged from `out_dir`: made once, kept in `out_dir`/wandb_id."""
    path = os.path.join(out_dir, "wandb_id")
    if os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    new_id = uuid.uuid4().hex[:16]
    with open(path + ".tmp", "w") as f:
        f.write(new_id + "\n")
    os.replace(path + ".tmp", path)
    return new_id


class WandbWriter:
    """TensorBoard's `add_scalar(tag, value, step)` / `close()` over one W&B run. Scalars of one step are sent
    in one `log` call (when a later step arrives, or at close), so W&B sees one row per step."""

    def __init__(self, wandb, options: WandbOptions, out_dir: str, name: str, config: dict):
        self.run = wandb.init(
            project=options.project,
            entity=options.entity,
            mode=options.mode,
            group=options.group,
            name=name,
            config=config,
            dir=out_dir,
            id=run_id(out_dir),
            resume="allow",
            reinit="create_new",
        )
        self.step, self.pending = None, {}

    def add_scalar(self, tag: str, value, step: int) -> None:
        if step != self.step:
            self.flush()
        self.step = step
        self.pending[tag] = float(value)

    def flush(self) -> None:
        if self.pending:
            self.run.log(self.pending, step=self.step)
            self.pending = {}

    def close(self) -> None:
        self.flush()
        self.run.finish()


class ScalarWriters:
    """Several scalar writers (TensorBoard's, W&B's) behind one `add_scalar` / `close`."""

    def __init__(self, writers: list):
        self.writers = writers

    def add_scalar(self, tag: str, value, step: int) -> None:
        for writer in self.writers:
            writer.add_scalar(tag, value, step)

    def close(self) -> None:
        """Closes every writer, even when one fails (a full disk under TensorBoard's file); then raises the first
        failure."""
        failures = []
        for writer in self.writers:
            try:
                writer.close()
            except Exception as error:
                failures.append(error)
        if failures:
            raise failures[0]
