"""A real two-host LAN: the server in one network namespace bound to 0.0.0.0, the client in another.

Needs root and `ip netns` (CI runs as root). Run alone with: sudo python -m pytest tests/test_lan.py
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

SERVER_IP, CLIENT_IP, PORT = "10.231.7.1", "10.231.7.2", 8000


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def lan():
    """Two namespaces joined by a veth pair; yields (server_ns, client_ns)."""
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("needs root and iproute2's `ip netns` (run the suite as root, as CI does)")
    tag = f"{os.getpid() % 100000}"
    server_ns, client_ns = f"edge-srv-{tag}", f"edge-cli-{tag}"
    if _ip("netns", "add", server_ns, check=False).returncode != 0:
        pytest.skip("`ip netns add` is not permitted here (no CAP_SYS_ADMIN)")
    try:
        _ip("netns", "add", client_ns)
        _ip("link", "add", f"es{tag}", "type", "veth", "peer", "name", f"ec{tag}")
        for ns, dev, addr in ((server_ns, f"es{tag}", SERVER_IP), (client_ns, f"ec{tag}", CLIENT_IP)):
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield server_ns, client_ns
    finally:
        for ns in (server_ns, client_ns):
            _ip("netns", "del", ns, check=False)  # takes the veth pair with it


CLIENT = r"""
import json, sys, requests
url, key = sys.argv[1], sys.argv[2]
auth = {"Authorization": f"Bearer {key}"}
out = {
    "no_key": requests.get(f"{url}/model/getactive", timeout=10).status_code,
    "wrong_key": requests.get(f"{url}/model/getactive", headers={"Authorization": "Bearer nope"}, timeout=10).status_code,
    "page": requests.get(f"{url}/", timeout=10).status_code,
    "docs": requests.get(f"{url}/docs/", timeout=10).status_code,
    "launch": requests.post(f"{url}/model/launch", json={"model_name": "tiny"}, headers=auth, timeout=60).status_code,
    "active": requests.get(f"{url}/model/getactive", headers=auth, timeout=10).json(),
}
r = requests.post(f"{url}/generate/fromtext", json={"model_name": "tiny", "prompt": "hi", "max_new_tokens": 12},
                  headers=auth, stream=True, timeout=60)
out["stream_status"] = r.status_code
out["chunks"] = [c.decode("utf-8") for c in r.iter_content(chunk_size=None)]
out["history"] = requests.get(f"{url}/chat/getchathistory", params={"model_name": "tiny"}, headers=auth,
                              timeout=10).json()["turns"]
print(json.dumps(out))
"""


def test_two_hosts_key_docs_and_stream(lan, tmp_path, tiny_gguf):
    server_ns, client_ns = lan
    data = tmp_path / "data"
    data.mkdir()
    (data / "models.json").write_text(json.dumps({"tiny": {"path": str(tiny_gguf), "n_ctx": 256}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "HF_"))}
    log = open(tmp_path / "server.log", "w+")
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, sys.executable, "-m", "edge_server", "--host", "0.0.0.0",
                               "--port", str(PORT), "--data-dir", str(data)], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while not (data / "api_key").exists() or "reachable at" not in (tmp_path / "server.log").read_text():
            assert server.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.1)
        key = (data / "api_key").read_text().strip()
        url = f"http://{SERVER_IP}:{PORT}"
        client = subprocess.run(["ip", "netns", "exec", client_ns, sys.executable, "-c", CLIENT, url, key],
                                capture_output=True, text=True, timeout=120, env=env)
        assert client.returncode == 0, client.stderr
        out = json.loads(client.stdout)
        assert out["no_key"] == 401 and out["wrong_key"] == 401
        assert out["page"] == 200 and out["docs"] == 200
        assert out["launch"] == 200 and out["active"] == ["tiny"]
        assert out["stream_status"] == 200 and len(out["chunks"]) > 1
        assert out["history"][-1]["content"] == "".join(out["chunks"])
        # The banner shows the LAN URL, the key and a QR code of the URL with the key.
        banner = (tmp_path / "server.log").read_text()
        assert f"http://{SERVER_IP}:{PORT}/" in banner and key in banner
        assert f"#key={key}" in banner and ("█" in banner or "▀" in banner)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
