"""The memory check before a launch: the estimate from the GGUF header against MemAvailable (read from a
meminfo file the tests write, through the EDGE_MEMINFO_PATH setting), with force and --no-memory-check."""
from __future__ import annotations

import requests
from conftest import ServerProcess

from edge_server.backends.gguf_header import memory_needs

# The check counts llama.cpp's libraries while nothing has loaded them yet (the first launch of a process):
# they are loaded here, so the figures below are the models' own whatever ran before in this process.
__import__("llama_cpp")


def meminfo(tmp_path, available_bytes: int):
    path = tmp_path / "meminfo"
    path.write_text(f"MemTotal:       8000000 kB\nMemFree:         100000 kB\n"
                    f"MemAvailable:   {available_bytes // 1024} kB\n")
    return str(path)


def test_the_estimate_follows_the_header(gemma_gguf, tiny_gguf):
    gemma = memory_needs(gemma_gguf)
    # 18 layers, 1 KV head, 256-wide keys and values; every sixth layer attends over the whole context, the
    # other 15 over a window of 512 tokens, cached at that size (per stream) plus a step of 512.
    assert gemma.cache_per_token == 3 * 1 * (256 + 256) * 2
    assert gemma.window == 512 and gemma.window_cache_per_token == 15 * 1 * (256 + 256) * 2
    assert gemma.cache(8192, 1) == 8192 * gemma.cache_per_token + 1024 * gemma.window_cache_per_token
    assert gemma.cache(8192, 4) == 8192 * gemma.cache_per_token + 2560 * gemma.window_cache_per_token
    assert gemma.cache(512, 4) == 512 * (gemma.cache_per_token + gemma.window_cache_per_token)  # never past n_ctx
    assert gemma.at(4096) - gemma.at(2048) == 2048 * (gemma.cache_per_token + gemma.work_per_token)
    assert gemma.weights == gemma_gguf.stat().st_size
    assert gemma.largest_context(gemma.at(3000)) == 2816  # multiples of 256
    assert memory_needs(tiny_gguf).at(512) < gemma.at(512)


def test_launch_refused_with_the_numbers_then_allowed_smaller_or_forced(make_app, gemma_gguf, tmp_path):
    needs = memory_needs(gemma_gguf)
    available = needs.at(3000)
    app = make_app({"gemma": {"path": str(gemma_gguf)}}, meminfo_path=meminfo(tmp_path, available))
    client = app.test_client()
    r = client.post("/model/launch", json={"model_name": "gemma", "n_ctx": 8192})
    assert r.status_code == 507 and r.json["code"] == "insufficient_memory", r.json
    detail = r.json["detail"]
    assert "at n_ctx 8192" in detail and "At n_ctx 2816 it would fit" in detail and '"force": true' in detail
    assert client.get("/model/getactive").json == []
    assert client.post("/model/launch", json={"model_name": "gemma", "n_ctx": 2816}).status_code == 200
    # A relaunch with more context counts the memory the running copy gives back.
    assert client.post("/model/launch", json={"model_name": "gemma", "n_ctx": 4096}).status_code == 200
    meminfo(tmp_path, 40 << 20)  # other apps took the memory: a larger relaunch no longer fits
    r = client.post("/model/launch", json={"model_name": "gemma", "n_ctx": 32768})
    assert r.status_code == 507
    assert client.get("/model/status", query_string={"model_name": "gemma"}).json["n_ctx"] == 4096  # untouched
    assert client.post("/model/launch", json={"model_name": "gemma", "n_ctx": 32768, "force": True}).status_code == 200


def test_streams_follow_the_memory(make_app, gemma_gguf, tmp_path):
    """The streams share one cache, but each has its own sliding window: without "parallel", as many streams
    as fit (up to 4); asked for, checked."""
    needs = memory_needs(gemma_gguf)
    assert needs.at(2048, 3) - needs.at(2048, 1) == 1024 * needs.window_cache_per_token
    app = make_app({"gemma": {"path": str(gemma_gguf)}},
                   meminfo_path=meminfo(tmp_path, needs.at(2048, 2) + (1 << 20)))
    client = app.test_client()
    r = client.post("/model/launch", json={"model_name": "gemma", "n_ctx": 2048, "parallel": 4})
    assert r.status_code == 507 and "with 4 streams" in r.json["detail"]
    assert 'send a smaller "parallel"' in r.json["detail"]
    assert client.post("/model/launch", json={"model_name": "gemma", "n_ctx": 2048}).status_code == 200
    assert client.get("/model/status", query_string={"model_name": "gemma"}).json["parallel"] == 2
    plenty = make_app({"gemma": {"path": str(gemma_gguf)}}, meminfo_path=meminfo(tmp_path, 64 << 30)).test_client()
    assert plenty.post("/model/launch", json={"model_name": "gemma", "n_ctx": 2048}).status_code == 200
    assert plenty.get("/model/status", query_string={"model_name": "gemma"}).json["parallel"] == 4
    r = plenty.post("/model/launch", json={"model_name": "gemma", "parallel": 17})
    assert r.status_code == 422 and r.json["code"] == "invalid_request"


def test_nothing_fits_and_the_check_can_be_turned_off(make_app, gemma_gguf, tmp_path):
    small = meminfo(tmp_path, 100 << 20)
    r = make_app({"gemma": {"path": str(gemma_gguf)}}, meminfo_path=small).test_client().post(
        "/model/launch", json={"model_name": "gemma", "n_ctx": 1024})
    assert r.status_code == 507 and "does not fit at any context size" in r.json["detail"]
    app = make_app({"gemma": {"path": str(gemma_gguf)}}, meminfo_path=small, memory_check=False)
    assert app.test_client().post("/model/launch", json={"model_name": "gemma", "n_ctx": 1024}).status_code == 200


def test_a_server_process_refuses_and_the_flag_turns_it_off(tmp_path, gemma_gguf):
    models = {"gemma": {"path": str(gemma_gguf), "n_ctx": 2048}}
    env = {"EDGE_MEMINFO_PATH": meminfo(tmp_path, 200 << 20)}
    server = ServerProcess(tmp_path / "a", models, env=env)
    try:
        r = requests.post(f"{server.url}/model/launch", json={"model_name": "gemma"}, timeout=60)
        assert r.status_code == 507 and r.json()["code"] == "insufficient_memory"
        free = requests.get(f"{server.url}/model/list", timeout=10).json()["free_memory_bytes"]
        assert free == 200 << 20  # the listing reads the same MemAvailable
    finally:
        server.close()
    server = ServerProcess(tmp_path / "b", models, "--no-memory-check", env=env)
    try:
        assert requests.post(f"{server.url}/model/launch", json={"model_name": "gemma"}, timeout=60).status_code == 200
    finally:
        server.close()


def test_the_estimate_is_what_a_launch_measures(tmp_path, gemma_gguf, tiny_gguf):
    """A fresh server reports what the process grew by when it loaded the model (memory_bytes): the estimate
    the check uses is within 15 % of it, at the default parallel and at one stream."""
    for name, path, n_ctx, parallel in (("gemma", gemma_gguf, 8192, 4), ("gemma", gemma_gguf, 2048, 1),
                                        ("tiny", tiny_gguf, 2048, 4)):
        server = ServerProcess(tmp_path / f"{name}{n_ctx}", {name: {"path": str(path)}})
        try:
            r = requests.post(f"{server.url}/model/launch", timeout=120,
                              json={"model_name": name, "n_ctx": n_ctx, "parallel": parallel})
            assert r.status_code == 200, r.text
            measured = requests.get(f"{server.url}/model/status", params={"model_name": name}).json()["memory_bytes"]
        finally:
            server.close()
        estimate = memory_needs(path).at(n_ctx, parallel)
        assert abs(estimate - measured) <= 0.15 * measured, (name, n_ctx, parallel, estimate, measured)
