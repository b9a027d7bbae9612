"""Several people on one model: the streams of a model decode together (continuous batching, issue 14).

Through waitress with the real Gemma 3 270M. The texts are greedy, so a stream answered beside others must
say exactly what it says alone; the cache counters show which prompt tokens each turn read again."""
from __future__ import annotations

import re
import threading
import time
import uuid

import pytest
import requests

from conftest import LiveServer

STORY = "Write a long story about a lighthouse keeper and a storm."


@pytest.fixture
def gemma_live(make_app, gemma_gguf):
    app = make_app({"gemma": {"path": str(gemma_gguf), "n_ctx": 1024}}, queue_size=2)
    server = LiveServer(app)
    yield server
    server.close()


def launch(url, **body):
    r = requests.post(f"{url}/model/launch", json={"model_name": "gemma", **body}, timeout=120)
    assert r.status_code == 200, r.text


class Client(threading.Thread):
    """One person streaming an answer: when the first and last pieces came, and the text."""

    def __init__(self, url, prompt, tokens=48, dialect="native", chat_id=None, leave_after=None):
        super().__init__(daemon=True)
        self.url, self.prompt, self.tokens, self.dialect = url, prompt, tokens, dialect
        self.chat_id, self.leave_after = chat_id or uuid.uuid4().hex, leave_after
        self.first = self.last = None
        self.pieces: list[str] = []
        self.status = None
        self.cut = False

    def run(self):
        if self.dialect == "openai":
            url, body = f"{self.url}/v1/chat/completions", {
                "model": "gemma", "messages": [{"role": "user", "content": self.prompt}], "stream": True,
                "max_tokens": self.tokens, "temperature": 0}
        elif self.dialect == "raw":  # the prompt read as it is, with no chat template around it
            url, body = f"{self.url}/v1/completions", {
                "model": "gemma", "prompt": self.prompt, "stream": True, "max_tokens": self.tokens, "temperature": 0}
        else:
            url, body = f"{self.url}/generate/fromtext", {
                "model_name": "gemma", "prompt": self.prompt, "chat_id": self.chat_id,
                "max_new_tokens": self.tokens, "temperature": 0}
        with requests.post(url, json=body, stream=True, timeout=120) as r:
            self.status = r.status_code
            lines = r.iter_content(chunk_size=None) if self.dialect == "native" else r.iter_lines()
            try:
                for chunk in lines:
                    piece = self._piece(chunk)
                    if piece:
                        self.first = self.first or time.perf_counter()
                        self.pieces.append(piece)
                    if self.leave_after and len(self.pieces) >= self.leave_after:
                        return  # the connection closes here: the client left
            except requests.exceptions.ChunkedEncodingError:
                self.cut = True  # the server ended the body without its last chunk: the answer is not whole
        self.last = time.perf_counter()

    def _piece(self, chunk: bytes) -> str:
        if self.dialect == "native":
            return chunk.decode("utf-8")
        import json

        if not chunk.startswith(b"data: {"):
            return ""
        choices = json.loads(chunk[6:])["choices"]
        if not choices:
            return ""
        return choices[0].get("text") or "" if self.dialect == "raw" else choices[0]["delta"].get("content") or ""

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def run_all(clients):
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=120)
    return clients


def start_until(clients, ready) -> None:
    """Start the clients, then wait (30 s at most) until ready() holds."""
    for client in clients:
        client.start()
    deadline = time.time() + 30
    while not ready():
        assert time.time() < deadline
        time.sleep(0.02)


def prompt_counts(url) -> tuple[int, int]:
    """(prompt tokens evaluated, reused from the cache) of the model since it was loaded, from /metrics."""
    text = requests.get(f"{url}/metrics").text
    counts = {how: int(float(value)) for how, value in
              re.findall(r'edge_prompt_tokens_total\{how="(\w+)",model="gemma"\} (\S+)', text)}
    return counts["evaluated"], counts["reused"]


CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Germany": "Berlin"}


def question(country: str) -> str:
    return f"What is the capital of {country}?"


def answers_only_its_own(client, country: str) -> bool:
    """The answer names its country's capital and no other: streams sharing the cache never see each other's."""
    return CAPITALS[country] in client.text and not any(
        city in client.text for other, city in CAPITALS.items() if other != country)


def test_four_streams_at_once_each_answer_their_own_question(gemma_live):
    """Two chats and two OpenAI clients at once on one model, sharing one cache pool: each answers its own
    question. (Greedy text in company is mostly, not always, the text alone: the attention over a shared pool
    rounds a little differently with other sequences' cells in it, as in llama-server.)"""
    url = gemma_live.url
    launch(url, parallel=4)
    assert requests.get(f"{url}/model/status", params={"model_name": "gemma"}).json()["parallel"] == 4
    countries = list(CAPITALS)
    clients = run_all([Client(url, question(c), tokens=24, dialect="openai" if i % 2 else "native",
                              chat_id=f"together{i}") for i, c in enumerate(countries)])
    assert all(c.status == 200 for c in clients)
    assert all(answers_only_its_own(c, country) for c, country in zip(clients, countries)), [c.text for c in clients]
    assert max(c.first for c in clients) < min(c.last for c in clients)  # they streamed at the same time


def test_a_client_leaving_mid_batch_leaves_the_others_untouched(gemma_live):
    url = gemma_live.url
    launch(url, parallel=4)
    countries = ["France", "Japan", "Italy"]
    clients = [Client(url, question(c), chat_id=f"b{i}", tokens=24, leave_after=3 if i == 1 else None)
               for i, c in enumerate(countries)]
    run_all(clients)
    assert answers_only_its_own(clients[0], "France") and answers_only_its_own(clients[2], "Italy"), [c.text for c in clients]
    assert len(clients[1].pieces) == 3
    # Its chat keeps what it was sent, a part of the answer it would have had.
    turns = requests.get(f"{url}/chat/getchathistory", params={"model_name": "gemma", "chat_id": "b1"}).json()["turns"]
    kept, seen = turns[1]["content"], clients[1].text
    assert kept and (kept.startswith(seen) or seen.startswith(kept)) and len(kept) < len(clients[0].text)


def test_a_fifth_request_waits_for_a_stream_and_is_then_served(gemma_live):
    url = gemma_live.url
    launch(url, parallel=4)
    four = [Client(url, f"{STORY} ({i})", tokens=96) for i in range(4)]
    start_until(four, lambda: requests.get(f"{url}/model/status", params={"model_name": "gemma"}).json()["active"] == 4)
    fifth = Client(url, "What is the capital of France?", tokens=16)
    fifth.start()
    for client in four + [fifth]:
        client.join(timeout=120)
    assert all(c.status == 200 and c.text for c in four + [fifth])
    assert fifth.first > min(c.last for c in four)  # it began only once a stream was free
    assert "Paris" in fifth.text


def test_two_chats_alternating_each_keep_their_cached_prefix(gemma_live):
    """Turn two of each chat reads only its new tokens (parallel 2); with one stream they evict each other."""
    url = gemma_live.url

    def turns(parallel: int) -> list[tuple[int, int]]:
        launch(url, parallel=parallel)
        read = []
        for prompt, chat in (("Name a fruit.", "a"), ("Name a colour.", "b"), ("And another one?", "a"),
                             ("And a second one?", "b")):
            before = prompt_counts(url)
            run_all([Client(url, prompt, tokens=24, chat_id=f"{chat}{parallel}")])
            after = prompt_counts(url)
            read.append((after[0] - before[0], after[1] - before[1]))
        return read

    kept = turns(2)
    for evaluated, reused in kept[2:]:  # the second turns: the first turn and its answer come from the cache
        assert reused > 20 and evaluated < reused, kept
    evicted = turns(1)
    for (evaluated, reused), (kept_evaluated, _) in zip(evicted[2:], kept[2:]):
        assert evaluated > kept_evaluated + 20, (evicted, kept)


def test_kill_during_a_batch_ends_every_stream(gemma_live):
    url = gemma_live.url
    launch(url, parallel=4)
    clients = [Client(url, f"{STORY} ({i})", tokens=400) for i in range(4)]
    start_until(clients, lambda: all(c.pieces for c in clients))
    began = time.perf_counter()
    assert requests.delete(f"{url}/model/kill", json={"model_name": "gemma"}, timeout=30).status_code == 200
    assert time.perf_counter() - began < 5
    for client in clients:
        client.join(timeout=30)
        assert client.status == 200 and client.last is not None and client.text  # ended at once, text kept
        assert client.cut  # and not as a whole answer would (issue 24)
    assert requests.get(f"{url}/model/getactive").json() == []
