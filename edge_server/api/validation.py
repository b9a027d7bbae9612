"""Request parsing shared by the blueprints: JSON bodies, typed fields, sampling options."""
from __future__ import annotations

import json
import math

from flask import request

from ..backends import GenerationOptions
from ..errors import InvalidRequest

REQUIRED = object()
MAX_TOKENS = 1 << 20  # no context or vocabulary is larger; bigger numbers are mistakes (or attacks)
MAX_KEEP_ALIVE = 10 * 365 * 86400  # seconds: the longest idle time any dialect may ask for (ten years)


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _check_text(value) -> None:
    """Refuse lone surrogates ("\\ud800"): valid JSON, but no UTF-8 text, so nothing could store or tokenize it."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidRequest("The body holds text that is not valid Unicode (a lone surrogate).") from None


def json_body() -> dict:
    """Parse the body as a JSON object (the guard in security.py has already checked its Content-Type)."""
    data = request.get_data(cache=True)
    if not data:
        return {}
    try:
        body = json.loads(data, parse_constant=_no_constants)  # NaN and Infinity are not JSON
    except RecursionError:
        raise InvalidRequest("The body is nested too deeply.") from None
    except ValueError:  # also bad UTF-8
        body = None
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    _check_text(body)
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
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            raise InvalidRequest(f"Field {name!r} is out of range.") from None
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise InvalidRequest(f"Field {name!r} must be of type {names}.")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(f"Field {name!r} must be a finite number.")
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


def finish_on_disconnect(body: dict) -> bool:
    """on_disconnect: "stop" (the default: a client that leaves stops the answer) or "finish" (store it all)."""
    value = field(body, "on_disconnect", str, "stop")
    if value not in ("stop", "finish"):
        raise InvalidRequest("Field 'on_disconnect' must be 'stop' or 'finish'.")
    return value == "finish"


def generation_options(body: dict) -> GenerationOptions:
    defaults = GenerationOptions()
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) and s for s in stop)):
        raise InvalidRequest("Field 'stop' must be a string or a list of non-empty strings.")
    return GenerationOptions(
        max_new_tokens=field(body, "max_new_tokens", int, defaults.max_new_tokens, minimum=1, maximum=MAX_TOKENS),
        temperature=field(body, "temperature", float, defaults.temperature, minimum=0.0, maximum=5.0),
        top_p=field(body, "top_p", float, defaults.top_p, minimum=0.0, maximum=1.0),
        top_k=field(body, "top_k", int, defaults.top_k, minimum=0, maximum=MAX_TOKENS),
        repeat_penalty=field(body, "repeat_penalty", float, defaults.repeat_penalty, minimum=0.0, maximum=10.0),
        seed=field(body, "seed", int, None, minimum=0, maximum=2**32 - 2),
        stop=tuple(stop or ()),
    )
