"""Answers start with their first visible character and end with their last, in every dialect, streamed or not,
and the chat stores the same text (Gemma 3 270M: its answers came with the tokenizer's leading space, and
Ollama's with a newline at the end)."""
from __future__ import annotations

import json

import pytest

from edge_server.stop_strings import Trim

QUESTION = "What is the capital of France? Answer in one sentence."


def test_trim_holds_inner_whitespace_and_drops_the_outer():
    trim = Trim()
    pieces = [trim.feed(p) for p in [" ", " Paris", " is", "\n\n", "nice", ".", "\n", " "]]
    assert "".join(pieces) == "Paris is\n\nnice."
    assert pieces[0] == "" and pieces[-1] == "" and pieces[-2] == ""  # the trailing run was held, never sent


@pytest.fixture(scope="module")
def gemma_client(tmp_path_factory, gemma_gguf):
    from edge_server import create_app

    data = tmp_path_factory.mktemp("data")
    (data / "models.json").write_text(json.dumps({"gemma": {"path": str(gemma_gguf), "n_ctx": 1024}}))
    app = create_app({"data_dir": data, "n_threads": 2})
    client = app.test_client()
    assert client.post("/model/launch", json={"model_name": "gemma"}).status_code == 200
    yield client
    app.extensions["edge_server"].manager.shutdown()


def _ndjson(body: bytes, key) -> str:
    return "".join(key(json.loads(line)) for line in body.decode().splitlines() if line.strip())


def _sse(body: bytes, key) -> str:
    text = ""
    for line in body.decode().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            choices = json.loads(line[6:])["choices"]
            text += "".join(key(c) or "" for c in choices)
    return text


ASK = {"temperature": 0, "seed": 1}


@pytest.mark.parametrize("dialect", ["seed", "v1", "v1-stream", "api-chat", "api-chat-stream", "api-generate",
                                     "api-generate-stream"])
def test_answers_start_and_end_with_visible_text(gemma_client, dialect):
    c = gemma_client
    user = [{"role": "user", "content": QUESTION}]
    if dialect == "seed":
        c.delete("/chat/clearchat", json={"model_name": "gemma"})
        r = c.post("/generate/fromtext", json={"model_name": "gemma", "prompt": QUESTION, "max_new_tokens": 40, **ASK})
        text = r.get_data(as_text=True)
        turns = c.get("/chat/getchathistory", query_string={"model_name": "gemma"}).json["turns"]
        assert turns[-1] == {"role": "assistant", "content": text}  # the chat keeps what was shown
    elif dialect.startswith("v1"):
        stream = dialect.endswith("stream")
        r = c.post("/v1/chat/completions", json={"model": "gemma", "messages": user, "max_tokens": 40,
                                                 "stream": stream, **ASK})
        text = (_sse(r.data, lambda ch: ch["delta"].get("content")) if stream
                else r.json["choices"][0]["message"]["content"])
    else:
        stream = dialect.endswith("stream")
        chat = dialect.startswith("api-chat")
        body = {"model": "gemma", "stream": stream, "options": {"num_predict": 40, **ASK}}
        body.update({"messages": user} if chat else {"prompt": QUESTION})
        r = c.post("/api/chat" if chat else "/api/generate", json=body)
        key = (lambda d: d.get("message", {}).get("content", "")) if chat else (lambda d: d.get("response", ""))
        text = _ndjson(r.data, key) if stream else key(r.json)
    assert r.status_code == 200
    assert text and text == text.strip(), repr(text)


def test_cut_answers_say_so_in_every_dialect(client):
    """The tiny model never ends on its own (greedy): at max tokens every dialect says the answer was cut ("length"), and
    the chat marks the stored answer with the tokens it had (the page shows "stopped at N tokens")."""
    client.post("/model/launch", json={"model_name": "tiny"})
    user = [{"role": "user", "content": "Hi"}]
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": user, "max_tokens": 3, "temperature": 0})
    assert r.json["choices"][0]["finish_reason"] == "length"
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": user, "max_tokens": 3, "stream": True,
                                                  "temperature": 0})
    finishes = [json.loads(line[6:])["choices"][0]["finish_reason"] for line in r.get_data(as_text=True).splitlines()
                if line.startswith("data: {")]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    for path, body in (("/api/chat", {"messages": user}), ("/api/generate", {"prompt": "Hi"})):
        r = client.post(path, json={"model": "tiny", "stream": False, "options": {"num_predict": 3, "temperature": 0}, **body})
        assert r.json["done_reason"] == "length" and r.json["eval_count"] == 3
        lines = client.post(path, json={"model": "tiny", "options": {"num_predict": 3, "temperature": 0}, **body}).get_data(as_text=True)
        assert json.loads(lines.splitlines()[-1])["done_reason"] == "length"
    client.delete("/chat/clearchat", json={"model_name": "tiny"})
    text = client.post("/generate/fromtext", json={"model_name": "tiny", "prompt": "Hi", "max_new_tokens": 4,
                                                   "temperature": 0}).text
    turn = client.get("/chat/getchathistory", query_string={"model_name": "tiny"}).json["turns"][-1]
    assert turn == {"role": "assistant", "content": text, "finish_reason": "length", "completion_tokens": 4}


def test_tokens_are_counted_even_when_they_end_inside_a_character(client):
    """The tiny model's vocabulary is bytes: many of its tokens end inside a UTF-8 character and make no text
    of their own. They are tokens all the same: every answer cut at max_tokens says "length" and counts them."""
    client.post("/model/launch", json={"model_name": "tiny"})
    seen = []
    for seed, prompt in enumerate(("Hi", "Tell me", "ü", "日本", "Why?")):
        r = client.post("/v1/chat/completions", json={
            "model": "tiny", "messages": [{"role": "user", "content": prompt}], "max_tokens": 24, "temperature": 1,
            "seed": seed})
        seen.append((r.json["choices"][0]["finish_reason"], r.json["usage"]["completion_tokens"]))
    assert seen == [("length", 24)] * 5, seen
