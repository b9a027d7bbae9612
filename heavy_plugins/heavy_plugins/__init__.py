"""Full-mode backends for edge-server, found through the `edge_server.backends` entry point.

edge-server calls `register(registry)` only when full mode is on. The transformers and
diffusers backends arrive in their own issue; each will be one small module registered here,
importing torch inside its factory so that registering costs nothing.
"""
import logging

log = logging.getLogger("heavy_plugins")


def register(registry) -> None:
    """Register the heavy backends (none are shipped yet)."""
    log.info("heavy_plugins: no heavy backends in this version yet")
