"""Streaming through a real waitress server: incremental chunks, UTF-8, queues, disconnects, kill."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests
from conftest import LiveServer


def post_stream(url, **body):
    return requests.post(f"{url}/generate/fromtext", json=body, stream=True, timeout=60)


def chunks_with_times(response):
    """Each HTTP chunk as sent by the server, with the time it arrived."""
    out = []
    for chunk in response.raw.read_chunked(decode_content=False):
        out.append((time.perf_counter(), chunk))
    return out


def test_stream_is_incremental_and_every_chunk_is_utf8(slow_live):
    start = time.perf_counter()
    r = post_stream(slow_live.url, model_name="slow", prompt="Tell me a story", max_new_tokens=150, temperature=0)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert r.headers.get("Transfer-Encoding") == "chunked"
    chunks = chunks_with_times(r)
    assert len(chunks) > 50
    for _, chunk in chunks:
        chunk.decode("utf-8")  # raises if a character was split across chunks
    first, last = chunks[0][0] - start, chunks[-1][0] - start
    assert first < last / 4, f"first chunk at {first:.3f}s, last at {last:.3f}s"
    history = requests.get(f"{slow_live.url}/chat/getchathistory", params={"model_name": "slow"}).json()
    assert history["turns"][-1]["content"] == b"".join(c for _, c in chunks).decode("utf-8")


def test_queue_serves_in_order_and_refuses_past_its_length(slow_live):
    """One streams, two wait (parallel 1, queue_size=2); the fourth gets 503 busy with Retry-After."""
    assert requests.post(f"{slow_live.url}/model/launch", json={"model_name": "slow", "parallel": 1}).ok
    results, lock = {}, threading.Lock()

    def client(i):
        r = post_stream(slow_live.url, model_name="slow", prompt=f"client {i}", max_new_tokens=250, chat_id=f"c{i}")
        body = r.content
        with lock:
            results[i] = (r.status_code, time.perf_counter(), body, r.headers.get("Retry-After"))

    threads = []
    for i in range(3):
        threads.append(threading.Thread(target=client, args=(i,)))
        threads[-1].start()
        time.sleep(0.25)  # a known arrival order
    refused = post_stream(slow_live.url, model_name="slow", prompt="one too many", max_new_tokens=5)
    assert refused.status_code == 503
    assert refused.json()["code"] == "busy" and refused.headers["Retry-After"]
    # Cheap endpoints still answer while every stream slot of the model is taken.
    t = time.perf_counter()
    assert requests.get(f"{slow_live.url}/model/getactive", timeout=5).json() == ["slow"]
    assert time.perf_counter() - t < 0.5
    for thread in threads:
        thread.join()
    assert [results[i][0] for i in range(3)] == [200, 200, 200]
    assert results[0][1] < results[1][1] < results[2][1], "served out of arrival order"
    assert all(results[i][2] for i in range(3))


def test_disconnect_frees_the_model_quickly(slow_live):
    with socket.create_connection(("127.0.0.1", int(slow_live.url.rsplit(":", 1)[1]))) as sock:
        body = b'{"model_name": "slow", "prompt": "long one", "max_new_tokens": 900, "temperature": 0}'
        sock.sendall(b"POST /generate/fromtext HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert b"200 OK" in sock.recv(4096)
        time.sleep(0.3)
    # The 900-token answer would take about 7 s; a new client must get the model at once.
    t = time.perf_counter()
    r = post_stream(slow_live.url, model_name="slow", prompt="next", max_new_tokens=3, chat_id="other")
    next(r.iter_content(chunk_size=None))
    assert time.perf_counter() - t < 1.5
    r.close()
    turns = requests.get(f"{slow_live.url}/chat/getchathistory", params={"model_name": "slow"}).json()["turns"]
    assert turns[0]["content"] == "long one" and 0 < len(turns[1]["content"].encode()) < 900


def test_kill_during_stream_cuts_it_short(slow_live):
    """A cut answer must not look complete: the body ends without its final chunk (it ended like a finish)."""
    r = post_stream(slow_live.url, model_name="slow", prompt="endless", max_new_tokens=900)
    stream = r.iter_content(chunk_size=None)
    got = [next(stream)]
    killer = requests.delete(f"{slow_live.url}/model/kill", json={"model_name": "slow"}, timeout=10)
    assert killer.status_code == 200
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        got.extend(stream)
    assert b"".join(got).decode("utf-8")  # the text so far arrived, and stays in the chat
    assert requests.get(f"{slow_live.url}/chat/getchathistory", params={"model_name": "slow"}).json()["turns"]
    assert requests.get(f"{slow_live.url}/model/getactive").json() == []
    assert requests.post(f"{slow_live.url}/generate/fromtext",
                         json={"model_name": "slow", "prompt": "x"}).json()["code"] == "model_not_running"


def cut(url: str, how: str) -> None:
    """Stop the slow model the way `how` says, while it answers."""
    if how == "kill":
        assert requests.delete(f"{url}/model/kill", json={"model_name": "slow"}, timeout=10).ok
    elif how == "reload":  # another context: the running copy goes, a new one loads
        assert requests.post(f"{url}/model/launch", json={"model_name": "slow", "n_ctx": 512}, timeout=30).ok
    else:
        assert requests.delete(f"{url}/model/delete", json={"model_name": "slow"}, timeout=10).ok


@pytest.mark.parametrize("how", ["kill", "reload", "delete"])
def test_dialect_streams_cut_by_their_model_end_with_an_error(slow_live, how):
    """/v1 sent finish_reason "stop" then [DONE], /api done_reason "stop": a cut looked like a finish."""
    chat = {"model": "slow", "messages": [{"role": "user", "content": "endless"}], "stream": True}
    v1 = requests.post(f"{slow_live.url}/v1/chat/completions", json={**chat, "max_tokens": 900}, stream=True,
                       timeout=60)
    api = requests.post(f"{slow_live.url}/api/chat", json={**chat, "options": {"num_predict": 900}}, stream=True,
                        timeout=60)
    v1_lines, api_lines = v1.iter_lines(), api.iter_lines()
    assert next(v1_lines) and next(api_lines)
    cut(slow_live.url, how)
    events = [line for line in v1_lines if line]
    assert b"[DONE]" not in events[-1] and json.loads(events[-1][6:])["error"]["code"] == "model_stopped"
    assert not any(b'"finish_reason": "stop"' in e or b'"finish_reason": "length"' in e for e in events)
    last = json.loads(list(api_lines)[-1])
    assert "was stopped" in last["error"] and "done" not in last


def test_a_whole_answer_cut_by_a_kill_is_an_error(slow_live):
    outcome = {}

    def ask():
        outcome["r"] = requests.post(f"{slow_live.url}/v1/chat/completions", timeout=60, json={
            "model": "slow", "messages": [{"role": "user", "content": "endless"}], "max_tokens": 900})

    asker = threading.Thread(target=ask)
    asker.start()
    deadline = time.time() + 10
    while requests.get(f"{slow_live.url}/model/status", params={"model_name": "slow"}).json().get("active") != 1:
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # a few tokens in
    cut(slow_live.url, "kill")
    asker.join()
    assert outcome["r"].status_code == 409 and outcome["r"].json()["error"]["code"] == "model_stopped"


def test_different_models_generate_at_the_same_time(slow_live):
    assert requests.post(f"{slow_live.url}/model/launch", json={"model_name": "tiny"}).status_code == 200
    r = post_stream(slow_live.url, model_name="slow", prompt="busy", max_new_tokens=500)
    busy = r.iter_content(chunk_size=None)  # kept: a dropped iterator makes urllib3 hang up
    next(busy)
    t = time.perf_counter()
    other = requests.post(f"{slow_live.url}/generate/fromtext",
                          json={"model_name": "tiny", "prompt": "quick", "max_new_tokens": 5}, timeout=10)
    assert other.status_code == 200 and other.content
    assert time.perf_counter() - t < 1.5
    assert next(busy)  # the slow stream went on meanwhile
    r.close()


def test_streams_never_take_the_last_workers(make_app, slow_gguf):
    """With 4 threads, 2 are kept from streams: a third stream is refused, status still answers."""
    app = make_app({"slow": {"path": str(slow_gguf), "n_ctx": 1024}}, threads=4, queue_size=8, parallel=1)
    app.test_client().post("/model/launch", json={"model_name": "slow"})
    server = LiveServer(app)
    try:
        streams = []
        openers = [threading.Thread(target=lambda i=i: streams.append(post_stream(
            server.url, model_name="slow", prompt=f"s{i}", max_new_tokens=200, chat_id=f"s{i}"))) for i in range(2)]
        for opener in openers:
            opener.start()
        deadline = time.time() + 10
        while time.time() < deadline and requests.get(
                f"{server.url}/model/status", params={"model_name": "slow"}).json()["queued"] != 1:
            time.sleep(0.05)  # one streams, one waits in the queue
        refused = post_stream(server.url, model_name="slow", prompt="third", max_new_tokens=5)
        assert refused.status_code == 503 and refused.json()["code"] == "busy"
        t = time.perf_counter()
        status = requests.get(f"{server.url}/model/status", params={"model_name": "slow"}, timeout=5).json()
        assert status["state"] == "running" and time.perf_counter() - t < 0.5
        for opener in openers:
            opener.join()
        assert [r.status_code for r in streams] == [200, 200]
        for r in streams:
            r.close()
    finally:
        server.close()


def test_client_leaving_the_queue_frees_its_place(slow_live):
    assert requests.post(f"{slow_live.url}/model/launch", json={"model_name": "slow", "parallel": 1}).ok
    first = post_stream(slow_live.url, model_name="slow", prompt="long", max_new_tokens=400)
    # Keep the iterator: dropping it makes urllib3 close the connection, which ends this stream and
    # would let the queued request in instead of testing that it left.
    first_chunks = first.iter_content(chunk_size=None)
    next(first_chunks)

    def queued():
        return requests.get(f"{slow_live.url}/model/status", params={"model_name": "slow"}).json()["queued"]

    with socket.create_connection(("127.0.0.1", int(slow_live.url.rsplit(":", 1)[1]))) as sock:
        body = b'{"model_name": "slow", "prompt": "waiting", "chat_id": "w"}'
        sock.sendall(b"POST /generate/fromtext HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        deadline = time.time() + 5
        while queued() != 1 and time.time() < deadline:
            time.sleep(0.05)
        assert queued() == 1
    deadline = time.time() + 5
    while queued() != 0 and time.time() < deadline:
        time.sleep(0.05)
    assert queued() == 0
    assert next(first_chunks)  # the first stream is still going: the place was freed by the leaver
    first.close()
    turns = requests.get(f"{slow_live.url}/chat/getchathistory", params={"model_name": "slow", "chat_id": "w"}).json()
    assert turns["turns"] == []


def test_oversized_body_through_waitress_is_a_json_error(make_app, tiny_gguf):
    app = make_app({"tiny": {"path": str(tiny_gguf)}}, max_body_bytes=10_000)
    server = LiveServer(app)
    try:
        r = requests.post(f"{server.url}/generate/fromtext", data=b"x" * 15_000,
                          headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["code"] == "request_too_large"
        # Past twice the limit waitress stops reading by itself (plain text), so no huge body is spooled.
        r = requests.post(f"{server.url}/generate/fromtext", data=b"x" * 50_000)
        assert r.status_code == 413
    finally:
        server.close()
