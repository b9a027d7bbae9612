"""The OpenAPI 3.1 document of every route: the spec's eight endpoints and all added since.

Written as data rather than derived from the views: the server has no schema library (pydantic does
not build in Termux), and a test keeps this document and Flask's URL map equal.
"""
from __future__ import annotations

import re
from functools import cache

from .openapi_dialects import dialect_paths
from .openapi_parts import CODES, _HUB, _MEDIA, _STREAM, _json, _object, _op, _query  # noqa: F401 - CODES for its readers

MODEL_NAME = {"type": "string", "minLength": 1, "description": "A catalog name (GET /model/getavailabletodownload).",
              "examples": ["gemma-3-270m-it"]}
CHAT_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "default": "default",
           "description": "Which of the model's chats; each keeps its own history."}
NULL = {"description": "Done", "content": {"application/json": {"schema": {"type": "null"}}}}
STREAM = {"description": "The answer, streamed token by token as chunked UTF-8 text",
          "content": {"text/plain": {"schema": {"type": "string"}}}}
STRINGS = {"type": "array", "items": {"type": "string"}}

OPTIONS = {
    "max_new_tokens": {"type": "integer", "minimum": 1, "maximum": 1 << 20, "default": 512,
                       "description": "Tokens to generate at most."},
    "temperature": {"type": "number", "minimum": 0, "maximum": 5, "default": 0.7, "description": "0 is greedy."},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.95},
    "top_k": {"type": "integer", "minimum": 0, "maximum": 1 << 20, "default": 40},
    "repeat_penalty": {"type": "number", "minimum": 0, "maximum": 10, "default": 1.1},
    "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 2},
    "stop": {"description": "Strings that end the answer.",
             "anyOf": [{"type": "string", "minLength": 1}, {"type": "array", "items": {"type": "string", "minLength": 1}}]},
    "chat_id": CHAT_ID,
    "on_disconnect": {"enum": ["stop", "finish"], "default": "stop",
                      "description": "stop: a client that goes away stops the answer; finish: it is generated to "
                                     "the end and stored (a phone whose screen locks)"},
}


def _paths() -> dict:
    named = _json(_object(["model_name"], model_name=MODEL_NAME))
    by_name = _query("model_name", MODEL_NAME)
    text_body = _object(["model_name", "prompt"], model_name=MODEL_NAME, prompt={"type": "string"}, **OPTIONS)
    image_json = _object(["model_name", "prompt", "image_links"], model_name=MODEL_NAME, prompt={"type": "string"},
                         image_links={**STRINGS, "description": "http(s) URLs or data:image/...;base64, URIs"},
                         **OPTIONS)
    image_form = _object(["model_name", "prompt"], model_name=MODEL_NAME, prompt={"type": "string"},
                         image_files={"type": "array", "items": {"type": "string", "contentMediaType": "image/*"}},
                         image_links=STRINGS, **{k: v for k, v in OPTIONS.items() if k != "stop"},
                         stop={"type": "array", "items": {"type": "string", "minLength": 1}})
    image_errors = _STREAM + ("model_not_multimodal", "image_invalid", "image_too_large", "too_many_images",
                              "link_not_allowed", "image_fetch_failed", "image_fetch_timeout")
    status = _object(["model_name", "state", "bytes_done", "bytes_total"], model_name={"type": "string"},
                     state={"enum": ["absent", "downloading", "loading", "installed", "running"]},
                     bytes_done={"type": ["integer", "null"]}, bytes_total={"type": ["integer", "null"]},
                     n_ctx={"type": "integer"}, n_threads={"type": "integer", "description": "CPU threads it computes with"},
                     parallel={"type": "integer", "description": "Streams it answers at once, decoded together and "
                               "sharing one cache of n_ctx tokens"},
                     active={"type": "integer", "description": "Of those, the ones answering now"},
                     queued={"type": "integer", "description": "Requests waiting for a free stream"},
                     keep_alive={"type": "number", "description": "Seconds idle before it is unloaded (0: never)"},
                     cache_used={"type": "integer", "description": "Tokens its cache holds now, of n_ctx (running "
                                 "streams, and chats' earlier turns kept for their next)"},
                     memory_bytes={"type": ["integer", "null"], "description": "Memory the server grew by when it "
                                   "loaded the model (weights read, caches made), measured; for a model split over "
                                   "workers, the memory of the process holding this device's part"},
                     workers={"type": "array", "items": {"type": "string"}, "description": "Only for a model split "
                              "over workers (EDGE_WORKERS): their addresses, beside this device"},
                     lost={"type": ["string", "null"], "description": "With workers: why the model is lost (a worker "
                           "died or left the network; requests get 503 worker_lost until it is launched again)"},
                     idle_unloaded_at={"type": "integer", "description": "Unix time it was unloaded for being "
                                                                         "idle; the next request loads it again"})
    turn = _object(["role", "content"], role={"enum": ["user", "assistant"]}, content={"type": "string"},
                   images={"type": "integer", "description": "A question's photos (counted, not kept)"},
                   finish_reason={"const": "length", "description": "Only on an answer cut at its token limit "
                                                                    "(max_new_tokens, or the context's end)"},
                   completion_tokens={"type": "integer", "description": "With finish_reason: the tokens it had"})
    history = _object(["model_name", "chat_id", "system_prompt", "turns", "set_aside", "answering"],
                      model_name={"type": "string"},
                      chat_id={"type": "string"}, system_prompt={"type": ["string", "null"]},
                      turns={"type": "array", "items": turn},
                      context_start={"type": "integer", "description": "Turns before this index are kept but no "
                                                                       "longer sent to the model (the chat outgrew "
                                                                       "its context)"},
                      set_aside={**STRINGS, "description": "Files of this chat that could not be read and were moved "
                                                          "aside (the chat starts empty); cleared by clearchat"},
                      answering={"type": "boolean", "description": "An answer for this chat is being generated "
                                                                   "(it is stored when done)"})
    models = _object(["models", "free_memory_bytes", "free_disk_bytes"],
                     models={"type": "array", "items": {"allOf": [status, _object(
                         ["kind", "vision", "heavy", "size", "description", "local"], kind={"type": "string"},
                         vision={"type": "boolean"}, heavy={"type": "boolean"}, size={"type": ["integer", "null"]},
                         description={"type": "string"}, local={"type": "boolean", "description": (
                             "Its file is the user's (a `path` in models.json): delete forgets its chats and "
                             "never removes the file")})]}},
                     free_memory_bytes={"type": ["integer", "null"]}, free_disk_bytes={"type": ["integer", "null"]})
    summary = _object(["chat_id", "title", "turns", "updated", "system_prompt"], chat_id={"type": "string"},
                      title={"type": ["string", "null"], "description": "The first question, shortened"},
                      turns={"type": "integer"}, updated={"type": "integer", "description": "Unix time"},
                      system_prompt={"type": "boolean", "description": "Whether it has one"})
    chats = _object(["model_name", "chats"], model_name={"type": "string"},
                    chats={"type": "array", "items": summary})
    heavy = {"description": "Whether it needs full mode", "content": {"application/json": {
        "schema": _object(["is_heavy"], is_heavy={"type": "boolean"})}}}
    html = {"description": "An HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}
    picture = _object(["model_name", "prompt"], model_name=MODEL_NAME, prompt={"type": "string"},
                      image_size={"type": "integer", "minimum": 64, "maximum": 2048, "default": 1024,
                                  "description": "The side of the square picture, in pixels (the maximum is "
                                                 "EDGE_MAX_IMAGE_SIDE); rounded to what the model draws"},
                      inference_steps={"type": "integer", "minimum": 1, "maximum": 200, "default": 20},
                      negative_prompt={"type": "string", "default": ""},
                      seed={"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
                      guidance_scale={"type": "number", "minimum": 0, "maximum": 50,
                                      "description": "Default: the model's own (0 for few-step models)"})
    image_out = {"description": "The picture; the size drawn is in X-Image-Size", "headers": {
        "X-Image-Size": {"schema": {"type": "string"}, "description": "WIDTHxHEIGHT"},
        "X-Image-Size-Note": {"schema": {"type": "string"}, "description": "Present when the size was rounded"}},
        "content": {"image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}},
                    "image/jpeg": {"schema": {"type": "string", "contentMediaType": "image/jpeg"}}}}
    launch_codes = ("model_not_found", "model_not_installed", "full_mode_required", "backend_unavailable",
                    "model_load_failed", "downloading", "download_cancelled", "busy", "insufficient_storage",
                    "insufficient_memory", "storage_error") + _HUB
    listing = {"description": "Model names", "content": {"application/json": {"schema": STRINGS}}}
    return {
        "/model/launch": {"post": _op(
            "models", "Download (if needed) and start a model", NULL, launch_codes,
            body=_json(_object(["model_name"], model_name=MODEL_NAME, n_ctx={
                "description": "Context size in tokens, rounded up to a multiple of 256; -1 or absent: the "
                               "model's default (capped at its trained context).", "anyOf": [{"const": -1}, {"type": "integer", "minimum": 16, "maximum": 1 << 20}]},
                parallel={"type": "integer", "minimum": 1, "maximum": 16, "description": (
                    "Streams it answers at once, batched together, each with n_ctx of context (GGUF models; "
                    "full-mode models answer one at a time). Default: EDGE_PARALLEL, else 4, or fewer if the "
                    "memory available holds fewer. A different value relaunches the model.")},
                force={"type": "boolean", "default": False,
                       "description": "Load even if the memory check says it will not fit (507 insufficient_memory)"},
                keep_alive={"type": "number", "minimum": 0, "maximum": 10 * 365 * 86400,
                            "description": "Seconds it may sit idle before it is unloaded to free its memory; the "
                                           "next request loads it again. 0: never. Default: EDGE_KEEP_ALIVE (0)."})))},
        "/heavy/model/launch": {"post": _op(
            "models", "Download (if needed) and start a model: the original clients' full-mode launch", NULL,
            launch_codes, body={"required": False, "content": {"application/json": {"schema": _object(
                [], model_name=MODEL_NAME)}}}, params=[_query("model_name", MODEL_NAME, required=False)],
            description="The name comes in the JSON body or the query string. Same as POST /model/launch with "
                        "the model's defaults.")},
        "/model/kill": {"delete": _op("models", "Stop a running model and free its memory, or cancel its download",
                                      NULL,
                                      ("model_not_found", "model_not_running"), body=named)},
        "/model/delete": {"delete": _op(
            "models", "Stop a model, delete the files the server downloaded for it, and its chats", NULL,
            ("model_not_found", "model_not_installed"), body=named,
            description="A model given by a local `path` in models.json (`local` in GET /model/list) keeps its "
                        "file, which is the user's: only its chats are deleted (and it is stopped if running).")},
        "/model/list": {"get": _op("models", "Every model with its kind, size, state and capabilities, and the "
                                   "free memory and disk", {"description": "The models", "content": {
                                       "application/json": {"schema": models}}})},
        "/model/getactive": {"get": _op("models", "Names of the running models", listing)},
        "/model/getavailabletodownload": {"get": _op("models", "Names that can be launched in this mode", listing)},
        "/model/ismodelheavy": {
            "get": _op("models", "Whether a model needs full mode", heavy, ("model_not_found",), params=[by_name]),
            "post": _op("models", "Whether a model needs full mode", heavy, ("model_not_found",), body=named)},
        "/model/status": {"get": _op("models", "A model's state: absent, downloading (with bytes), loading, "
                                     "installed or running", {"description": "The state", "content": {
                                         "application/json": {"schema": status}}},
                                     ("model_not_found",), params=[by_name])},
        "/generate/fromtext": {"post": _op(
            "generate", "Answer a prompt in the model's chat, streamed", STREAM, _STREAM, body=_json(text_body))},
        "/generate/fromimagetext": {"post": _op(
            "generate", "Answer a prompt about images, streamed (vision models)", STREAM, image_errors,
            body={"required": True, "content": {"application/json": {"schema": image_json},
                                                "multipart/form-data": {"schema": image_form}}})},
        "/generate/stop": {"post": _op(
            "generate", "End the answer being generated for a chat, within a token", {
                "description": "Whether an answer was being generated", "content": {"application/json": {
                    "schema": _object(["stopped"], stopped={"type": "boolean"})}}},
            ("model_not_found",), body=_json(_object(["model_name"], model_name=MODEL_NAME, chat_id=CHAT_ID)),
            description="Also ends an answer sent with `on_disconnect: \"finish\"`; what was said so far is "
                        "stored in the chat, as when a client disconnects.")},
        "/generate/imagefromtext": {"post": _op(
            "generate", "Draw a picture from a prompt (full mode, image-out models)", image_out,
            _MEDIA + ("model_not_image",), body=_json(picture),
            description="PNG, or JPEG when the Accept header prefers image/jpeg. Queued for the model like an "
                        "answer; a client that goes away ends it at its next step.")},
        "/generate/texttospeech": {"post": _op(
            "generate", "Read a text aloud (full mode, speech-out models)", {
                "description": "One mono 16-bit PCM WAV file", "content": {"audio/wav": {"schema": {
                    "type": "string", "contentMediaType": "audio/wav"}}}},
            _MEDIA + ("model_not_speech",), body=_json(_object(["model_name", "prompt"], model_name=MODEL_NAME,
                                                               prompt={"type": "string", "minLength": 1})),
            description="Long texts are spoken a sentence at a time (at most EDGE_MAX_SPEECH_CHARS characters).")},
        "/chat/clearchat": {"delete": _op("chat", "Forget a chat's turns (the system prompt stays)", NULL,
                                          ("model_not_found",), body=_json(_object(
                                              ["model_name"], model_name=MODEL_NAME, chat_id=CHAT_ID)))},
        "/chat/addsystemprompt": {"post": _op("chat", "Set or replace a chat's system prompt", NULL,
                                              ("model_not_found", "system_prompt_too_large", "too_many_chats"),
                                              body=_json(_object(["model_name", "system_prompt"],
                                                                 model_name=MODEL_NAME, chat_id=CHAT_ID,
                                                                 system_prompt={"type": "string"})))},
        "/chat/list": {"get": _op("chat", "A model's chats, newest first", {"description": "The chats", "content": {
            "application/json": {"schema": chats}}}, ("model_not_found",), params=[by_name])},
        "/chat/delete": {"delete": _op("chat", "Delete a chat (its history and system prompt)", NULL,
                                       ("model_not_found",), body=_json(_object(
                                           ["model_name"], model_name=MODEL_NAME, chat_id=CHAT_ID)))},
        "/chat/getchathistory": {"get": _op("chat", "A chat so far", {"description": "The chat", "content": {
            "application/json": {"schema": history}}}, ("model_not_found",),
            params=[by_name, _query("chat_id", CHAT_ID, required=False)])},
        "/health": {"get": _op("server", "Liveness: the server answers", {"description": "Alive", "content": {
            "application/json": {"schema": _object(
                ["status", "version", "uptime_seconds", "models_running", "rss_bytes"], status={"const": "ok"},
                version={"type": "string"}, uptime_seconds={"type": "integer"}, models_running=STRINGS,
                rss_bytes={"type": ["integer", "null"], "description": "The server's resident memory"},
                workers={"type": "array", "description": "Only with EDGE_WORKERS, and with the key when the server "
                                                        "has one: each worker as it says now",
                         "items": _object(["address", "state", "models"], address={"type": "string"},
                                          state={"enum": ["up", "busy", "down", "refused", "mismatch"], "description":
                                                 "busy: a model uses it; refused: it does not hold this key; "
                                                 "mismatch: it runs another llama-cpp-python (unused)"},
                                          models=STRINGS, free_bytes={"type": "integer"},
                                          total_bytes={"type": "integer"}, threads={"type": "integer"},
                                          version={"type": "string"}, error={"type": "string"})})}}},
            public=True)},
        "/metrics": {"get": _op("server", "Metrics in Prometheus text format", {
            "description": "Requests by route and status, request duration, time to first token, tokens/s and "
                           "tokens per model, queue depth, busy refusals, load time, bytes downloaded, memory",
            "content": {"text/plain": {"schema": {"type": "string"}}}})},
        "/": {"get": _op("server", "The web app (models, chats, photos) for a phone browser", html, public=True)},
        "/web/{name}": {"get": _op("server", "The web app's files (scripts, styles, vendored libraries)", {
            "description": "A file", "content": {"*/*": {"schema": {}}}}, ("not_found",), public=True,
            params=[{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}])},
        "/openapi.json": {"get": _op("server", "This document", {"description": "OpenAPI 3.1", "content": {
            "application/json": {"schema": {"type": "object"}}}}, public=True)},
        "/docs/": {"get": _op("server", "Swagger UI over this document", html, public=True)},
        "/docs/{path}": {"get": _op("server", "Swagger UI's assets", {"description": "A file", "content": {
            "*/*": {"schema": {}}}}, ("not_found",), public=True,
            params=[{"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}])},
    }


def _with_operation_ids(paths: dict) -> dict:
    """Name each operation after its method and path (get_model_getactive), as Swagger UI would."""
    for path, operations in paths.items():
        for method, op in operations.items():
            op["operationId"] = f"{method}_{re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_') or 'root'}"
    return paths


@cache
def document(version: str) -> dict:
    """The whole document (built once; it does not depend on settings)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "edge-server", "version": version,
                 "description": "Run quantized language models on a phone or a Raspberry Pi. Errors are "
                                "`{\"detail\", \"code\"}`. Off loopback every operation but the public pages needs "
                                "the API key: press Authorize and paste it (`edge-server key` prints it)."},
        "tags": [{"name": "models"}, {"name": "generate"}, {"name": "chat"}, {"name": "server"},
                 {"name": "openai", "description": "OpenAI-compatible, for the apps that speak it"},
                 {"name": "ollama", "description": "Ollama-compatible, for the apps that speak it"}],
        "paths": _with_operation_ids({**_paths(), **dialect_paths()}),
        "components": {
            "schemas": {"Error": _object(["detail", "code"], detail={"type": "string"}, code={"type": "string"}),
                        "OpenAIError": _object(["error"], error=_object(
                            ["message", "type", "code"], message={"type": "string"}, type={"type": "string"},
                            param={"type": ["string", "null"]}, code={"type": ["string", "null"]})),
                        "OllamaError": _object(["error"], error={"type": "string"})},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
    }
