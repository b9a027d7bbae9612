"""One model across several devices (llama.cpp's RPC backend): `edge-server worker` processes as real
workers, the real Gemma 3 270M split over them, the key's handshake in front of each, and a worker killed
mid-answer. The LAN case runs the worker in another network namespace, as root (CI is)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import requests

from conftest import LiveServer, free_port
from test_web_app import Phone
from edge_server.backends import ggml_rpc, rpc_relay

KEY = "family-secret"
PROMPT = "Name the planets of the solar system, one per line."

needs_rpc = pytest.mark.skipif(not ggml_rpc.available() and not os.environ.get("CI"),
                               reason="llama-cpp-python built without GGML_RPC (tests/setup.sh rebuilds it)")


class WorkerProcess:
    """`edge-server worker` as a user starts it; `prefix` runs it elsewhere (ip netns exec NS)."""

    def __init__(self, data_dir, port=None, host="127.0.0.1", key=KEY, prefix=(), threads=1):
        self.port = port or free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "HF_"))}
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "edge_server", "worker", "--host", host,
                                      "--port", str(self.port), "--n-threads", str(threads), "--data-dir", str(data_dir),
                                      *(["--api-key", key] if key else [])], env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.banner = self.proc.stdout.readline()
        assert "edge-server worker on" in self.banner, self.banner + self.proc.stdout.read()

    def compute_rss(self) -> int:
        """Resident memory of its ggml RPC server (the child that holds the layers it was given)."""
        children = psutil.Process(self.proc.pid).children(recursive=True)
        return sum(child.memory_info().rss for child in children)

    def kill(self):
        """kill -9, as a phone's battery or the low-memory killer does it."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


@pytest.fixture
def start_worker(tmp_path):
    started = []

    def start(**kwargs):
        worker = WorkerProcess(tmp_path / f"worker-{len(started)}", **kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


def answer(url, model="gemma", tokens=24):
    r = requests.post(f"{url}/v1/completions", json={"model": model, "prompt": PROMPT, "max_tokens": tokens,
                                                     "temperature": 0}, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=120)
    return r.status_code, r.json()


def test_an_install_without_the_rpc_backend_is_rebuilt_with_it_and_its_flags(monkeypatch):
    """What android/install.sh and tests/setup.sh run: the same version again, with GGML_RPC added to the
    flags already set (Termux's OpenMP off), past pip's cache."""
    import subprocess as sp

    if os.environ.get("CI"):
        assert ggml_rpc.available()  # tests/setup.sh did it, before the stand-in below
    calls = []
    monkeypatch.setattr(ggml_rpc, "available", lambda: False)
    monkeypatch.setattr(sp, "call", lambda args, env: calls.append((args, env["CMAKE_ARGS"])) or 0)
    monkeypatch.setenv("CMAKE_ARGS", "-DGGML_OPENMP=OFF -DGGML_RPC=off")
    assert ggml_rpc.ensure() == 0
    (args, flags), = calls
    from importlib.metadata import version

    wanted = f"llama-cpp-python=={version('llama-cpp-python')}"
    assert args[-4:] == ["--no-cache-dir", "--force-reinstall", "--no-deps", wanted]
    assert flags == "-DGGML_OPENMP=OFF -DGGML_RPC=on"


def test_this_device_keeps_the_blocks_its_share_of_the_free_memory_holds(tmp_path, gemma_gguf):
    """The plan alone (no workers needed): bytes from the GGUF's tensor table, shares from free memory."""
    from edge_server.backends.gguf_header import block_sizes, memory_needs
    from edge_server.backends.llamacpp_split import SplitBackend

    blocks, rest = block_sizes(gemma_gguf)
    assert len(blocks) == memory_needs(gemma_gguf).layers == 18
    assert 0 < sum(blocks) + rest <= gemma_gguf.stat().st_size < sum(blocks) + rest + (8 << 20)  # + the header
    room = rest + sum(blocks[:5]) + blocks[5] // 2  # this device's share of the free memory: 5 blocks and a half
    total = rest + sum(blocks)

    class Survey:  # a worker up with the rest of the free memory, one down
        workers, key, always = [("10.0.0.2", 50052), ("10.0.0.3", 50052), ("pi.local", 50052)], "", True

        def survey(self):
            free = int(8e9 * (total - room) / room)
            return [{"address": "10.0.0.2:50052", "state": "up", "free_bytes": free, "id": "a1"},
                    {"address": "10.0.0.3:50052", "state": "down", "error": "timed out"},
                    {"address": "pi.local:50052", "state": "up", "free_bytes": free, "id": "a1"}]  # 10.0.0.2 again

    (tmp_path / "meminfo").write_text(f"MemAvailable: {int(8e9) // 1024} kB\n")
    split = SplitBackend(Survey(), str(tmp_path / "meminfo"))
    plan = split.plan(gemma_gguf)
    assert (plan.workers, plan.local_layers, plan.layers) == ([("10.0.0.2", 50052)], 5, 18)
    assert split.memory_needs(gemma_gguf).weights == plan.local_bytes == rest + sum(blocks[:5])
    (tmp_path / "meminfo").write_text("MemAvailable: 1000 kB\n")  # little free here: every block goes
    assert (split.plan(gemma_gguf).local_layers, split.plan(gemma_gguf).local_bytes) == (0, rest)

    # EDGE_SPLIT=auto (the default): a model whose weights take up to 3/4 of the free memory here stays here.
    Survey.always = False
    (tmp_path / "meminfo").write_text(f"MemAvailable: {total * 4 // 3 // 1024 + 1} kB\n")
    assert split.plan(gemma_gguf) is None
    (tmp_path / "meminfo").write_text(f"MemAvailable: {total // 1024} kB\n")  # it would fill the memory: split
    assert split.plan(gemma_gguf).local_layers < 18


def test_worker_addresses_are_read_strictly():
    from edge_server.backends.worker_list import parse_workers

    assert parse_workers("pi.local, 10.0.0.2:50060,[fe80::1]:7,[::1],pi.local:50052") == [
        ("pi.local", 50052), ("10.0.0.2", 50060), ("fe80::1", 7), ("::1", 50052)]
    for wrong in (":", "10.0.0.2:abc", "[::1]:", "[::1", "[::1]x", "a:b:c", "pi:99999", "pi:0"):
        with pytest.raises(ValueError, match="worker address|a port is"):
            parse_workers(wrong)


def test_a_worker_with_another_llama_cpp_is_not_used_and_says_why(tmp_path, gemma_gguf, caplog):
    """Two relays answer the status request as workers do (the real handshake, on loopback): one has this
    server's llama-cpp-python, the other another one, which llama.cpp would refuse mid-load. Only the first
    gets layers; the other is shown as a mismatch with both versions, and the log says why it was left out."""
    from edge_server.backends.llamacpp_split import SplitBackend
    from edge_server.backends.worker_list import WorkerList

    ours = ggml_rpc.llama_cpp_version()

    def worker(llama_cpp: str, ident: str):
        said = {"id": ident, "llama_cpp": llama_cpp, "free_bytes": 8 << 30, "total_bytes": 16 << 30, "threads": 4,
                "busy": False}
        return rpc_relay.worker_side("127.0.0.1", 0, ("127.0.0.1", free_port()), KEY, status=lambda: said)

    same, other = worker(ours, "a"), worker("0.2.0", "b")
    try:
        workers = WorkerList([("127.0.0.1", same.port), ("127.0.0.1", other.port)], KEY, always=True)
        states = workers.survey()
        assert [w["state"] for w in states] == ["up", "mismatch"]
        assert "llama-cpp-python 0.2.0" in states[1]["error"] and ours in states[1]["error"]
        (tmp_path / "meminfo").write_text(f"MemAvailable: {1 << 20} kB\n")
        split = SplitBackend(workers, str(tmp_path / "meminfo"))
        plan = split.plan(gemma_gguf)
        assert plan.workers == [("127.0.0.1", same.port)]
        with caplog.at_level("WARNING", "edge_server.split"):
            split._say_why(gemma_gguf, plan)
        assert f"127.0.0.1:{other.port} (mismatch: it runs llama-cpp-python 0.2.0" in caplog.text
    finally:
        same.close()
        other.close()


def test_a_model_lost_while_its_prompt_is_prepared_is_a_503_in_every_dialect(client, tiny_app, monkeypatch):
    """The child process holding a split model can end between the check that it is running and the reading
    of the prompt; that request gets worker_lost in its dialect's shape, not a 500."""
    from edge_server.backends.base import ModelLost

    assert client.post("/model/launch", json={"model_name": "tiny"}).status_code == 200
    model = tiny_app.extensions["edge_server"].manager.get("tiny").model

    def gone(*args, **kwargs):
        raise ModelLost("the process holding the model ended (status -9)")

    monkeypatch.setattr(model, "prepare", gone)
    chat = [{"role": "user", "content": "hi"}]
    for path, body in [("/generate/fromtext", {"model_name": "tiny", "prompt": "hi"}),
                       ("/v1/chat/completions", {"model": "tiny", "messages": chat}),
                       ("/v1/chat/completions", {"model": "tiny", "messages": chat, "stream": True}),
                       ("/api/chat", {"model": "tiny", "messages": chat})]:
        r = client.post(path, json=body)
        text = r.get_data(as_text=True)
        assert r.status_code == 503 and "status -9" in text and "launch the model again" in text, (path, text)
        assert path == "/api/chat" or '"worker_lost"' in text  # Ollama's errors carry no code


def test_a_worker_on_the_network_needs_a_key(tmp_path):
    out = subprocess.run([sys.executable, "-m", "edge_server", "worker", "--host", "0.0.0.0", "--data-dir",
                          str(tmp_path)], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if not k.startswith("EDGE_")})
    assert out.returncode == 2
    assert "needs the server's key" in out.stderr and "edge-server key" in out.stderr
    out = subprocess.run([sys.executable, "-m", "edge_server", "worker", "--api-key", KEY, "--port", "70000",
                          "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--port is from 0 to 65535" in out.stderr


@needs_rpc
def test_the_key_is_proven_before_ggml_is_reached(start_worker):
    worker = start_worker()
    said = rpc_relay.ask_status(("127.0.0.1", worker.port), KEY)
    assert said["free_bytes"] > 0 and said["threads"] == 1 and said["busy"] is False
    with pytest.raises(PermissionError):
        rpc_relay.ask_status(("127.0.0.1", worker.port), "guessed")
    # No handshake at all: ggml's own hello (command 14, RPC_CMD_HELLO) gets the connection closed, no answer.
    with socket.create_connection(("127.0.0.1", worker.port), timeout=10) as sock:
        challenge = rpc_relay._read_exactly(sock, len(rpc_relay.MAGIC) + rpc_relay.NONCE, time.monotonic() + 10)
        assert challenge.startswith(rpc_relay.MAGIC)
        sock.sendall(bytes([14]) + bytes(8) + bytes(64))
        rest = b""
        try:
            while part := sock.recv(4096):
                rest += part
        except ConnectionResetError:
            pass  # closed with our bytes unread
        assert rest == b""  # nothing after the challenge: ggml never answered


@pytest.fixture
def gemma_apps(make_app, gemma_gguf, tiny_gguf):
    """make(workers=...) -> a live server with Gemma and the tiny model."""
    servers = []

    def make(**settings):
        app = make_app({"gemma": {"path": str(gemma_gguf), "n_ctx": 1024},
                        "tiny": {"path": str(tiny_gguf), "n_ctx": 256}}, api_key=KEY, **settings)
        servers.append(LiveServer(app))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def launch(url, name="gemma"):
    r = requests.post(f"{url}/model/launch", json={"model_name": name}, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=300)
    assert r.status_code == 200, r.text


def status(url, name="gemma"):
    return requests.get(f"{url}/model/status", params={"model_name": name},
                        headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()


@needs_rpc
def test_a_model_split_over_two_workers_says_what_it_says_alone(start_worker, gemma_apps, chromium):
    local = gemma_apps()
    launch(local.url)
    code, alone = answer(local.url)
    assert code == 200
    requests.delete(f"{local.url}/model/kill", json={"model_name": "gemma"},
                    headers={"Authorization": f"Bearer {KEY}"}, timeout=60)

    workers = [start_worker(), start_worker()]
    before = [w.compute_rss() for w in workers]
    split = gemma_apps(workers=",".join(f"127.0.0.1:{w.port}" for w in workers), split="always")
    launch(split.url)
    code, together = answer(split.url)
    assert code == 200
    assert together["choices"][0]["text"] == alone["choices"][0]["text"]
    # The layers are really there: each worker's ggml server grew by its share of the blocks (about 30 MB).
    grown = [w.compute_rss() - b for w, b in zip(workers, before)]
    assert all(g > 15e6 for g in grown), grown
    body = status(split.url)
    assert body["workers"] == [f"127.0.0.1:{w.port}" for w in workers] and body["lost"] is None
    assert "workers" not in requests.get(f"{split.url}/health", timeout=30).json()  # public: not to strangers
    health = requests.get(f"{split.url}/health", headers={"Authorization": f"Bearer {KEY}"}, timeout=30).json()
    assert [(w["state"], w["models"]) for w in health["workers"]] == [("busy", ["gemma"])] * 2
    assert all(w["free_bytes"] > 0 for w in health["workers"])

    # Where it runs, as `edge-server list` and the page's model card say it.
    addresses = ", ".join(f"127.0.0.1:{w.port}" for w in workers)
    listed = subprocess.run([sys.executable, "-m", "edge_server", "list", "--url", split.url, "--api-key", KEY,
                             "--data-dir", str(split.app.extensions["edge_server"].settings.data_dir)],
                            capture_output=True, text=True, timeout=60).stdout
    assert f"yes, + {addresses}" in listed and f"worker 127.0.0.1:{workers[0].port}: busy" in listed, listed
    phone = Phone(chromium, split.url, key=KEY)
    phone.tab("models")
    assert f"on this device + {addresses}" in phone.page.locator(".model[data-name=gemma] .state").inner_text()

    # Killing the model ends the process that held it, and the workers give back what they held.
    hosts = lambda: [p for p in psutil.Process().children(recursive=True)  # noqa: E731
                     if "model_host_child" in " ".join(p.cmdline())]
    assert len(hosts()) == 1
    r = requests.delete(f"{split.url}/model/kill", json={"model_name": "gemma"},
                        headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == 200 and hosts() == []
    deadline = time.monotonic() + 20
    while any(w.compute_rss() - b > 10e6 for w, b in zip(workers, before)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [w.compute_rss() - b < 10e6 for w, b in zip(workers, before)] == [True, True]


@needs_rpc
def test_a_worker_killed_mid_answer_takes_only_its_model_down(start_worker, gemma_apps):
    workers = [start_worker(), start_worker()]
    server = gemma_apps(workers=",".join(f"127.0.0.1:{w.port}" for w in workers), split="always")
    launch(server.url)
    launch(server.url, "tiny")  # after Gemma, which keeps both workers busy: it loads here alone
    assert "workers" not in status(server.url, "tiny")
    auth = {"Authorization": f"Bearer {KEY}"}
    with requests.post(f"{server.url}/v1/chat/completions", headers=auth, stream=True, timeout=120, json={
            "model": "gemma", "messages": [{"role": "user", "content": "Write a long story about the sea."}],
            "max_tokens": 400, "temperature": 0, "stream": True}) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        pieces = [next(lines) for _ in range(10)]
        assert all(p.startswith(b"data: {") for p in pieces if p)
        workers[1].kill()
        rest = list(lines)
    events = [line for line in rest if line.startswith(b"data: ")]
    assert any(b"worker_lost" in line for line in events), events[-3:]  # the stream ends with the error

    code, body = answer(server.url)
    assert code == 503 and body["error"]["code"] == "worker_lost", body
    r = requests.post(f"{server.url}/generate/fromtext", json={"model_name": "gemma", "prompt": "hi"}, headers=auth,
                      timeout=30)
    assert r.status_code == 503 and r.json()["code"] == "worker_lost"
    assert requests.get(f"{server.url}/health", timeout=30).json()["status"] == "ok"
    assert status(server.url)["lost"]
    code, body = answer(server.url, "tiny", tokens=8)  # the other model, and the server, are fine
    assert code == 200 and body["usage"]["completion_tokens"] > 0

    # The same worker back on its port: a relaunch splits the model again and it answers.
    workers[1] = start_worker(port=workers[1].port)
    launch(server.url)
    code, body = answer(server.url)
    assert code == 200 and body["choices"][0]["text"]
    assert status(server.url)["lost"] is None


@needs_rpc
def test_a_frozen_worker_is_given_up_on(start_worker, gemma_apps, monkeypatch):
    """Android freezes a backgrounded app, and its kernel goes on acknowledging: no keep-alive fails, the
    model's process just waits. The server gives up on a silent model after STALL_SECONDS."""
    from edge_server.backends import model_host

    monkeypatch.setattr(model_host, "STALL_SECONDS", 3.0)
    workers = [start_worker(), start_worker()]
    server = gemma_apps(workers=",".join(f"127.0.0.1:{w.port}" for w in workers), split="always")
    launch(server.url)
    frozen = [psutil.Process(workers[0].proc.pid), *psutil.Process(workers[0].proc.pid).children(recursive=True)]
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        with requests.post(f"{server.url}/v1/chat/completions", headers=auth, stream=True, timeout=120, json={
                "model": "gemma", "messages": [{"role": "user", "content": "Write a long story about the sea."}],
                "max_tokens": 400, "temperature": 0, "stream": True}) as r:
            lines = r.iter_lines()
            assert next(lines).startswith(b"data: {")
            for process in frozen:
                process.suspend()  # SIGSTOP
            began = time.monotonic()
            rest = list(lines)
        assert any(b"worker_lost" in line and b"frozen" in line for line in rest), rest[-3:]
        assert 2 < time.monotonic() - began < 30
        code, body = answer(server.url)
        assert code == 503 and body["error"]["code"] == "worker_lost"
    finally:
        for process in frozen:
            process.resume()


WORKER_IP, SERVER_IP = "10.231.8.1", "10.231.8.2"


@pytest.fixture
def worker_host():
    """A second host on a veth link: the network namespace a worker runs in, at WORKER_IP."""
    import shutil

    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("needs root and iproute2's `ip netns` (run the suite as root, as CI does)")
    tag = f"{os.getpid() % 100000}"
    ns, here, there = f"edge-wrk-{tag}", f"ew{tag}", f"ex{tag}"
    ip = lambda *args, check=True: subprocess.run(["ip", *args], capture_output=True, check=check)  # noqa: E731
    if ip("netns", "add", ns, check=False).returncode != 0:
        pytest.skip("`ip netns add` is not permitted here (no CAP_SYS_ADMIN)")
    try:
        ip("link", "add", here, "type", "veth", "peer", "name", there)
        ip("link", "set", there, "netns", ns)
        ip("addr", "add", f"{SERVER_IP}/24", "dev", here)
        ip("link", "set", here, "up")
        ip("-n", ns, "addr", "add", f"{WORKER_IP}/24", "dev", there)
        ip("-n", ns, "link", "set", there, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        yield ns, lambda: ip("-n", ns, "link", "set", there, "down")  # the worker drops off the network
    finally:
        ip("netns", "del", ns, check=False)  # takes the veth pair with it


@needs_rpc
def test_a_worker_on_another_host_and_then_off_the_network(worker_host, start_worker, gemma_apps):
    ns, unplug = worker_host
    local = gemma_apps()
    launch(local.url)
    alone = answer(local.url)[1]["choices"][0]["text"]
    requests.delete(f"{local.url}/model/kill", json={"model_name": "gemma"},
                    headers={"Authorization": f"Bearer {KEY}"}, timeout=60)

    worker = start_worker(host="0.0.0.0", port=50052, prefix=("ip", "netns", "exec", ns))
    assert WORKER_IP in worker.banner
    server = gemma_apps(workers=WORKER_IP, split="always")  # the default port
    launch(server.url)
    code, body = answer(server.url)
    assert code == 200 and body["choices"][0]["text"] == alone
    assert status(server.url)["workers"] == [f"{WORKER_IP}:50052"]

    # Off the network mid-answer (no reset ever comes): the keep-alives end it within seconds, not minutes.
    auth = {"Authorization": f"Bearer {KEY}"}
    with requests.post(f"{server.url}/generate/fromtext", headers=auth, stream=True, timeout=120, json={
            "model_name": "gemma", "prompt": "Write a long story about the sea.", "max_new_tokens": 600,
            "temperature": 0}) as r:
        pieces = r.iter_content(chunk_size=None)
        assert next(pieces)
        unplug()
        began = time.monotonic()
        with pytest.raises(requests.exceptions.ChunkedEncodingError):  # the seed endpoint cuts the body
            for _ in pieces:
                pass
    assert time.monotonic() - began < 40
    r = requests.post(f"{server.url}/generate/fromtext", json={"model_name": "gemma", "prompt": "hi"}, headers=auth,
                      timeout=30)
    assert r.status_code == 503 and r.json()["code"] == "worker_lost"
    health = requests.get(f"{server.url}/health", headers=auth, timeout=30).json()
    assert health["workers"][0]["state"] == "down"
