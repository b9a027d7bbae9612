"""Fair sharing: one generation at a time per model, waiting requests served in arrival order."""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Callable

from .errors import Busy, ClientGone, ModelNotRunning


class ModelSlot:
    """The right to use one loaded model, handed out first come, first served."""

    def __init__(self, name: str, queue_size: int):
        self.name = name
        self.queue_size = queue_size
        self._cond = threading.Condition()
        self._waiting: deque = deque()
        self._busy = False
        self.closed = False
        self._since = 0.0  # when the current holder got the model
        self._idle_since = time.monotonic()  # when it was last given back (or loaded)
        self._hold = 5.0  # seconds one request holds the model, a running average (a first guess until measured)

    def acquire(self, abandoned: Callable[[], bool] | None = None) -> None:
        """Wait for the model; raise Busy if the queue is full, ModelNotRunning if it is killed."""
        with self._cond:
            self._check_open()
            if not self._busy and not self._waiting:
                self._take()
                return
            if len(self._waiting) >= self.queue_size:
                # Retry when the queue has about moved on by one: its length times the usual hold.
                raise Busy(f"Model {self.name!r} is busy and {len(self._waiting)} requests are waiting.",
                           retry_after=max(1, math.ceil(self._hold * (len(self._waiting) + 1))))
            ticket = object()
            self._waiting.append(ticket)
            try:
                while self._busy or self._waiting[0] is not ticket:
                    self._check_open()
                    if abandoned is not None and abandoned():
                        raise ClientGone("The client went away while waiting.")
                    self._cond.wait(0.2)
                self._take()
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()

    def _check_open(self):
        if self.closed:
            raise ModelNotRunning(f"Model {self.name!r} was stopped.")

    def _take(self) -> None:
        self._busy, self._since = True, time.monotonic()

    def release(self) -> None:
        with self._cond:
            if self._busy:
                self._hold = 0.7 * self._hold + 0.3 * (time.monotonic() - self._since)
            self._busy = False
            self._idle_since = time.monotonic()
            self._cond.notify_all()

    def touch(self) -> bool:
        """A request is on its way to the model: its idle time starts again. False if it is closed."""
        with self._cond:
            self._idle_since = time.monotonic()
            return not self.closed

    def close_if_idle(self, seconds: float) -> bool:
        """Close the slot if nobody has used or asked for the model for `seconds`; a request arriving
        at the same moment either gets in first (and the model stays) or finds it closed."""
        with self._cond:
            if self.closed or self._busy or self._waiting or time.monotonic() - self._idle_since < seconds:
                return False
            self.closed = True
            return True

    def close(self) -> None:
        """Refuse new and queued requests, then wait for the one generating to finish."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()
            while self._busy:
                self._cond.wait(0.2)

    @property
    def waiting(self) -> int:
        return len(self._waiting)


class SlowWork:
    """Caps the requests that hold a worker for long (streams running or queued, image links being
    fetched, downloads) server-wide, so cheap endpoints always find a free worker."""

    def __init__(self, limit: int):
        self.limit = limit
        self._count = 0
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            if self._count >= self.limit:
                raise Busy(f"The server is handling {self._count} long requests, its limit.")
            self._count += 1

    def give_back(self) -> None:
        with self._lock:
            self._count -= 1

    @contextmanager
    def held(self):
        self.take()
        try:
            yield
        finally:
            self.give_back()
