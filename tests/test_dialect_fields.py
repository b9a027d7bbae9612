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

