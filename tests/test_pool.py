"""One cache pool per model (issue 21): the streams of a model share n_ctx cells, so a launch costs one
context's memory whatever its parallel. Through waitress with the real Gemma 3 270M at n_ctx 512, a pool
small enough for a few answers to fill: running streams that fill it give cells back and read their text
again, idle chats' prefixes go least recently used first, a prompt that does not fit waits for room."""
from __future__ import annotations

import pytest
import requests
from conftest import LiveServer
from test_batching import Client, launch, prompt_counts, run_all, start_until

POOL = 512


@pytest.fixture
def small_pool(make_app, gemma_gguf):
    app = make_app({"gemma": {"path": str(gemma_gguf), "n_ctx": POOL}}, queue_size=4)
    server = LiveServer(app)
    launch(server.url, parallel=4)
    yield server
    server.close()


def status(url) -> dict:
    return requests.get(f"{url}/model/status", params={"model_name": "gemma"}, timeout=10).json()


def raw_prompt(gemma_gguf, n_tokens: int) -> str:
    """A text of exactly n_tokens for /v1/completions (which reads it raw, after a BOS)."""
    from llama_cpp import Llama

    vocab = Llama(str(gemma_gguf), vocab_only=True, verbose=False)
    words = n_tokens
    while len(vocab.tokenize(("sea " * words).encode())) > n_tokens:
        words -= 1
    text = "sea " * words
    assert len(vocab.tokenize(text.encode())) == n_tokens
    return text


def test_four_streams_overfill_a_small_pool_and_all_finish(small_pool):
    """Four stories of 150 tokens need more than the 512 cells: the youngest give theirs back and read their
    text again when there is room; every story is told to the end, and stays its own story."""
    url = small_pool.url
    before = prompt_counts(url)[0]
    run_all([Client(url, "Write a long story about a cat.", tokens=1)])
    one_prompt = prompt_counts(url)[0] - before
    subjects = {"a lighthouse keeper": "lighthouse", "a dragon": "dragon", "a robot": "robot", "a cat": "cat"}
    before = prompt_counts(url)[0]
    clients = run_all([Client(url, f"Write a long story about {s}.", tokens=150) for s in subjects])
    assert all(c.status == 200 for c in clients)
    for client, word in zip(clients, subjects.values()):
        assert word in client.text.lower() and len(client.text) > 400, client.text
    assert status(url)["cache_used"] <= POOL
    # 4 x (prompt + 150) > 512: text given back was read again, well beyond the four prompts.
    assert prompt_counts(url)[0] - before > 4 * one_prompt + 60


def test_a_prompt_that_does_not_fit_waits_then_runs(small_pool, gemma_gguf):
    """A second long prompt cannot fit beside the first stream's: it waits, then runs once that one ends."""
    url, text = small_pool.url, raw_prompt(gemma_gguf, 300)
    first = Client(url, text + "Then the storm came.", tokens=150, dialect="raw")
    second = Client(url, text + "A ship was near.", tokens=8, dialect="raw")
    start_until([first], lambda: first.pieces)
    second.start()
    for client in (first, second):
        client.join(timeout=120)
    assert first.status == second.status == 200 and first.text and second.text
    assert second.first > first.last  # it began only once the first had given the room back


def test_idle_prefixes_are_evicted_least_recently_used_first(small_pool, gemma_gguf):
    """Chats a then b leave their prefixes; a prompt that needs room takes a's (the older), so b's next turn
    still starts from its cache and a's reads everything again."""
    url = small_pool.url
    run_all([Client(url, "Write a long story about a dragon.", tokens=40, chat_id="a")])
    used_a = status(url)["cache_used"]
    run_all([Client(url, "Write a long story about a robot.", tokens=40, chat_id="b")])
    used_b = status(url)["cache_used"] - used_a
    assert used_a > 30 and used_b > 30
    # Fits once a's cells are free, not beside both (512 - used_b - 30 > 512 - used_a - used_b).
    other = Client(url, raw_prompt(gemma_gguf, POOL - used_b - 30), tokens=10, dialect="raw")
    run_all([other])
    assert other.status == 200 and status(url)["cache_used"] <= POOL

    def turn(chat):
        before = prompt_counts(url)
        run_all([Client(url, "And what happened next?", tokens=16, chat_id=chat)])
        after = prompt_counts(url)
        return after[0] - before[0], after[1] - before[1]

    evaluated_b, reused_b = turn("b")
    evaluated_a, reused_a = turn("a")
    assert reused_b > used_b - 5 and evaluated_b < 40, (evaluated_b, reused_b)
    assert reused_a < 10 and evaluated_a > used_a, (evaluated_a, reused_a)


def test_streams_of_every_size_share_a_tiny_pool_without_a_failed_decode(tiny_gguf):
    """The backend itself, stepped as the engine steps it: rounds of four streams whose prompts and answers
    together need up to four times the 256 cells. None fails for want of a cache slot (llama_decode would
    raise), every one answers, and the pool never holds more than it has."""
    import random

    from edge_server.backends.base import GenerationOptions
    from edge_server.backends.llamacpp import LlamaCppBackend

    model = LlamaCppBackend().load(tiny_gguf, n_ctx=256, n_threads=2, parallel=4)
    rng = random.Random(7)
    try:
        for _ in range(8):
            prompts = [model.prepare_raw("x" * rng.randint(1, 240)) for _ in range(4)]
            budgets = [min(rng.randint(1, 60), 256 - p.n_tokens) for p in prompts]
            streams = [model.stream(p, GenerationOptions(max_new_tokens=b, temperature=0))
                       for p, b in zip(prompts, budgets)]
            pieces, live = [0] * 4, list(range(4))
            while live:
                for i in list(live):
                    try:
                        pieces[i] += bool(next(streams[i]))
                    except StopIteration:
                        live.remove(i)
                assert model.cache_used <= 256
            assert all(0 < n <= budget for n, budget in zip(pieces, budgets)), (pieces, budgets)
        assert model._batch.evictions > 0  # the rounds did need the room
    finally:
        model.close()
