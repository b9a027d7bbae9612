"""The web app: the page at / and its files under /web/, static files from edge_server/web/ (no build step)."""
from __future__ import annotations

import gzip
import hashlib
from functools import lru_cache
from pathlib import Path

from flask import Blueprint, Response, abort, request
from werkzeug.security import safe_join

bp = Blueprint("web", __name__)

WEB = Path(__file__).resolve().parent.parent / "web"
# Only this server's own files run; photos are previewed on canvases, so not even blob: images are needed.
CSP = "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
# Set here rather than guessed from the system's tables (a module script served as anything but
# JavaScript does not run, and Termux's tables are not Debian's).
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8"}


@lru_cache(maxsize=64)
def _file(path: str, mtime_ns: int) -> tuple[bytes, bytes, str]:
    """The file, gzipped (the page is about a third of its size so), and its ETag; cached until it changes."""
    data = Path(path).read_bytes()
    return data, gzip.compress(data, 9, mtime=0), hashlib.sha256(data).hexdigest()[:32]


def _send(name: str) -> Response:
    path = safe_join(str(WEB), name)
    suffix = Path(name).suffix
    if path is None or suffix not in TYPES or not Path(path).is_file():
        abort(404)
    data, packed, etag = _file(path, Path(path).stat().st_mtime_ns)
    zipped = "gzip" in request.headers.get("Accept-Encoding", "")
    response = Response(packed if zipped else data, content_type=TYPES[suffix])
    if zipped:
        response.headers["Content-Encoding"] = "gzip"
    response.headers["Vary"] = "Accept-Encoding"
    response.set_etag(etag + ("-gz" if zipped else ""))
    response.cache_control.no_cache = True  # revalidated by ETag: an upgrade shows at the next load
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response.make_conditional(request)


@bp.get("/")
def index():
    response = _send("index.html")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"  # frame-ancestors' older twin
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/web/<path:name>")
def asset(name: str):
    return _send(name)
