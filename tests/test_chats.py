"""Chats: turns, system prompt, clear, history, chat_id, persistence, atomic writes, trimming."""
from __future__ import annotations

import json
import os

import pytest

from edge_server.backends import GenerationOptions
from edge_server.chats import ChatStore, write_atomically
from edge_server.stop_strings import StopScanner
from edge_server.prompts import plain_prompt


def ask(client, prompt, model="tiny", **extra):
    r = client.post("/generate/fromtext", json={"model_name": model, "prompt": prompt, "max_new_tokens": 8,
                                                "temperature": 0, **extra})
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_data(as_text=True)


def rendered(model, prepared) -> str:
    """The prompt text the model will read (the tiny SPM vocabulary spells spaces as '▁')."""
    return model.llm.detokenize(prepared.payload).decode("utf-8", "replace").replace("\u2581", " ").lstrip(" ")


def history(client, model="tiny", **params):
    return client.get("/chat/getchathistory", query_string={"model_name": model, **params}).json


@pytest.fixture
def running(client):
    assert client.post("/model/launch", json={"model_name": "tiny"}).status_code == 200
    return client


def test_turns_accumulate_and_history(running):
    first = ask(running, "Hello")
    second = ask(running, "And again")
    assert first and second
    h = history(running)
    assert h["chat_id"] == "default" and h["system_prompt"] is None
    # An answer cut at max_new_tokens also says so (finish_reason, completion_tokens: test_clean_answers.py).
    said = [{"role": t["role"], "content": t["content"]} for t in h["turns"]]
    assert said == [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": first},
                    {"role": "user", "content": "And again"}, {"role": "assistant", "content": second}]


def test_system_prompt_clear_keeps_it(running, tiny_app):
    assert running.post("/chat/addsystemprompt", json={"model_name": "tiny", "system_prompt": "Be brief."}).json is None
    ask(running, "Hi")
    running.post("/chat/addsystemprompt", json={"model_name": "tiny", "system_prompt": "Be kind."})
    assert history(running)["system_prompt"] == "Be kind." and len(history(running)["turns"]) == 2
    assert running.delete("/chat/clearchat", json={"model_name": "tiny"}).json is None
    assert history(running) == {"model_name": "tiny", "chat_id": "default", "system_prompt": "Be kind.", "turns": [],
                                "context_start": 0, "set_aside": [], "answering": False}
    # The system prompt reaches the model through its chat template.
    model = tiny_app.extensions["edge_server"].manager.get("tiny").model
    prepared = model.prepare([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}])
    text = rendered(model, prepared)
    assert text.startswith("<|system|>\nBe kind.\n<|user|>\nHi\n") and text.endswith("<|assistant|>\n")


def test_chat_endpoints_work_without_running_model(client):
    assert client.post("/chat/addsystemprompt", json={"model_name": "tiny", "system_prompt": "x"}).status_code == 200
    assert client.delete("/chat/clearchat", json={"model_name": "tiny"}).status_code == 200
    assert client.delete("/chat/clearchat", json={"model_name": "nope"}).json["code"] == "model_not_found"
    assert client.get("/chat/getchathistory", query_string={"model_name": "nope"}).status_code == 404


def test_chat_id_isolation(running):
    a = ask(running, "I am A", chat_id="alice")
    ask(running, "I am B", chat_id="bob")
    assert [t["content"] for t in history(running, chat_id="alice")["turns"]] == ["I am A", a]
    assert history(running, chat_id="bob")["turns"][0]["content"] == "I am B"
    assert history(running)["turns"] == []
    running.delete("/chat/clearchat", json={"model_name": "tiny", "chat_id": "bob"})
    assert len(history(running, chat_id="alice")["turns"]) == 2


def test_greedy_answer_depends_on_the_chat(running):
    """Same question, fresh chats: same greedy answer; after another turn the context differs."""
    one = ask(running, "Question", chat_id="one")
    two = ask(running, "Question", chat_id="two")
    assert one == two
    ask(running, "Something else first", chat_id="three")
    assert ask(running, "Question", chat_id="three") != one


def test_chats_survive_restart(make_app, tiny_gguf, data_dir):
    models = {"tiny": {"path": str(tiny_gguf), "n_ctx": 512}}
    client = make_app(models).test_client()
    client.post("/model/launch", json={"model_name": "tiny"})
    client.post("/chat/addsystemprompt", json={"model_name": "tiny", "system_prompt": "Remember me."})
    answer = ask(client, "Persist this")
    restarted = make_app(models).test_client()
    h = history(restarted)
    assert h["system_prompt"] == "Remember me." and h["turns"][1]["content"] == answer
    assert json.loads((data_dir / "chats" / "tiny" / "default.json").read_text())["turns"][0]["content"] == "Persist this"


def test_broken_chat_file_is_set_aside(make_app, tiny_gguf, data_dir, caplog):
    folder = data_dir / "chats" / "tiny"
    folder.mkdir(parents=True)
    (folder / "default.json").write_text('{"turns": [ broken')
    (folder / "other.json").write_text('{"system_prompt": null, "turns": [{"role": "user", "content": "ok"}]}')
    client = make_app({"tiny": {"path": str(tiny_gguf)}}).test_client()
    assert history(client)["turns"] == []
    assert history(client, chat_id="other")["turns"] == [{"role": "user", "content": "ok"}]
    assert [p.name.startswith("default.json.broken-") for p in folder.iterdir()].count(True) == 1
    assert "broken" in caplog.text


def test_write_killed_midway_leaves_old_file(tmp_path, monkeypatch):
    path = tmp_path / "chat.json"
    write_atomically(path, {"system_prompt": None, "turns": [{"role": "user", "content": "old"}]})

    def dying_fsync(fd):
        raise KeyboardInterrupt("power cut during the write")

    monkeypatch.setattr(os, "fsync", dying_fsync)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, {"system_prompt": None, "turns": [{"role": "user", "content": "new" * 1000}]})
    monkeypatch.undo()
    assert json.loads(path.read_text())["turns"][0]["content"] == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["chat.json"]  # no temp file left behind


def test_write_killed_by_sigkill_leaves_old_file(tmp_path):
    """A real process killed while it rewrites the chat in a loop never leaves a broken file."""
    import subprocess
    import sys
    import time

    path = tmp_path / "chat.json"
    write_atomically(path, {"system_prompt": None, "turns": []})
    code = ("import sys; from pathlib import Path; from edge_server.chats import write_atomically\n"
            "i = 0\nwhile True:\n    i += 1\n"
            "    write_atomically(Path(sys.argv[1]), {'system_prompt': None, 'turns': "
            "[{'role': 'user', 'content': str(i) * 20000}]})\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)])
    deadline = time.time() + 30
    while not json.loads(path.read_text())["turns"] and time.time() < deadline:
        time.sleep(0.05)  # wait for the writer's first rewrite
    time.sleep(0.3)
    proc.kill()
    proc.wait()
    content = json.loads(path.read_text())["turns"][0]["content"]
    assert content == content[:len(content) // 20000] * 20000  # one whole write, never a mix


def test_trimming_keeps_system_prompt_and_recent_turns(make_app, tiny_gguf):
    app = make_app({"tiny": {"path": str(tiny_gguf), "n_ctx": 512}})
    client = app.test_client()
    client.post("/model/launch", json={"model_name": "tiny"})
    client.post("/chat/addsystemprompt", json={"model_name": "tiny", "system_prompt": "SYS"})
    for i in range(12):  # each exchange is about 60 byte-tokens: far more than 512 in all
        ask(client, f"turn {i} " + "x" * 30, max_new_tokens=16)
    turns = history(client)["turns"]
    assert len(turns) == 24  # the chat keeps everything; only the prompt is trimmed
    edge = app.extensions["edge_server"]
    running = edge.manager.get("tiny")
    options = GenerationOptions(max_new_tokens=64)
    prepared = edge.generator._fit(running, "default", edge.chats.get("tiny", "default"), "newest", options, None)
    assert prepared.n_tokens <= 512 - 64
    assert history(client)["context_start"] > 0  # moved on once the chat outgrew the context
    text = rendered(running.model, prepared)
    assert text.startswith("<|system|>\nSYS") and "newest" in text
    assert "turn 0 " not in text and "turn 11 " in text


def test_prompt_too_long_for_context(make_app, tiny_gguf):
    client = make_app({"tiny": {"path": str(tiny_gguf), "n_ctx": 256}}).test_client()
    client.post("/model/launch", json={"model_name": "tiny"})
    r = client.post("/generate/fromtext", json={"model_name": "tiny", "prompt": "y" * 400})
    assert r.status_code == 400 and r.json["code"] == "context_length_exceeded"
    assert history(client)["turns"] == []
    assert ask(client, "short")  # the model is free again


def test_max_new_tokens_is_bounded_by_the_context(make_app, tiny_gguf):
    app = make_app({"tiny": {"path": str(tiny_gguf), "n_ctx": 256}})
    client = app.test_client()
    client.post("/model/launch", json={"model_name": "tiny"})
    assert app.extensions["edge_server"].manager.get("tiny").model.n_ctx == 256
    r = client.post("/generate/fromtext", json={"model_name": "tiny", "prompt": "hi", "max_new_tokens": 10000,
                                                 "temperature": 0})
    assert r.status_code == 200
    assert 0 < len(r.get_data(as_text=True)) <= 256  # at most one character per token


def test_base_model_fallback_format(client, tiny_app):
    client.post("/model/launch", json={"model_name": "tiny-base"})
    client.post("/chat/addsystemprompt", json={"model_name": "tiny-base", "system_prompt": "You help."})
    assert ask(client, "Hi", model="tiny-base")
    model = tiny_app.extensions["edge_server"].manager.get("tiny-base").model
    messages = [{"role": "system", "content": "You help."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}]
    prepared = model.prepare(messages)
    assert rendered(model, prepared) == "You help.\n\nUser: Hi\nAssistant: Hello!\nUser: Bye\nAssistant:"
    assert prepared.stop == ("\nUser:",)
    assert plain_prompt([{"role": "user", "content": "Q"}]) == "User: Q\nAssistant:"


def test_stop_scanner_holds_back_and_cuts():
    scanner = StopScanner(["\nUser:"])
    assert scanner.feed("Paris is") == ("Paris is", False)
    assert scanner.feed(" nice.\nUs") == (" nice.", False)
    assert scanner.feed("er: next") == ("", True)
    scanner = StopScanner(["\nUser:"])
    assert scanner.feed("a\nU") == ("a", False)
    assert scanner.feed("nusual") == ("\nUnusual", False)
    assert scanner.flush() == ""


def test_stop_strings_from_the_request(running):
    full = ask(running, "Stop test", chat_id="s1", max_new_tokens=30)
    cut_at = full[5:7]
    stopped = ask(running, "Stop test", chat_id="s2", max_new_tokens=30, stop=[cut_at])
    assert stopped == full[:full.index(cut_at)]


@pytest.mark.parametrize("body,code,status", [
    ({"prompt": "x"}, "invalid_request", 422),
    ({"model_name": "tiny"}, "invalid_request", 422),
    ({"model_name": "tiny", "prompt": 5}, "invalid_request", 422),
    ({"model_name": "tiny", "prompt": "x", "max_new_tokens": 0}, "invalid_request", 422),
    ({"model_name": "tiny", "prompt": "x", "temperature": "hot"}, "invalid_request", 422),
    ({"model_name": "tiny", "prompt": "x", "chat_id": "../x"}, "invalid_request", 422),
    ({"model_name": "tiny", "prompt": "x", "stop": [""]}, "invalid_request", 422),
    ({"model_name": "nope", "prompt": "x"}, "model_not_found", 404),
    ({"model_name": "tiny-base", "prompt": "x"}, "model_not_running", 404),
])
def test_generate_validation(running, body, code, status):
    r = running.post("/generate/fromtext", json=body)
    assert r.status_code == status and r.json["code"] == code
    assert history(running)["turns"] == []


def test_chat_store_rejects_bad_chat_ids(client):
    r = client.get("/chat/getchathistory", query_string={"model_name": "tiny", "chat_id": "../../etc"})
    assert r.status_code == 422


def test_chat_store_unit(tmp_path):
    store = ChatStore(tmp_path)
    store.add_exchange("m", "c", "q", "a", n_images=2)
    assert store.get("m", "c")["turns"][0] == {"role": "user", "content": "q", "images": 2}
    store.delete_model("m")
    assert store.get("m", "c")["turns"] == [] and not (tmp_path / "m").exists()


def test_follow_up_turns_reuse_the_cached_prefix(running, tiny_app):
    """Turn 2 evaluates only what is new, not the whole chat again."""
    model = tiny_app.extensions["edge_server"].manager.get("tiny").model
    from test_hardening import cache_use

    ask(running, "first question " * 5, max_new_tokens=20)
    first_prompt = model.prepare([{"role": "user", "content": "first question " * 5}]).n_tokens
    since = cache_use(model)
    ask(running, "second", max_new_tokens=20)
    evaluated, reused = since()
    full = model.prepare([{"role": t["role"], "content": t["content"]} for t in history(running)["turns"][:3]])
    assert first_prompt > 80 and full.n_tokens > first_prompt + 20
    assert reused >= first_prompt - 1, (reused, first_prompt)  # only what is new was read
    assert evaluated + reused == full.n_tokens and evaluated <= full.n_tokens - first_prompt + 1


def test_a_big_last_exchange_is_kept_when_it_fits(make_app, tiny_gguf):
    """Moving the start to half the context must not throw away the newest exchange when it alone is bigger."""
    app = make_app({"tiny": {"path": str(tiny_gguf), "n_ctx": 512}})
    client = app.test_client()
    client.post("/model/launch", json={"model_name": "tiny"})
    for i in range(3):
        ask(client, f"turn {i} " + "z" * 150, max_new_tokens=8)
    edge = app.extensions["edge_server"]
    running = edge.manager.get("tiny")
    prepared = edge.generator._fit(running, "default", edge.chats.get("tiny", "default"), "what did I say?",
                                   GenerationOptions(max_new_tokens=200), None)
    text = rendered(running.model, prepared)
    assert prepared.n_tokens <= 512 - 200 and "turn 2 " in text and "turn 0 " not in text


def test_context_start_is_not_moved_on_a_chat_that_changed(tmp_path):
    store = ChatStore(tmp_path)
    for i in range(3):
        store.add_exchange("m", "c", f"q{i}", f"a{i}")
    store.set_context_start("m", "c", 2, n_turns=6)
    assert store.get("m", "c")["context_start"] == 2
    store.clear("m", "c")
    store.set_context_start("m", "c", 2, n_turns=6)  # computed before the clear: ignored
    assert store.get("m", "c")["context_start"] == 0
