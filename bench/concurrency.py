"""Several people on one model: total tokens/s for 1, 2, 4 and 8 simultaneous clients, beside one client
alone, and each client's time to first token.

    python bench/concurrency.py [MODEL.gguf] [--tokens 96] [--clients 1 2 4 8] [--parallel N] [--rounds 2]

It starts `python -m edge_server` with the model (Gemma 3 270M from PyPI by default) and a queue long
enough for every client, and has N threads stream a greedy request at once (each its own prompt and
conversation, through /v1/chat/completions with include_usage, so the server counts the tokens). The
model decodes up to --parallel streams together (default: the server's own choice); the clients beyond
that wait in the queue. `--parallel 1` gives the one-at-a-time figures of before.

First, in-process and before the server starts, the most batching can give here: llama_decode of one token
for each of 1, 2, 4 and 8 sequences (logits for every one), as tokens/s and a multiple of one sequence.
Then a short request's time to first token while another client's long prompt (about 5,000 tokens) is
read, and the server's resident memory with the model launched at parallel 1 and at the --parallel used
above.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests
from _common import PROMPT, default_model, start_server



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


def ceiling(model: Path, steps: int = 48) -> None:
    """tokens/s of bare llama_decode steps holding one token of each of n sequences, the model loaded as the
    server loads it (parallel 8, each with a 1024-token context)."""
    import llama_cpp

    from edge_server.backends.llamacpp import LlamaCppBackend
    from edge_server.cpu import default_threads

    loaded = LlamaCppBackend().load(model, n_ctx=1024, n_threads=default_threads()[0], parallel=8)
    ctx, batch = loaded._ctx, llama_cpp.llama_batch_init(8, 0, 1)
    rates = {}
    for n in (1, 2, 4, 8):
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        began = None
        for step in range(steps + 4):
            if step == 4:
                began = time.perf_counter()  # after a warm-up
            for i in range(n):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = 1000 + i, step, 1, True
                batch.seq_id[i][0] = i
            batch.n_tokens = n
            llama_cpp.llama_decode(ctx, batch)
        rates[n] = n * steps / (time.perf_counter() - began)
    llama_cpp.llama_batch_free(batch)
    loaded.close()
    print("llama_decode alone, one token for each of n sequences: " +
          ", ".join(f"n={n} {rate:.1f} tok/s ({rate / rates[1]:.2f}x)" for n, rate in rates.items()))


def memory(url: str, pid: int, parallel: int) -> None:
    """Resident memory with the model at parallel 1 and at `parallel`: what each extra stream costs."""
    rss = {}
    for streams in sorted({1, parallel}):
        requests.post(f"{url}/model/launch", json={"model_name": "bench", "parallel": streams},
                      timeout=600).raise_for_status()
        time.sleep(1)
        rss[streams] = psutil.Process(pid).memory_info().rss
    line = ", ".join(f"parallel {n}: {size / 2**20:.0f} MiB" for n, size in rss.items())
    if parallel > 1:
        line += f"; {(rss[parallel] - rss[1]) / (parallel - 1) / 2**20:.0f} MiB per extra stream"
    print(f"server resident memory with the model launched: {line}")


def fairness(url: str, words: int = 4500) -> None:
    """A short request's time to first token while another client's long prompt is being read."""
    long_prompt = "The sea was calm that day. " * (words // 6)
    reader = threading.Thread(target=lambda: requests.post(f"{url}/v1/chat/completions", timeout=600, json={
        "model": "bench", "messages": [{"role": "user", "content": long_prompt}], "max_tokens": 8}))
    began = time.perf_counter()
    reader.start()
    time.sleep(0.5)
    first, _, _ = stream(url, 8, 999)
    reader.join()
    print(f"a short request's first token while a {words}-word prompt is read: {first * 1000:.0f} ms "
          f"(the long one took {time.perf_counter() - began:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rounds", type=int, default=2, help="runs per client count; the median is shown")
    parser.add_argument("--parallel", type=int, help="streams the model decodes together (default: the server's)")
    args = parser.parse_args()
    model = (args.model or default_model()).resolve()
    ceiling(model)
    data = Path(tempfile.mkdtemp(prefix="edge-concurrency-"))
    (data / "models.json").write_text(json.dumps({"bench": {"path": str(model), "n_ctx": 8192}}))
    server, url = start_server(data)
    try:
        launch = {"model_name": "bench", **({"parallel": args.parallel} if args.parallel else {})}
        requests.post(f"{url}/model/launch", json=launch, timeout=600).raise_for_status()
        status = requests.get(f"{url}/model/status", params={"model_name": "bench"}).json()
        run(url, 1, 8)  # warm-up
        single = None
        print(f"model {model.name}, n_ctx {status['n_ctx']}, parallel {status['parallel']}, {args.tokens} tokens a "
              f"client, greedy, median of {args.rounds}")
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
        fairness(url)
        memory(url, server.pid, status["parallel"])
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
