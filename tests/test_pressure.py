"""The server keeps answering under pressure (issue 8, findings 1 and 2): many slow connections, image
links that drip, and many big images at once. bench/attack.py replays the full-size attacks."""
from __future__ import annotations

import socket
import threading
import time

import pytest
import requests
from conftest import LiveServer
from test_images import ImageSite, data_uri, image_bytes

import edge_server.images


def test_many_slow_connections_do_not_lock_others_out(live):
    port = int(live.url.rsplit(":", 1)[1])
    trickles = []
    try:
        for _ in range(150):  # each has sent part of its headers and goes quiet
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET /model/getactive HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            trickles.append(sock)
        t = time.perf_counter()
        assert requests.get(f"{live.url}/model/getactive", timeout=5).json() == []
        assert time.perf_counter() - t < 1
    finally:
        for sock in trickles:
            sock.close()


@pytest.fixture
def vision_live(make_app, tiny_gguf, tiny_mmproj):
    servers = []

    def _serve(**settings):
        app = make_app({"tiny-vision": {"path": str(tiny_gguf), "mmproj_path": str(tiny_mmproj), "n_ctx": 512}},
                       **settings)
        app.test_client().post("/model/launch", json={"model_name": "tiny-vision"})
        servers.append(LiveServer(app))
        return servers[-1].url

    yield _serve
    for server in servers:
        server.close()


def test_dripping_links_leave_workers_for_cheap_endpoints(vision_live):
    """Link fetches take a place among the slow work: past it they get 503, and cheap endpoints answer."""
    url = vision_live(threads=6, allow_private_links=True, link_deadline=4)
    site = ImageSite()
    codes, lock = [], threading.Lock()

    def ask():
        r = requests.post(f"{url}/generate/fromimagetext", timeout=30, json={
            "model_name": "tiny-vision", "prompt": "hi", "image_links": [f"{site.url}/drip-body.png"]})
        with lock:
            codes.append(r.status_code)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        t = time.perf_counter()
        assert requests.get(f"{url}/model/getactive", timeout=5).json() == ["tiny-vision"]
        assert time.perf_counter() - t < 0.5
        for thread in threads:
            thread.join()
    finally:
        site.close()
    assert sorted(codes) == [503] * 4 + [504] * 4  # 4 places (6 workers, 2 reserved); each link hit its deadline


def test_image_decoding_is_bounded_server_wide(vision_live, monkeypatch):
    url = vision_live(max_decode_pixels=3_000_000)
    in_flight, peak, lock = [0], [0], threading.Lock()
    shrink = edge_server.images._shrink

    def counting(img, side):
        pixels = img.size[0] * img.size[1]
        with lock:
            in_flight[0] += pixels
            peak[0] = max(peak[0], in_flight[0])
        try:
            time.sleep(0.05)  # let requests overlap if nothing stops them
            return shrink(img, side)
        finally:
            with lock:
                in_flight[0] -= pixels

    monkeypatch.setattr(edge_server.images, "_shrink", counting)
    big = data_uri(image_bytes("PNG", size=(1500, 1500)))
    codes = []
    threads = [threading.Thread(target=lambda: codes.append(requests.post(f"{url}/generate/fromimagetext", json={
        "model_name": "tiny-vision", "prompt": "hi", "max_new_tokens": 2, "image_links": [big, big]},
        timeout=60).status_code)) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == [200] * 5
    assert 2_250_000 <= peak[0] <= 3_000_000  # one 1500x1500 image at a time fits; two do not
