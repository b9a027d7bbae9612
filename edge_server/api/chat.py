"""/chat/*: the server-side chat of each (model, chat_id)."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from ..chats import check_chat_id
from . import edge
from .validation import field, json_body, model_name

bp = Blueprint("chat", __name__, url_prefix="/chat")


def _target(body: dict) -> tuple[str, str]:
    name = model_name(body)
    edge().catalog.get(name)  # any known name, running or not
    return name, check_chat_id(body.get("chat_id"))


@bp.delete("/clearchat")
def clearchat():
    edge().chats.clear(*_target(json_body()))
    return jsonify(None)


@bp.post("/addsystemprompt")
def addsystemprompt():
    body = json_body()
    target = _target(body)
    edge().chats.set_system_prompt(*target, field(body, "system_prompt", str))
    return jsonify(None)


@bp.get("/list")
def list_chats():
    name = model_name(dict(request.args))
    edge().catalog.get(name)
    return jsonify({"model_name": name, "chats": edge().chats.summaries(name)})


@bp.delete("/delete")
def delete():
    edge().chats.delete(*_target(json_body()))
    return jsonify(None)


@bp.get("/getchathistory")
def getchathistory():
    name, chat_id = _target(dict(request.args))
    app = edge()
    return jsonify({"model_name": name, "chat_id": chat_id, **app.chats.get(name, chat_id),
                    "set_aside": app.chats.set_aside(name, chat_id), "answering": app.generator.answering(name, chat_id)})
