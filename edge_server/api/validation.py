"""Request parsing shared by the blueprints: JSON bodies, typed fields, sampling options."""
from __future__ import annotations

from flask import request

from ..backends import GenerationOptions
from ..errors import InvalidRequest

REQUIRED = object()


def json_body() -> dict:
    """Parse the body as a JSON object (the guard in security.py has already checked its Content-Type)."""
    if not request.get_data(cache=True):
        return {}
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return body


_FORM_NUMBERS = {"max_new_tokens": int, "top_k": int, "seed": int, "temperature": float, "top_p": float,
                 "repeat_penalty": float}


def form_body() -> dict:
    """The single-valued form fields, with the numeric ones converted (multipart sends text)."""
    body = {}
    for key in request.form:
        value = request.form.get(key)
        if key in _FORM_NUMBERS and value != "":
            try:
                value = _FORM_NUMBERS[key](value)
            except ValueError:
                raise InvalidRequest(f"Field {key!r} must be a number.") from None
        body[key] = value
    if "stop" in request.form:
        body["stop"] = request.form.getlist("stop")
    return body


def field(body: dict, name: str, kind, default=REQUIRED, *, minimum=None, maximum=None):
    """Return body[name] checked against `kind` (a type or tuple of types) and bounds."""
    value = body.get(name)
    if value is None:
        if default is REQUIRED:
            raise InvalidRequest(f"Field {name!r} is required.")
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int):
        value = float(value)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise InvalidRequest(f"Field {name!r} must be of type {names}.")
    if minimum is not None and value < minimum:
        raise InvalidRequest(f"Field {name!r} must be at least {minimum}.")
    if maximum is not None and value > maximum:
        raise InvalidRequest(f"Field {name!r} must be at most {maximum}.")
    return value


def model_name(body: dict) -> str:
    name = field(body, "model_name", str)
    if not name:
        raise InvalidRequest("Field 'model_name' must not be empty.")
    return name


def generation_options(body: dict) -> GenerationOptions:
    defaults = GenerationOptions()
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) and s for s in stop)):
        raise InvalidRequest("Field 'stop' must be a string or a list of non-empty strings.")
    return GenerationOptions(
        max_new_tokens=field(body, "max_new_tokens", int, defaults.max_new_tokens, minimum=1),
        temperature=field(body, "temperature", float, defaults.temperature, minimum=0.0, maximum=5.0),
        top_p=field(body, "top_p", float, defaults.top_p, minimum=0.0, maximum=1.0),
        top_k=field(body, "top_k", int, defaults.top_k, minimum=0),
        repeat_penalty=field(body, "repeat_penalty", float, defaults.repeat_penalty, minimum=0.0, maximum=10.0),
        seed=field(body, "seed", int, None, minimum=0, maximum=2**32 - 2),
        stop=tuple(stop or ()),
    )
