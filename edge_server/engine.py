"""One thread runs every model computation, stepping the active streams in turn.

llama.cpp computes with an OpenMP team per calling thread. Each live thread that has computed
keeps its team, and once the teams hold more threads than there are cores, libgomp stops
spinning at barriers and every token pays futex wake-ups: on 2 cores a stream run from a
second thread was 30 times slower. So no request thread computes; they hand their streams to
this thread and read the pieces back, and streams of different models still interleave, a
token each in turn (a long prompt is read in pieces of about 0.1 s in between).

The streams of one GGUF model do more than take turns: in a round each samples from the logits of
one decode they shared, and the first to step in the next round decodes everyone's new token
together (backends/llamacpp_batch.py). So the order of stepping here is what batches them.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from typing import Callable, Iterable, Iterator

log = logging.getLogger("edge_server.engine")

_END = object()


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


class Job:
    """A stream computed on the engine thread; iterate it from any thread, close it to stop it."""

    def __init__(self, engine: "Engine", factory: Callable[[], Iterable[str]]):
        self._engine, self._factory = engine, factory
        self._it: Iterator[str] | None = None
        self._out: queue.SimpleQueue = queue.SimpleQueue()
        self.cancelled = False
        self.done = threading.Event()

    def __iter__(self):
        return self

    def __next__(self) -> str:
        item = self._out.get()
        if item is _END:
            raise StopIteration
        if isinstance(item, _Failed):
            raise item.exc
        return item

    def close(self) -> None:
        """Stop computing and wait until the engine has let go of the model."""
        self.cancelled = True
        self._engine._wake()
        self.done.wait()

    # The methods below run on the engine thread only.
    def _step(self) -> bool:
        """Compute one piece; return False when the job is over."""
        if self.cancelled:
            return False
        try:
            if self._it is None:
                self._it = iter(self._factory())
            self._out.put(next(self._it))
            return True
        except StopIteration:
            return False
        except BaseException as exc:  # handed to the reading thread, which raises it
            self._out.put(_Failed(exc))
            return False

    def _finish(self) -> None:
        try:
            if self._it is not None and hasattr(self._it, "close"):
                self._it.close()
        except Exception:
            log.exception("closing a stream failed")
        finally:
            self._out.put(_END)
            self.done.set()


class Engine:
    def __init__(self):
        self._cond = threading.Condition()
        self._jobs: deque[Job] = deque()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def submit(self, factory: Callable[[], Iterable[str]]) -> Job:
        """Run `factory()` and iterate what it returns on the engine thread."""
        job = Job(self, factory)
        with self._cond:
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._loop, name="edge-engine", daemon=True)
                self._thread.start()
            self._jobs.append(job)
            self._cond.notify()
        return job

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._stopping:
                    self._cond.wait()
                if not self._jobs:
                    return
                job = self._jobs.popleft()
            if job._step():
                with self._cond:
                    self._jobs.append(job)
            else:
                job._finish()

    def stop(self) -> None:
        """End the thread once its jobs are done, so its OpenMP team goes too."""
        with self._cond:
            thread, self._thread = self._thread, None
            self._stopping = True
            self._cond.notify()
        if thread is not None:
            thread.join()
