"""A model that runs in a child process (model_host_child.py): the server's side of it.

A model split across workers runs there, because ggml's RPC client aborts the process it runs in when a
worker dies. Seen from the server it is a LoadedModel like any other; when the child goes, the streams in
flight and every later call raise ModelLost until the model is launched again.
"""
from __future__ import annotations

import itertools
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Iterator

from .base import TEXT, GenerationOptions, ModelLost, Prepared

log = logging.getLogger("edge_server.model_host")

_LOST, _CLOSED = ("lost",), ("closed",)
POLL_SECONDS = 0.1  # a stream waiting for its next piece lets the engine check for a stop this often
STALL_SECONDS = 60.0  # the child says something (a piece, a tick) every second while it works; this long
#                       silent, it is stuck (a worker frozen by its phone keeps its connection open) and ended


class HostedModel:
    """The LoadedModel protocol, answered by the child process over a socket pair."""

    elsewhere = True  # it computes in another process: the server gives it a thread of its own to wait on

    def __init__(self, child: subprocess.Popen, conn: Connection, info: dict, workers: list[str],
                 on_close=lambda: None):
        self._child, self._conn, self._on_close = child, conn, on_close
        self.n_ctx, self.parallel = info["n_ctx"], info["parallel"]
        self.capabilities = frozenset(info.get("capabilities", (TEXT,)))
        self.memory_bytes = info.get("memory")
        self.workers = workers
        self.lost: str | None = None  # why the child is gone, once it is
        self.cache_used, self.prompt_tokens = 0, (0, 0)
        self._closing = False
        self._ids = itertools.count(1)
        self._inboxes: dict[int, queue.SimpleQueue] = {}
        self._send_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="model-host", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            if message[0] == "end":
                self.cache_used, self.prompt_tokens = message[3]["cache_used"], tuple(message[3]["prompt_tokens"])
            inbox = self._inboxes.get(message[1])
            if inbox is not None:
                inbox.put(message)
        if not self._closing and not self.lost:
            code = self._child.wait()
            self.lost = (f"the process holding the model ended (status {code}): a worker it was split over "
                         f"({', '.join(self.workers)}) stopped answering, or this device ran out of memory")
            log.error("%s", self.lost)
        for inbox in list(self._inboxes.values()):
            inbox.put(_LOST if self.lost else _CLOSED)

    def _give_up(self, why: str) -> None:
        """The child is stuck: it is ended, and the model lost."""
        if not self.lost and not self._closing:
            self.lost = why
            log.error("%s", why)
            self._child.kill()

    def _send(self, message: tuple) -> None:
        if self.lost:
            raise ModelLost(self.lost)
        try:
            with self._send_lock:
                self._conn.send(message)
        except OSError:
            raise ModelLost(self.lost or "the process holding the model is gone") from None

    def _open(self) -> tuple[int, queue.SimpleQueue]:
        ident, inbox = next(self._ids), queue.SimpleQueue()
        self._inboxes[ident] = inbox
        return ident, inbox

    def _call(self, kind: str, argument) -> Prepared:
        ident, inbox = self._open()
        try:
            self._send((kind, ident, argument))
            answer = inbox.get(timeout=STALL_SECONDS)
        except queue.Empty:
            self._give_up(f"the model did not answer for {STALL_SECONDS:.0f} s: a worker it was split over "
                          f"({', '.join(self.workers)}) may be frozen")
            answer = _LOST
        finally:
            self._inboxes.pop(ident, None)
        if answer in (_LOST, _CLOSED):
            raise ModelLost(self.lost or "the model was stopped")
        if answer[0] == "failed":
            raise ValueError(answer[2])
        return Prepared(answer[2], answer[3], tuple(answer[4]))

    def prepare(self, messages: list[dict], images: list | None = None) -> Prepared:
        if images:
            raise ValueError("a model split across workers does not read images")
        return self._call("prepare", messages)

    def prepare_raw(self, text: str) -> Prepared:
        return self._call("prepare_raw", text)

    def stream(self, prepared: Prepared, options: GenerationOptions) -> Iterator[str]:
        ident, inbox = self._open()
        done = False
        try:
            self._send(("stream", ident, prepared.n_tokens, prepared.payload, prepared.stop, options))
            heard = time.monotonic()
            while True:
                try:
                    message = inbox.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    if time.monotonic() - heard > STALL_SECONDS:
                        self._give_up(f"the model said nothing for {STALL_SECONDS:.0f} s: a worker it was split "
                                      f"over ({', '.join(self.workers)}) may be frozen")
                    yield ""  # nothing yet: the engine may stop the stream meanwhile
                    continue
                heard = time.monotonic()
                if message is _CLOSED:  # killed: the stream just ends (the server says why)
                    done = True
                    return
                if message is _LOST:
                    done = True
                    raise ModelLost(self.lost or "the process holding the model is gone")
                if message[0] == "tick":
                    continue
                if message[0] == "piece":
                    prepared.generated = message[3]
                    yield message[2]
                    continue
                done = True
                if message[0] == "error":
                    raise RuntimeError(message[2])
                prepared.generated = message[2]
                return
        finally:
            self._inboxes.pop(ident, None)
            if not done and not self.lost:
                try:
                    self._send(("cancel", ident))
                except ModelLost:
                    pass

    def close(self) -> None:
        """End the child (its memory, and its connections to the workers, which free theirs)."""
        self._closing = True
        if self._send_lock.acquire(timeout=2):  # a send stuck on a full socket must not hold the kill up
            try:
                self._conn.send(("close", 0))
            except OSError:
                pass
            finally:
                self._send_lock.release()
        try:
            self._child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()
        self._conn.close()
        self._reader.join(timeout=5)
        self._on_close()


def start(order: dict, workers: list[str], timeout: float = 600, on_close=lambda: None) -> HostedModel:
    """Start a child, have it load the model as `order` says (model_host_child._load), and wait for it."""
    ours, theirs = socket.socketpair()
    # GGML_NO_BACKTRACE: when a worker goes, ggml's abort would print a debugger's backtrace into our log
    child = subprocess.Popen([sys.executable, "-m", "edge_server.backends.model_host_child", str(theirs.fileno())],
                             pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             env={**os.environ, "GGML_NO_BACKTRACE": "1"})
    theirs.close()
    conn = Connection(ours.detach())
    try:
        conn.send(order)
        if not conn.poll(timeout):
            raise RuntimeError(f"the model did not load within {timeout:.0f} s")
        kind, _, info = conn.recv()
    except (EOFError, OSError):
        kind, info = "failed", f"the process loading it ended (status {child.wait()}): a worker may have gone"
    except RuntimeError as exc:
        kind, info = "failed", str(exc)
    if kind != "ready":
        conn.close()
        if child.poll() is None:
            child.kill()
        child.wait()
        raise RuntimeError(info)
    return HostedModel(child, conn, info, workers, on_close)
