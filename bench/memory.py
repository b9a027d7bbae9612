"""Memory at the default settings, and what several people at once cost (run by hand).

    python bench/memory.py [MODEL.gguf] [--n-ctx N] [--tokens 96] [--llama-server PATH]

For the model (Gemma 3 270M from PyPI by default), each in a fresh `python -m edge_server`:
- its resident memory idle, then after a launch and one answer: at the defaults (the server's n_ctx and
  parallel), and at parallel 1 and 4 with the same n_ctx; beside it the model's memory_bytes as
  /model/status reports it (the libraries are loaded before it is measured) and the memory check's
  estimate for a first launch (the model's needs and llama.cpp's libraries);
- the 4-client throughput ratio at the defaults: four simultaneous greedy streams' total tokens/s over one
  stream's, fresh prompts (no cached prefix helps).
With --llama-server, the same for llama.cpp's llama-server (its defaults: 4 slots sharing one cache) with the
same model, context and threads.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import requests
from _common import default_model, free_port, start_server, wait_ready
from concurrency import run

from edge_server.backends.gguf_header import LIBRARIES, memory_needs
from edge_server.cpu import default_threads
from edge_server.settings import Settings

MiB = 2 ** 20


def answer(url: str) -> None:
    requests.post(f"{url}/v1/chat/completions", timeout=600, json={
        "model": "bench", "messages": [{"role": "user", "content": "Tell me about the sea."}], "max_tokens": 32,
        "temperature": 0}).raise_for_status()


def ratio(url: str, tokens: int) -> float:
    run(url, 1, 8)  # warm-up
    single = max(run(url, 1, tokens)[0] for _ in range(2))
    return max(run(url, 4, tokens)[0] for _ in range(2)) / single


def edge(model: Path, n_ctx: int | None, parallel: int | None, tokens: int | None) -> dict:
    data = Path(tempfile.mkdtemp(prefix="edge-mem-"))
    (data / "models.json").write_text(json.dumps({"bench": {"path": str(model)}}))
    proc, url = start_server(data, "--no-memory-check")
    try:
        time.sleep(0.5)
        idle = psutil.Process(proc.pid).memory_info().rss
        launch = {"model_name": "bench", **({"n_ctx": n_ctx} if n_ctx else {}),
                  **({"parallel": parallel} if parallel else {})}
        requests.post(f"{url}/model/launch", json=launch, timeout=600).raise_for_status()
        answer(url)
        status = requests.get(f"{url}/model/status", params={"model_name": "bench"}).json()
        result = {"idle": idle, "rss": psutil.Process(proc.pid).memory_info().rss, "n_ctx": status["n_ctx"],
                  "parallel": status["parallel"], "reported": status.get("memory_bytes") or 0}
        if tokens:
            result["ratio"] = ratio(url, tokens)
        return result
    finally:
        proc.terminate()
        proc.wait(30)


def llama_server(binary: str, model: Path, n_ctx: int, tokens: int) -> dict:
    port = free_port()
    proc = subprocess.Popen([binary, "-m", str(model), "-c", str(n_ctx), "-t", str(default_threads()[0]),
                             "--port", str(port), "--host", "127.0.0.1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url)
        answer(url)
        rss = psutil.Process(proc.pid).memory_info().rss
        return {"rss": rss, "ratio": ratio(url, tokens)}
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--n-ctx", type=int, help="the context of the parallel 1 and 4 rows (default: the "
                                                  "server's default n_ctx)")
    parser.add_argument("--tokens", type=int, default=96, help="tokens a client asks for in the throughput runs")
    parser.add_argument("--llama-server", help="path of a llama-server binary to measure beside")
    args = parser.parse_args()
    model = (args.model or default_model()).resolve()
    n_ctx = args.n_ctx or Settings().default_n_ctx
    needs = memory_needs(model)
    print(f"model {model.name}, {default_threads()[0]} threads; RSS after a launch and one answer")
    print(f"{'launch':<28} {'idle MiB':>9} {'RSS MiB':>8} {'model MiB':>10} {'reported':>9} {'estimate':>9} "
          f"{'4 clients':>10}")
    rows = {}
    for label, ctx, parallel, tokens in (("defaults", None, None, args.tokens), ("parallel 1", n_ctx, 1, None),
                                         ("parallel 4", n_ctx, 4, None)):
        r = rows[label] = edge(model, ctx, parallel, tokens)
        shown = f"{r['ratio']:9.2f}x" if "ratio" in r else f"{'-':>10}"
        print(f"{label + ' (n_ctx ' + str(r['n_ctx']) + ', ' + str(r['parallel']) + ')':<28} "
              f"{r['idle'] / MiB:9.0f} {r['rss'] / MiB:8.0f} {(r['rss'] - r['idle']) / MiB:10.0f} "
              f"{r['reported'] / MiB:9.0f} {(needs.at(r['n_ctx'], r['parallel']) + LIBRARIES) / MiB:9.0f} {shown}",
              flush=True)
    one, default = rows["parallel 1"]["rss"], rows["defaults"]["rss"]
    print(f"default launch / parallel 1 at the same n_ctx: {default / one:.3f} (target <= 1.15 + 20 MB: "
          f"{'met' if default <= 1.15 * one + 20e6 else 'NOT met'})")
    if args.llama_server:
        r = llama_server(args.llama_server, model, rows["defaults"]["n_ctx"], args.tokens)
        print(f"llama-server -c {rows['defaults']['n_ctx']} (its defaults): RSS {r['rss'] / MiB:.0f} MiB, "
              f"4 clients {r['ratio']:.2f}x")


if __name__ == "__main__":
    os.environ.setdefault("EDGE_LOG_LEVEL", "WARNING")
    main()
