"""Orbax checkpoints of an agent state: atomic saves, and resumption from the latest one.

Orbax writes a step into `<step>.orbax-checkpoint-tmp` and renames it to `<step>` when complete, so a run
killed at any moment leaves only complete checkpoints under their step's name; temporary directories left
by a killed save are removed when the next run opens the directory. A save that fails because the disk is
full (or another save error) leaves the previous checkpoints as they were.
"""

import contextlib
import errno
import io
import logging
import os
import shutil
import sys
import threading
import time

import orbax.checkpoint as ocp

_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_SETTLE_S = 1.0  # how long the writes of a save that failed for a full disk may go on failing
# Tensorstore (orbax's array writer) reports a full disk as a ValueError carrying the OS's message.
_DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", f"os_error_code='{errno.ENOSPC}'")


class CheckpointError(RuntimeError):
    """A checkpoint could not be saved (disk full) or restored; the message says what to do."""


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
    """What a block logs through absl and prints to stderr, held back until it ends, then passed on in order
    (absl records first) unless dropped."""

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
    try:
        with contextlib.redirect_stderr(held.stderr):
            yield held
    finally:
        logger.removeFilter(hold)
        if not held.dropped:
            for record in held.records:
                logger.handle(record)
            sys.stderr.write(held.stderr.getvalue())


def _summary(error: BaseException, limit: int = 200) -> str:
    """The first line of an orbax or tensorstore error, without tensorstore's spec dump, at most `limit` long."""
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    text = text.split(" [tensorstore_spec")[0].rstrip(":.")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _join_threads_since(before: set, timeout: float) -> None:
    """Waits for the threads started since `before` (orbax's writers of a failed save: they still write,
    fail and log after the save raised) to end, up to `timeout` seconds in all."""
    deadline = time.monotonic() + timeout
    for thread in set(threading.enumerate()) - before:
        with contextlib.suppress(Exception):  # orbax's threads re-raise their failure from join()
            thread.join(max(0.0, deadline - time.monotonic()))


class Checkpoints:
    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state) -> None:
        # Orbax writes into a temporary directory and renames it when complete, so a save that is
        # interrupted never replaces or corrupts the previous checkpoint.
        previous = self.latest_step()
        threads = set(threading.enumerate())
        with _held_output() as held:
            try:
                self.manager.save(step, args=ocp.args.StandardSave(state), force=True)
                self.manager.wait_until_finished()
            except Exception as error:
                if not is_disk_full(error):
                    raise
                # Orbax's writer threads and tensorstore's callbacks of the failed writes go on failing (and
                # printing tracebacks) for a moment after the save raised: let them end, unheard.
                _join_threads_since(threads, timeout=120.0)
                time.sleep(_SETTLE_S)
                held.drop()
                self._remove_temporary(step)
                kept = f"the checkpoint of step {previous} is intact" if previous is not None else "no step was saved"
                raise CheckpointError(
                    f"no space left on the disk to save the checkpoint of step {step} in {self.directory}; "
                    f"{kept}: free some space and rerun the same command to resume"
                ) from error

    def _remove_temporary(self, step: int) -> None:
        """Frees the space of a failed save's partial directory (the next run would remove it too)."""
        prefix = f"{step}.orbax-checkpoint-tmp"
        for name in os.listdir(self.directory):
            if name.startswith(prefix):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    def restore(self, step: int, template):
        try:
            return self.manager.restore(step, args=ocp.args.StandardRestore(template))
        except (ValueError, KeyError, OSError) as error:
            raise CheckpointError(
                f"cannot restore the checkpoint of step {step} in {self.directory} ({_summary(error)}): it holds "
                "another agent state (saved with other --agent.* sizes?) or is damaged; choose another --run_dir, "
                f"or delete {os.path.join(self.directory, str(step))} to resume from the one before"
            ) from error

    def close(self) -> None:
        self.manager.close()
