"""Start-up time and idle memory of `python -m edge_server` (run by hand).

    python bench/startup.py [--runs 5]

Prints the median time from process start to the first answered request, and the idle RSS.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import psutil
import requests


def one_run() -> tuple[float, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tempfile.mkdtemp(prefix="edge-startup-")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "edge_server", "--port", str(port), "--data-dir", data,
                             "--log-level", "WARNING"], env={**os.environ})
    try:
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/model/getactive", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.01)
        ready = time.perf_counter() - start
        time.sleep(0.5)
        return ready, psutil.Process(proc.pid).memory_info().rss
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = [one_run() for _ in range(parser.parse_args().runs)]
    print(f"start-up to first answer (median of {len(runs)}): {statistics.median(r[0] for r in runs) * 1000:.0f} ms")
    print(f"idle RSS (median): {statistics.median(r[1] for r in runs) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
