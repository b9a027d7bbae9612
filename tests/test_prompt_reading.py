"""A long prompt is read in pieces: kill, disconnect and SIGTERM act within a second, and other models
keep answering meanwhile (issue 8, finding 3). The slow model reads this prompt in about 4.5 s."""
from __future__ import annotations

import json
import signal
import socket
import threading
import time

import requests
from conftest import ServerProcess

LONG = "word " * 120  # about 850 tokens for the tiny models' byte-level vocabulary


def _start_long_prompt(url, **extra):
    """Post the long prompt in a thread; returns the thread and a dict that gets the response."""
    out = {}

    def run():
        try:
            out["response"] = requests.post(f"{url}/generate/fromtext", timeout=60, json={
                "model_name": "slow", "prompt": LONG, "max_new_tokens": 5, **extra})
        except requests.ConnectionError as exc:  # the server went away (SIGTERM)
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.7)  # well into reading the prompt
    return thread, out


def test_kill_during_a_long_prompt_acts_at_once(slow_live):
    thread, out = _start_long_prompt(slow_live.url)
    t = time.perf_counter()
    assert requests.delete(f"{slow_live.url}/model/kill", json={"model_name": "slow"}, timeout=30).ok
    assert time.perf_counter() - t < 1.0
    thread.join(timeout=30)
    # Nothing was sent yet: the answer is a whole error, not an empty text that looks complete (issue 24).
    assert out["response"].status_code == 409 and out["response"].json()["code"] == "model_stopped"


def test_another_model_answers_while_a_long_prompt_is_read(slow_live):
    assert requests.post(f"{slow_live.url}/model/launch", json={"model_name": "tiny"}).ok
    thread, out = _start_long_prompt(slow_live.url)
    t = time.perf_counter()
    r = requests.post(f"{slow_live.url}/generate/fromtext", timeout=30,
                      json={"model_name": "tiny", "prompt": "quick", "max_new_tokens": 5})
    assert r.ok and r.content
    assert time.perf_counter() - t < 1.0
    thread.join(timeout=60)
    assert out["response"].ok


def test_client_leaving_during_a_long_prompt_frees_the_model(slow_live):
    body = json.dumps({"model_name": "slow", "prompt": LONG, "max_new_tokens": 5}).encode()
    with socket.create_connection(("127.0.0.1", int(slow_live.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(b"POST /generate/fromtext HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(0.7)
    t = time.perf_counter()
    r = requests.post(f"{slow_live.url}/generate/fromtext", timeout=30,
                      json={"model_name": "slow", "prompt": "next", "max_new_tokens": 2, "chat_id": "other"})
    assert r.ok
    assert time.perf_counter() - t < 1.5  # the slot freed within a piece, then 2 tokens of a short prompt
    history = requests.get(f"{slow_live.url}/chat/getchathistory", params={"model_name": "slow"}).json()
    assert history["turns"] == []  # nothing was said, so nothing was stored


def test_sigterm_during_a_long_prompt_exits_at_once(tmp_path, slow_gguf):
    server = ServerProcess(tmp_path / "data", {"slow": {"path": str(slow_gguf), "n_ctx": 2048}})
    try:
        assert requests.post(f"{server.url}/model/launch", json={"model_name": "slow"}).ok
        thread, _ = _start_long_prompt(server.url)
        t = time.perf_counter()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=30)
        assert time.perf_counter() - t < 1.5
        thread.join(timeout=30)
    finally:
        server.close()
    assert "stopped" in server.output() and "Traceback" not in server.output()
