"""/heavy/*: the original project's full-mode launch, kept for its clients."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from . import edge
from .validation import json_body, model_name

bp = Blueprint("heavy", __name__, url_prefix="/heavy")


@bp.post("/model/launch")
def launch():
    """Launch a model named in the JSON body or the query string (later clients sent it there), as
    POST /model/launch does with its defaults."""
    body = json_body()
    edge().manager.launch(model_name(body if "model_name" in body else request.args.to_dict()))
    return jsonify(None)
