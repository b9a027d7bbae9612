"""The web app: the page at / and its files under /web/, static files from edge_server/web/ (no build step)."""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, send_from_directory

bp = Blueprint("web", __name__)

WEB = Path(__file__).resolve().parent.parent / "web"
# Only this server's own files run; photos are previewed on canvases, so not even blob: images are needed.
CSP = "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
# Set here rather than guessed from the system's tables (a module script served as anything but
# JavaScript does not run, and Termux's tables are not Debian's).
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8",
         ".png": "image/png"}


def _send(name: str):
    response = send_from_directory(WEB, name, mimetype=TYPES.get(Path(name).suffix, "application/octet-stream"))
    response.cache_control.no_cache = True  # revalidated by ETag: an upgrade shows at the next load
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/")
def index():
    response = _send("index.html")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/web/<path:name>")
def asset(name: str):
    return _send(name)
