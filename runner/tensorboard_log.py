"""A run dir's TensorBoard event file, written on the caller's thread.

tensorboardX's SummaryWriter writes from a thread of its own. When a write fails there (a full disk), that thread
ends with a traceback on stderr, and the next `add_scalar`s fill its queue of ten events and then block forever: a
long run that met a full disk for a moment hung at its next log instead of stopping. Written here, on the training
loop's thread, a failed write raises where main.py names it, and the same command resumes from the last
checkpoint.

The file is the one TensorBoard reads (`events.out.tfevents.<time>.<host>`: TFRecords of tensorboardX's `Event`
protos, the first carrying the file version).
"""

import contextlib
import os
import socket
import time

from tensorboardX.proto.event_pb2 import Event
from tensorboardX.record_writer import RecordWriter
from tensorboardX.summary import scalar

# Events wait in the file's buffer at most this long (or until close) before they are flushed to disk: a flush
# fsyncs, which a log row a second should not pay for each time.
FLUSH_SECONDS = 30.0


class TensorBoardLog:
    """`add_scalar(tag, value, step)` / `flush()` / `close()` over one event file in `log_dir`."""

    def __init__(self, log_dir: str, flush_seconds: float = FLUSH_SECONDS):
        self.path = os.path.join(log_dir, f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}")
        self.flush_seconds = flush_seconds
        self._file = RecordWriter(self.path)
        self._closed = False
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))
        self._flushed_at = time.monotonic()

    def add_scalar(self, tag: str, value, step: int) -> None:
        self._write(Event(wall_time=time.time(), step=int(step), summary=scalar(tag, value)))
        if time.monotonic() - self._flushed_at >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        self._file.flush()
        self._flushed_at = time.monotonic()

    def close(self) -> None:
        """Flushes and closes the file; when the flush fails (a full disk), the file is closed anyway, what it held
        is given up, and the flush's error is raised. A second close does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self._file.flush()
        except OSError:
            with contextlib.suppress(OSError):  # closing flushes again into the same full disk
                self._file.close()
            raise
        self._file.close()

    def _write(self, event: Event) -> None:
        self._file.write(event.SerializeToString())
