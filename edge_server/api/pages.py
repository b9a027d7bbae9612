"""Public pages: the landing page, the liveness answer, the OpenAPI document and Swagger UI at /docs."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .. import __version__
from ..openapi import document

bp = Blueprint("pages", __name__)

# Until the web app lands, / says what this is and where the docs are. No script, so the strictest policy.
LANDING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>edge-server</title></head>
<body>
<h1>edge-server</h1>
<p>This server runs language models for the devices on your network.</p>
<p><a href="/docs/">API documentation (try every endpoint)</a> &middot; <a href="/openapi.json">OpenAPI document</a></p>
</body></html>
"""
CSP = "default-src 'self'"


@bp.get("/")
def landing():
    return Response(LANDING, content_type="text/html; charset=utf-8", headers={"Content-Security-Policy": CSP})


@bp.get("/health")
def health():
    return jsonify({"status": "ok", "version": __version__})


@bp.get("/openapi.json")
def openapi():
    return jsonify(document(__version__))


def docs_blueprint():
    """Swagger UI from flask-swagger-ui's own assets: no request leaves the server (no validator badge)."""
    from flask_swagger_ui import get_swaggerui_blueprint

    return get_swaggerui_blueprint("/docs", "/openapi.json", blueprint_name="docs", config={
        "app_name": "edge-server", "validatorUrl": None, "persistAuthorization": True,
        "displayRequestDuration": True})
