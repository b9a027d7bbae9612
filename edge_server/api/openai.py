"""/v1/*: the OpenAI dialect (chat completions, completions, models), for the apps that speak it.

An adapter: requests become one call to the Generator's stateless `complete`, its pieces become
OpenAI's JSON or server-sent events, its EdgeErrors OpenAI's error objects. No chat is stored.
"""
from __future__ import annotations

import json
import time
import uuid

from flask import Blueprint, jsonify

from ..backends import GenerationOptions
from ..errors import EdgeError, InvalidRequest, UnsupportedField, register_shape
from . import edge
from .dialects import SLOT, ImageParts, check_stop, installed_models, stream_response, template, whole_text
from .generate import client_gone
from .validation import MAX_TOKENS, field, json_body

bp = Blueprint("openai", __name__, url_prefix="/v1")
OWNER = "edge-server"


def error_body(detail: str, code: str, status: int) -> dict:
    kind = ("authentication_error" if status == 401 else "permission_error" if status == 403
            else "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": detail, "type": kind, "param": None, "code": code}}


register_shape("/v1/", error_body)


def _model_entry(model: dict) -> dict:
    entry = {"id": model["model_name"], "object": "model", "created": model["created"], "owned_by": OWNER}
    if model["vision"]:
        entry["architecture"] = {"input_modalities": ["text", "image"], "output_modalities": ["text"]}
    return entry


@bp.get("/models")
def models():
    return jsonify({"object": "list", "data": [_model_entry(m) for m in installed_models(edge())]})


@bp.get("/models/<name>")
def model(name: str):
    found = installed_models(edge(), only=name)
    if not found:
        raise EdgeError(f"The model {name!r} does not exist or is not installed.", status=404,
                        code="model_not_found")
    return jsonify(_model_entry(found[0]))


def _options(body: dict) -> GenerationOptions:
    limits = [field(body, key, int, None, minimum=1, maximum=MAX_TOKENS) for key in ("max_completion_tokens",
                                                                                    "max_tokens")]
    maximum = next((limit for limit in limits if limit is not None), MAX_TOKENS)  # the newer name wins
    if field(body, "n", int, 1) != 1:
        raise InvalidRequest("Only n=1 is supported: one choice per request.")
    return GenerationOptions(
        max_new_tokens=maximum,
        temperature=field(body, "temperature", float, 1.0, minimum=0.0, maximum=2.0),
        top_p=field(body, "top_p", float, 1.0, minimum=0.0, maximum=1.0),
        top_k=0,
        repeat_penalty=1.0,
        presence_penalty=field(body, "presence_penalty", float, 0.0, minimum=-2.0, maximum=2.0),
        frequency_penalty=field(body, "frequency_penalty", float, 0.0, minimum=-2.0, maximum=2.0),
        seed=field(body, "seed", int, None, minimum=0, maximum=2**32 - 2),
        stop=check_stop(body.get("stop")),
    )


def _refuse_unhonoured(body: dict, completion: bool = False) -> None:
    """Fields OpenAI defines that this server cannot honour: a client asking for them gets a clear 422 naming the
    field, never an answer that silently lacks what it asked for (JSON that is not JSON, no log probabilities).
    Their "off" values (false, null, "text", one best_of) are accepted: many clients send them always."""
    def refuse(name: str, why: str):
        raise UnsupportedField(f"Field {name!r} is not supported: {why}.")

    if completion:  # /v1/completions: logprobs is a count, echo and suffix shape the text
        if field(body, "logprobs", (bool, int), None) not in (None, False):
            refuse("logprobs", "this server does not report log probabilities")
        if field(body, "echo", bool, False):
            refuse("echo", "the answer never repeats the prompt")
        if field(body, "suffix", str, ""):
            refuse("suffix", "text is only continued at its end (no fill-in-the-middle)")
        if field(body, "best_of", int, 1) != 1:
            refuse("best_of", "one answer is generated per request")
    else:
        if field(body, "logprobs", bool, False):
            refuse("logprobs", "this server does not report log probabilities")
        if field(body, "top_logprobs", int, 0):
            refuse("top_logprobs", "this server does not report log probabilities")
        fmt = field(body, "response_format", dict, {})
        kind = field(fmt, "type", str, "text") if fmt else "text"
        if kind != "text":
            refuse("response_format", f"type {kind!r} (JSON mode) is not available; only \"text\"")
    for name in ("tools", "functions"):
        if field(body, name, list, []):
            refuse(name, "the models here are served without tool calling")
    choice = body.get("tool_choice")
    if choice not in (None, "none", "auto"):
        refuse("tool_choice", "the models here are served without tool calling")


def _messages(body: dict, images: ImageParts) -> list[dict]:
    messages = field(body, "messages", list)
    if not messages:
        raise InvalidRequest("Field 'messages' must hold at least one message.")
    roles = []
    for i, message in enumerate(messages):  # every role before any content: a bad message is 422, wherever it is
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"messages[{i}] must be an object with a 'role'.")
        roles.append({"developer": "system", "tool": "user", "function": "user"}.get(message["role"], message["role"]))
        if roles[-1] not in ("system", "user", "assistant"):
            raise InvalidRequest(f"messages[{i}].role {message['role']!r} is not one of system, user, assistant.")
    return [{"role": role, "content": _content(message.get("content"), f"messages[{i}]", images)}
            for i, (role, message) in enumerate(zip(roles, messages))]


def _content(content, where: str, images: ImageParts) -> str:
    """A message's content as text; image parts go to `images` (fetched once the request is admitted)."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content must be a string or a list of parts.")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str):
                raise InvalidRequest(f"{where}.content[{j}].image_url must hold a url.")
            images.add_link(url, f"{where}.content[{j}]")
        else:
            raise InvalidRequest(f"{where}.content[{j}] must be a text or image_url part.")
    return "\n".join(texts)


def _usage(answer) -> dict:
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens}


def _sse(payload) -> str:
    return f"data: {json.dumps(payload) if not isinstance(payload, str) else payload}\n\n"


@bp.post("/chat/completions")
def chat_completions():
    body = json_body()
    name = field(body, "model", str)
    options = _options(body)
    _refuse_unhonoured(body)
    images = ImageParts(edge())
    messages = _messages(body, images)
    stream = field(body, "stream", bool, False)
    usage_asked = field(field(body, "stream_options", dict, {}), "include_usage", bool, False) and stream
    answer = edge().generator.complete(name, messages, options, images=images.loaders, abandoned=client_gone())
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": name}
    if not stream:
        text = whole_text(answer)
        return jsonify({**head, "object": "chat.completion", "choices": [{
            "index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": answer.finish_reason,
            "logprobs": None}], "usage": _usage(answer)})

    def chunk(delta: dict, finish=None) -> str:
        return _sse({**head, "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]})

    def closing():
        yield chunk({}, answer.finish_reason)
        if usage_asked:  # only when asked: clients that read choices[0] of every chunk fail on it
            yield _sse({**head, "object": "chat.completion.chunk", "choices": [], "usage": _usage(answer)})
        yield _sse("[DONE]")

    piece = template({**head, "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": SLOT}, "finish_reason": None, "logprobs": None}]})
    return stream_response(answer, "text/event-stream", [chunk({"role": "assistant", "content": ""})],
                           lambda text: f"data: {piece(text)}\n\n", closing, _error_event)


def _error_event(exc: EdgeError) -> str:
    return _sse(error_body(exc.detail, exc.code, exc.status))


@bp.post("/completions")
def completions():
    body = json_body()
    name = field(body, "model", str)
    options = _options(body)
    _refuse_unhonoured(body, completion=True)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequest("Field 'prompt' must be a string (or a list of one string).")
    stream = field(body, "stream", bool, False)
    usage_asked = field(field(body, "stream_options", dict, {}), "include_usage", bool, False) and stream
    answer = edge().generator.complete(name, None, options, raw=prompt, abandoned=client_gone())
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": name}
    if not stream:
        text = whole_text(answer)
        return jsonify({**head, "choices": [{"text": text, "index": 0, "logprobs": None,
                                             "finish_reason": answer.finish_reason}], "usage": _usage(answer)})

    def chunk(text: str, finish=None) -> str:
        return _sse({**head, "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]})

    def closing():
        yield chunk("", answer.finish_reason)
        if usage_asked:
            yield _sse({**head, "choices": [], "usage": _usage(answer)})
        yield _sse("[DONE]")

    piece = template({**head, "choices": [{"text": SLOT, "index": 0, "logprobs": None, "finish_reason": None}]})
    return stream_response(answer, "text/event-stream", [], lambda text: f"data: {piece(text)}\n\n", closing,
                           _error_event)
