"""What the OpenAI and Ollama dialects accept: bounds shared with /model/launch, fields they cannot honour
refused by name, and the JSON the server answers always being JSON (tiny model, Flask's test client)."""
from __future__ import annotations

import json
import time

import pytest


def post_raw(client, path: str, text: str):
    """A body as written, for numbers json.dumps would not write (1e309 parses as infinity)."""
    return client.post(path, data=text, content_type="application/json")


def strict(response) -> dict:
    """The body parsed as JSON proper: NaN and Infinity are refused, as strict clients refuse them."""
    def refuse(name):
        raise AssertionError(f"{name} in {response.get_data(as_text=True)[:200]}")
    return json.loads(response.get_data(as_text=True), parse_constant=refuse)


@pytest.mark.parametrize("path, shape", [("/api/generate", '"prompt": ""'), ("/api/generate", '"prompt": "Hi"'),
                                         ("/api/chat", '"messages": []')])
@pytest.mark.parametrize("keep_alive", ["1e309", "-1e309", "1e30", "315360001", '"99999999999h"'])
def test_ollama_keep_alive_has_launchs_bound(client, path, shape, keep_alive):
    """1e309 (infinity) and 1e30 were kept: /model/status then said Infinity and /api/ps answered 500."""
    assert client.post("/model/launch", json={"model_name": "tiny"}).status_code == 200
    r = post_raw(client, path, f'{{"model": "tiny", {shape}, "keep_alive": {keep_alive}, "stream": false}}')
    assert r.status_code == 422 and "keep_alive" in r.json["error"]
    assert strict(client.get("/model/status?model_name=tiny"))["keep_alive"] == 0
    assert client.get("/api/ps").status_code == 200
    assert all(m["keep_alive"] == 0 for m in strict(client.get("/model/list"))["models"] if "keep_alive" in m)
    launch = post_raw(client, "/model/launch", f'{{"model_name": "tiny", "keep_alive": {keep_alive}}}')
    assert launch.status_code == 422  # the one bound, in every dialect


def test_ollama_load_of_a_running_model_sets_its_idle_unload(client):
    """keep_alive on a load (no prompt) of a model already running changed nothing, though the README says a
    load sets the idle unload."""
    assert client.post("/model/launch", json={"model_name": "tiny"}).status_code == 200
    assert client.post("/api/generate", json={"model": "tiny", "keep_alive": "5m"}).json["done_reason"] == "load"
    assert strict(client.get("/model/status?model_name=tiny"))["keep_alive"] == 300
    assert client.post("/api/chat", json={"model": "tiny", "keep_alive": 315360000}).status_code == 200
    assert client.get("/api/ps").json["models"][0]["expires_at"] > "2030"
    assert client.post("/api/chat", json={"model": "tiny", "keep_alive": -1}).status_code == 200
    assert client.get("/model/status?model_name=tiny").json["keep_alive"] == 0  # Ollama's forever: never
    assert client.post("/api/generate", json={"model": "tiny", "keep_alive": "300ms"}).status_code == 200
    deadline = time.time() + 10
    while "idle_unloaded_at" not in client.get("/model/status?model_name=tiny").json:
        assert time.time() < deadline, "the load's keep_alive did not unload the idle model"
        time.sleep(0.1)


def test_no_answer_is_ever_a_non_finite_number(tiny_app):
    """Whatever slips past validation, the JSON provider refuses to write NaN or Infinity: a logged 500."""
    client = tiny_app.test_client()
    assert client.post("/model/launch", json={"model_name": "tiny"}).status_code == 200
    tiny_app.extensions["edge_server"].manager.get("tiny").keep_alive = float("inf")
    r = client.get("/model/status?model_name=tiny")
    assert r.status_code == 500 and strict(r)["code"] == "internal_error"
    assert "Infinity" not in client.get("/model/list").get_data(as_text=True)


def test_a_non_finite_setting_is_refused():
    from edge_server.settings import build_settings

    with pytest.raises(ValueError, match="finite"):
        build_settings(environ={"EDGE_KEEP_ALIVE": "inf"})


CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
TEXT = {"model": "tiny", "prompt": "Once", "max_tokens": 2}
OLLAMA = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "stream": False,
          "options": {"num_predict": 2}}


@pytest.mark.parametrize("path, base, extra, name", [
    ("/v1/chat/completions", CHAT, {"logprobs": True}, "logprobs"),
    ("/v1/chat/completions", CHAT, {"logprobs": True, "top_logprobs": 3}, "logprobs"),
    ("/v1/chat/completions", CHAT, {"top_logprobs": 3}, "top_logprobs"),
    ("/v1/chat/completions", CHAT, {"response_format": {"type": "json_object"}}, "response_format"),
    ("/v1/chat/completions", CHAT, {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format"),
    ("/v1/chat/completions", CHAT, {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ("/v1/chat/completions", CHAT, {"tool_choice": "required"}, "tool_choice"),
    ("/v1/completions", TEXT, {"logprobs": 2}, "logprobs"),
    ("/v1/completions", TEXT, {"echo": True}, "echo"),
    ("/v1/completions", TEXT, {"suffix": " the end."}, "suffix"),
    ("/v1/completions", TEXT, {"best_of": 3}, "best_of"),
    ("/v1/completions", TEXT, {"tools": [{"type": "function"}]}, "tools"),
])
def test_openai_fields_it_cannot_honour_are_refused_by_name(client, path, base, extra, name):
    """They were accepted and ignored: JSON mode answered text that was not JSON, echo no prompt, and so on."""
    r = client.post(path, json={**base, **extra})
    assert r.status_code == 422, r.json
    assert r.json["error"]["code"] == "unsupported_field" and repr(name) in r.json["error"]["message"]


@pytest.mark.parametrize("path, base, extra, name", [
    ("/api/chat", OLLAMA, {"format": "json"}, "format"),
    ("/api/generate", {"model": "tiny", "prompt": "Hi", "stream": False}, {"format": "json"}, "format"),
    ("/api/chat", OLLAMA, {"format": {"type": "object", "properties": {"a": {"type": "string"}}}}, "format"),
    ("/api/chat", OLLAMA, {"format": 5}, "format"),
    ("/api/chat", OLLAMA, {"format": ["json"]}, "format"),
    ("/api/chat", OLLAMA, {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ("/api/chat", OLLAMA, {"tools": "all"}, "tools"),
    ("/api/chat", OLLAMA, {"think": True}, "think"),
    ("/api/generate", {"model": "tiny", "prompt": "Hi", "stream": False}, {"think": "high"}, "think"),
    ("/api/chat", OLLAMA, {"think": 1}, "think"),
])
def test_ollama_fields_it_cannot_honour_are_refused_by_name(client, path, base, extra, name):
    r = client.post(path, json={**base, **extra})
    assert r.status_code == 422, r.json
    assert f"'{name}'" in r.json["error"]


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {**CHAT, "logprobs": False, "top_logprobs": 0, "tools": [], "tool_choice": "none",
                              "response_format": {"type": "text"}}),
    ("/v1/completions", {**TEXT, "logprobs": None, "echo": False, "suffix": "", "best_of": 1}),
    ("/api/chat", {**OLLAMA, "format": "", "tools": [], "think": False}),
])
def test_the_off_values_of_those_fields_are_accepted(client, path, body):
    """Many clients send every field with its default: those must still be answered."""
    r = client.post(path, json=body)
    assert r.status_code == 200, r.json
