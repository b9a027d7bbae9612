"""The OpenAPI operations of the OpenAI (/v1) and Ollama (/api) dialects, beside openapi.py's own."""
from __future__ import annotations

from .openapi_parts import _HUB, _json, _object, _op


def dialect_paths() -> dict:
    """/v1 (OpenAI) and /api (Ollama): their own bodies and error shapes, described loosely here; the apps'
    own documentation is the reference. Fields not listed are accepted and ignored, except those this server
    cannot honour, which are refused by name (422 unsupported_field): OpenAI's logprobs, top_logprobs, tools,
    functions, tool_choice, response_format other than text, echo, suffix and best_of above 1; Ollama's format,
    tools and think."""
    model = {"type": "string", "minLength": 1, "examples": ["gemma-3-270m-it"]}
    errors = ("model_not_found", "model_not_installed", "busy", "context_length_exceeded", "generation_failed",
              "prompt_too_large", "model_not_multimodal", "image_invalid", "image_too_large", "too_many_images",
              "link_not_allowed", "image_fetch_failed", "image_fetch_timeout", "model_load_failed",
              "insufficient_memory", "unsupported_field", "model_stopped")
    part = {"oneOf": [_object(["type", "text"], type={"const": "text"}, text={"type": "string"}),
                      _object(["type", "image_url"], type={"const": "image_url"}, image_url={"anyOf": [
                          {"type": "string"}, _object(["url"], url={"type": "string"})]})]}
    message = _object(["role"], role={"enum": ["system", "developer", "user", "assistant", "tool", "function"]},
                      content={"anyOf": [{"type": "string"}, {"type": "array", "items": part}]})
    sampling = {"max_tokens": {"type": "integer", "minimum": 1, "maximum": 1 << 20},
                "max_completion_tokens": {"type": "integer", "minimum": 1, "maximum": 1 << 20},
                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                "top_p": {"type": "number", "minimum": 0, "maximum": 1},
                "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
                "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
                "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 2},
                "n": {"type": "integer", "minimum": 1, "maximum": 1},
                "stop": {"anyOf": [{"type": "string"}, {"type": "array", "maxItems": 16, "items": {"type": "string"}}]},
                "stream": {"type": "boolean"},
                "stream_options": _object([], include_usage={"type": "boolean"})}
    sse = {"description": "JSON, or with stream: server-sent events ending with data: [DONE]", "content": {
        "application/json": {"schema": {"type": "object"}},
        "text/event-stream": {"schema": {"description": "chunk objects, then [DONE]"}}}}
    listing = {"description": "The models on this device", "content": {"application/json": {"schema": {
        "type": "object"}}}}
    options = _object([], num_ctx={"type": "integer", "minimum": 256, "maximum": 1 << 20},
                      num_predict={"type": "integer", "minimum": -2, "maximum": 1 << 20},
                      temperature={"type": "number", "minimum": 0, "maximum": 5},
                      top_p={"type": "number", "minimum": 0, "maximum": 1},
                      top_k={"type": "integer", "minimum": 0, "maximum": 1 << 20},
                      repeat_penalty={"type": "number", "minimum": 0, "maximum": 10},
                      presence_penalty={"type": "number", "minimum": -2, "maximum": 2},
                      frequency_penalty={"type": "number", "minimum": -2, "maximum": 2},
                      seed={"type": "integer", "minimum": 0, "maximum": 2**32 - 2},
                      stop={"type": "array", "maxItems": 16, "items": {"type": "string"}})
    keep_alive = {"anyOf": [{"type": "number", "minimum": -10 * 365 * 86400, "maximum": 10 * 365 * 86400}, {"type": "string", "pattern": r"^-?\d+(\.\d+)?(ns|us|ms|s|m|h)?$"}]}
    ndjson = {"description": "JSON, or with stream (the default): NDJSON lines, the last with done: true",
              "content": {"application/json": {"schema": {"type": "object"}},
                          "application/x-ndjson": {"schema": {"type": "string"}}}}
    ollama_message = _object(["role"], role={"enum": ["system", "user", "assistant", "tool"]},
                             content={"type": "string"}, images={"type": "array", "items": {"type": "string"}})
    named = _object([], model=model, name={"type": "string", "description": "The same as model (older clients)"})
    done = {"description": "Done", "content": {"application/json": {"schema": {"type": "object"}}}}
    return {
        "/v1/models": {"get": _op("openai", "The models on this device (OpenAI's list)", listing)},
        "/v1/models/{name}": {"get": _op("openai", "One model (OpenAI)", listing, ("model_not_found",), params=[
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}])},
        "/v1/chat/completions": {"post": _op(
            "openai", "Chat completion, streamed or not (OpenAI)", sse, errors,
            body=_json(_object(["model", "messages"], model=model, messages={
                "type": "array", "minItems": 1, "items": message}, **sampling)),
            description="Stateless: the whole conversation comes with each request and nothing is stored. "
                        "A model installed but not running is loaded first. Errors are OpenAI's "
                        "`{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`, mid-stream as a "
                        "`data: {\"error\": ...}` event.")},
        "/v1/completions": {"post": _op(
            "openai", "Text completion (OpenAI): the prompt continued as it is, no chat template", sse, errors,
            body=_json(_object(["model", "prompt"], model=model, prompt={"anyOf": [
                {"type": "string"}, {"type": "array", "minItems": 1, "maxItems": 1, "items": {"type": "string"}}]},
                **sampling)))},
        "/api/version": {"get": _op("ollama", "The Ollama API version served", done)},
        "/api/tags": {"get": _op("ollama", "The models on this device (Ollama)", listing)},
        "/api/ps": {"get": _op("ollama", "The running models (Ollama)", listing)},
        "/api/show": {"post": _op("ollama", "A model's details (Ollama)", done, ("model_not_found",),
                                  body=_json(named))},
        "/api/chat": {"post": _op(
            "ollama", "Chat (Ollama), NDJSON", ndjson, errors,
            body=_json(_object([], **named["properties"], messages={"type": "array", "items": ollama_message},
                               stream={"type": "boolean"}, options=options, keep_alive=keep_alive)),
            description="Stateless, like /v1/chat/completions. No messages: load the model (keep_alive 0: unload "
                        "it). Errors are `{\"error\": \"...\"}`.")},
        "/api/generate": {"post": _op(
            "ollama", "Generate from a prompt (Ollama), NDJSON", ndjson, errors,
            body=_json(_object([], **named["properties"], prompt={"type": "string"}, system={"type": "string"},
                               raw={"type": "boolean"}, images={"type": "array", "items": {"type": "string"}},
                               stream={"type": "boolean"}, options=options, keep_alive=keep_alive)))},
        "/api/pull": {"post": _op(
            "ollama", "Download a model (Ollama), progress as NDJSON", ndjson,
            ("model_not_found", "full_mode_required", "backend_unavailable", "downloading") + _HUB,
            body=_json(_object([], **named["properties"], stream={"type": "boolean"})))},
        "/api/delete": {"delete": _op("ollama", "Delete a model's files and chats (Ollama)", {"description": "Done"},
                                      ("model_not_found",), body=_json(named))},
    }
