"""SIGINT / SIGTERM for a run: inside the training loop a request to stop at the next step boundary
(where a checkpoint can hold the exact position), elsewhere an exception at once."""
from __future__ import annotations

import contextlib
import signal
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler pre-empting the job): unwinds the run as Ctrl-C does."""


class StopSignals:
    """While `installed()`: outside `deferred()` a signal raises at once (KeyboardInterrupt, or
    Terminated for SIGTERM); inside, the first one is only noted (`requested()`), for the loop to
    honour after its current step; a second one raises at once (a user who insists)."""

    def __init__(self):
        self.pending: KeyboardInterrupt | None = None
        self._deferring = 0

    def _handle(self, signum, frame) -> None:
        exc = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        if self._deferring and self.pending is None:
            self.pending = exc
            return
        raise exc

    @contextlib.contextmanager
    def installed(self):
        """Handle SIGINT and SIGTERM within the context (main thread only: signals reach no other)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    @contextlib.contextmanager
    def deferred(self):
        """Within the context a (first) signal waits for the loop to ask `requested()`."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1

    def requested(self) -> bool:
        """Whether a signal is waiting to be honoured."""
        return self.pending is not None

    def raise_pending(self) -> None:
        """Raise the waiting signal's exception (nothing when none waits)."""
        exc, self.pending = self.pending, None
        if exc is not None:
            raise exc
