"""Public pages: the liveness answer, the OpenAPI document and Swagger UI at /docs (the web app is in web.py)."""
from __future__ import annotations

from flask import Blueprint, jsonify

from .. import __version__
from ..openapi import document

bp = Blueprint("pages", __name__)

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
