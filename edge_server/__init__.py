"""edge-server: run quantized language models on a phone or a Pi and serve them over HTTP."""
from __future__ import annotations

from .version import __version__  # noqa: F401 - edge_server.__version__

_APP = ("create_app", "EdgeServer")


def __getattr__(name: str):
    """The app (Flask and all it serves: 19 MB) is imported on first use. The processes that only compute, a
    worker's ggml server and a split model's host, import edge_server's backends without it."""
    if name in _APP:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'edge_server' has no attribute {name!r}")
