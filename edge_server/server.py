"""Serve an app with waitress, sized so that streams never starve the cheap endpoints."""
from __future__ import annotations

import json
import logging
import os
import signal

log = logging.getLogger("edge_server")
SERVING_FILE = "server.json"  # in the data dir while serving: where (`edge-server list` reads it)


class _CutStreams(logging.Filter):
    """A StreamCut is how an answer cut short ends its body (api/generate.py), not a fault of the server: one
    line at info, without the traceback waitress logs for an exception while serving."""

    def filter(self, record: logging.LogRecord) -> bool:
        from .api.generate import StreamCut

        if record.exc_info and isinstance(record.exc_info[1], StreamCut):
            record.msg, record.args = "answer cut short, its body left unfinished: %s", (record.exc_info[1],)
            record.exc_info, record.exc_text, record.levelno, record.levelname = None, None, logging.INFO, "INFO"
        return True


_CUT_FILTER = _CutStreams()


def make_server(app, settings, **overrides):
    """Create (not run) the waitress server for `app`; tests run it in a thread."""
    from waitress.server import create_server

    logging.getLogger("waitress").addFilter(_CUT_FILTER)  # the same object: added once however often this runs

    options = dict(
        host=settings.host, port=settings.port, threads=settings.threads,
        # A connection costs a socket, not a worker, until its request has fully arrived; 150 clients
        # trickling header bytes used up waitress' default 100 and locked everyone else out. (waitress
        # polls with select(), so stay well under its 1024 descriptors.)
        connection_limit=settings.max_connections,
        # Lets waitress notice a client that hung up mid-stream, so generation stops.
        channel_request_lookahead=1,
        # Flask refuses bodies over max_body_bytes with our JSON error; waitress' own (plain text)
        # limit is only a backstop above it.
        max_request_body_size=2 * settings.max_body_bytes,
        ident="edge-server",
    )
    return create_server(app, **{**options, **overrides})


def local_url(host: str, port: int) -> str:
    """The URL a program on this machine reaches a server bound to `host` with."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(app, settings) -> None:
    """Serve until Ctrl-C or SIGTERM, then end the streams and free every model."""
    from .lan import announce
    from .security import is_loopback

    edge = app.extensions["edge_server"]
    manager = edge.manager

    def _stop(signum, frame):
        manager.stop_streams()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server = make_server(app, settings)
    log.info("edge-server on http://%s:%s (data: %s, threads: %d, full mode: %s)", settings.host,
             server.effective_port, settings.data_dir, settings.threads, settings.full)
    log.info("models compute with %d threads (%s)", manager.n_threads, manager.threads_why)
    if edge.api_key is None and not is_loopback(settings.host):
        log.warning("--no-auth: anyone on your network can use this server, download models and read chats")
    if not is_loopback(settings.host):
        announce(settings.host, server.effective_port, edge.api_key)
    serving = settings.data_dir / SERVING_FILE
    serving.parent.mkdir(parents=True, exist_ok=True)
    serving.write_text(json.dumps({"url": local_url(settings.host, server.effective_port), "pid": os.getpid()}))
    try:
        server.run()
    finally:
        try:  # only our own note: another server may have taken the data dir since
            if json.loads(serving.read_text()).get("pid") == os.getpid():
                serving.unlink()
        except (OSError, ValueError):
            pass
        manager.shutdown()
        log.info("stopped")
