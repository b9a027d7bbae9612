"""Fair sharing: `capacity` generations at a time per model, waiting requests served in arrival order."""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Callable

from .errors import Busy, ClientGone, ModelNotRunning


class ModelSlot:
    """The right to use one loaded model, handed out first come, first served, to `capacity` holders at once
    (the streams a model decodes together); a request that cannot share the model takes all of it."""

    def __init__(self, name: str, queue_size: int, capacity: int = 1):
        self.name = name
        self.queue_size = queue_size
        self.capacity = capacity
        self._cond = threading.Condition()
        self._waiting: deque = deque()
        self._held = 0  # of capacity
        self.closed = False
        self._idle_since = time.monotonic()  # when it was last given back (or loaded)
        self._hold = 5.0  # seconds one request holds the model, a running average (a first guess until measured)

    def acquire(self, abandoned: Callable[[], bool] | None = None, whole: bool = False) -> Callable[[], None]:
        """Wait for a place (all of them with `whole`); raise Busy if the queue is full, ModelNotRunning if
        it is killed. Returns the function that gives the place back."""
        need = self.capacity if whole else 1
        with self._cond:
            self._check_open()
            if self._held + need <= self.capacity and not self._waiting:
                return self._take(need)
            if len(self._waiting) >= self.queue_size:
                # Retry when the queue has about moved on by one: its length times the usual hold.
                ahead = len(self._waiting) + 1
                raise Busy(f"Model {self.name!r} is busy and {len(self._waiting)} requests are waiting.",
                           retry_after=max(1, math.ceil(self._hold * ahead / self.capacity)))
            ticket = object()
            self._waiting.append(ticket)
            try:
                while self._held + need > self.capacity or self._waiting[0] is not ticket:
                    self._check_open()
                    if abandoned is not None and abandoned():
                        raise ClientGone("The client went away while waiting.")
                    self._cond.wait(0.2)
                return self._take(need)
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()

    def _check_open(self):
        if self.closed:
            raise ModelNotRunning(f"Model {self.name!r} was stopped.")

    def _take(self, need: int) -> Callable[[], None]:
        self._held += need
        since, given = time.monotonic(), []

        def release() -> None:
            with self._cond:
                if given:
                    return
                given.append(True)
                self._held -= need
                self._hold = 0.7 * self._hold + 0.3 * (time.monotonic() - since)
                self._idle_since = time.monotonic()
                self._cond.notify_all()
        return release

    def touch(self) -> bool:
        """A request is on its way to the model: its idle time starts again. False if it is closed."""
        with self._cond:
            self._idle_since = time.monotonic()
            return not self.closed

    def close_if_idle(self, seconds: float) -> bool:
        """Close the slot if nobody has used or asked for the model for `seconds`; a request arriving
        at the same moment either gets in first (and the model stays) or finds it closed."""
        with self._cond:
            if self.closed or self._held or self._waiting or time.monotonic() - self._idle_since < seconds:
                return False
            self.closed = True
            return True

    def close(self) -> None:
        """Refuse new and queued requests, then wait for the ones generating to finish."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()
            while self._held:
                self._cond.wait(0.2)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def active(self) -> int:
        """Places held now."""
        return self._held


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
