"""`edge-server worker`: this device lends its CPU and memory to a server's model (llama.cpp's RPC backend).

ggml's RPC server runs in a child process bound to loopback, with its tensor cache in the data dir; the
network reaches it only through the authenticated relay (rpc_relay.py). If the child dies it is started
again. The relay also answers a status request: free memory, threads, version, whether a model uses it.
"""
from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..memory import available_memory
from ..version import __version__
from . import ggml_rpc, rpc_relay

log = logging.getLogger("edge_server.worker")

DEFAULT_PORT = 50052
START_SECONDS = 60.0  # loading llama.cpp's libraries on a slow phone


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _total_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


class Worker:
    """The ggml RPC server (a child process on a loopback port) behind the relay on (host, port)."""

    def __init__(self, host: str, port: int, key: str, threads: int, cache_dir: Path,
                 meminfo: str = "/proc/meminfo"):
        self.threads, self.cache_dir, self.meminfo = threads, Path(cache_dir), meminfo
        self.id = secrets.token_hex(8)  # one worker listed twice (by name and by address) is used once
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._target = ("127.0.0.1", _free_port())
        self._closing = threading.Event()
        self._child = self._start()
        self.traffic = rpc_relay.Traffic()
        self.relay = rpc_relay.worker_side(host, port, self._target, key, status=self.status, traffic=self.traffic)
        self.port = self.relay.port
        self._watcher = threading.Thread(target=self._watch, name="worker-watch", daemon=True)
        self._watcher.start()

    def _start(self) -> subprocess.Popen:
        endpoint = "%s:%d" % self._target
        # glibc keeps freed blocks for reuse once it has freed a big one (its mmap threshold rises): a model's
        # layers, freed when the server lets go, stayed in the worker's memory. A fixed threshold gives them back.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 << 10)}
        child = subprocess.Popen([sys.executable, "-m", "edge_server.backends.ggml_rpc", "serve", endpoint,
                                  str(self.threads), str(self.cache_dir)],
                                 stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise RuntimeError(f"ggml's RPC server exited at start (status {child.returncode}); is "
                                   "llama-cpp-python built with GGML_RPC? (python -m edge_server.backends.ggml_rpc "
                                   "check)")
            try:
                socket.create_connection(self._target, timeout=1).close()  # ggml serves the next one
                return child
            except OSError:
                time.sleep(0.1)
        child.kill()
        child.wait()
        raise RuntimeError(f"ggml's RPC server did not listen on {endpoint} within {START_SECONDS:.0f} s")

    def _watch(self) -> None:
        """Start ggml's server again when it dies (a client that sent it garbage, the low-memory killer)."""
        while not self._closing.wait(1.0):
            if self._child.poll() is not None:
                log.warning("ggml's RPC server exited (status %s); starting it again", self._child.returncode)
                try:
                    self._child = self._start()
                except RuntimeError as exc:
                    log.error("%s", exc)

    def status(self) -> dict:
        return {"id": self.id, "version": __version__, "llama_cpp": ggml_rpc.llama_cpp_version(),
                "free_bytes": available_memory(self.meminfo), "total_bytes": _total_memory(),
                "threads": self.threads, "busy": self.traffic.clients > 0, **self.traffic.counts()}

    def close(self) -> None:
        self._closing.set()
        self._watcher.join()  # not starting another child meanwhile
        self.relay.close()
        self._child.terminate()
        try:
            self._child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._child.kill()

