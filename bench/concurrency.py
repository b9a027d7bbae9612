"""Several people on one model: total tokens/s for 1, 2, 4 and 8 simultaneous clients, beside one client
alone, and each client's time to first token.

    python bench/concurrency.py [MODEL.gguf] [--tokens 96] [--clients 1 2 4 8]

It starts `python -m edge_server` with the model (Gemma 3 270M from PyPI by default) and a queue long
enough for every client, and has N threads stream the same greedy request at once (each its own
conversation, through /v1/chat/completions with include_usage, so the server counts the tokens).
Until the engine batches sequences (issue 14) the requests run one after another and the total
stays near the single stream; the table is the baseline that work is measured against.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests
from _common import default_model, start_server

PROMPT = "Write a long story about a lighthouse keeper and a storm."


def stream(url: str, tokens: int, client: int) -> tuple[float, float, int]:
    """(seconds to the first token, seconds to the end, tokens) for one client."""
    began = time.perf_counter()
    first = None
    counted = 0
    body = {"model": "bench", "messages": [{"role": "user", "content": f"{PROMPT} ({client})"}],
            "max_tokens": tokens, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    with requests.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event["choices"] and event["choices"][0]["delta"].get("content") and first is None:
                first = time.perf_counter() - began
            if event.get("usage"):
                counted = event["usage"]["completion_tokens"]
    return first or 0.0, time.perf_counter() - began, counted


def run(url: str, clients: int, tokens: int) -> tuple[float, list[float]]:
    """Total tokens/s over the wall time of all clients, and each client's time to first token."""
    results: list = [None] * clients
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, stream(url, tokens, i)))
               for i in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    return sum(r[2] for r in results) / wall, sorted(r[0] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rounds", type=int, default=2, help="runs per client count; the median is shown")
    args = parser.parse_args()
    model = (args.model or default_model()).resolve()
    data = Path(tempfile.mkdtemp(prefix="edge-concurrency-"))
    (data / "models.json").write_text(json.dumps({"bench": {"path": str(model), "n_ctx": 4096}}))
    server, url = start_server(data)
    try:
        requests.post(f"{url}/model/launch", json={"model_name": "bench"}, timeout=600).raise_for_status()
        run(url, 1, 8)  # warm-up
        single = None
        print(f"model {model.name}, {args.tokens} tokens a client, greedy, median of {args.rounds}")
        print("clients   total tok/s   x single   time to first token per client (ms)")
        for clients in args.clients:
            rates, firsts = [], []
            for _ in range(args.rounds):
                rate, first = run(url, clients, args.tokens)
                rates.append(rate)
                firsts.append(first)
            rate = statistics.median(rates)
            if clients == 1:
                single = rate
            ratio = f"{rate / single:8.2f}" if single else "       -"
            shown = " ".join(f"{t * 1000:.0f}" for t in firsts[len(firsts) // 2])
            print(f"{clients:7d}   {rate:11.1f}   {ratio}   {shown}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
