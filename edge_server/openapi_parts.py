"""The pieces the OpenAPI document is built of: every error code with its status, and the helpers that write
schemas and operations. Below openapi.py and openapi_dialects.py, which both build on it; it imports neither."""
from __future__ import annotations

# Every error code the server answers, with its status. Operations list the codes they can answer.
CODES = {
    "invalid_request": 422, "unsupported_field": 422, "unauthorized": 401, "host_not_allowed": 403, "origin_not_allowed": 403,
    "unsupported_media_type": 415, "request_too_large": 413, "internal_error": 500, "not_found": 404,
    "model_not_found": 404, "model_not_running": 404, "model_not_installed": 404,
    "full_mode_required": 400, "backend_unavailable": 400, "model_load_failed": 500,
    "hub_not_found": 502, "hub_unreachable": 502, "hub_offline": 409, "hub_unauthorized": 502, "hub_timeout": 504,
    "busy": 503, "context_length_exceeded": 400, "generation_failed": 500, "model_stopped": 409, "model_not_multimodal": 400,
    "image_invalid": 422, "image_too_large": 413, "too_many_images": 413, "link_not_allowed": 400,
    "image_fetch_failed": 502, "image_fetch_timeout": 504, "prompt_too_large": 413, "chat_too_large": 413,
    "too_many_chats": 409, "system_prompt_too_large": 413, "downloading": 202, "download_cancelled": 409,
    "insufficient_storage": 507, "insufficient_memory": 507, "storage_error": 500, "client_disconnected": 499,
    "model_not_text": 400, "model_not_image": 400, "model_not_speech": 400, "worker_lost": 503,
}
_ALWAYS = ("host_not_allowed", "internal_error")
_GUARDED = ("unauthorized",)  # operations that need the key
_BODY = ("invalid_request", "unsupported_media_type", "request_too_large", "origin_not_allowed")  # writes
_HUB = ("hub_not_found", "hub_unreachable", "hub_offline", "hub_unauthorized", "hub_timeout")
_STREAM = ("model_not_found", "model_not_running", "busy", "context_length_exceeded", "generation_failed", "model_stopped",
           "prompt_too_large", "chat_too_large", "too_many_chats", "model_not_text", "worker_lost")
_MEDIA = ("model_not_found", "model_not_running", "busy", "generation_failed", "prompt_too_large",
          "client_disconnected")

_STATUS_TEXT = {202: "Accepted: the model is downloading; poll GET /model/status", 400: "The request cannot be served as asked", 401: "Missing or wrong API key",
                499: "The client went away (or the model was stopped) before the result was ready",
                403: "Refused: Host or Origin not allowed", 404: "Not found",
                409: "Not now: too many, cancelled, stopped, or downloads are off (HF_HUB_OFFLINE)", 413: "Too large",
                415: "The body is not JSON (or multipart where uploads are taken)",
                422: "The body or a parameter does not validate", 500: "Server error",
                502: "An upstream (the hub, an image link) failed", 503: "Busy: retry after Retry-After (worker_lost: a worker the model was split over is gone; launch it again)",
                504: "An upstream (the hub, an image link) did not answer in time",
                507: "Not enough free disk (or memory) for the model"}


def _nullable(schema: dict) -> dict:
    """An optional field may also be sent as null, meaning absent (as FastAPI clients do)."""
    if isinstance(schema.get("type"), str):
        return {**schema, "type": [schema["type"], "null"]}
    if "anyOf" in schema:
        return {**schema, "anyOf": [*schema["anyOf"], {"type": "null"}]}
    return schema


def _object(required: list[str], **properties) -> dict:
    return {"type": "object", "required": required,
            "properties": {k: v if k in required else _nullable(v) for k, v in properties.items()}}


def _json(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: dict, required: bool = True) -> dict:
    return {"name": name, "in": "query", "required": required, "schema": schema}


def _errors(codes, shape: str = "Error") -> dict:
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(CODES[code], []).append(code)
    responses = {}
    for status, names in sorted(by_status.items()):
        schema = {"allOf": [{"$ref": "#/components/schemas/Error"}, {"properties": {"code": {"enum": sorted(names)}}}]}
        if shape != "Error":  # a dialect's own error body (the codes are inside it, or only in the message)
            schema = {"$ref": f"#/components/schemas/{shape}"}
        responses[str(status)] = {"description": _STATUS_TEXT[status], "content": {"application/json": {"schema": schema}}}
    if "busy" in codes:
        responses["503"]["headers"] = {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds to wait"}}
    return responses


def _op(tag: str, summary: str, ok: dict, codes=(), *, body: dict | None = None, params=(), public=False,
        description: str = "") -> dict:
    codes = _ALWAYS + (() if public else _GUARDED) + (_BODY if body else ()) + tuple(codes)
    if params and not body:
        codes += ("invalid_request",)
    shape = {"openai": "OpenAIError", "ollama": "OllamaError"}.get(tag, "Error")
    op = {"tags": [tag], "summary": summary, "responses": {"200": ok, **_errors(dict.fromkeys(codes), shape)}}
    if description:
        op["description"] = description
    if body:
        op["requestBody"] = body
    if params:
        op["parameters"] = list(params)
    if public:
        op["security"] = []
    return op
