"""Schemathesis against the real server process: every operation, valid and invalid requests, no 5xx, and
every answer matching the OpenAPI document.

CI runs FUZZ_EXAMPLES=40 per operation (about 1,300 requests); for a longer run:
    FUZZ_EXAMPLES=300 python -m pytest tests/test_fuzz.py -s
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import requests
from conftest import ServerProcess

from edge_server.catalog import Catalog

KEY = "fuzz-key"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
# Every check but positive_data_acceptance, which would want 2xx for any well-formed name of a model
# that does not exist.
EXCLUDED = "positive_data_acceptance"


def test_schemathesis_finds_nothing(tmp_path, tiny_gguf, tiny_mmproj, fake_hub):
    # Every lite catalog model is on the local hub (as the tiny files), so whatever names schemathesis
    # learns from /model/list, launches download and load for real instead of finding no hub.
    for spec in Catalog.load():
        if spec.repo_id and not spec.heavy:
            fake_hub.add(spec.repo_id, spec.filename, tiny_gguf.read_bytes())
            if spec.mmproj:
                fake_hub.add(spec.repo_id, spec.mmproj, tiny_mmproj.read_bytes())
    models = {"tiny-vision": {"path": str(tiny_gguf), "mmproj_path": str(tiny_mmproj), "n_ctx": 512}}
    server = ServerProcess(tmp_path / "data", models, "--api-key", KEY, env={"HF_ENDPOINT": fake_hub.url})
    try:
        auth = {"Authorization": f"Bearer {KEY}"}
        for name in ("gemma-3-270m-it", "tiny-vision"):
            assert requests.post(f"{server.url}/model/launch", json={"model_name": name}, headers=auth).ok
        report = tmp_path / "report.json"
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--no-color", "run", f"{server.url}/openapi.json",
             "-H", f"Authorization: Bearer {KEY}", "--checks", "all", "--exclude-checks", EXCLUDED,
             "--max-examples", str(EXAMPLES), "--request-timeout", "60", "--report", "json",
             "--report-json-path", str(report)],
            capture_output=True, text=True, timeout=1800)
        summary = json.loads(report.read_text())
        cases = summary["test_cases"]
        print(f"schemathesis: {cases['generated']} requests, {summary['operations']['tested']} operations")
        assert summary["failures"] == [] and summary["errors"] == [], run.stdout[-8000:]
        assert run.returncode == 0, run.stdout[-8000:]
        operations = summary["operations"]
        assert operations["tested"] == operations["total"] >= len(_operations(server.url)) - 1
        assert cases["generated"] >= min(1000, 25 * EXAMPLES)
    finally:
        server.close()
    log = server.output()
    assert "Traceback" not in log
    assert not re.search(r"edge_server\.http: \S+ \S+ 5\d\d ", log)


def _operations(url) -> list:
    doc = requests.get(f"{url}/openapi.json").json()
    return [(path, method) for path, ops in doc["paths"].items() for method in ops]
