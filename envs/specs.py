"""The OGBench manipulation families this project supports, and how their names are built.

A *dataset name* is ``<family>-<type>-v0`` (``cube-double-play-v0``), the name of OGBench's
``.npz`` file. An *env name* as the user writes it is either that same name (goal-conditioned)
or ``<family>-<type>-singletask[-taskK]-v0`` (single-task, with rewards). The gymnasium id of
the environment drops the dataset type (``cube-double-v0``, ``cube-double-singletask-task2-v0``).
"""

import dataclasses
import re

DATASET_TYPES = ("play", "noisy")


@dataclasses.dataclass(frozen=True)
class Family:
    kind: str  # 'cube', 'scene' or 'puzzle': which oracles drive the data collection
    num_episodes: int  # training episodes of OGBench's dataset (the -val file has 10 % more)
    p_stack: tuple  # (low, high) of the per-episode stacking probability passed to set_new_target
    p_random_action: float  # probability of a uniformly random action in the `noisy` datasets
    num_cubes: int = 0  # cubes in the scene (for the goal-success test on observations)
    num_buttons: int = 0  # buttons in the scene


FAMILIES = {
    "cube-single": Family("cube", 1000, (0.0, 0.0), 0.1, num_cubes=1),
    "cube-double": Family("cube", 1000, (0.0, 0.25), 0.1, num_cubes=2),
    "cube-triple": Family("cube", 3000, (0.05, 0.35), 0.1, num_cubes=3),
    "cube-quadruple": Family("cube", 5000, (0.1, 0.5), 0.1, num_cubes=4),
    "scene": Family("scene", 1000, (0.5, 0.5), 0.1, num_cubes=1, num_buttons=2),
    "puzzle-3x3": Family("puzzle", 1000, (0.5, 0.5), 0.2, num_buttons=9),
    "puzzle-4x4": Family("puzzle", 1000, (0.5, 0.5), 0.2, num_buttons=16),
    "puzzle-4x5": Family("puzzle", 3000, (0.5, 0.5), 0.2, num_buttons=20),
    "puzzle-4x6": Family("puzzle", 5000, (0.5, 0.5), 0.2, num_buttons=24),
}

_NAME = re.compile(
    r"^(?P<family>[a-z0-9x-]+?)-(?P<type>play|noisy)(?P<single>-singletask(?:-task(?P<task>[1-5]))?)?-(?P<ver>v\d+)$"
)


@dataclasses.dataclass(frozen=True)
class EnvName:
    family: str  # key of FAMILIES
    dataset_type: str  # 'play' or 'noisy'
    version: str  # 'v0'
    singletask: bool  # single-task (rewards from OGBench's relabelling) or goal-conditioned
    task_id: int | None  # single-task task number (None: OGBench's default task)

    @property
    def dataset_name(self) -> str:
        """Name of the .npz file (without extension)."""
        return f"{self.family}-{self.dataset_type}-{self.version}"

    @property
    def slices_name(self) -> str:
        """Name of OGBench's 100M-transition directory of slices of this dataset (where OGBench publishes one)."""
        return f"{self.family}-{self.dataset_type}-100m-{self.version}"

    @property
    def env_id(self) -> str:
        """Gymnasium id of the evaluation environment."""
        if not self.singletask:
            return f"{self.family}-{self.version}"
        task = "" if self.task_id is None else f"-task{self.task_id}"
        return f"{self.family}-singletask{task}-{self.version}"

    @property
    def spec(self) -> Family:
        return FAMILIES[self.family]


def parse_name(name: str) -> EnvName:
    """Parse a dataset or env name (see the module docstring); raise ValueError if unsupported."""
    match = _NAME.match(name)
    if match is None or match["family"] not in FAMILIES:
        raise ValueError(
            f"Unsupported name {name!r}: expected <family>-<play|noisy>[-singletask[-taskK]]-v0 with family in "
            f"{sorted(FAMILIES)}."
        )
    return EnvName(
        family=match["family"],
        dataset_type=match["type"],
        version=match["ver"],
        singletask=match["single"] is not None,
        task_id=None if match["task"] is None else int(match["task"]),
    )
