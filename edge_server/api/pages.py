"""Server pages: health, metrics, the OpenAPI document and Swagger UI at /docs (the web app is in web.py)."""
from __future__ import annotations

import base64
import hashlib
import re
import time

from flask import Blueprint, Response, jsonify

from ..memory import resident_memory
from ..version import __version__
from ..openapi import document
from ..security import key_given
from . import edge

bp = Blueprint("pages", __name__)

@bp.get("/health")
def health():
    """Cheap and public: for a supervisor or a phone checking the server is up (the workers need the key)."""
    app = edge()
    body = {"status": "ok", "version": __version__, "uptime_seconds": round(time.time() - app.metrics.started),
            "models_running": [name for name, *_ in app.manager.running()], "rss_bytes": resident_memory()}
    # EDGE_WORKERS: each one's state, and the running models split over it. Asking them takes connections to
    # the workers: not for strangers (/health is public), only with the key when there is one.
    if app.workers and (app.api_key is None or key_given(app.api_key)):
        users = app.manager.split_over()
        body["workers"] = [{**worker, "models": users.get(worker["address"], [])} for worker in app.workers.survey()]
    return jsonify(body)


@bp.get("/metrics")
def metrics():
    """Prometheus text format; needs the key when one is set."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(edge().metrics.text(), content_type=CONTENT_TYPE_LATEST)


@bp.get("/openapi.json")
def openapi():
    return jsonify(document(__version__))


# /docs gets the page's protections: only this server's files run, nothing may frame it (a framing page could
# trick a click on "Execute"). Swagger UI needs its one inline script (allowed by its hash, computed from what is
# sent), data: images (its icons), inline styles (it sets some as it renders; styles run no code) and fetches to
# this server ("Try it out"), nothing more.
DOCS_CSP = ("default-src 'self'; script-src 'self' {scripts}; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)
# Swagger UI's page has no viewport meta: a phone laid it out 980 px wide and shrank it to unreadable. With the
# meta it is laid out at the phone's width; these rules keep the few wide parts (long paths, tables, the
# models) inside it, scrolling sideways on their own rather than the whole page.
PHONE_HEAD = b"""<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
@media (max-width: 640px) {
  .swagger-ui .wrapper { padding: 0 8px; }
  .swagger-ui .info { margin: 16px 0; }
  .swagger-ui .info .title { font-size: 24px; }
  .swagger-ui .scheme-container { padding: 12px 0; }
  .swagger-ui .opblock .opblock-summary { flex-wrap: wrap; }
  .swagger-ui .opblock .opblock-summary-path { flex-shrink: 1; max-width: calc(100% - 90px); word-break: break-all;
    font-size: 15px; }
  .swagger-ui .opblock .opblock-summary-description { font-size: 14px; flex-basis: 100%; padding-top: 4px; }
  .swagger-ui .opblock-body, .swagger-ui .responses-inner, .swagger-ui .model-box, .swagger-ui .highlight-code,
  .swagger-ui .table-container { max-width: 100%; overflow-x: auto; }
  .swagger-ui table { display: block; max-width: 100%; overflow-x: auto; }
  .swagger-ui .parameters-col_description input, .swagger-ui textarea { max-width: 100%; }
  .swagger-ui .dialog-ux .modal-ux { width: 94%; min-width: 0; }
}
</style>
"""


def protect_docs(response: Response) -> Response:
    """The headers every /docs response gets (the page and its assets)."""
    if response.mimetype == "text/html":  # a page sent as a file (oauth2-redirect.html, unused here) runs none
        body = b"" if response.is_streamed or response.direct_passthrough else response.get_data()
        if b"</head>" in body and b'name="viewport"' not in body:  # last in the head: after Swagger UI's CSS
            body = body.replace(b"</head>", PHONE_HEAD + b"</head>", 1)
            response.set_data(body)
        hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
                          for script in _INLINE_SCRIPT.findall(body))
        response.headers["Content-Security-Policy"] = DOCS_CSP.format(scripts=hashes)
    response.headers["X-Frame-Options"] = "DENY"  # frame-ancestors' older twin, for browsers without CSP 2
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def docs_blueprint():
    """Swagger UI from flask-swagger-ui's own assets: no request leaves the server (no validator badge)."""
    from flask_swagger_ui import get_swaggerui_blueprint

    docs = get_swaggerui_blueprint("/docs", "/openapi.json", blueprint_name="docs", config={
        "app_name": "edge-server", "validatorUrl": None, "persistAuthorization": True,
        "displayRequestDuration": True})
    docs.after_request(protect_docs)
    return docs
