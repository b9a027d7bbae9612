"""Logs for a device without a journal: a rotating --log-file, one line per request, the hub's warnings once;
and `edge-server list` finding the server of its data dir on any port."""
from __future__ import annotations

import json
import subprocess
import sys

import requests
from conftest import ServerProcess


def test_log_file_has_one_line_per_request_and_list_finds_the_port(tmp_path, tiny_gguf):
    log_file = tmp_path / "logs" / "edge.log"
    data = tmp_path / "data"
    server = ServerProcess(data, {"tiny": {"path": str(tiny_gguf), "n_ctx": 256}}, "--log-file", str(log_file))
    try:
        requests.post(f"{server.url}/model/launch", json={"model_name": "tiny"}, timeout=60).raise_for_status()
        requests.get(f"{server.url}/model/getactive", timeout=5)
        lines = log_file.read_text().splitlines()
        assert sum("GET /model/getactive 200" in line for line in lines) == 1
        assert sum("POST /model/launch 200" in line for line in lines) == 1
        assert json.loads((data / "server.json").read_text())["url"] == server.url
        out = subprocess.run([sys.executable, "-m", "edge_server", "list", "--data-dir", str(data)],
                             capture_output=True, text=True, timeout=60).stdout
        row = next(line for line in out.splitlines() if line.startswith("tiny "))
        assert row.split()[1:4] == ["text", "yes", "yes"]  # running, found on its port (not 8000)
        out = subprocess.run([sys.executable, "-m", "edge_server", "list", "--data-dir", str(data), "--url",
                              "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60).stdout
        assert next(line for line in out.splitlines() if line.startswith("tiny ")).split()[3] == "no"
    finally:
        server.close()
    assert not (data / "server.json").exists()  # gone with the server


def test_log_file_rotates(tmp_path):
    code = ("import logging, sys; from edge_server.cli import _setup_logging; _setup_logging('INFO', sys.argv[1]); "
            "[logging.getLogger('edge_server.x').info('%s', 'y' * 1000) for _ in range(12000)]")
    log_file = tmp_path / "edge.log"
    subprocess.run([sys.executable, "-c", code, str(log_file)], check=True, capture_output=True)
    assert log_file.stat().st_size <= 5_000_000 and (tmp_path / "edge.log.1").exists()
    assert not (tmp_path / "edge.log.4").exists()  # three old files kept


def test_hub_warnings_are_logged_once(tmp_path):
    code = ("import logging, sys; from edge_server.cli import _setup_logging; _setup_logging('INFO', sys.argv[1])\n"
            "import huggingface_hub\n"
            "from huggingface_hub.utils import logging as hub_logging\n"
            "from edge_server.store import hub_logs_once\n"
            "hub_logs_once()\n"
            "hub_logging.get_logger('huggingface_hub.file_download').warning('Retrying in 1s [Retry 1/5].')\n")
    log_file = tmp_path / "edge.log"
    out = subprocess.run([sys.executable, "-c", code, str(log_file)], capture_output=True, text=True, check=True)
    assert out.stderr.count("Retrying in 1s") == 1 and log_file.read_text().count("Retrying in 1s") == 1
    unfixed = code.replace("hub_logs_once()\n", "")
    out = subprocess.run([sys.executable, "-c", unfixed, str(log_file)], capture_output=True, text=True, check=True)
    assert out.stderr.count("Retrying in 1s") == 2  # what it was: the check can fail


def test_list_finds_a_lan_server_behind_its_key(tmp_path, tiny_gguf):
    data = tmp_path / "data"
    server = ServerProcess(data, {"tiny": {"path": str(tiny_gguf), "n_ctx": 256}}, "--host", "0.0.0.0")
    try:
        key = (data / "api_key").read_text().strip()
        requests.post(f"{server.url}/model/launch", json={"model_name": "tiny"}, timeout=60,
                      headers={"Authorization": f"Bearer {key}"}).raise_for_status()
        out = subprocess.run([sys.executable, "-m", "edge_server", "list", "--data-dir", str(data)],
                             capture_output=True, text=True, timeout=60).stdout
        assert next(line for line in out.splitlines() if line.startswith("tiny ")).split()[3] == "yes"
    finally:
        server.close()


def test_llama_cpp_lines_stay_out_of_the_log_unless_verbose(tmp_path, gemma_gguf):
    """llama.cpp printed its own lines (`llama_kv_cache_iswa: ...`) into the server log at every Gemma load."""
    import re

    def llama_lines(text: str) -> list[str]:
        """llama.cpp's own: printed straight to stderr (no timestamp of ours), or through our logger for it."""
        return [line for line in text.splitlines() if " edge_server.llama_cpp: " in line or (
            not re.match(r"\d{4}-\d\d-\d\d ", line) and any(
                word in line for word in ("llama_", "load_tensors", "print_info", "swa", "ggml")))]

    for verbose in (False, True):
        server = ServerProcess(tmp_path / f"data-{verbose}", {"gemma": {"path": str(gemma_gguf), "n_ctx": 512}},
                               *(["--verbose"] if verbose else []))
        try:
            requests.post(f"{server.url}/model/launch", json={"model_name": "gemma"}, timeout=120).raise_for_status()
            requests.post(f"{server.url}/generate/fromtext", json={"model_name": "gemma", "prompt": "Hi",
                                                                   "max_new_tokens": 2}, timeout=120).raise_for_status()
        finally:
            server.close()
        lines = llama_lines(server.output())
        if verbose:
            assert any("edge_server.llama_cpp" in line for line in lines), server.output()[-3000:]
        else:
            assert lines == [], lines[:10]


def test_llama_cpp_pieces_become_whole_lines_at_debug_and_errors_at_error(caplog):
    from edge_server.backends.llama_logs import _Lines

    lines = _Lines()
    with caplog.at_level("DEBUG", logger="edge_server.llama_cpp"):
        lines(2, b"llama_kv_cache_iswa: using full-size SWA cache\n", None)
        lines(3, b"llama_model_load: error loading model: ", None)
        lines(5, b"unknown architecture\n", None)  # 5: the line before goes on
    got = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "edge_server.llama_cpp"]
    assert got == [("DEBUG", "llama_kv_cache_iswa: using full-size SWA cache"),
                   ("ERROR", "llama_model_load: error loading model: unknown architecture")]
