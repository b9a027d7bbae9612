"""The workers a server may split models over (EDGE_WORKERS), and what each says of itself right now."""
from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from . import ggml_rpc, rpc_relay
from .rpc_relay import address
from .rpc_worker import DEFAULT_PORT

SURVEY_SECONDS = 2.0  # a survey this recent is reused (a launch asks twice: the memory check, the load)


_ADDRESS = re.compile(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^\s:\[\]]+)(?::(\d+))?")


def parse_workers(text: str) -> list[tuple[str, int]]:
    """"host:port,host,[v6]:port" -> [(host, port)], each once; the port defaults to the worker's (50052)."""
    found = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = _ADDRESS.fullmatch(item)
        if not match:
            raise ValueError(f"{item!r} is not a worker address: write host, host:port or [IPv6 address]:port")
        port = int(match[2] or match[4] or DEFAULT_PORT)
        if not 0 < port < 65536:
            raise ValueError(f"{item!r}: a port is from 1 to 65535")
        if (match[1] or match[3], port) not in found:
            found.append((match[1] or match[3], port))
    return found


class WorkerList:
    def __init__(self, workers: list[tuple[str, int]], key: str, always: bool = False):
        """always: split every GGUF model over the free workers, not only one too big for this device."""
        self.workers, self.key, self.always = workers, key, always
        self._last: tuple[float, list[dict]] | None = None
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.workers)

    def _ask(self, worker: tuple[str, int]) -> dict:
        entry = {"address": address(worker)}
        try:
            said = rpc_relay.ask_status(worker, self.key)
        except PermissionError as exc:
            return {**entry, "state": "refused", "error": str(exc)}
        except (OSError, ValueError) as exc:
            return {**entry, "state": "down", "error": str(exc) or type(exc).__name__}
        entry.update(state="busy" if said.get("busy") else "up", free_bytes=said.get("free_bytes"),
                     total_bytes=said.get("total_bytes"), threads=said.get("threads"), version=said.get("version"),
                     id=said.get("id"))
        theirs, ours = said.get("llama_cpp"), ggml_rpc.llama_cpp_version()
        if theirs != ours:  # llama.cpp would refuse it mid-load (another RPC protocol), or worse
            entry.update(state="mismatch", error=f"it runs llama-cpp-python {theirs or '(unknown)'} and this server "
                                                 f"{ours}: install the same version on both")
        return entry

    def forget(self) -> None:
        """The next survey asks again (a model has just taken or left the workers)."""
        with self._lock:
            self._last = None

    def survey(self) -> list[dict]:
        """Each worker's {address, state (up, busy: a model uses it, down, refused: the key differs, mismatch:
        another llama-cpp-python), free_bytes, total_bytes, threads, version}, asked at once."""
        with self._lock:
            if self._last and time.monotonic() - self._last[0] < SURVEY_SECONDS:
                return self._last[1]
            with ThreadPoolExecutor(max_workers=max(1, len(self.workers))) as pool:
                found = list(pool.map(self._ask, self.workers))
            self._last = (time.monotonic(), found)
            return found
