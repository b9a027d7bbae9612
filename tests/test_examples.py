"""Every script in examples/ against a live server with a key, as a user would run them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LiveServer
from test_images import ImageSite, data_uri, image_bytes

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KEY = "example-key"


@pytest.fixture
def server(make_app, tiny_gguf, tiny_mmproj):
    app = make_app({"tiny": {"path": str(tiny_gguf), "n_ctx": 512},
                    "tiny-vision": {"path": str(tiny_gguf), "mmproj_path": str(tiny_mmproj), "n_ctx": 512}},
                   api_key=KEY, allow_private_links=True)
    live = LiveServer(app)
    yield live
    live.close()


def run(server, script, *args, key=KEY):
    out = subprocess.run([sys.executable, str(EXAMPLES / script), *args, "--url", server.url, "--key", key],
                         capture_output=True, timeout=120)
    # Decoded by hand: text mode would turn a "\r" in a random model's answer into "\n".
    out.stdout, out.stderr = out.stdout.decode("utf-8"), out.stderr.decode("utf-8")
    return out


def ok(server, script, *args):
    out = run(server, script, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_every_endpoint_example(server, tmp_path):
    assert json.loads(ok(server, "getactive.py")) == []
    assert json.loads(ok(server, "launch.py", "tiny", "--n-ctx", "256")) is None
    assert json.loads(ok(server, "getactive.py")) == ["tiny"]
    assert json.loads(ok(server, "addsystemprompt.py", "tiny", "Be brief.", "--chat-id", "ex")) is None
    answer = ok(server, "fromtext.py", "tiny", "Hello there", "--max-new-tokens", "8", "--chat-id", "ex")
    history = json.loads(ok(server, "history.py", "tiny", "--chat-id", "ex"))
    assert history["system_prompt"] == "Be brief."
    assert [t["role"] for t in history["turns"]] == ["user", "assistant"]
    assert history["turns"][1]["content"] == answer.removesuffix("\n")
    assert json.loads(ok(server, "clearchat.py", "tiny", "--chat-id", "ex")) is None
    assert json.loads(ok(server, "history.py", "tiny", "--chat-id", "ex"))["turns"] == []

    assert json.loads(ok(server, "launch.py", "tiny-vision")) is None
    photo = tmp_path / "photo.png"
    photo.write_bytes(image_bytes())
    site = ImageSite()
    try:
        answer = ok(server, "fromimagetext.py", "tiny-vision", "What is this?", "--file", str(photo),
                    "--link", f"{site.url}/cat.png", "--link", data_uri(image_bytes()), "--max-new-tokens", "6")
        assert "/cat.png" in site.hits
        ok(server, "fromimagetext.py", "tiny-vision", "And this?", "--link", f"{site.url}/cat.png",
           "--max-new-tokens", "4", "--chat-id", "links-only")
        assert len(json.loads(ok(server, "history.py", "tiny-vision", "--chat-id", "links-only"))["turns"]) == 2
    finally:
        site.close()
    turns = json.loads(ok(server, "history.py", "tiny-vision"))["turns"]
    assert turns[0]["images"] == 3 and turns[1]["content"] == answer.removesuffix("\n")

    assert json.loads(ok(server, "kill.py", "tiny")) is None
    assert json.loads(ok(server, "delete.py", "tiny-vision")) is None
    assert json.loads(ok(server, "getactive.py")) == []


def test_examples_report_errors(server):
    out = run(server, "getactive.py", key="wrong")
    assert out.returncode == 1 and "401 unauthorized" in out.stderr
    out = run(server, "fromtext.py", "tiny", "hi")
    assert out.returncode == 1 and "model_not_running" in out.stderr
