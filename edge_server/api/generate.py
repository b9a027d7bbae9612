"""/generate/*: streamed answers."""
from __future__ import annotations

from functools import partial

from flask import Blueprint, Response, jsonify, request

from ..backends import IMAGE_OUT, SPEECH_OUT, PictureRequest
from ..chats import check_chat_id
from ..errors import EdgeError, ImageInvalid, InvalidRequest, TooManyImages
from ..media import encode_image, encode_wav, image_type
from . import edge
from .validation import field, finish_on_disconnect, form_body, generation_options, json_body, model_name

bp = Blueprint("generate", __name__, url_prefix="/generate")


def client_gone():
    """waitress' disconnect check (needs channel_request_lookahead); other servers: never."""
    return request.environ.get("waitress.client_disconnected") or (lambda: False)


class StreamCut(Exception):
    """Raised into the server after the last piece of an answer that did not finish (its model was stopped, or
    failed): waitress then closes the connection without the chunked body's final chunk, so a client sees an
    incomplete body (curl: exit 18; requests: ChunkedEncodingError) instead of a complete answer. Plain text
    has no other way to say so once the status line is sent."""


class _Body:
    """The answer as a response body; the server's close() reaches the Answer (even unread) and frees the model."""

    def __init__(self, answer):
        self.answer = answer

    def __iter__(self):
        return self

    def __next__(self) -> str:
        try:
            return next(self.answer)
        except StopIteration:
            if self.answer.failed is not None:
                raise StreamCut(f"{self.answer.failed.code}: {self.answer.failed.detail}") from None
            raise

    def close(self) -> None:
        self.answer.close()


def stream(answer) -> Response:
    response = Response(_Body(answer), content_type="text/plain; charset=utf-8")
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


@bp.post("/imagefromtext")
def imagefromtext():
    """Full mode: draw a picture; PNG, or JPEG when Accept prefers it. The size drawn is in X-Image-Size."""
    body = json_body()
    app = edge()
    settings = app.settings
    name = model_name(body)
    prompt = field(body, "prompt", str)
    side = field(body, "image_size", int, 1024, minimum=64, maximum=settings.max_image_side)
    steps = field(body, "inference_steps", int, 20, minimum=1, maximum=settings.max_inference_steps)
    negative = field(body, "negative_prompt", str, "")
    seed = field(body, "seed", int, None, minimum=0, maximum=2**32 - 1)
    guidance = field(body, "guidance_scale", float, None, minimum=0.0, maximum=50.0)
    if len(prompt.encode("utf-8")) + len(negative.encode("utf-8")) > settings.max_prompt_bytes:
        raise EdgeError("The prompts are longer than the prompt limit.", status=413, code="prompt_too_large")
    mimetype = image_type(request.accept_mimetypes)
    width, height = app.generator.require(name, need=IMAGE_OUT).model.fit_size(side, side)
    picture = PictureRequest(prompt, width, height, steps, negative, seed, guidance)
    image = app.generator.produce(name, IMAGE_OUT, lambda model, cancelled: model.paint(picture, cancelled),
                                  abandoned=client_gone())[-1]
    response = Response(encode_image(image, mimetype), mimetype=mimetype)
    response.headers["X-Image-Size"] = f"{image.width}x{image.height}"
    if (image.width, image.height) != (side, side):
        response.headers["X-Image-Size-Note"] = (f"{side}x{side} was asked; this model draws sizes in steps, "
                                                 f"so it drew {image.width}x{image.height}")
    return response


@bp.post("/texttospeech")
def texttospeech():
    """Full mode: read the prompt aloud; one 16-bit PCM WAV file, long texts spoken a sentence at a time."""
    body = json_body()
    app = edge()
    name = model_name(body)
    prompt = field(body, "prompt", str)
    if not prompt.strip():
        raise InvalidRequest("Field 'prompt' must hold some text to speak.")
    if len(prompt) > app.settings.max_speech_chars:
        raise EdgeError(f"The text is {len(prompt)} characters; the limit is {app.settings.max_speech_chars}.",
                        status=413, code="prompt_too_large")
    model = app.generator.require(name, need=SPEECH_OUT).model
    pieces = app.generator.produce(name, SPEECH_OUT, lambda model, cancelled: model.speak(prompt),
                                   abandoned=client_gone())
    if not pieces:
        raise InvalidRequest("Nothing in the text is in this model's alphabet (another language or script?).")
    return Response(encode_wav(pieces, model.sampling_rate), mimetype="audio/wav")

