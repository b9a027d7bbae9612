"""The API pieces the phone web app needs (issue 9): one model listing, chat list and delete, and answers
that finish when the phone's screen locks."""
from __future__ import annotations

import gzip
import json
import socket
import threading
import time

import pytest
import requests


@pytest.fixture
def running_tiny(client):
    assert client.post("/model/launch", json={"model_name": "tiny"}).status_code == 200
    return client


def test_model_list_tells_everything_in_one_call(make_app, tiny_gguf, tiny_mmproj):
    app = make_app({"tiny": {"path": str(tiny_gguf), "n_ctx": 512},
                    "tiny-vision": {"path": str(tiny_gguf), "mmproj_path": str(tiny_mmproj), "n_ctx": 512}})
    client = app.test_client()
    client.post("/model/launch", json={"model_name": "tiny"})
    body = client.get("/model/list").json
    models = {m["model_name"]: m for m in body["models"]}
    assert models["tiny"]["state"] == "running" and models["tiny"]["n_ctx"] == 512
    assert models["tiny"]["vision"] is False and models["tiny"]["kind"] == "text"
    assert models["tiny-vision"]["state"] == "installed" and models["tiny-vision"]["vision"] is True
    assert models["llama-1b-4"]["state"] == "absent" and models["llama-1b-4"]["size"] > 0
    assert "stable-cascade" not in models  # heavy: full mode only
    assert body["free_memory_bytes"] > 0 and body["free_disk_bytes"] > 0


def test_chat_list_and_delete(running_tiny):
    client = running_tiny
    for chat_id, question in (("first", "What is the capital\nof France?"), ("second", "Name a river.")):
        r = client.post("/generate/fromtext", json={"model_name": "tiny", "prompt": question, "chat_id": chat_id,
                                                    "max_new_tokens": 8})
        r.get_data()
        time.sleep(1.1)  # whole-second modification times, so the order is known
    client.post("/chat/addsystemprompt", json={"model_name": "tiny", "system_prompt": "Be brief.", "chat_id": "third"})
    chats = client.get("/chat/list", query_string={"model_name": "tiny"}).json["chats"]
    assert [c["chat_id"] for c in chats] == ["third", "second", "first"]
    first = chats[2]
    assert first["title"] == "What is the capital of France?" and first["turns"] in (0, 2)
    assert chats[0]["title"] is None and chats[0]["system_prompt"] is True
    assert client.delete("/chat/delete", json={"model_name": "tiny", "chat_id": "first"}).json is None
    assert [c["chat_id"] for c in client.get("/chat/list", query_string={"model_name": "tiny"}).json["chats"]] == [
        "third", "second"]
    assert client.get("/chat/getchathistory", query_string={"model_name": "tiny", "chat_id": "first"}).json[
        "turns"] == []
    assert client.get("/chat/list", query_string={"model_name": "nope"}).status_code == 404
    assert client.delete("/chat/delete", json={"model_name": "tiny", "chat_id": "../x"}).status_code == 422


def test_on_disconnect_finish_stores_the_whole_answer(slow_live):
    url = slow_live.url
    ask = {"model_name": "slow", "prompt": "Tell me everything", "max_new_tokens": 120, "temperature": 0}
    whole = requests.post(f"{url}/generate/fromtext", json={**ask, "chat_id": "read"}, timeout=60).text
    body = json.dumps({**ask, "chat_id": "locked", "on_disconnect": "finish"}).encode()
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(b"POST /generate/fromtext HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert b"200 OK" in sock.recv(4096)  # the screen locks: the page is gone after the first bytes
    deadline = time.time() + 30
    turns = []
    while not turns and time.time() < deadline:
        time.sleep(0.2)
        turns = requests.get(f"{url}/chat/getchathistory", params={"model_name": "slow", "chat_id": "locked"}).json()[
            "turns"]
    assert len(turns) == 2 and len(turns[1]["content"]) >= 0.8 * len(whole), (turns, whole)
    r = requests.post(f"{url}/generate/fromtext", json={**ask, "on_disconnect": "later"})
    assert r.status_code == 422


def test_stop_ends_an_answer_set_to_finish_and_history_says_when_one_runs(slow_live):
    url = slow_live.url
    ask = {"model_name": "slow", "prompt": "Tell me everything", "max_new_tokens": 600, "chat_id": "stopme",
           "on_disconnect": "finish"}
    history = {"model_name": "slow", "chat_id": "stopme"}
    assert requests.post(f"{url}/generate/stop", json=history).json() == {"stopped": False}  # nothing runs
    with requests.post(f"{url}/generate/fromtext", json=ask, stream=True, timeout=60) as r:
        pieces = r.iter_content(chunk_size=None)
        seen = [next(pieces) for _ in range(10)]
        assert requests.get(f"{url}/chat/getchathistory", params=history).json()["answering"] is True
        # Another chat on the same model is not touched.
        assert requests.post(f"{url}/generate/stop", json={**history, "chat_id": "other"}).json() == {
            "stopped": False}
        stopped_at = time.monotonic()
        assert requests.post(f"{url}/generate/stop", json=history).json() == {"stopped": True}
        rest = list(pieces)  # the stream ends by itself, although the client stays
        ended = time.monotonic() - stopped_at
    assert ended < 2 and len(seen) + len(rest) < 300, (ended, len(rest))
    chat = requests.get(f"{url}/chat/getchathistory", params=history).json()
    assert chat["answering"] is False
    assert chat["turns"][-1]["content"] == b"".join(seen + rest).decode("utf-8", "replace")  # stored as it was sent
    assert requests.post(f"{url}/generate/stop", json={"model_name": "nope"}).status_code == 404
    assert requests.post(f"{url}/generate/stop", json={"model_name": "slow", "chat_id": "../x"}).status_code == 422


def test_stop_reaches_an_answer_still_waiting_for_the_model(slow_live):
    url = slow_live.url
    assert requests.post(f"{url}/model/launch", json={"model_name": "slow", "parallel": 1}).ok  # one at a time
    holder = requests.post(f"{url}/generate/fromtext", stream=True, timeout=60, json={
        "model_name": "slow", "prompt": "Go on", "max_new_tokens": 400, "chat_id": "holder"})
    waiting = {}
    thread = threading.Thread(target=lambda: waiting.update(r=requests.post(f"{url}/generate/fromtext", timeout=60, json={
        "model_name": "slow", "prompt": "Me next", "chat_id": "queued", "on_disconnect": "finish"})))
    thread.start()
    target = {"model_name": "slow", "chat_id": "queued"}
    deadline = time.time() + 10
    while not requests.get(f"{url}/chat/getchathistory", params=target).json()["answering"]:
        assert time.time() < deadline
        time.sleep(0.05)
    assert requests.post(f"{url}/generate/stop", json=target).json() == {"stopped": True}
    thread.join(10)
    assert waiting["r"].status_code == 499 and waiting["r"].json()["code"] == "client_disconnected"
    holder.close()
    chat = requests.get(f"{url}/chat/getchathistory", params=target).json()
    assert chat["turns"] == [] and chat["answering"] is False


def test_page_files_are_gzipped_revalidated_and_confined(client):
    from pathlib import Path

    import edge_server

    web = Path(edge_server.__file__).parent / "web"
    plain = client.get("/web/js/chat.js", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and plain.data == (web / "js" / "chat.js").read_bytes()
    assert plain.headers["Content-Type"] == "text/javascript; charset=utf-8"
    zipped = client.get("/web/js/chat.js", headers={"Accept-Encoding": "gzip, deflate"})
    assert zipped.headers["Content-Encoding"] == "gzip" and len(zipped.data) < len(plain.data) / 2
    assert gzip.decompress(zipped.data) == plain.data
    again = client.get("/web/js/chat.js", headers={"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    page = client.get("/")
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self';") and b"main.js" in page.data
    for bad in ("/web/../api/web.py", "/web/%2e%2e/settings.py", "/web/js/nope.js", "/web/vendor"):
        assert client.get(bad).status_code == 404, bad
