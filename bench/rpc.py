"""One model split over workers (llama.cpp's RPC backend) against the same model on this device alone.

    python bench/rpc.py [MODEL.gguf] [--workers 2] [--worker-threads 1] [--rounds 3] [--tokens 128]

Starts `edge-server worker` processes on loopback and two servers (`python -m edge_server`): one alone,
one with --workers. Rounds alternate between them (never both at once), each a greedy /v1/completions
answer of --tokens tokens. Prints tokens/s of each and their median ratio, whether the greedy texts are
equal, and what the workers' relays carried per generated token: round trips (a reply after a request)
and bytes each way. A round trip costs a network's latency: multiply
by your Wi-Fi's ping for the time a token spends on the air. BENCH_WORKER_ENV="NAME=VALUE ..." sets
environment variables for the workers and the split server only (OMP_WAIT_POLICY=passive, say).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from _common import PROMPT, default_model, free_port, start_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edge_server.backends import rpc_relay  # noqa: E402

KEY = "bench-key"
WORKER_ENV = dict(kv.split("=", 1) for kv in os.environ.get("BENCH_WORKER_ENV", "").split() if "=" in kv)


def start_worker(data_dir: Path, threads: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edge_server", "worker", "--host", "127.0.0.1", "--port", str(port),
                             "--api-key", KEY, "--n-threads", str(threads), "--data-dir", str(data_dir)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, **WORKER_ENV})
    if "edge-server worker on" not in proc.stdout.readline():
        raise RuntimeError("the worker did not start")
    return proc, port


def answer(url: str, tokens: int) -> tuple[float, str, int]:
    began = time.perf_counter()
    r = requests.post(f"{url}/v1/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=600,
                      json={"model": "m", "prompt": PROMPT, "max_tokens": tokens, "temperature": 0, "seed": 1})
    r.raise_for_status()
    body = r.json()
    n = body["usage"]["completion_tokens"]
    return n / (time.perf_counter() - began), body["choices"][0]["text"], n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-threads", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="the server's n_threads (default: its own)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args()
    model = (args.model or default_model()).resolve()
    procs = []
    with tempfile.TemporaryDirectory(prefix="edge-rpc-") as tmp:
        tmp = Path(tmp)
        try:
            ports = []
            for i in range(args.workers):
                proc, port = start_worker(tmp / f"worker-{i}", args.worker_threads)
                procs.append(proc)
                ports.append(port)
            servers = {}
            for label, extra in (("alone", []), ("split", ["--split", "always", "--workers", ",".join(f"127.0.0.1:{p}" for p in ports)])):
                data = tmp / label
                data.mkdir()
                (data / "models.json").write_text(json.dumps({"m": {"path": str(model), "n_ctx": args.n_ctx}}))
                threads = ["--n-threads", str(args.threads)] if args.threads else []
                proc, url = start_server(data, "--api-key", KEY, *threads, *extra,
                                         env={**os.environ, **(WORKER_ENV if extra else {})})
                procs.append(proc)
                r = requests.post(f"{url}/model/launch", json={"model_name": "m"}, timeout=600,
                                  headers={"Authorization": f"Bearer {KEY}"})
                r.raise_for_status()
                answer(url, 8)  # warm
                servers[label] = url
            rates = {"alone": [], "split": []}
            texts = {}
            before = [rpc_relay.ask_status(("127.0.0.1", p), KEY) for p in ports]
            split_tokens = 0
            for _ in range(args.rounds):
                for label, url in servers.items():
                    rate, text, n = answer(url, args.tokens)
                    rates[label].append(rate)
                    texts[label] = text
                    if label == "split":
                        split_tokens += n
            after = [rpc_relay.ask_status(("127.0.0.1", p), KEY) for p in ports]
        finally:
            for proc in reversed(procs):  # the servers first: a split model whose workers go first aborts, loudly
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
    alone, split = statistics.median(rates["alone"]), statistics.median(rates["split"])
    print(f"model {model.name}, {args.workers} loopback workers x {args.worker_threads} thread(s), "
          f"{args.rounds} rounds of {args.tokens} tokens")
    print(f"alone : {alone:6.1f} tok/s   {[round(r, 1) for r in rates['alone']]}")
    print(f"split : {split:6.1f} tok/s   {[round(r, 1) for r in rates['split']]}")
    print(f"split / alone: {split / alone:.3f}   same greedy text: {texts['alone'] == texts['split']}")
    for port, b, a in zip(ports, before, after):
        per = lambda key: (a[key] - b[key]) / max(1, split_tokens)  # noqa: E731
        print(f"worker :{port}: per token {per('round_trips'):.1f} round trips, {per('bytes_in') / 1024:.1f} KiB in, "
              f"{per('bytes_out') / 1024:.1f} KiB out (prompts included)")


if __name__ == "__main__":
    main()
