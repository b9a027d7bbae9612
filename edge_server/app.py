"""The Flask app: everything one server owns (create_app), with its request logging and guards."""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from flask import Flask, g, request
from flask.json.provider import DefaultJSONProvider

from .backends import BackendRegistry, build_registry
from .backends.worker_list import WorkerList, parse_workers
from .catalog import Catalog
from .chats import ChatStore
from .errors import register_error_handlers
from .generation import Generator
from .images import ImageIntake
from .memory import release_free_heap
from .metrics import Metrics
from .runtime import ModelManager
from .security import install as install_guard
from .security import resolve_api_key
from .settings import Settings, build_settings
from .store import ModelStore

log = logging.getLogger("edge_server.http")
TRIM_AFTER_BODY_BYTES = 1 << 20
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def printable(text: str) -> str:
    """Escape control characters, so a path with %0a cannot forge a log line."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class FiniteJSON(DefaultJSONProvider):
    """JSON out without NaN or Infinity: they are not JSON, and a strict client fails on the whole body. A value
    that slipped past validation makes its view fail (a logged 500 internal_error) rather than break clients."""

    def dumps(self, obj, **kwargs) -> str:
        kwargs.setdefault("allow_nan", False)
        return super().dumps(obj, **kwargs)


@dataclass
class EdgeServer:
    """Everything one app owns; reached through app.extensions["edge_server"]."""
    settings: Settings
    catalog: Catalog
    store: ModelStore
    manager: ModelManager
    chats: ChatStore
    generator: Generator
    images: ImageIntake
    api_key: str | None  # what clients must send; None: no key needed (loopback or --no-auth)
    metrics: Metrics
    workers: WorkerList | None = None  # EDGE_WORKERS: devices a model may be split over


def create_app(config: Settings | dict | None = None, registry: BackendRegistry | None = None) -> Flask:
    """Build the app: settings from defaults < EDGE_* environment < `config`."""
    settings = config if isinstance(config, Settings) else build_settings(config)
    app = Flask(__name__, static_folder=None)  # the web app's files are served by api/web.py, under /web/
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json = FiniteJSON(app)
    app.json.sort_keys = False

    catalog = Catalog.load(settings.data_dir / "models.json")
    store = ModelStore(settings)
    metrics = Metrics()
    api_key = resolve_api_key(settings)
    if settings.split not in ("auto", "always"):
        raise ValueError(f"split must be auto or always, not {settings.split!r}")
    workers = (WorkerList(parse_workers(settings.workers), api_key or "", always=settings.split == "always")
               if settings.workers else None)
    manager = ModelManager(settings, catalog, store,
                           registry or build_registry(settings.full, workers, settings.meminfo_path), metrics)
    metrics.watch(manager)
    chats = ChatStore(settings.chats_dir, settings.max_chats_per_model, settings.max_chat_bytes,
                      settings.max_system_prompt_bytes)
    app.extensions["edge_server"] = EdgeServer(settings, catalog, store, manager, chats,
                                               Generator(settings, manager, chats, metrics), ImageIntake(settings),
                                               api_key, metrics, workers)

    register_error_handlers(app)

    @app.before_request
    def _start_timer():  # before the guard, so refused requests are timed too
        g.started = time.perf_counter()

    @app.after_request
    def _log_request(response):
        took = time.perf_counter() - g.get("started", time.perf_counter())
        log.info("%s %s %s %.1fms", request.method, printable(request.path), response.status_code, took * 1000)
        route = request.url_rule.rule if request.url_rule else "unmatched"  # never the raw path: unbounded labels
        method = request.method if request.method in METHODS else "OTHER"  # any token is a method to waitress
        metrics.requests.labels(route, method, str(response.status_code)).inc()
        metrics.duration.labels(route).observe(took)
        return response

    @app.teardown_request
    def _trim_after_big_bodies(exc):
        # A body of megabytes is copied a few times while parsed; give those pages back at once.
        if (request.content_length or 0) > TRIM_AFTER_BODY_BYTES:
            release_free_heap()

    install_guard(app, settings, api_key)
    from .api import chat, generate, heavy, model, ollama, openai, pages, web

    for module in (model, heavy, generate, chat, pages, web, openai, ollama):
        app.register_blueprint(module.bp)
    app.register_blueprint(pages.docs_blueprint())
    return app
