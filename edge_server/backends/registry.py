"""Backends register here: the built-in llama-cpp one directly, plugins through entry points."""
from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Callable

from .base import Backend

log = logging.getLogger("edge_server.backends")

ENTRY_POINT_GROUP = "edge_server.backends"
INSTALL_HINT = ("install torch for your platform (https://pytorch.org), then the heavy plugins: "
                "pip install -r extra.requirements.txt")


class FullModeUnavailable(ValueError):
    """--full with no plugin installed: the server says what to install instead of serving lite models."""


class BackendRegistry:
    """Maps a backend name to a factory; backends are built on first use so imports stay lazy."""

    def __init__(self):
        self._factories: dict[str, Callable[[], Backend]] = {}
        self._built: dict[str, Backend] = {}

    def register(self, name: str, factory: Callable[[], Backend]) -> None:
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories

    def get(self, name: str) -> Backend:
        if name not in self._built:
            self._built[name] = self._factories[name]()
        return self._built[name]


def register_builtin(registry: BackendRegistry, workers=None, meminfo: str = "/proc/meminfo") -> None:
    """Register the lite backend the same way a plugin's register() would; with `workers` (a WorkerList) it
    splits models across them (llamacpp_split.py)."""
    from . import llama_logs, llamacpp

    build = llamacpp.LlamaCppBackend if not workers else lambda: _split_backend(workers, meminfo)

    def quiet_build() -> Backend:
        llama_logs.install()  # at the first launch, when llama_cpp is first imported: its lines go to our log
        return build()

    registry.register(llamacpp.NAME, quiet_build)


def _split_backend(workers, meminfo: str) -> Backend:
    from .llamacpp_split import SplitBackend

    return SplitBackend(workers, meminfo)


def build_registry(full: bool, workers=None, meminfo: str = "/proc/meminfo") -> BackendRegistry:
    registry = BackendRegistry()
    register_builtin(registry, workers, meminfo)
    if full:
        plugins = list(entry_points(group=ENTRY_POINT_GROUP))
        if not plugins:
            raise FullModeUnavailable(f"full mode (--full) needs the heavy backends, and none is installed: "
                                      f"{INSTALL_HINT}")
        for ep in plugins:
            try:
                ep.load()(registry)
                log.info("loaded backend plugin %s", ep.name)
            except Exception:  # a broken plugin must not stop the lite server
                log.exception("backend plugin %s failed to register", ep.name)
    return registry
