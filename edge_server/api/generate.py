"""/generate/*: streamed answers."""
from __future__ import annotations

from flask import Blueprint, Response, request

from ..chats import check_chat_id
from . import edge
from .validation import field, generation_options, json_body, model_name

bp = Blueprint("generate", __name__, url_prefix="/generate")


def client_gone():
    """waitress' disconnect check (needs channel_request_lookahead); other servers: never."""
    return request.environ.get("waitress.client_disconnected") or (lambda: False)


def stream(answer) -> Response:
    # The Answer object itself is the body, so the server's close() reaches it and frees the model.
    response = Response(answer, content_type="text/plain; charset=utf-8")
    response.headers["X-Accel-Buffering"] = "no"  # proxies such as nginx must not hold chunks back
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.post("/fromtext")
def fromtext():
    body = json_body()
    name = model_name(body)
    prompt = field(body, "prompt", str)
    options = generation_options(body)
    chat_id = check_chat_id(body.get("chat_id"))
    return stream(edge().generator.start(name, prompt, options, chat_id, abandoned=client_gone()))
