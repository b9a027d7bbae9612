"""Server pages: health, metrics, the OpenAPI document and Swagger UI at /docs (the web app is in web.py)."""
from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify

from .. import __version__
from ..metrics import process_rss
from ..openapi import document
from . import edge

bp = Blueprint("pages", __name__)

@bp.get("/health")
def health():
    """Cheap and public: for a supervisor or a phone checking the server is up."""
    app = edge()
    return jsonify({"status": "ok", "version": __version__, "uptime_seconds": round(time.time() - app.metrics.started),
                    "models_running": [name for name, *_ in app.manager.running()], "rss_bytes": process_rss()})


@bp.get("/metrics")
def metrics():
    """Prometheus text format; needs the key when one is set."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(edge().metrics.text(), content_type=CONTENT_TYPE_LATEST)


@bp.get("/openapi.json")
def openapi():
    return jsonify(document(__version__))


def docs_blueprint():
    """Swagger UI from flask-swagger-ui's own assets: no request leaves the server (no validator badge)."""
    from flask_swagger_ui import get_swaggerui_blueprint

    return get_swaggerui_blueprint("/docs", "/openapi.json", blueprint_name="docs", config={
        "app_name": "edge-server", "validatorUrl": None, "persistAuthorization": True,
        "displayRequestDuration": True})
