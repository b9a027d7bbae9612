"""/api/*: the Ollama dialect (chat, generate, tags, ps, show, pull, delete, version).

An adapter like openai.py: requests become the Generator's stateless `complete`, pieces become
NDJSON lines, errors `{"error": "..."}`. Names answer with or without Ollama's `:latest` tag.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from datetime import datetime, timezone

from flask import Blueprint, Response, jsonify

from ..backends import GenerationOptions
from ..backends.gguf_header import describe
from ..errors import EdgeError, InvalidRequest, ModelNotFound, UnsupportedField, register_shape
from ..runtime import CTX_BLOCK
from . import edge
from .dialects import SLOT, ImageParts, check_stop, installed_models, stream_response, template, whole_text
from .generate import client_gone
from .validation import MAX_KEEP_ALIVE, MAX_TOKENS, field, json_body

bp = Blueprint("ollama", __name__, url_prefix="/api")
VERSION = "0.12.0"  # the Ollama API this adapter speaks; clients compare it before using newer fields
NDJSON = "application/x-ndjson"
DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)?$")
UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, None: 1}


def error_body(detail: str, code: str, status: int) -> dict:
    return {"error": detail}


register_shape("/api/", error_body)


def now() -> str:
    """UTC with nine fractional digits and a Z: strict clients (Go's time, Swift's) decode nothing else."""
    return stamp(time.time())


_second: tuple[int, str] = (0, "")  # the last whole second formatted: a stream stamps every token


def stamp(seconds: float) -> str:
    global _second
    whole, prefix = _second
    if int(seconds) != whole:
        whole = int(seconds)
        prefix = datetime.fromtimestamp(whole, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")
        _second = (whole, prefix)
    return f"{prefix}{int((seconds - whole) * 1e9):09d}Z"


def _name(body: dict) -> str:
    """`model` (or `name`, as older clients send it), with Ollama's default tag taken off."""
    for key in ("model", "name"):
        field(body, key, str, "")
    name = body.get("model") or body.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("Field 'model' is required.")
    return name[:-len(":latest")] if name.endswith(":latest") else name


def _keep_alive(value) -> float | None:
    """Ollama's keep_alive ("5m", 300; negative: forever; 0: unload now) in seconds, or None when absent.

    Bounded as /model/launch bounds it: a number past it (1e30, or 1e309, which parses as infinity) would be
    kept, then shown as a non-JSON Infinity by /model/status and overflow the expiry /api/ps computes."""
    if value is None:
        return None
    seconds = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and DURATION.match(value.strip()):
        number, unit = DURATION.match(value.strip()).groups()
        seconds = float(number) * UNITS[unit]
    if seconds is None:
        raise InvalidRequest("Field 'keep_alive' must be a duration such as \"5m\" or a number of seconds.")
    if abs(seconds) > MAX_KEEP_ALIVE or not math.isfinite(seconds):  # abs first: math.isfinite(10**400) overflows
        raise InvalidRequest(f"Field 'keep_alive' must be at most {MAX_KEEP_ALIVE} seconds (negative: forever).")
    return float(seconds)


def _options(body: dict) -> tuple[GenerationOptions, int | None]:
    """The sampling fields from `options`, and num_ctx (used when the request loads the model)."""
    options = field(body, "options", dict, {})
    defaults = GenerationOptions()
    predict = field(options, "num_predict", int, -1, minimum=-2, maximum=MAX_TOKENS)
    num_ctx = field(options, "num_ctx", int, None, minimum=CTX_BLOCK, maximum=MAX_TOKENS)
    return GenerationOptions(
        max_new_tokens=MAX_TOKENS if predict < 0 else max(predict, 1),
        temperature=field(options, "temperature", float, 0.8, minimum=0.0, maximum=5.0),
        top_p=field(options, "top_p", float, 0.9, minimum=0.0, maximum=1.0),
        top_k=field(options, "top_k", int, 40, minimum=0, maximum=MAX_TOKENS),
        repeat_penalty=field(options, "repeat_penalty", float, defaults.repeat_penalty, minimum=0.0, maximum=10.0),
        presence_penalty=field(options, "presence_penalty", float, 0.0, minimum=-2.0, maximum=2.0),
        frequency_penalty=field(options, "frequency_penalty", float, 0.0, minimum=-2.0, maximum=2.0),
        seed=field(options, "seed", int, None, minimum=0, maximum=2**32 - 2),
        stop=check_stop(options.get("stop")),
    ), num_ctx


def _refuse_unhonoured(body: dict) -> None:
    """Fields Ollama defines that this server cannot honour, refused by name (422 unsupported_field) rather than
    ignored: a client that asks for JSON must get JSON or a clear no. Their "off" values are accepted."""
    fmt = body.get("format")
    if fmt not in (None, ""):
        if not isinstance(fmt, (str, dict)):
            raise InvalidRequest("Field 'format' must be \"json\" or a JSON schema object.")
        raise UnsupportedField("Field 'format' is not supported: JSON mode and JSON schemas are not available "
                               "here; leave 'format' out for plain text.")
    if field(body, "tools", list, []):
        raise UnsupportedField("Field 'tools' is not supported: the models here are served without tool calling.")
    think = body.get("think")
    if think not in (None, False):
        if not isinstance(think, (bool, str)):
            raise InvalidRequest("Field 'think' must be a boolean (or \"high\", \"medium\", \"low\").")
        raise UnsupportedField("Field 'think' is not supported: the models here are served without a separate "
                               "thinking output; leave it out or send false.")


def _details(model: dict) -> dict:
    info = describe(model["files"].model) if model["spec"].backend == "llama-cpp" else {}
    family = info.get("architecture") or ""
    return {"parent_model": "", "format": "gguf" if model["spec"].backend == "llama-cpp" else "safetensors",
            "family": family, "families": [family] if family else None,
            "parameter_size": info.get("parameter_size", ""), "quantization_level": info.get("quantization", "")}


def _digest(model: dict) -> str:
    return hashlib.sha256(f"{model['model_name']}:{model['size']}:{model['created']}".encode()).hexdigest()


def _entry(model: dict) -> dict:
    name = model["model_name"] + ":latest"
    return {"name": name, "model": name, "modified_at": stamp(model["created"]), "size": model["size"],
            "digest": _digest(model), "details": _details(model)}


def _installed(name: str) -> dict:
    app = edge()
    app.catalog.get(name)  # unknown: model_not_found
    for model in installed_models(app, only=name):
        return model
    raise ModelNotFound(f"model '{name}' not found, try pulling it first")


@bp.get("/version")
def version():
    return jsonify({"version": VERSION})


@bp.get("/tags")
def tags():
    return jsonify({"models": [_entry(m) for m in installed_models(edge())]})


@bp.get("/ps")
def ps():
    app = edge()
    running = set(app.manager.active())
    models = []
    for model in installed_models(app):
        if model["model_name"] in running:
            status = app.manager.status(model["model_name"])
            until = time.time() + (status.get("keep_alive") or MAX_KEEP_ALIVE)  # 0: kept until killed
            models.append({**_entry(model), "expires_at": stamp(until), "size_vram": 0,
                           "context_length": status.get("n_ctx")})
    return jsonify({"models": models})


@bp.post("/show")
def show():
    model = _installed(_name(json_body()))
    info = describe(model["files"].model) if model["spec"].backend == "llama-cpp" else {}
    architecture = info.get("architecture", "")
    model_info = {"general.architecture": architecture, "general.parameter_count": info.get("parameter_count")}
    if info.get("context_length"):
        model_info[f"{architecture}.context_length"] = info["context_length"]
    return jsonify({"modelfile": f"FROM {model['model_name']}\n", "parameters": "", "license": "",
                    "template": info.get("chat_template", ""), "details": _details(model), "model_info": model_info,
                    "capabilities": ["completion"] + (["vision"] if model["vision"] else []),
                    "modified_at": stamp(model["created"])})


def _stats(answer) -> dict:
    return {"done_reason": answer.finish_reason, "total_duration": answer.durations["total"],
            "load_duration": answer.durations["load"], "prompt_eval_count": answer.prompt_tokens,
            "prompt_eval_duration": answer.durations["prompt"], "eval_count": answer.completion_tokens,
            "eval_duration": answer.durations["eval"]}


def _answer(name: str, body: dict, messages, raw: str | None, images: ImageParts, shape):
    """Run the request and answer NDJSON lines (or one object without streaming); `shape(text)` is the part
    of each line that holds the text ({"message": ...} or {"response": ...})."""
    options, num_ctx = _options(body)
    _refuse_unhonoured(body)
    keep = _keep_alive(body.get("keep_alive"))
    # Our keep_alive: seconds idle before an unload, 0 never. Ollama's 0 (unload now) applies to a load request.
    keep_alive = None if not keep else 0.0 if keep < 0 else keep
    stream = field(body, "stream", bool, True)
    app = edge()
    if not messages and raw is None:  # Ollama's way to load a model, or with keep_alive 0 to unload it
        _installed(name)
        if keep == 0:
            if name in app.manager.active():
                app.manager.kill(name)
            return jsonify({"model": name, "created_at": now(), **shape(""), "done_reason": "unload", "done": True})
        app.generator.ready(name, n_ctx=num_ctx, keep_alive=keep_alive)
        return jsonify({"model": name, "created_at": now(), **shape(""), "done_reason": "load", "done": True})
    answer = app.generator.complete(name, messages, options, images=images.loaders, raw=raw,
                                    abandoned=client_gone(), n_ctx=num_ctx, keep_alive=keep_alive)
    if not stream:
        text = whole_text(answer)
        return jsonify({"model": name, "created_at": now(), **shape(text), "done": True, **_stats(answer)})

    def line(payload: dict) -> str:
        return json.dumps(payload) + "\n"

    piece = template({"model": name, "created_at": SLOT, **shape(SLOT), "done": False})
    return stream_response(
        answer, NDJSON, [], lambda text: piece(now(), text) + "\n",
        lambda: [line({"model": name, "created_at": now(), **shape(""), "done": True, **_stats(answer)})],
        lambda exc: line({"error": exc.detail}))


@bp.post("/chat")
def chat():
    body = json_body()
    name = _name(body)
    images = ImageParts(edge())
    messages = []
    for i, message in enumerate(field(body, "messages", list, [])):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant", "tool"):
            raise InvalidRequest(f"messages[{i}] must be an object with role system, user or assistant.")
        content = message.get("content") or ""
        if not isinstance(content, str):
            raise InvalidRequest(f"messages[{i}].content must be a string.")
        for j, data in enumerate(field(message, "images", list, []) or []):
            images.add_base64(data, f"messages[{i}].images[{j}]")
        messages.append({"role": "user" if message["role"] == "tool" else message["role"], "content": content})
    return _answer(name, body, messages, None, images,
                   lambda text: {"message": {"role": "assistant", "content": text}})


@bp.post("/generate")
def generate():
    body = json_body()
    name = _name(body)
    prompt = field(body, "prompt", str, "")
    system = field(body, "system", str, "")
    images = ImageParts(edge())
    for j, data in enumerate(field(body, "images", list, []) or []):
        images.add_base64(data, f"images[{j}]")
    if not prompt and not images.loaders:
        return _answer(name, body, [], None, images, lambda text: {"response": text})
    if field(body, "raw", bool, False):
        return _answer(name, body, None, prompt, images, lambda text: {"response": text})
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return _answer(name, body, messages, None, images, lambda text: {"response": text})


@bp.post("/pull")
def pull():
    """Download a model with the store's own code, streaming its progress the way `ollama pull` shows it."""
    body = json_body()
    name = _name(body)
    app = edge()
    app.manager.spec(name)  # unknown or not for this mode: an error now, before any line
    if not field(body, "stream", bool, True):
        app.manager.pull(name)
        return jsonify({"status": "success"})
    outcome: dict = {}

    def work():
        try:
            app.manager.pull(name)
        except EdgeError as exc:
            outcome["error"] = exc.detail
        except Exception:  # noqa: BLE001 - reported as a line; the server log has the rest
            outcome["error"] = f"pulling {name} failed"

    def lines():
        worker = threading.Thread(target=work, name=f"pull-{name}", daemon=True)
        worker.start()
        try:
            yield json.dumps({"status": "pulling manifest"}) + "\n"
            digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
            while worker.is_alive():
                worker.join(0.25)
                status = app.manager.status(name)
                if status.get("bytes_total"):
                    yield json.dumps({"status": f"pulling {digest[7:19]}", "digest": digest, "total":
                                      status["bytes_total"], "completed": status.get("bytes_done") or 0}) + "\n"
        finally:
            if worker.is_alive():  # the client left (`ollama pull` cancelled): so does the download
                app.manager.cancel_download(name)
        if "error" in outcome:
            yield json.dumps({"error": outcome["error"]}) + "\n"
            return
        for status in ("verifying sha256 digest", "writing manifest", "success"):
            yield json.dumps({"status": status}) + "\n"

    return Response(lines(), mimetype=NDJSON, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@bp.delete("/delete")
def delete():
    name = _name(json_body())
    app = edge()
    _installed(name)
    app.manager.delete(name)
    app.chats.delete_model(name)
    return Response(status=200)
