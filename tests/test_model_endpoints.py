"""The /model/* endpoints on the real llama-cpp-python with tiny generated GGUF files."""
from __future__ import annotations

import gc
import threading

import psutil
import pytest
from gguf_factory import write_tiny_llama


def test_launch_getactive_kill(client):
    assert client.get("/model/getactive").json == []
    r = client.post("/model/launch", json={"model_name": "tiny", "n_ctx": 256})
    assert r.status_code == 200 and r.json is None
    assert client.get("/model/getactive").json == ["tiny"]
    status = client.get("/model/status", query_string={"model_name": "tiny"}).json
    assert status["state"] == "running" and status["n_ctx"] == 256
    r = client.delete("/model/kill", json={"model_name": "tiny"})
    assert r.status_code == 200 and r.json is None
    assert client.get("/model/getactive").json == []
    assert client.get("/model/status", query_string={"model_name": "tiny"}).json["state"] == "installed"


def test_n_ctx_defaults_and_cap(client, tiny_app):
    manager = tiny_app.extensions["edge_server"].manager
    client.post("/model/launch", json={"model_name": "tiny"})  # absent: the catalog entry's 512
    assert manager.get("tiny").model.n_ctx == 512
    client.post("/model/launch", json={"model_name": "tiny", "n_ctx": -1})
    assert manager.get("tiny").model.n_ctx == 512
    client.post("/model/launch", json={"model_name": "tiny", "n_ctx": 100000})
    assert manager.get("tiny").model.n_ctx == 4096  # the GGUF says it was trained on 4096


def test_relaunch_same_n_ctx_is_noop_other_reloads(client, tiny_app):
    manager = tiny_app.extensions["edge_server"].manager
    client.post("/model/launch", json={"model_name": "tiny", "n_ctx": 256})
    first = manager.get("tiny").model
    client.post("/model/launch", json={"model_name": "tiny", "n_ctx": 256})
    assert manager.get("tiny").model is first
    client.post("/model/launch", json={"model_name": "tiny", "n_ctx": 768})
    assert manager.get("tiny").model is not first and manager.get("tiny").model.n_ctx == 768
    assert client.get("/model/getactive").json == ["tiny"]


def test_concurrent_launches_load_once(tiny_app):
    manager = tiny_app.extensions["edge_server"].manager
    backend = manager.registry.get("llama-cpp")
    loads = []
    original = backend.load

    def counting_load(*args, **kwargs):
        loads.append(1)
        return original(*args, **kwargs)

    backend.load = counting_load
    clients = [tiny_app.test_client() for _ in range(4)]
    results = []
    threads = [threading.Thread(target=lambda c=c: results.append(
        c.post("/model/launch", json={"model_name": "tiny", "n_ctx": 256}).status_code)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 4
    assert len(loads) == 1


def test_kill_frees_memory(client, make_app, tmp_path):
    # A deeper model (about 25 MB of weights) so the drop is well above allocator noise.
    path = write_tiny_llama(tmp_path / "wide.gguf", n_layers=120)
    app = make_app({"wide": {"path": str(path), "n_ctx": 256}})
    c = app.test_client()
    proc = psutil.Process()
    gc.collect()
    before = proc.memory_info().rss
    assert c.post("/model/launch", json={"model_name": "wide"}).status_code == 200
    loaded = proc.memory_info().rss
    assert c.delete("/model/kill", json={"model_name": "wide"}).status_code == 200
    after = proc.memory_info().rss
    grown = loaded - before
    assert grown > 15 * 2**20, f"loading grew RSS by only {grown} bytes"
    assert after - before < grown * 0.3, f"RSS before {before}, loaded {loaded}, after kill {after}"


@pytest.mark.parametrize("method,path", [("delete", "/model/kill"), ("delete", "/model/delete"),
                                         ("post", "/model/launch")])
def test_unknown_and_traversal_names(client, method, path):
    for name in ("nope", "../../etc", "/etc/passwd", "..", "tiny/../tiny"):
        r = getattr(client, method)(path, json={"model_name": name})
        assert r.status_code == 404, name
        assert r.json["code"] == "model_not_found"


def test_kill_not_running(client):
    r = client.delete("/model/kill", json={"model_name": "tiny"})
    assert r.status_code == 404 and r.json["code"] == "model_not_running"


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"n_ctx": 5}', b'{"model_name": 5}',
                                  b'{"model_name": "tiny", "n_ctx": "big"}', b'{"model_name": "tiny", "n_ctx": 3}',
                                  b'{"model_name": ""}', b'{"model_name": "tiny", "n_ctx": true}'])
def test_launch_validation(client, body):
    r = client.post("/model/launch", data=body, content_type="application/json")
    assert r.status_code == 422
    assert r.json["code"] == "invalid_request" and r.json["detail"]


def test_extra_fields_are_ignored(client):
    r = client.post("/model/launch", json={"model_name": "tiny", "n_ctx": 256, "colour": "blue"})
    assert r.status_code == 200


def test_oversized_body(make_app, tiny_gguf):
    client = make_app({"tiny": {"path": str(tiny_gguf)}}, max_body_bytes=1000).test_client()
    r = client.post("/model/launch", data=b'{"model_name": "' + b"x" * 5000 + b'"}',
                    content_type="application/json")
    assert r.status_code == 413 and r.json["code"] == "request_too_large"


def test_available_and_heavy(make_app, tiny_gguf):
    client = make_app({"tiny": {"path": str(tiny_gguf)}}).test_client()
    names = client.get("/model/getavailabletodownload").json
    assert "tiny" in names and "llama-1b-4" in names and "stable-cascade" not in names
    assert client.get("/model/ismodelheavy", query_string={"model_name": "stable-cascade"}).json == {"is_heavy": True}
    assert client.post("/model/ismodelheavy", json={"model_name": "llama-1b-4"}).json == {"is_heavy": False}
    assert client.post("/model/ismodelheavy", json={"model_name": "nope"}).json["code"] == "model_not_found"
    r = client.post("/model/launch", json={"model_name": "stable-cascade"})
    assert r.status_code == 400 and r.json["code"] == "full_mode_required"


def test_full_mode_lists_heavy(make_app):
    client = make_app(full=True).test_client()
    assert "stable-cascade" in client.get("/model/getavailabletodownload").json


def test_delete_local_model_keeps_its_file(client, tiny_gguf, caplog):
    """The listing tells a local file (the page then offers to delete its chats only); the log says what went."""
    listed = {m["model_name"]: m for m in client.get("/model/list").json["models"]}
    assert listed["tiny"]["local"] is True and listed["gemma-3-270m-it"]["local"] is False
    client.post("/model/launch", json={"model_name": "tiny", "n_ctx": 256})
    with caplog.at_level("INFO", logger="edge_server"):
        r = client.delete("/model/delete", json={"model_name": "tiny"})
    assert r.status_code == 200
    assert tiny_gguf.is_file()
    assert f"kept tiny's file {tiny_gguf}" in caplog.text and "deleted tiny from the store" not in caplog.text
    assert client.get("/model/getactive").json == []


def test_delete_not_installed(client):
    r = client.delete("/model/delete", json={"model_name": "llama-1b-4"})
    assert r.status_code == 404 and r.json["code"] == "model_not_installed"


def test_two_apps_do_not_share_models(make_app, tiny_gguf, tmp_path):
    a = make_app({"tiny": {"path": str(tiny_gguf), "n_ctx": 256}})
    b = make_app(data_dir=tmp_path / "other")
    assert a.test_client().post("/model/launch", json={"model_name": "tiny"}).status_code == 200
    assert a.test_client().get("/model/getactive").json == ["tiny"]
    assert b.test_client().get("/model/getactive").json == []
    assert b.test_client().post("/model/launch", json={"model_name": "tiny"}).json["code"] == "model_not_found"


def test_load_failure_is_a_json_error(make_app, tmp_path):
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF" + b"\0" * 100)
    client = make_app({"bogus": {"path": str(bogus)}}).test_client()
    r = client.post("/model/launch", json={"model_name": "bogus"})
    assert r.status_code == 500 and r.json["code"] == "model_load_failed"
    assert client.get("/model/getactive").json == []


def test_missing_local_file(make_app, tmp_path):
    client = make_app({"gone": {"path": str(tmp_path / "gone.gguf")}}).test_client()
    r = client.post("/model/launch", json={"model_name": "gone"})
    assert r.status_code == 404 and r.json["code"] == "model_not_installed"
