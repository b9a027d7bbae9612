"""llama.cpp's own log lines (`llama_kv_cache_iswa: ...`, `load_tensors: ...`) go to our logging, not stderr.

llama.cpp logs through one callback per process, and llama-cpp-python installs one that prints to stderr;
some of its lines got past its verbose=False and reached the server log at every load. Ours sends each line
to the logger `edge_server.llama_cpp`: errors at ERROR, the rest at DEBUG, which the default log level
drops. `edge-server --verbose` (or --log-level DEBUG) shows them.
"""
from __future__ import annotations

import ctypes
import logging
import threading

log = logging.getLogger("edge_server.llama_cpp")
# ggml_log_level: 1 info, 2 warn, 3 error, 4 debug, 5 continues the line before.
LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.ERROR, 4: logging.DEBUG}


class _Lines:
    """Joins the pieces llama.cpp sends (a line may come in several calls) and logs whole lines."""

    def __init__(self):
        self.pending, self.level = "", logging.DEBUG
        self.lock = threading.Lock()  # loads and decodes log from more than one thread

    def __call__(self, level: int, text: bytes, user_data) -> None:
        try:
            piece = text.decode("utf-8", "replace") if text else ""
            with self.lock:
                if level != 5:
                    self.level = LEVELS.get(level, logging.DEBUG)
                self.pending += piece
                if not self.pending.endswith("\n"):
                    return
                lines, self.pending = self.pending.rstrip("\n"), ""
                level_now = self.level
            if log.isEnabledFor(level_now):
                for line in lines.splitlines():
                    log.log(level_now, "%s", line)
        except Exception:  # noqa: BLE001 - an exception must never cross back into C
            pass


# llama.cpp keeps a bare pointer to the callback: the ctypes object must live as long as the process, so it is
# held here (the one process-wide thing llama.cpp logs through; no app state).
_callback = None
_installing = threading.Lock()


def install() -> None:
    """Route llama.cpp's log to `log` (imports llama_cpp: call it when the first model is launched)."""
    global _callback
    with _installing:  # two first launches at once must not drop a callback llama.cpp still points at
        if _callback is not None:
            return
        import llama_cpp

        _callback = llama_cpp.llama_log_callback(_Lines())
        llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
