"""Start-up: settings, models.json, lazy imports, plugin discovery and the real CLI process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import requests

from edge_server import create_app
from edge_server.backends import ENTRY_POINT_GROUP
from edge_server.catalog import Catalog
from edge_server.errors import CatalogError
from edge_server.settings import build_settings


def test_settings_layering(tmp_path):
    env = {"EDGE_PORT": "9001", "EDGE_FULL_MODE": "yes", "EDGE_DATA_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    settings = build_settings({"port": 9002}, environ=env)
    assert settings.port == 9002 and settings.full is True and settings.hf_offline is True
    assert settings.data_dir == tmp_path and settings.models_dir == tmp_path / "models"
    assert build_settings(environ={}).host == "127.0.0.1" and build_settings(environ={}).port == 8000
    with pytest.raises(ValueError, match="EDGE_PORT"):
        build_settings(environ={"EDGE_PORT": "eighty"})


def test_builtin_catalog_entries():
    catalog = Catalog.load()
    for name in ("llama-1b-4", "deep-qwen-4", "llava-1.5-7b-4", "minicpm-o-2.6-4"):
        spec = catalog.get(name)
        assert spec.repo_id and spec.filename.endswith(".gguf") and not spec.heavy
    assert catalog.get("llava-1.5-7b-4").mmproj and catalog.get("llava-1.5-7b-4").kind == "vision"
    assert catalog.get("stable-cascade").heavy
    assert "stable-cascade" not in catalog.names(full=False) and "stable-cascade" in catalog.names(full=True)


def test_models_json_adds_and_overrides(tmp_path):
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"llama-1b-4": {"n_ctx": 2048}, "mine": {"path": "/abs/model.gguf"}}))
    catalog = Catalog.load(path)
    assert catalog.get("llama-1b-4").n_ctx == 2048 and catalog.get("llama-1b-4").repo_id
    assert catalog.get("mine").is_local


@pytest.mark.parametrize("entries,needle", [
    ({"bad": {"path": "relative.gguf"}}, "'bad'"),
    ({"bad": {"repo_id": "a/b"}}, "'bad'"),
    ({"bad": {"repo_id": "a/b", "filename": "../x.gguf"}}, "'bad'"),
    ({"bad": {"path": "/a.gguf", "n_ctx": "big"}}, "'bad'"),
    ({"bad": {"path": "/a.gguf", "colour": "red"}}, "colour"),
    ({"bad name!": {"path": "/a.gguf"}}, "bad name!"),
    ({"bad": "just a string"}, "'bad'"),
])
def test_models_json_errors_name_the_entry(tmp_path, entries, needle):
    path = tmp_path / "models.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(CatalogError, match=needle.replace("!", "\\!")):
        Catalog.load(path)


def test_broken_models_json_is_a_clear_start_up_error(tmp_path):
    (tmp_path / "models.json").write_text("{not json")
    result = subprocess.run([sys.executable, "-m", "edge_server", "list", "--data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "models.json" in result.stderr and "Traceback" not in result.stderr


def test_create_app_does_not_import_llama_cpp(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from edge_server import create_app
        app = create_app({{"data_dir": {str(tmp_path)!r}}})
        app.test_client().get("/model/getactive")
        print(sorted(m for m in ("llama_cpp", "torch", "transformers", "huggingface_hub", "PIL") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def _write_plugin(root, module: str, body: str):
    """Install a tiny plugin distribution (a dist-info with an entry point) under `root`."""
    (root / f"{module}.py").write_text(body)
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ntest = {module}:register\n")


def test_plugins_are_discovered_only_in_full_mode(tmp_path, monkeypatch):
    _write_plugin(tmp_path, "edge_good_plugin", textwrap.dedent("""
        class Backend:
            name = "test-backend"
        def register(registry):
            registry.register("test-backend", Backend)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    lite = create_app({"data_dir": tmp_path / "lite"}).extensions["edge_server"].manager.registry
    full = create_app({"data_dir": tmp_path / "full", "full": True}).extensions["edge_server"].manager.registry
    assert lite.names() == ["llama-cpp"]
    assert {"llama-cpp", "test-backend"} <= set(full.names())  # beside heavy_plugins' own, where installed


def test_broken_plugin_does_not_stop_the_server(tmp_path, monkeypatch):
    _write_plugin(tmp_path, "edge_broken_plugin", "def register(registry):\n    raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = create_app({"data_dir": tmp_path, "full": True}).extensions["edge_server"].manager.registry
    assert "llama-cpp" in registry.names() and "test-backend" not in registry.names()


def test_serve_process_starts_answers_and_stops_on_ctrl_c(tmp_path, tiny_gguf):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "models.json").write_text(json.dumps({"tiny": {"path": str(tiny_gguf), "n_ctx": 256}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    proc = subprocess.Popen([sys.executable, "-m", "edge_server", "--port", str(port), "--data-dir", str(tmp_path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            try:
                assert requests.get(f"{url}/model/getactive", timeout=1).json() == []
                break
            except requests.ConnectionError:
                assert time.time() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert requests.post(f"{url}/model/launch", json={"model_name": "tiny"}).status_code == 200
        assert requests.get(f"{url}/model/getactive").json() == ["tiny"]
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    assert "POST /model/launch 200" in output and "stopped tiny" in output


def test_gguf_header_context_length(tiny_gguf, tmp_path):
    import gguf

    from edge_server.backends.gguf_header import context_length

    assert context_length(tiny_gguf) == 4096
    # Arrays (strings and numbers) before the key are skipped, whatever the key order.
    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_token_list(["a", "bb", "ccc"])
    writer.add_array("x.numbers", [1.5, 2.5])
    writer.add_context_length(32768)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    assert context_length(path) == 32768
    (tmp_path / "text.gguf").write_text("not a model")
    with pytest.raises(ValueError):
        context_length(tmp_path / "text.gguf")
