"""Who may call the API: the key, Host and Origin checks, body types and CORS, in one before_request layer.

A browser on the phone itself talks to loopback, so the cross-site checks hold even without a key: a
hostile page can send a "simple" POST (text/plain or a form) with no CORS preflight, and a page whose
own domain resolves to this server (DNS rebinding) can read answers unless the Host is checked.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import os
import re
import secrets
import socket
from pathlib import Path

from flask import Flask, request

from .errors import EdgeError
from .settings import Settings

# Reachable without the key: the page, its assets, the docs, the document and the liveness answer.
PUBLIC_PATHS = frozenset({"/", "/health", "/openapi.json", "/docs"})
PUBLIC_PREFIXES = ("/docs/", "/web/")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
JSON_TYPES = frozenset({"", "application/json"})  # no Content-Type: FastAPI clients sometimes send none
UPLOAD_ENDPOINTS = frozenset({"generate.fromimagetext"})  # where the spec has file uploads (multipart)
KEY_NEEDED = "This server needs its API key (`edge-server key` prints it). Send it as 'Authorization: Bearer <key>'"
# What a 401 adds for each dialect's clients: some (llm-ollama) show an empty model list, not the error, so the
# body is where a user who looks finds how their client sends the key.
KEY_HOW = {
    "/api/": ("Ollama clients: ollama-python Client(host='http://HOST:PORT', headers={'Authorization': 'Bearer "
              "<key>'}); ollama-js new Ollama({host: 'http://HOST:PORT', headers: {Authorization: 'Bearer <key>'}}); "
              "llm-ollama and clients that take only a URL: put the key in it as the password, "
              "OLLAMA_HOST=http://edge:<key>@HOST:PORT (any user name); apps with an API key field (Open WebUI, "
              "Enchanted): the key there. The `ollama` command itself cannot send a key."),
    "/v1/": "OpenAI clients: the key is their api_key (OPENAI_API_KEY, or the app's API key field).",
}


class Unauthorized(EdgeError):
    status, code = 401, "unauthorized"

    def __init__(self, detail: str):
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_or_create_key(path: Path, rotate: bool = False) -> str:
    """Return the key kept in `path` (mode 0600), making a new random one if there is none or on rotate."""
    if not rotate:
        try:
            key = path.read_text().strip()
            if key:
                os.chmod(path, 0o600)  # someone may have widened it
                return key
        except FileNotFoundError:
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(24)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a stale temp file may have had a wider mode
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.replace(tmp, path)
    return key


def resolve_api_key(settings: Settings) -> str | None:
    """The key clients must send: the configured one; else, off loopback, the one kept in the data dir."""
    if settings.api_key:
        return settings.api_key
    if settings.no_auth or is_loopback(settings.host):
        return None
    return read_or_create_key(settings.key_file)


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _hostname(host_header: str) -> str:
    """The name or address in a Host header, without its port."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def key_given(api_key: str) -> bool:
    """Whether the request carries `api_key`: Bearer, X-API-Key, or Basic with the key as its password (a key
    in a URL: http://edge:<key>@host)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        given = token.strip()
    elif scheme.lower() == "basic":
        try:
            given = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, ValueError):
            given = ""
    else:
        given = request.headers.get("X-API-Key", "")
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), api_key.encode())


class Guard:
    """The checks every request passes before its view runs."""

    def __init__(self, settings: Settings, api_key: str | None):
        self.api_key = api_key
        self.cors_origins = [o.rstrip("/").lower() for o in _split(settings.cors_origins)]
        own = socket.gethostname().lower()
        names = {"localhost", own, own.split(".")[0] + ".local", *(h.lower() for h in _split(settings.allowed_hosts))}
        self.host_names = frozenset(names)

    def host_allowed(self, host_header: str) -> bool:
        name = _hostname(host_header).lower().rstrip(".")
        if "*" in self.host_names or name in self.host_names or name.endswith(".localhost"):
            return True
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return False

    def origin_allowed(self, origin: str) -> bool:
        if origin == f"{request.scheme}://{request.host}":
            return True  # the server's own pages
        return "*" in self.cors_origins or origin.rstrip("/").lower() in self.cors_origins

    def check(self) -> None:
        """Raise the error the current request should get, if any."""
        if not self.host_allowed(request.host):
            raise EdgeError(f"Host {request.host!r} is not allowed; add it with --allowed-hosts.", status=403,
                            code="host_not_allowed")
        if request.method == "OPTIONS":
            return  # preflights carry no credentials; CORS answers them
        origin = request.headers.get("Origin")
        if origin is not None and request.method not in SAFE_METHODS and not self.origin_allowed(origin):
            raise EdgeError(f"Requests from {origin!r} are not allowed; add it with --cors-origins.", status=403,
                            code="origin_not_allowed")
        public = request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES)
        if self.api_key and not public and not key_given(self.api_key):
            how = next((how for prefix, how in KEY_HOW.items() if request.path.startswith(prefix)), "")
            raise Unauthorized(f"{KEY_NEEDED}, 'X-API-Key: <key>', or as the password of HTTP basic auth. {how}".strip())
        if request.method not in SAFE_METHODS and request.routing_exception is None:  # else 404/405 first
            kind = request.mimetype
            if kind not in JSON_TYPES and not (kind == "multipart/form-data" and request.endpoint in UPLOAD_ENDPOINTS):
                allowed = "application/json" + (" or multipart/form-data" if request.endpoint in UPLOAD_ENDPOINTS else "")
                raise EdgeError(f"Send the body as {allowed}, not {kind!r}.", status=415, code="unsupported_media_type")


def install(app: Flask, settings: Settings, api_key: str | None) -> Guard:
    """Put the guard in front of every view and answer CORS for the allowed origins."""
    guard = Guard(settings, api_key)
    app.before_request(guard.check)
    if guard.cors_origins:
        from flask_cors import CORS

        # flask-cors reads an origin with regex characters as an unanchored pattern: give it exact ones,
        # so it agrees with origin_allowed. Preflights echo whatever headers are asked for (the openai
        # client sends many x-stainless-*).
        origins = [o if o == "*" else re.compile(re.escape(o) + r"\Z", re.IGNORECASE) for o in guard.cors_origins]
        CORS(app, origins=origins, allow_headers="*", allow_private_network=True,
             expose_headers=["Retry-After", "Content-Type"], max_age=600)
    return guard
