"""Domain errors: each carries an HTTP status and a stable machine-readable code."""
from __future__ import annotations

import logging
from typing import Callable

from flask import Flask, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException

from .backends.base import ModelLost

log = logging.getLogger("edge_server")


class EdgeError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, detail: str, *, status: int | None = None, code: str | None = None, headers=None):
        super().__init__(detail)
        self.detail = detail
        self.status = status or self.status
        self.code = code or self.code
        self.headers = headers or {}


class InvalidRequest(EdgeError):
    status, code = 422, "invalid_request"


class UnsupportedField(EdgeError):
    """A field a dialect defines that this server cannot honour: refused by name rather than ignored."""
    status, code = 422, "unsupported_field"


class ModelNotFound(EdgeError, KeyError):
    status, code = 404, "model_not_found"

    def __str__(self):  # KeyError would quote the message
        return self.detail


class ModelNotRunning(EdgeError):
    status, code = 404, "model_not_running"


class ModelStopped(EdgeError):
    """The model was killed, reloaded, deleted or the server stopped while it answered: the answer is cut short."""
    status, code = 409, "model_stopped"


class ModelNotInstalled(EdgeError):
    status, code = 404, "model_not_installed"


class InsufficientStorage(EdgeError):
    status, code = 507, "insufficient_storage"


class InsufficientMemory(EdgeError):
    status, code = 507, "insufficient_memory"


class HubError(EdgeError):
    status, code = 502, "hub_error"


class Busy(EdgeError):
    status, code = 503, "busy"

    def __init__(self, detail: str, retry_after: int = 2):
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class WorkerLost(EdgeError):
    """A model split across workers lost one (or its process): 503 until it is launched again."""
    status, code = 503, "worker_lost"

    def __init__(self, reason: str):
        super().__init__(f"{reason}; launch the model again (POST /model/launch) once its workers are back.")


class ContextLengthExceeded(EdgeError):
    status, code = 400, "context_length_exceeded"


class ModelLoadError(EdgeError):
    status, code = 500, "model_load_failed"


class ImageInvalid(EdgeError):
    status, code = 422, "image_invalid"


class ImageTooLarge(EdgeError):
    status, code = 413, "image_too_large"


class TooManyImages(EdgeError):
    status, code = 413, "too_many_images"


class LinkNotAllowed(EdgeError):
    status, code = 400, "link_not_allowed"


class FetchFailed(EdgeError):
    status, code = 502, "image_fetch_failed"


class FetchTimeout(EdgeError):
    status, code = 504, "image_fetch_timeout"


class ClientGone(EdgeError):
    status, code = 499, "client_disconnected"


class CatalogError(Exception):
    """A catalog or models.json entry that cannot be used (raised at start-up)."""


_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large",
               415: "unsupported_media_type"}


# Error bodies by path prefix, for the dialects whose clients read their own shape (api/openai.py, api/ollama.py).
_SHAPES: dict[str, Callable[[str, str, int], dict]] = {}


def register_shape(prefix: str, shape: Callable[[str, str, int], dict]) -> None:
    """Answer errors under `prefix` as `shape(detail, code, status)` instead of {"detail", "code"}."""
    _SHAPES[prefix] = shape


def error_body(detail: str, code: str, status: int, headers=None):
    path = request.path if has_request_context() else ""
    shape = next((shape for prefix, shape in _SHAPES.items() if path.startswith(prefix)), None)
    response = jsonify(shape(detail, code, status) if shape else {"detail": detail, "code": code})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def register_error_handlers(app: Flask) -> None:
    """Answer every error with {"detail", "code"}; unexpected ones are logged and leak nothing."""

    @app.errorhandler(EdgeError)
    def _edge(exc: EdgeError):
        return error_body(exc.detail, exc.code, exc.status, exc.headers)

    @app.errorhandler(ModelLost)
    def _lost(exc: ModelLost):  # the model's process went while a request used it (preparing its prompt)
        return _edge(WorkerLost(str(exc)))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        # Keep the exception's own headers (405's Allow), not its HTML Content-Type.
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return error_body(exc.description or exc.name, _HTTP_CODES.get(exc.code, "http_error"), exc.code, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_body("Internal server error.", "internal_error", 500)
