"""/generate/*: streamed answers."""
from __future__ import annotations

from functools import partial

from flask import Blueprint, Response, jsonify, request

from ..chats import check_chat_id
from ..errors import ImageInvalid, InvalidRequest, TooManyImages
from . import edge
from .validation import field, finish_on_disconnect, form_body, generation_options, json_body, model_name

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
    return stream(edge().generator.start(name, prompt, options, chat_id, abandoned=client_gone(),
                                         finish=finish_on_disconnect(body)))


@bp.post("/fromimagetext")
def fromimagetext():
    """Multipart (image_files uploads + image_links fields) or JSON (image_links: URLs or data: URIs)."""
    app = edge()
    settings = app.settings
    multipart = request.mimetype == "multipart/form-data"
    body = form_body() if multipart else json_body()
    name = model_name(body)
    prompt = field(body, "prompt", str)
    options = generation_options(body)
    chat_id = check_chat_id(body.get("chat_id"))
    finish = finish_on_disconnect(body)
    links = request.form.getlist("image_links") if multipart else field(body, "image_links", list, [])
    if not all(isinstance(link, str) for link in links):
        raise InvalidRequest("Field 'image_links' must be a list of strings.")
    uploads = request.files.getlist("image_files") if multipart else []
    app.generator.require(name, vision=True)  # fail fast, before fetching anything
    if not links and not uploads:
        raise InvalidRequest("Send at least one image in image_files or image_links.")
    if len(links) + len(uploads) > settings.max_images:
        raise TooManyImages(f"{len(links) + len(uploads)} images sent; the limit is {settings.max_images}.")
    images = []  # loaders: the generator runs them once the request is admitted
    for i, upload in enumerate(uploads):
        label = f"image_files[{i}] ({upload.filename or 'unnamed'})"
        data = upload.stream.read(settings.max_image_bytes + 1)
        if not data:
            raise ImageInvalid(f"{label} is empty.")
        images.append(partial(app.images.upload, data, label))
    images += [partial(app.images.link, link, f"image_links[{i}]") for i, link in enumerate(links)]
    return stream(app.generator.start(name, prompt, options, chat_id, images=images, abandoned=client_gone(),
                                      finish=finish))


@bp.post("/stop")
def stop():
    """End the answer being generated for a chat, also one sent with on_disconnect "finish"."""
    body = json_body()
    name = model_name(body)
    app = edge()
    spec = app.catalog.get(name)
    return jsonify({"stopped": app.generator.stop(spec.name, check_chat_id(body.get("chat_id")))})
