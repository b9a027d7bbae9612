"""What the OpenAI and Ollama adapters share: installed models, image parts, stop lists, streamed bodies."""
from __future__ import annotations

import base64
import binascii
import json
from functools import partial
from typing import Callable, Iterable

from flask import Response

from ..backends import TEXT
from ..errors import EdgeError, ImageInvalid, InvalidRequest, TooManyImages

MAX_STOPS = 16
SLOT = "\u0001piece\u0001"


def template(payload: dict) -> Callable[..., str]:
    """A function that renders `payload` as JSON with its arguments in place of the SLOT values, in order: the
    envelope is encoded once per answer, and each token costs a string escape or two (the cores that encode
    are the ones that compute the next token)."""
    first, *rest = json.dumps(payload).split(json.dumps(SLOT))
    return lambda *values: first + "".join(json.dumps(value) + part for value, part in zip(values, rest))


def installed_models(app, only: str | None = None) -> list[dict]:
    """The text models this mode can answer with that are on the device (running or not), newest first;
    with `only`, that one model if it is among them."""
    names = app.catalog.names(app.settings.full)
    found = []
    for name in names if only is None else [only] if only in names else []:
        spec = app.catalog.get(name)
        files = app.store.files(spec) if spec.kind in (TEXT, "vision") else None
        if files is None:
            continue
        try:
            created = int(files.model.stat().st_mtime)
        except OSError:
            continue
        found.append({"model_name": name, "spec": spec, "files": files, "vision": spec.kind == "vision",
                      "created": created, "size": app.store.installed_bytes(spec)})
    return sorted(found, key=lambda m: -m["created"])


def whole_text(answer) -> str:
    """A non-streamed answer: all its text, or the error if the model failed partway."""
    text = "".join(answer)
    if answer.failed:
        raise answer.failed
    return text


def check_stop(stop) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > MAX_STOPS:
        raise InvalidRequest(f"Field 'stop' must be a string or a list of at most {MAX_STOPS} strings.")
    return tuple(s for s in stops if s)


class ImageParts:
    """Images of a request, as loaders the Generator runs once the request is admitted (links are fetched
    through the same guard as /generate/fromimagetext, uploads decoded under the same budget)."""

    def __init__(self, app):
        self.app = app
        self.loaders: list[Callable[[], bytes]] = []

    def _room(self) -> None:
        if len(self.loaders) >= self.app.settings.max_images:
            raise TooManyImages(f"More than {self.app.settings.max_images} images in one request.")

    def add_link(self, url: str, label: str) -> None:
        """An http(s) URL or a data: URI."""
        self._room()
        self.loaders.append(partial(self.app.images.link, url, label))

    def add_base64(self, data, label: str) -> None:
        """Bare base64 (Ollama's `images`)."""
        self._room()
        if not isinstance(data, str):
            raise InvalidRequest(f"{label} must be a base64 string.")
        if len(data) > self.app.settings.max_image_bytes * 4 // 3 + 4:
            raise EdgeError(f"{label} is larger than {self.app.settings.max_image_bytes} bytes.", status=413,
                            code="image_too_large")
        try:
            raw = base64.b64decode(data.split(",", 1)[1] if data.startswith("data:") else data, validate=True)
        except (binascii.Error, ValueError):
            raise ImageInvalid(f"{label} is not valid base64.") from None
        self.loaders.append(partial(self.app.images.upload, raw, label))


def stream_response(answer, mimetype: str, opening: Iterable[str], piece: Callable[[str], str],
                    closing: Callable[[], Iterable[str]], error: Callable[[EdgeError], str]) -> Response:
    """A streamed body: the opening lines, a line per piece of the answer, then the closing lines (computed
    at the end, when the finish reason and counts are known), or an error line if the model failed midway.
    Closing the body (the client left, the server stops) closes the answer, which frees the model."""

    def body():
        try:
            yield from opening
            for text in answer:
                yield piece(text)
            yield from ([error(answer.failed)] if answer.failed else closing())
        finally:
            answer.close()

    response = Response(body(), mimetype=mimetype)
    response.headers["X-Accel-Buffering"] = "no"
    response.headers["Cache-Control"] = "no-cache"
    return response
