"""/model/*: catalog, lifecycle and status of models."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from ..memory import available_memory, free_disk
from ..runtime import MAX_PARALLEL
from . import edge
from .validation import MAX_KEEP_ALIVE, MAX_TOKENS, field, json_body, model_name

bp = Blueprint("model", __name__, url_prefix="/model")


@bp.post("/launch")
def launch():
    body = json_body()
    name = model_name(body)
    n_ctx = field(body, "n_ctx", int, None, maximum=MAX_TOKENS)
    keep_alive = field(body, "keep_alive", (int, float), None, minimum=0, maximum=MAX_KEEP_ALIVE)
    parallel = field(body, "parallel", int, None, minimum=1, maximum=MAX_PARALLEL)
    edge().manager.launch(name, n_ctx, keep_alive, force=field(body, "force", bool, False), parallel=parallel)
    return jsonify(None)


@bp.delete("/kill")
def kill():
    edge().manager.kill(model_name(json_body()))
    return jsonify(None)


@bp.delete("/delete")
def delete():
    name = model_name(json_body())
    app = edge()
    app.manager.delete(name)
    app.chats.delete_model(name)
    return jsonify(None)


@bp.get("/list")
def list_models():
    app = edge()
    return jsonify({"models": app.manager.listing(), "free_memory_bytes": available_memory(app.settings.meminfo_path),
                    "free_disk_bytes": free_disk(app.settings.data_dir)})


@bp.get("/getactive")
def getactive():
    return jsonify(edge().manager.active())


@bp.get("/getavailabletodownload")
def available():
    app = edge()
    return jsonify(app.catalog.names(app.settings.full))


@bp.route("/ismodelheavy", methods=["GET", "POST"])
def ismodelheavy():
    body = json_body() if request.method == "POST" or not request.args else dict(request.args)
    return jsonify({"is_heavy": edge().catalog.get(model_name(body)).heavy})


@bp.get("/status")
def status():
    return jsonify(edge().manager.status(model_name(dict(request.args))))


