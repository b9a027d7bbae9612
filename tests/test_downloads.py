"""Downloads through the real huggingface_hub code against a local fake hub (HF_ENDPOINT)."""
from __future__ import annotations

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
    # huggingface_hub writes in 10 MiB pieces, so the file must be bigger than that for a resume to show.
    big = write_tiny_llama(tmp_path / "big.gguf", n_layers=80)
    assert big.stat().st_size > 12 * 2**20
    fake_hub.add(REPO, FILE, big.read_bytes())
    fake_hub.cut_after = 11 * 2**20
    client = make_app({"hubby": {"repo_id": REPO, "filename": FILE, "n_ctx": 256}},
                      hf_endpoint=fake_hub.url).test_client()
    assert client.post("/model/launch", json={"model_name": "hubby"}).status_code == 200
    ranges = fake_hub.gets(FILE)
    assert ranges == [None, f"bytes={10 * 2**20}-"]
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
    r = hub_app(hf_offline=True).test_client().post("/model/launch", json={"model_name": "hubby"})
    assert r.status_code == 502 and r.json["code"] == "hub_offline"
    assert fake_hub.requests == []
    assert hub_app().test_client().post("/model/launch", json={"model_name": "hubby"}).status_code == 200
    offline = hub_app(hf_offline=True).test_client()
    assert offline.post("/model/launch", json={"model_name": "hubby"}).status_code == 200


def test_progress_while_downloading(make_app, fake_hub, tmp_path):
    # huggingface_hub reports progress per 10 MiB written, so use a file of several pieces.
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
    assert codes == [200, 200, 200]
    assert fake_hub.gets(FILE) == [None]
    assert app.test_client().get("/model/getactive").json == ["hubby"]


def test_hf_token_is_sent(hub_app, fake_hub):
    client = hub_app(hf_token="hf_secret").test_client()
    assert client.post("/model/launch", json={"model_name": "hubby"}).status_code == 200
    assert fake_hub.authorizations and all(a == "Bearer hf_secret" for a in fake_hub.authorizations)
