"""Idle unload: a model idle for its keep-alive is unloaded (its memory given back) and loaded again on demand."""
from __future__ import annotations

import time

import psutil
import requests
from conftest import ServerProcess


def wait_for(check, timeout=15.0):
    deadline = time.time() + timeout
    while not (value := check()):
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)
    return value


def status(client, name):
    return client.get("/model/status", query_string={"model_name": name}).json


def test_idle_model_is_unloaded_then_loaded_again_by_a_request(make_app, tiny_gguf):
    client = make_app({"tiny": {"path": str(tiny_gguf), "n_ctx": 256}}).test_client()
    assert client.post("/model/launch", json={"model_name": "tiny", "keep_alive": 1}).status_code == 200
    assert status(client, "tiny")["keep_alive"] == 1.0
    client.post("/generate/fromtext", json={"model_name": "tiny", "prompt": "Hi", "max_new_tokens": 4}).get_data()
    unloaded = wait_for(lambda: "idle_unloaded_at" in (s := status(client, "tiny")) and s)
    assert unloaded["state"] == "installed" and client.get("/model/getactive").json == []
    r = client.post("/generate/fromtext", json={"model_name": "tiny", "prompt": "Again", "max_new_tokens": 4})
    assert r.status_code == 200 and r.get_data()
    assert status(client, "tiny")["state"] == "running" and client.get("/model/getactive").json == ["tiny"]

    # Killed while unloaded: it stays unloaded, and requests are refused again.
    wait_for(lambda: "idle_unloaded_at" in status(client, "tiny"))
    assert client.delete("/model/kill", json={"model_name": "tiny"}).status_code == 200
    r = client.post("/generate/fromtext", json={"model_name": "tiny", "prompt": "Hi"})
    assert r.status_code == 404 and r.json["code"] == "model_not_running"


def test_keep_alive_counts_from_the_end_of_the_last_answer_and_zero_never_unloads(make_app, slow_gguf, tiny_gguf):
    client = make_app({"slow": {"path": str(slow_gguf), "n_ctx": 1024},
                       "tiny": {"path": str(tiny_gguf), "n_ctx": 256}}).test_client()
    client.post("/model/launch", json={"model_name": "slow", "keep_alive": 1})
    client.post("/model/launch", json={"model_name": "tiny"})  # the default: 0, never
    started = time.monotonic()
    r = client.post("/generate/fromtext", json={"model_name": "slow", "prompt": "Go", "max_new_tokens": 300})
    streamed = r.get_data(as_text=True)
    assert time.monotonic() - started > 1.5  # the answer outlasted the keep-alive...
    assert status(client, "slow")["state"] == "running"  # ...and the model was not taken from under it
    turns = client.get("/chat/getchathistory", query_string={"model_name": "slow"}).json["turns"]
    assert turns[-1]["content"] == streamed
    wait_for(lambda: "idle_unloaded_at" in status(client, "slow"))
    time.sleep(1.5)
    assert status(client, "tiny")["state"] == "running" and status(client, "tiny")["keep_alive"] == 0


def test_a_server_gives_the_memory_back_after_keep_alive(tmp_path, gemma_gguf):
    server = ServerProcess(tmp_path / "data", {"gemma": {"path": str(gemma_gguf), "n_ctx": 1024}}, "--keep-alive", "2")
    try:
        process = psutil.Process(server.proc.pid)
        requests.post(f"{server.url}/model/launch", json={"model_name": "gemma"}, timeout=120).raise_for_status()
        ask = {"model_name": "gemma", "prompt": "What is the capital of France?", "max_new_tokens": 16,
               "temperature": 0}
        assert "Paris" in requests.post(f"{server.url}/generate/fromtext", json=ask, timeout=120).text
        loaded = process.memory_info().rss
        wait_for(lambda: "idle_unloaded_at" in requests.get(f"{server.url}/model/status",
                                                            params={"model_name": "gemma"}).json())
        time.sleep(0.5)
        idle = process.memory_info().rss
        assert idle < loaded - 150 * 2**20, (loaded >> 20, idle >> 20)  # the weights and cache are gone
        assert "unloaded gemma after 2 s idle" in server.output()
        assert "Paris" in requests.post(f"{server.url}/generate/fromtext", json=ask, timeout=120).text
    finally:
        server.close()


def test_requests_around_an_unload_are_served_not_refused(make_app, tiny_gguf):
    """Bursts of requests after idle spells around the keep-alive: some arrive while the model is being
    unloaded or loaded again. They wait for it: none gets a 404."""
    import threading

    app = make_app({"tiny": {"path": str(tiny_gguf), "n_ctx": 256}})
    client = app.test_client()
    assert client.post("/model/launch", json={"model_name": "tiny", "keep_alive": 0.5}).status_code == 200
    codes = []

    def ask(until):
        while time.time() < until:
            r = app.test_client().post("/generate/fromtext", json={"model_name": "tiny", "prompt": "Hi",
                                                                   "max_new_tokens": 2})
            r.get_data()
            codes.append(r.status_code)

    for idle in (0.7, 1.6, 0.9, 1.7, 1.05, 1.6):  # the reaper looks every 0.5 s: some spells unload it
        time.sleep(idle)
        threads = [threading.Thread(target=ask, args=(time.time() + 0.3,)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    loads = app.extensions["edge_server"].metrics.registry.get_sample_value("edge_model_load_seconds_count",
                                                                            {"model": "tiny"})
    assert codes and set(codes) <= {200, 503}, sorted(set(codes))
    assert loads >= 2  # unloaded and loaded again while requests kept coming
    # Killed now: it stays killed, even for a request that was waiting.
    wait_for(lambda: "idle_unloaded_at" in status(client, "tiny"))
    assert client.delete("/model/kill", json={"model_name": "tiny"}).status_code == 200
    assert client.post("/generate/fromtext", json={"model_name": "tiny", "prompt": "Hi"}).status_code == 404
