"""Downloads through the real huggingface_hub code against a local fake hub (HF_ENDPOINT)."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from gguf_factory import write_tiny_llama

from edge_server.cli import main as cli_main

REPO, FILE = "test-org/tiny-GGUF", "tiny-q4.gguf"


@pytest.fixture
def hub_app(make_app, fake_hub, tiny_gguf):
    fake_hub.add(REPO, FILE, tiny_gguf.read_bytes())
    models = {"hubby": {"repo_id": REPO, "filename": FILE, "n_ctx": 256},
              "missing": {"repo_id": REPO, "filename": "nope.gguf"}}
    return lambda **kw: make_app(models, hf_endpoint=fake_hub.url, **kw)


def test_first_download_then_reuse(hub_app, fake_hub, data_dir, tiny_gguf):
    client = hub_app().test_client()
    assert client.get("/model/status", query_string={"model_name": "hubby"}).json["state"] == "absent"
    assert client.post("/model/launch", json={"model_name": "hubby"}).status_code == 200
    stored = data_dir / "models" / "hubby" / FILE
    assert stored.read_bytes() == tiny_gguf.read_bytes()
    assert fake_hub.gets(FILE) == [None]
    client.delete("/model/kill", json={"model_name": "hubby"})
    assert client.get("/model/status", query_string={"model_name": "hubby"}).json["state"] == "installed"
    # A new app on the same store (a restart) reuses the complete file without a transfer.
    client = hub_app().test_client()
    assert client.post("/model/launch", json={"model_name": "hubby"}).status_code == 200
    assert fake_hub.gets(FILE) == [None]


def test_resume_after_cut_off_transfer(make_app, fake_hub, data_dir, tmp_path):
    big = write_tiny_llama(tmp_path / "big.gguf", n_layers=80)
    assert big.stat().st_size > 12 * 2**20
    fake_hub.add(REPO, FILE, big.read_bytes())
    fake_hub.cut_after = 11 * 2**20
    client = make_app({"hubby": {"repo_id": REPO, "filename": FILE, "n_ctx": 256}},
                      hf_endpoint=fake_hub.url).test_client()
    assert client.post("/model/launch", json={"model_name": "hubby"}).status_code == 200
    ranges = fake_hub.gets(FILE)
    assert ranges == [None, f"bytes={11 * 2**20}-"]  # on from the byte where it was cut
    assert (data_dir / "models" / "hubby" / FILE).read_bytes() == big.read_bytes()


def test_missing_file_on_hub(hub_app, data_dir):
    r = hub_app().test_client().post("/model/launch", json={"model_name": "missing"})
    assert r.status_code == 502 and r.json["code"] == "hub_not_found"
    assert "nope" not in str(list((data_dir / "models").rglob("*.gguf")))


def test_hub_down(make_app, tiny_gguf):
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = make_app({"hubby": {"repo_id": REPO, "filename": FILE}}, hf_endpoint=f"http://127.0.0.1:{port}")
    r = app.test_client().post("/model/launch", json={"model_name": "hubby"})
    assert r.status_code == 502 and r.json["code"] == "hub_unreachable"
    assert app.test_client().get("/model/getactive").json == []


def test_offline_mode(hub_app, fake_hub):
    """Offline is a state the server was put in, not an upstream failure: 409, saying how to turn downloads on."""
    client = hub_app(hf_offline=True).test_client()
    r = client.post("/model/launch", json={"model_name": "hubby"})
    assert r.status_code == 409 and r.json["code"] == "hub_offline"
    assert "HF_HUB_OFFLINE" in r.json["detail"] and "restart the server without" in r.json["detail"]
    pulled = client.post("/api/pull", json={"model": "hubby", "stream": False})
    assert pulled.status_code == 409 and "HF_HUB_OFFLINE" in pulled.json["error"]
    lines = client.post("/api/pull", json={"model": "hubby"}).get_data(as_text=True).splitlines()
    assert "HF_HUB_OFFLINE" in json.loads(lines[-1])["error"]
    assert fake_hub.requests == []
    assert hub_app().test_client().post("/model/launch", json={"model_name": "hubby"}).status_code == 200
    offline = hub_app(hf_offline=True).test_client()
    assert offline.post("/model/launch", json={"model_name": "hubby"}).status_code == 200


def test_progress_while_downloading(make_app, fake_hub, tmp_path):
    big = write_tiny_llama(tmp_path / "big.gguf", n_layers=160)
    fake_hub.add(REPO, FILE, big.read_bytes())
    fake_hub.delay = 0.004
    app = make_app({"hubby": {"repo_id": REPO, "filename": FILE, "n_ctx": 256}}, hf_endpoint=fake_hub.url)
    launcher = threading.Thread(target=lambda: app.test_client().post("/model/launch", json={"model_name": "hubby"}))
    launcher.start()
    client = app.test_client()
    seen = []
    deadline = time.time() + 60
    while launcher.is_alive() and time.time() < deadline:
        seen.append(client.get("/model/status", query_string={"model_name": "hubby"}).json)
        time.sleep(0.02)
    launcher.join()
    downloading = [s for s in seen if s["state"] == "downloading" and s["bytes_done"]]
    assert downloading, seen[:5]
    assert all(0 < s["bytes_done"] <= s["bytes_total"] == big.stat().st_size for s in downloading), downloading
    assert len({s["bytes_done"] for s in downloading}) > 1  # it moved while we watched
    assert client.get("/model/status", query_string={"model_name": "hubby"}).json["state"] == "running"


def test_delete_removes_only_that_model(hub_app, data_dir, tmp_path):
    outside = data_dir / "keep.txt"
    app = hub_app()
    client = app.test_client()
    client.post("/model/launch", json={"model_name": "hubby"})
    outside.write_text("mine")
    client.post("/chat/addsystemprompt", json={"model_name": "hubby", "system_prompt": "Be brief."})
    assert client.delete("/model/delete", json={"model_name": "hubby"}).status_code == 200
    assert not (data_dir / "models" / "hubby").exists()
    assert outside.read_text() == "mine" and (data_dir / "models.json").exists()
    assert client.get("/model/getactive").json == []
    assert client.get("/chat/getchathistory", query_string={"model_name": "hubby"}).json["system_prompt"] is None
    r = client.delete("/model/delete", json={"model_name": "hubby"})
    assert r.status_code == 404 and r.json["code"] == "model_not_installed"


def test_pull_and_list_commands(fake_hub, tiny_gguf, data_dir, monkeypatch, capsys):
    import json

    fake_hub.add(REPO, FILE, tiny_gguf.read_bytes())
    data_dir.mkdir(parents=True)
    (data_dir / "models.json").write_text(json.dumps({"hubby": {"repo_id": REPO, "filename": FILE}}))
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    monkeypatch.setenv("EDGE_PORT", "9")  # nothing listens there: list shows nothing running
    assert cli_main(["pull", "hubby", "--data-dir", str(data_dir)]) == 0
    assert (data_dir / "models" / "hubby" / FILE).is_file()
    assert cli_main(["list", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("hubby "))
    assert line.split()[1:4] == ["text", "yes", "no"]
    assert any(line.startswith("llama-1b-4 ") for line in out.splitlines())
    assert cli_main(["pull", "nope", "--data-dir", str(data_dir)]) == 1


def test_concurrent_launches_download_once(hub_app, fake_hub):
    fake_hub.delay = 0.01
    app = hub_app()
    codes = []
    threads = [threading.Thread(target=lambda: codes.append(
        app.test_client().post("/model/launch", json={"model_name": "hubby"}).status_code)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # One launch downloads; one arriving meanwhile answers 202 at once instead of holding a worker.
    assert 200 in codes and set(codes) <= {200, 202}
    assert fake_hub.gets(FILE) == [None]
    assert app.test_client().get("/model/getactive").json == ["hubby"]


def test_hf_token_is_sent(hub_app, fake_hub):
    client = hub_app(hf_token="hf_secret").test_client()
    assert client.post("/model/launch", json={"model_name": "hubby"}).status_code == 200
    assert fake_hub.authorizations and all(a == "Bearer hf_secret" for a in fake_hub.authorizations)


@pytest.fixture
def slow_hub_app(make_app, fake_hub, tmp_path):
    """A 13 MB model served at about 6 MB/s, so a download lasts a couple of seconds."""
    big = write_tiny_llama(tmp_path / "big.gguf", n_layers=80)
    fake_hub.add(REPO, FILE, big.read_bytes())
    fake_hub.delay = 0.01
    models = {"hubby": {"repo_id": REPO, "filename": FILE, "n_ctx": 256}}
    return big, lambda: make_app(models, hf_endpoint=fake_hub.url)


def _launch_in_background(app):
    out = {}
    thread = threading.Thread(target=lambda: out.update(
        r=app.test_client().post("/model/launch", json={"model_name": "hubby"})))
    thread.start()
    client = app.test_client()
    deadline = time.time() + 30
    while (client.get("/model/status", query_string={"model_name": "hubby"}).json["bytes_done"] or 0) < 2**20:
        assert time.time() < deadline
        time.sleep(0.01)
    return thread, out


def test_kill_cancels_a_download_at_once_and_the_next_launch_resumes(slow_hub_app, fake_hub, data_dir):
    big, make = slow_hub_app
    app = make()
    thread, out = _launch_in_background(app)
    client = app.test_client()
    t = time.perf_counter()
    r = client.post("/model/launch", json={"model_name": "hubby"})  # a second launch does not wait
    assert r.status_code == 202 and r.json["code"] == "downloading"
    assert client.get("/model/getactive").json == []
    assert client.delete("/model/kill", json={"model_name": "hubby"}).status_code == 200
    thread.join(timeout=10)
    assert time.perf_counter() - t < 1
    assert out["r"].status_code == 409 and out["r"].json["code"] == "download_cancelled"
    part = data_dir / "models" / "hubby" / (FILE + ".part")
    kept = part.stat().st_size
    assert 0 < kept < big.stat().st_size
    fake_hub.delay = 0
    assert client.post("/model/launch", json={"model_name": "hubby"}).status_code == 200
    assert fake_hub.gets(FILE)[-1] == f"bytes={kept}-"
    assert (data_dir / "models" / "hubby" / FILE).read_bytes() == big.read_bytes() and not part.exists()


def test_download_resumes_after_a_restart(slow_hub_app, fake_hub, data_dir):
    """A partial file left by a process that died (simulated: a part file of the right name) is resumed."""
    big, make = slow_hub_app
    folder = data_dir / "models" / "hubby"
    folder.mkdir(parents=True)
    (folder / (FILE + ".part")).write_bytes(big.read_bytes()[:3_000_000])
    etag = fake_hub_etag(big.read_bytes())
    (folder / (FILE + ".part.etag")).write_text(etag)
    fake_hub.delay = 0
    assert make().test_client().post("/model/launch", json={"model_name": "hubby"}).status_code == 200
    assert fake_hub.gets(FILE) == ["bytes=3000000-"]
    assert (folder / FILE).read_bytes() == big.read_bytes()


def test_a_changed_file_on_the_hub_starts_over(slow_hub_app, fake_hub, data_dir):
    big, make = slow_hub_app
    folder = data_dir / "models" / "hubby"
    folder.mkdir(parents=True)
    (folder / (FILE + ".part")).write_bytes(b"x" * 1000)
    (folder / (FILE + ".part.etag")).write_text("an-older-version")
    fake_hub.delay = 0
    assert make().test_client().post("/model/launch", json={"model_name": "hubby"}).status_code == 200
    assert fake_hub.gets(FILE) == [None]
    assert (folder / FILE).read_bytes() == big.read_bytes()


def test_delete_during_a_download_cancels_it_and_removes_the_part(slow_hub_app, data_dir):
    _, make = slow_hub_app
    app = make()
    thread, out = _launch_in_background(app)
    assert app.test_client().delete("/model/delete", json={"model_name": "hubby"}).status_code == 200
    thread.join(timeout=10)
    assert out["r"].json["code"] == "download_cancelled"
    assert not (data_dir / "models" / "hubby").exists()


def test_getactive_answers_at_once_during_a_download(slow_hub_app):
    from conftest import LiveServer
    import requests

    _, make = slow_hub_app
    server = LiveServer(make())
    try:
        thread, _ = _launch_in_background(server.app)
        for _ in range(5):  # extra launches and kills no longer hold a worker for the download
            requests.post(f"{server.url}/model/launch", json={"model_name": "hubby"}, timeout=5)
        t = time.perf_counter()
        assert requests.get(f"{server.url}/model/getactive", timeout=5).json() == []
        assert time.perf_counter() - t < 0.5
        requests.delete(f"{server.url}/model/kill", json={"model_name": "hubby"}, timeout=5)
        thread.join(timeout=10)
    finally:
        server.close()


def fake_hub_etag(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_downloads_work_without_hf_xet(fake_hub, tiny_gguf, data_dir):
    """Termux installs huggingface_hub without hf-xet (no Android wheel; it needs Rust): pull still works."""
    import json
    import os
    import subprocess
    import sys

    fake_hub.add(REPO, FILE, tiny_gguf.read_bytes())
    data_dir.mkdir(parents=True)
    (data_dir / "models.json").write_text(json.dumps({"hubby": {"repo_id": REPO, "filename": FILE}}))
    code = ("import sys; sys.modules['hf_xet'] = None\n"  # as if not installed: importing it fails,
            "import huggingface_hub.utils._runtime as r\n"  # and its distribution is not found
            "found = r.is_package_available; r.is_package_available = lambda n: n != 'hf_xet' and found(n)\n"
            "assert not r.is_xet_available()\n"
            "from edge_server.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "HF_ENDPOINT": fake_hub.url}
    out = subprocess.run([sys.executable, "-c", code, "pull", "hubby", "--data-dir", str(data_dir)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (data_dir / "models" / "hubby" / FILE).read_bytes() == tiny_gguf.read_bytes()
