"""Regression tests for the attack run's findings on input, chats, n_ctx and leftovers (issue 8: 4, 9, 10, 11)."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import pytest
import requests
from conftest import LiveServer


@pytest.fixture
def served(make_app, tiny_gguf):
    servers = []

    def _serve(**settings):
        app = make_app({"tiny": {"path": str(tiny_gguf), "n_ctx": 512}}, **settings)
        servers.append(LiveServer(app))
        return servers[-1].url

    yield _serve
    for server in servers:
        server.close()


def post(url, path, raw: str):
    return requests.post(f"{url}{path}", data=raw.encode("utf-8"), headers={"Content-Type": "application/json"})


def test_deeply_nested_json_is_422_everywhere(served):
    url = served()
    deep = "[" * 990 + "]" * 990
    for path in ("/model/launch", "/generate/fromtext", "/chat/addsystemprompt", "/model/ismodelheavy"):
        r = post(url, path, '{"model_name": "tiny", "x": ' + deep + "}")
        assert r.status_code == 422 and r.json()["code"] == "invalid_request", (path, r.text)
    r = requests.delete(f"{url}/chat/clearchat", data=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 422


def test_lone_surrogates_are_422(served):
    url = served()
    r = post(url, "/chat/addsystemprompt", '{"model_name": "tiny", "system_prompt": "a\\ud800b"}')
    assert r.status_code == 422 and "surrogate" in r.json()["detail"]
    requests.post(f"{url}/model/launch", json={"model_name": "tiny"})
    r = post(url, "/generate/fromtext", '{"model_name": "tiny", "prompt": "\\udfff"}')
    assert r.status_code == 422
    # A proper pair (an emoji) is fine.
    assert post(url, "/chat/addsystemprompt", '{"model_name": "tiny", "system_prompt": "\\ud83d\\ude00"}').ok


@pytest.mark.parametrize("field,value", [
    ("temperature", "NaN"), ("top_p", "Infinity"), ("repeat_penalty", "-Infinity"), ("temperature", "1e400"),
    ("top_k", str(10**12)), ("max_new_tokens", str(10**12)), ("seed", str(2**40)),
])
def test_non_finite_and_absurd_numbers_are_422(served, field, value):
    url = served()
    requests.post(f"{url}/model/launch", json={"model_name": "tiny"})
    r = post(url, "/generate/fromtext", f'{{"model_name": "tiny", "prompt": "hi", "{field}": {value}}}')
    assert r.status_code == 422, r.text


def test_nan_in_a_multipart_form_is_422(served):
    url = served()
    r = requests.post(f"{url}/generate/fromimagetext", files={"image_files": ("a.png", b"x")},
                      data={"model_name": "tiny", "prompt": "hi", "temperature": "nan"})
    assert r.status_code == 422


def test_huge_n_ctx_is_422(served):
    r = requests.post(f"{served()}/model/launch", json={"model_name": "tiny", "n_ctx": 10**30})
    assert r.status_code == 422


def test_chat_id_with_a_newline_is_422(served):
    r = requests.post(f"{served()}/chat/addsystemprompt",
                      json={"model_name": "tiny", "system_prompt": "x", "chat_id": "default\n"})
    assert r.status_code == 422


def test_small_n_ctx_is_rounded_up_and_chats_keep_working(served):
    url = served()
    assert requests.post(f"{url}/model/launch", json={"model_name": "tiny", "n_ctx": 16}).ok
    assert requests.get(f"{url}/model/status", params={"model_name": "tiny"}).json()["n_ctx"] == 256
    for turn in range(3):
        r = requests.post(f"{url}/generate/fromtext",
                          json={"model_name": "tiny", "prompt": f"turn {turn}", "max_new_tokens": 40})
        assert r.status_code == 200, r.text
        r.content


def test_prompt_and_system_prompt_limits(served):
    url = served(max_prompt_bytes=1000, max_system_prompt_bytes=500)
    requests.post(f"{url}/model/launch", json={"model_name": "tiny"})
    r = requests.post(f"{url}/generate/fromtext", json={"model_name": "tiny", "prompt": "é" * 501})
    assert r.status_code == 413 and r.json()["code"] == "prompt_too_large"
    r = requests.post(f"{url}/chat/addsystemprompt", json={"model_name": "tiny", "system_prompt": "x" * 501})
    assert r.status_code == 413 and r.json()["code"] == "system_prompt_too_large"
    assert requests.post(f"{url}/chat/addsystemprompt", json={"model_name": "tiny", "system_prompt": "x" * 500}).ok


def test_chat_bytes_and_count_limits(served):
    url = served(max_chat_bytes=300, max_chats_per_model=2)
    requests.post(f"{url}/model/launch", json={"model_name": "tiny"})

    def ask(chat_id, prompt="a question " * 10):
        return requests.post(f"{url}/generate/fromtext", json={
            "model_name": "tiny", "prompt": prompt, "chat_id": chat_id, "max_new_tokens": 30})

    codes = [ask("a").status_code for _ in range(4)]
    assert codes[0] == 200 and codes[-1] == 413, codes
    r = ask("a")
    assert r.json()["code"] == "chat_too_large"
    turns = len(requests.get(f"{url}/chat/getchathistory", params={"model_name": "tiny", "chat_id": "a"}).json()["turns"])
    assert requests.delete(f"{url}/chat/clearchat", json={"model_name": "tiny", "chat_id": "a"}).ok
    assert turns > 0 and ask("a").status_code == 200  # cleared: room again
    assert ask("b").status_code == 200
    r = ask("c")
    assert r.status_code == 409 and r.json()["code"] == "too_many_chats"
    r = requests.post(f"{url}/chat/addsystemprompt", json={"model_name": "tiny", "system_prompt": "x", "chat_id": "d"})
    assert r.status_code == 409


def test_chats_load_on_demand_and_report_what_was_set_aside(make_app, tiny_gguf, data_dir):
    folder = data_dir / "chats" / "tiny"
    folder.mkdir(parents=True)
    (folder / "default.json").write_text('{"turns": ' + "[" * 5000 + "]" * 5000 + "}")  # too deep to parse
    (folder / "other.json.tmpx").write_text("not mine")
    (folder / "other.json12345abc.tmp").write_text('{"half": ')  # a crash mid-write left it
    client = make_app({"tiny": {"path": str(tiny_gguf)}}).test_client()
    assert (folder / "default.json").exists()  # nothing read at start-up
    assert not (folder / "other.json12345abc.tmp").exists() and (folder / "other.json.tmpx").exists()
    history = client.get("/chat/getchathistory", query_string={"model_name": "tiny"}).json
    assert history["turns"] == [] and len(history["set_aside"]) == 1
    assert history["set_aside"][0].startswith("default.json.broken-")
    assert client.delete("/chat/clearchat", json={"model_name": "tiny"}).status_code == 200
    assert client.get("/chat/getchathistory", query_string={"model_name": "tiny"}).json["set_aside"] == []


def test_deeply_nested_models_json_is_one_clear_sentence(tmp_path):
    (tmp_path / "models.json").write_text("[" * 100000 + "]" * 100000)
    result = subprocess.run([sys.executable, "-m", "edge_server", "list", "--data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "models.json" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_delete_never_follows_a_symlinked_chat_folder(make_app, tiny_gguf, data_dir, tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.json").write_text("{}")
    (data_dir / "chats").mkdir(parents=True)
    os.symlink(outside, data_dir / "chats" / "tiny")
    client = make_app({"tiny": {"path": str(tiny_gguf)}}).test_client()
    assert client.delete("/model/delete", json={"model_name": "tiny"}).status_code == 200
    assert (outside / "keep.json").exists() and not (data_dir / "chats" / "tiny").exists()


def test_control_characters_in_paths_cannot_forge_log_lines(served, caplog):
    url = served()
    with caplog.at_level(logging.INFO, logger="edge_server.http"):
        requests.get(f"{url}/model/x%0a2026-01-01 INFO edge_server.http: GET /fake 200")
    lines = [r.getMessage() for r in caplog.records if r.name == "edge_server.http"]
    assert any("\\x0a" in line for line in lines) and not any("\n" in line for line in lines)


def test_retry_after_follows_the_queue_and_recent_holds():
    """Retry-After was always 2 (finding 11): now the usual hold time times the queue ahead."""
    from edge_server.errors import Busy
    from edge_server.queueing import ModelSlot

    slot = ModelSlot("m", queue_size=1)
    for _ in range(20):  # requests that hold the model about 0.05 s
        release = slot.acquire()
        time.sleep(0.05)
        release()
    release = slot.acquire()
    waiter = threading.Thread(target=lambda: slot.acquire()())
    waiter.start()
    time.sleep(0.3)
    with pytest.raises(Busy) as refused:
        slot.acquire()
    assert refused.value.headers["Retry-After"] == "1"  # 2 x ~0.05 s, rounded up to a whole second
    release()
    waiter.join()
    assert retry_after_when_full(ModelSlot("m", queue_size=3)) == "16"  # 4 s x (3 waiting + the one generating)
    # Four streams at once: the queue moves four times as fast.
    assert retry_after_when_full(ModelSlot("m", queue_size=4, capacity=4)) == "5"  # 4 s x (4 waiting + 1) / 4


def retry_after_when_full(slot) -> str:
    """Retry-After for one more request, with every place held and the queue full (holds of 4 s measured)."""
    from edge_server.errors import Busy

    slot._hold = 4.0  # as measured on a slow model
    releases = [slot.acquire() for _ in range(slot.capacity)]
    waiters = [threading.Thread(target=lambda: slot.acquire()()) for _ in range(slot.queue_size)]
    for w in waiters:
        w.start()
    time.sleep(0.5)
    with pytest.raises(Busy) as refused:
        slot.acquire()
    for release in releases:
        release()
    for w in waiters:
        w.join()
    return refused.value.headers["Retry-After"]


def cache_use(model):
    """A function that gives the model's (prompt tokens evaluated, found in the cache) since it was last called."""
    last = [model.prompt_tokens]

    def since() -> tuple[int, int]:
        now, before = model.prompt_tokens, last[0]
        last[0] = now
        return now[0] - before[0], now[1] - before[1]
    return since


def test_an_outgrown_chat_keeps_reusing_its_prefix(make_app, tiny_gguf):
    """Dropping one exchange a turn shifted the prompt and re-read the whole context every turn (finding 8)."""
    app = make_app({"tiny": {"path": str(tiny_gguf), "n_ctx": 1024}})
    client = app.test_client()
    client.post("/model/launch", json={"model_name": "tiny"})
    since = cache_use(app.extensions["edge_server"].manager.get("tiny").model)
    reused = []  # per turn: the prompt tokens found in the cache
    for turn in range(24):
        r = client.post("/generate/fromtext", json={"model_name": "tiny", "prompt": f"question {turn} " * 6,
                                                    "max_new_tokens": 24, "temperature": 0})
        assert r.status_code == 200
        r.get_data()
        reused.append(since()[1])
    rereads = sum(1 for kept in reused[8:] if kept < 100)  # turns that read (nearly) the whole prompt again
    assert rereads <= 6, reused  # about one turn in four moves the start; dropping one exchange a turn: all 16
    chat = client.get("/chat/getchathistory", query_string={"model_name": "tiny"}).json
    assert chat["context_start"] > 0  # the chat did outgrow the context
