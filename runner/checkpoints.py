"""Orbax checkpoints of an agent state: atomic saves, checked restores, and resumption from the latest one.

Orbax writes a step into `<step>.orbax-checkpoint-tmp` and renames it to `<step>` when complete, so a run
killed at any moment leaves only complete checkpoints under their step's name; temporary directories left
by a killed save are removed when the next run opens the directory. A save that fails because the disk is
full (or another save error) leaves the previous checkpoints as they were.

Each step holds two items: `default` (the state) and `checksums` (SHA-256 of every array's bytes, by its
path in the tree), saved in the same atomic commit. Orbax itself checks only its shard indices (crc32c),
not the array data, so bytes damaged on disk would otherwise restore silently as wrong weights; `restore`
recomputes the digests and raises `CheckpointDamagedError` on any difference.
"""

import contextlib
import errno
import gc
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import threading
import time
import traceback

import jax
import numpy as np
import orbax.checkpoint as ocp

_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_SETTLE_S = 1.0  # how long the writes of a save that failed for a full disk may go on failing
# Tensorstore (orbax's array writer) reports a full disk as a ValueError carrying the OS's message.
_DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", f"os_error_code='{errno.ENOSPC}'")


STATE, CHECKSUMS = "default", "checksums"  # the two items of a step (`default`: orbax's single-item name)


class CheckpointError(RuntimeError):
    """A checkpoint could not be saved (disk full) or restored; the message says what to do."""


class CheckpointDamagedError(CheckpointError):
    """A checkpoint's files are missing, unreadable or hold other bytes than were saved. `what` is the
    message without its advice, `detail` what is wrong in it."""

    def __init__(self, what: str, advice: str, detail: str = ""):
        super().__init__(f"{what}; {advice}")
        self.what, self.detail = what, detail


class CheckpointGoneError(CheckpointError):
    """A checkpoint was deleted while it was read: by the run that owns it, keeping its newest ones."""


def checksums(state) -> dict[str, str]:
    """SHA-256 of each array leaf (its dtype, shape and bytes), keyed by the leaf's path in the tree.

    Leaves spread over several hosts (not fully addressable here) are skipped: no process sees their bytes.
    """
    digests = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        if not getattr(leaf, "is_fully_addressable", True):
            continue
        array = np.asarray(leaf)
        digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
        digests[jax.tree_util.keystr(path)] = digest.hexdigest()
    return digests


def state_bytes(state) -> int:
    return sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(state))


def _size(num_bytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if num_bytes < 1000 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "bytes" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000


def is_disk_full(error: BaseException) -> bool:
    """Whether `error`, or an exception it was raised from, is the OS saying the disk (or quota) is full."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
            return True
        if any(text in str(error) for text in _DISK_FULL_TEXTS):
            return True
        error = error.__cause__ or error.__context__
    return False


class _HeldOutput:
    """What a block logs through absl and prints to stderr (exceptions raised where nothing can catch them, e.g. in
    a collected coroutine's cleanup, included), held back until it ends, then passed on in order (absl records
    first) unless dropped."""

    def __init__(self):
        self.records, self.stderr, self.dropped = [], io.StringIO(), False

    def drop(self) -> None:
        self.dropped = True


@contextlib.contextmanager
def _held_output():
    """Holds back a save's absl logs and stderr: one that fails for a full disk makes orbax log tracebacks at
    ERROR and tensorstore's callbacks print more, from several threads, and that failure is one line instead."""
    logger = logging.getLogger("absl")
    held = _HeldOutput()

    def hold(record):
        held.records.append(record)
        return False

    logger.addFilter(hold)
    # Python's own hook prints to sys.stderr, held here (pytest's, e.g., would turn them into warnings instead).
    unraisable_hook, sys.unraisablehook = sys.unraisablehook, sys.__unraisablehook__
    try:
        with contextlib.redirect_stderr(held.stderr):
            yield held
    finally:
        sys.unraisablehook = unraisable_hook
        logger.removeFilter(hold)
        if not held.dropped:
            for record in held.records:
                logger.handle(record)
            sys.stderr.write(held.stderr.getvalue())


def _settle(held: _HeldOutput, quiet: float = 0.25, timeout: float = 2 * _SETTLE_S) -> None:
    """Waits until what `held` holds has stopped growing for `quiet` seconds (at most `timeout` in all), collecting
    garbage meanwhile: the pending work of a failed orbax call (tensorstore's callbacks, abandoned coroutines) ends
    while its output is still held."""
    deadline = time.monotonic() + timeout
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        gc.collect()
        now = len(held.stderr.getvalue()) + len(held.records)
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.05)


def _summary(error: BaseException, limit: int = 200) -> str:
    """The first line of an orbax or tensorstore error, without tensorstore's spec dump, at most `limit` long."""
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    text = text.split(" [tensorstore_spec")[0].split(" See full TensorStore details")[0].rstrip(":.")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _join_threads_since(before: set, timeout: float) -> None:
    """Waits for the threads started since `before` (orbax's writers of a failed save: they still write,
    fail and log after the save raised) to end, up to `timeout` seconds in all."""
    deadline = time.monotonic() + timeout
    for thread in set(threading.enumerate()) - before:
        with contextlib.suppress(Exception):  # orbax's threads re-raise their failure from join()
            thread.join(max(0.0, deadline - time.monotonic()))


class Checkpoints:
    """The checkpoints of one run dir. `read_only` (evaluating another run's checkpoints) creates nothing and
    leaves temporary directories alone: they may be a save in progress of the run that owns them."""

    def __init__(self, directory: str, max_to_keep: int = 2, read_only: bool = False):
        self.directory = os.path.abspath(directory)
        _check_directory(self.directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_handlers={STATE: ocp.StandardCheckpointHandler(), CHECKSUMS: ocp.JsonCheckpointHandler()},
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=not read_only, cleanup_tmp_directories=not read_only
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def reload(self) -> None:
        """Lists the steps on disk anew (another process saves and deletes them)."""
        self.manager.reload()

    def save(self, step: int, state) -> None:
        # Orbax writes into a temporary directory and renames it when complete, so a save that is
        # interrupted never replaces or corrupts the previous checkpoint.
        previous = self.latest_step()
        needed = state_bytes(state)
        free = shutil.disk_usage(self.directory).free
        if free < needed:  # found in a millisecond, where a failing save takes seconds and logs pages
            raise self._disk_full(step, previous, needed, free)
        threads = set(threading.enumerate())
        args = ocp.args.Composite(
            **{STATE: ocp.args.StandardSave(state), CHECKSUMS: ocp.args.JsonSave(checksums(state))}
        )
        with _held_output() as held:
            try:
                self.manager.save(step, args=args, force=True)
                self.manager.wait_until_finished()
            except Exception as error:
                if not is_disk_full(error):
                    raise
                # Orbax's writer threads and tensorstore's callbacks of the failed writes go on failing (and
                # printing tracebacks) for a moment after the save raised: let them end, unheard.
                _join_threads_since(threads, timeout=_SETTLE_S)
                traceback.clear_frames(error.__traceback__)
                _settle(held)  # and tensorstore's callbacks onto orbax's closed event loop
                held.drop()
                self._remove_temporary(step)
                raise self._disk_full(step, previous, needed, shutil.disk_usage(self.directory).free) from error

    def _disk_full(self, step: int, previous: int | None, needed: int, free: int) -> CheckpointError:
        kept = f"the checkpoint of step {previous} is intact" if previous is not None else "no step was saved"
        return CheckpointError(
            f"no space left on the disk to save the checkpoint of step {step} in {self.directory} (a checkpoint "
            f"needs about {_size(needed)}, {_size(free)} is free); {kept}: free some space and rerun the same "
            "command to resume"
        )

    def _remove_temporary(self, step: int) -> None:
        """Frees the space of a failed save's partial directory (the next run would remove it too)."""
        prefix = f"{step}.orbax-checkpoint-tmp"
        for name in os.listdir(self.directory):
            if name.startswith(prefix):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    def restore(self, step: int, template):
        """The state saved at `step`, in the structure (and placement) of `template`, its bytes checked against
        the saved checksums. Raises CheckpointDamagedError for damaged or missing files (a checksums item
        included, unless the step was saved by a version that wrote none), CheckpointGoneError when the step was
        deleted meanwhile, CheckpointError for a checkpoint of another state."""
        with _held_output() as held:
            try:
                return self._restore(step, template)
            except CheckpointDamagedError as error:
                # Orbax leaves the other reads of a failed restore pending: their callbacks print tracebacks onto a
                # closed event loop, and their coroutines warn when collected. Let that end, unheard: the damage is
                # one line (the caller's warning, or its error when no step is intact).
                traceback.clear_frames(error.__cause__.__traceback__ if error.__cause__ else None)
                error.__cause__, error.__context__ = None, None
                _settle(held)
                held.drop()
                if not os.path.isdir(self.step_dir(step)):  # Deleted while read: by the run that owns it.
                    gone = f"the checkpoint of step {step} in {self.directory} was deleted"
                    raise CheckpointGoneError(gone) from None
                raise

    def step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _restore(self, step: int, template):
        where = self.step_dir(step)
        checked = os.path.isdir(os.path.join(where, CHECKSUMS))
        if not checked and _saved_items(where) != {STATE}:  # {STATE}: saved by a version without checksums
            raise self._damaged(step, f"its {CHECKSUMS} item is missing")
        try:
            metadata = self.manager.item_metadata(step)[STATE]
        except Exception as error:  # orbax and tensorstore raise plain Exceptions for missing or cut-short files
            raise self._damaged(step, _summary(error)) from error
        if metadata is None:  # what orbax returns without the item's metadata file
            raise self._damaged(step, f"{STATE}/_METADATA is missing")
        saved, wanted = _leaf_shapes(metadata), _leaf_shapes(template)
        if saved != wanted:
            difference = sorted(set(saved.items()) ^ set(wanted.items()))[0][0]
            raise CheckpointError(
                f"cannot restore the checkpoint of step {step} in {self.directory} ({difference}: saved "
                f"{saved.get(difference, 'absent')}, this run's {wanted.get(difference, 'absent')}): it holds another "
                "agent state (saved with other --agent.* sizes?); choose another --run_dir, or rerun with the "
                "settings it was saved with"
            )
        items = {STATE: ocp.args.StandardRestore(template)}
        if checked:
            items[CHECKSUMS] = ocp.args.JsonRestore()
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as error:  # the same, for the array files
            raise self._damaged(step, _summary(error)) from error
        if checked:
            bad = _unmatched(restored[CHECKSUMS], restored[STATE])
            if bad:
                shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
                raise self._damaged(step, f"checksum mismatch in {shown}")
        else:
            print(f"note: the checkpoint of step {step} in {self.directory} predates checksums: restored unchecked")
        return restored[STATE]

    def _damaged(self, step: int, detail: str) -> CheckpointDamagedError:
        return CheckpointDamagedError(
            f"the checkpoint of step {step} in {self.directory} is damaged ({detail})",
            f"delete {self.step_dir(step)} to resume from the one before, or choose another --run_dir",
            detail,
        )

    def delete(self, step: int) -> None:
        self.manager.delete(step)

    def close(self) -> None:
        self.manager.close()


def saved_steps(directory: str) -> list[int]:
    """The steps of the complete checkpoints in `directory` (orbax names each by its step), without opening it."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(int(n) for n in names if n.isdigit() and os.path.isdir(os.path.join(directory, n)))


def _saved_items(step_dir: str) -> set | None:
    """The items a step was saved with, from orbax's step metadata (`_CHECKPOINT_METADATA`), or None when that
    file is missing or unreadable."""
    try:
        with open(os.path.join(step_dir, "_CHECKPOINT_METADATA")) as f:
            return set(json.load(f)["item_handlers"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _unmatched(saved: dict, state) -> list[str]:
    """The leaves of `state` whose checksum differs from `saved`'s or was not saved, and the saved checksums of no
    leaf (a damaged key): a leaf without its checksum is not taken as checked."""
    got = checksums(state)
    leaves = {jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(state)}
    bad = [path for path, digest in got.items() if saved.get(path) != digest]
    return bad + [path for path in saved if path not in leaves]


def _check_directory(directory: str) -> None:
    """Raises CheckpointError when `directory` exists but is not a directory: found before the run truncates its
    logs to the step it resumes from, which would then be step 0."""
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise CheckpointError(
            f"{directory} is not a directory, so the run's checkpoints cannot be read or saved there; move it away "
            "(the run's logs are untouched) and rerun"
        )


def _leaf_shapes(tree) -> dict[str, tuple]:
    """{'policy/params/dense/kernel': shape} of a state, or of orbax's metadata of one (which holds the same
    paths with dataclass fields as dict keys)."""

    def name(key) -> str:
        return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))

    return {
        "/".join(map(name, path)): tuple(getattr(leaf, "shape", None) or np.shape(leaf))
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }
