"""/heavy/*: the original project's full-mode launch, kept for its clients."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from ..errors import InvalidRequest
from . import edge
from .validation import json_body, model_name

bp = Blueprint("heavy", __name__, url_prefix="/heavy")


@bp.post("/model/launch")
def launch():
    """Launch a model named in the JSON body or the query string (later clients sent it there), as
    POST /model/launch does with its defaults."""
    body, query = json_body(), request.args.to_dict()
    names = {model_name(where) for where in (body, query) if "model_name" in where}
    if len(names) != 1:
        raise InvalidRequest("Give the model's name once, as model_name in the JSON body or the query string.")
    edge().manager.launch(names.pop())
    return jsonify(None)
