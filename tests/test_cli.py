"""The `edge-server` command as a user types it (a subprocess): add a file you have, serve it, list models."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import requests
from conftest import ServerProcess

from edge_server.cli import _human


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "HF_"))}
    return subprocess.run([sys.executable, "-m", "edge_server", *args], capture_output=True, text=True, timeout=120,
                          env={**base, "EDGE_PORT": "9", **(env or {})})  # nothing listens on port 9


def test_help_says_how_to_serve_your_own_file():
    out = run("--help").stdout
    assert "serve --model" in out and "add" in out


def test_add_checks_the_header_writes_the_entry_and_prints_the_launch(tmp_path, tiny_gguf, tiny_mmproj):
    data = tmp_path / "data"
    done = run("add", str(tiny_gguf), "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    assert json.loads((data / "models.json").read_text()) == {"tiny": {"path": str(tiny_gguf.resolve())}}
    assert "Added tiny (llama" in done.stdout
    assert f"edge-server serve --model tiny --data-dir {data}" in done.stdout
    assert '"model_name": "tiny"' in done.stdout and "/model/launch" in done.stdout
    assert run("add", str(tiny_gguf), "--data-dir", str(data)).returncode == 0  # again: nothing changes
    assert json.loads((data / "models.json").read_text()) == {"tiny": {"path": str(tiny_gguf.resolve())}}

    named = run("add", str(tiny_gguf), "--name", "mine", "--n-ctx", "512", "--data-dir", str(data))
    assert named.returncode == 0 and "serve --model mine" in named.stdout
    assert json.loads((data / "models.json").read_text())["mine"] == {"path": str(tiny_gguf.resolve()), "n_ctx": 512}

    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    refused = run("add", str(text), "--data-dir", str(data))
    assert refused.returncode == 2 and "not a GGUF model file" in refused.stderr
    for args, why in ([str(tiny_mmproj)], "vision projector"), (["--name", "llama-1b-4", str(tiny_gguf)], "built-in"), \
            (["--name", "mine", str(tiny_mmproj)], "vision projector"), (["--name", "bad name", str(tiny_gguf)],
                                                                           "cannot be a model name"), \
            ([str(tmp_path / "missing.gguf")], "no such file"):
        refused = run("add", *args, "--data-dir", str(data))
        assert refused.returncode == 2 and why in refused.stderr, (args, refused.stderr)
    other = tmp_path / "other.gguf"
    other.write_bytes(tiny_gguf.read_bytes())
    taken = run("add", str(other), "--name", "mine", "--data-dir", str(data))
    assert taken.returncode == 2 and "already has a model named 'mine'" in taken.stderr
    assert set(json.loads((data / "models.json").read_text())) == {"tiny", "mine"}  # nothing overwritten

    vision = run("add", str(other), "--name", "seeing", "--mmproj", str(tiny_mmproj), "--data-dir", str(data))
    assert vision.returncode == 0, vision.stderr
    assert json.loads((data / "models.json").read_text())["seeing"]["kind"] == "vision"


def test_serve_model_path_starts_with_it_launched(tmp_path, tiny_gguf):
    server = ServerProcess(tmp_path / "data", {}, "--model", str(tiny_gguf))
    try:
        assert requests.get(f"{server.url}/model/getactive", timeout=10).json() == ["tiny"]
        r = requests.post(f"{server.url}/generate/fromtext", timeout=60,
                          json={"model_name": "tiny", "prompt": "Hi", "max_new_tokens": 4})
        assert r.status_code == 200 and r.text
    finally:
        server.close()
    assert json.loads((tmp_path / "data" / "models.json").read_text()) == {"tiny": {"path": str(tiny_gguf.resolve())}}


def test_serve_model_refuses_a_bad_file_before_serving(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"nope")
    done = run("serve", "--model", str(bad), "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 2 and "not a GGUF model file" in done.stderr


def test_list_aligns_every_kind_and_sizes_local_files(tmp_path, tiny_gguf):
    data = tmp_path / "data"
    data.mkdir()
    (data / "models.json").write_text(json.dumps({"tiny": {"path": str(tiny_gguf.resolve())}}))
    done = run("list", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = lines[0]
    for column in ("KIND", "INSTALLED", "RUNNING", "MODE", "DESCRIPTION"):
        start = header.index(column)
        for line in lines[1:]:
            if column != "DESCRIPTION" or len(line) > start:
                assert line[start - 1] == " " and line[start] != " ", (column, line)  # each cell starts under its head
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["tts-eng"][1] == "speech-out"
    assert rows["tiny"][2:4] == ["yes", "no"] and " ".join(rows["tiny"][4:6]) == _human(tiny_gguf.stat().st_size)
