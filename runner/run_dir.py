"""A run directory: the resolved config, CSV logs and TensorBoard events of one run.

runs/<env>/<agent>/<run-name>/ holds config.json, train.csv, eval.csv, TensorBoard event files,
checkpoints/ and, after evaluation, report.md and success_vs_weight.png.
"""

import contextlib
import csv
import hashlib
import json
import os
import re

import ml_collections


def config_hash(config: dict) -> str:
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]


def default_run_dir(root: str, env_name: str, agent_name: str, seed: int, config: dict) -> str:
    return os.path.join(root, env_name, agent_name, f"seed{seed}-{config_hash(config)}")


def eval_tag(estimator: str, best_of_n: int, reset_seed: int, grad_steps: int = 0, grad_step_size: float = 0.0) -> str:
    """The folder under `<run dir>/eval/` of an `--eval_only` evaluation: `<estimator>-bo<N>[-gs<L>-a<α>]-reset<R>`,
    with GradStep's L and step size α only when it is on (so an evaluation without GradStep keeps the name it always
    had, and an α sweep keeps one folder per α)."""
    grad_step = f"-gs{grad_steps}-a{grad_step_size:g}" if grad_steps else ""
    return f"{estimator}-bo{best_of_n}{grad_step}-reset{reset_seed}"


# Folders written before GradStep's α joined the name (`-gs<L>-reset<R>`) still parse, with no α. A `-v<hash>`
# variant (runner.config.evaluation_dir: other weights, episodes or settings than the folder's first) does not.
EVAL_TAG = re.compile(
    r"^(?P<estimator>.+?)-bo(?P<best_of_n>\d+)"
    r"(?:-gs(?P<grad_steps>\d+)(?:-a(?P<grad_step_size>[0-9.e+-]+?))?)?-reset(?P<reset>\d+)$"
)


def to_plain(config: ml_collections.ConfigDict | dict) -> dict:
    return json.loads(json.dumps(config.to_dict() if hasattr(config, "to_dict") else config, default=list))


class ConfigMismatchError(ValueError):
    pass


_ABSENT = object()


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, saved value, current value) of every leaf that differs; `_ABSENT` marks a missing one."""
    differences = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, _ABSENT), current.get(key, _ABSENT)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            differences.append((f"{prefix}{key}", a, b))
    return differences


def _describe(key: str, saved, current) -> str:
    """`--agent.lr=0.001 (the run has 0.0003)`; other keys by their config.json path."""
    name = "--agent." + key[len("agent_config.") :] if key.startswith("agent_config.") else key

    def show(value):
        return "unset" if value is _ABSENT else json.dumps(value)

    return f"{name}={show(current)} (the run has {show(saved)})"


def write_json(path: str, value: dict) -> None:
    """Writes `value` as JSON atomically (a reader sees the old file or the new one, never half of one)."""
    tmp = path + ".tmp"
    with _removed_on_failure(tmp), open(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


@contextlib.contextmanager
def _removed_on_failure(tmp: str):
    """Removes the temporary file `tmp` when the block writing it fails (e.g. a full disk): nothing half-written
    is left beside the file it was to replace."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_config(run_dir: str, config: dict, allow_change: bool = False) -> None:
    """Writes config.json atomically; refuses a run dir that holds a run with another config."""
    path = os.path.join(run_dir, "config.json")
    if os.path.exists(path) and not allow_change:
        try:
            with open(path) as f:
                existing = json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigMismatchError(
                f"{path} cannot be read ({type(e).__name__}: {' '.join(str(e).split())}); choose another --run_dir, "
                "or pass --allow_config_change to overwrite it with this run's config"
            ) from e
        changed = config_differences(existing, config)
        if changed:
            shown = ", ".join(_describe(*c) for c in changed[:4]) + (
                f" and {len(changed) - 4} more" if len(changed) > 4 else ""
            )
            raise ConfigMismatchError(
                f"{run_dir} holds a run with a different config: {shown}; choose another --run_dir, "
                "or pass --allow_config_change to resume into it anyway"
            )
    os.makedirs(run_dir, exist_ok=True)
    write_json(path, config)


SLICES_FILE = "slices.json"


def write_slice_list(run_dir: str, paths: list, allow_change: bool = False) -> None:
    """Records the names and sizes of the slices a run trains on in `<run_dir>/slices.json`; refuses (unless
    `allow_change`) a run dir that recorded another list: the slice of a step follows from the list, so a run
    resumed on a changed one would go on with another schedule."""
    path = os.path.join(run_dir, SLICES_FILE)
    current = [[os.path.basename(p), os.path.getsize(p)] for p in paths]
    if os.path.exists(path) and not allow_change:
        again = "or pass --allow_config_change to go on with the slices as they are now"
        try:
            with open(path) as f:
                recorded = json.load(f)["slices"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigMismatchError(
                f"{path} cannot be read ({type(e).__name__}: {' '.join(str(e).split())}); choose another --run_dir, "
                + again
            ) from e
        if recorded != current:
            directory = os.path.dirname(paths[0]) if paths else "the slice directory"
            raise ConfigMismatchError(
                f"the slices in {directory} changed since {run_dir} began training on them "
                f"({_slice_changes(recorded, current)}), so it would resume on another slice schedule; put them back "
                f"as they were, choose another --run_dir, {again}"
            )
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"directory": os.path.dirname(os.path.abspath(paths[0])), "slices": current}, f, indent=1)
    os.replace(tmp, path)


def _slice_changes(recorded: list, current: list) -> str:
    """`3 slices then, 4 now: x-003.npz added` (at most three changes named)."""
    before, now = {name: size for name, size in recorded}, {name: size for name, size in current}
    changes = [f"{name} added" for name in now if name not in before]
    changes += [f"{name} removed" for name in before if name not in now]
    changes += [
        f"{name} now {now[name]} bytes, was {before[name]}" for name in now if before.get(name, now[name]) != now[name]
    ]
    shown = ", ".join(changes[:3]) + (f" and {len(changes) - 3} more" if len(changes) > 3 else "")
    return f"{len(recorded)} slices then, {len(current)} now: {shown}"


class CsvLog:
    """Appends rows to a CSV; on resume, rows past the restored step are dropped (they will be redone), and so is
    a last row cut short (the machine stopped while it was written)."""

    def __init__(self, path: str, resume_step: int):
        self.path = path
        self.fields: list[str] | None = None
        if os.path.exists(path):
            with open(path) as f:
                rows = list(csv.DictReader(f))
            if rows and not _whole(rows[-1]):
                print(f"note: the last row of {path} was cut short ({_shown(rows[-1])}); it is dropped", flush=True)
                rows.pop()
            others = [r for r in rows if not _whole(r)]  # e.g. a note added by hand
            if others:
                shown = "; ".join(_shown(r) for r in others[:3]) + (
                    f" and {len(others) - 3} more" if len(others) > 3 else ""
                )
                print(f"note: {len(others)} line(s) of {path} are not log rows ({shown}); they are dropped", flush=True)
                rows = [r for r in rows if _whole(r)]
            kept = [r for r in rows if int(float(r["step"])) <= resume_step]
            if rows:
                self.fields = list(rows[0].keys())
                self._rewrite(kept)

    def _rewrite(self, rows: list[dict]) -> None:
        tmp = self.path + ".tmp"
        with _removed_on_failure(tmp), open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def has_step(self, step: int) -> bool:
        return os.path.exists(self.path) and any(int(float(r["step"])) == step for r in read_csv(self.path))

    def write(self, row: dict) -> None:
        if self.fields is None:
            self.fields = list(row.keys())
            self._rewrite([])
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(row)


def _whole(row: dict) -> bool:
    """Whether a csv.DictReader row has every field (a row cut short has None for the missing ones) and a step."""
    if None in row.values():
        return False
    try:
        float(row["step"])
    except ValueError:
        return False
    return True


def _shown(row: dict) -> str:
    text = ",".join(v for v in row.values() if isinstance(v, str))
    return text if len(text) <= 60 else text[:57] + "..."


def read_csv(path: str) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))
