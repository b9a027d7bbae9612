"""/generate/fromimagetext on llama.cpp's real multimodal path, and the image intake around it."""
from __future__ import annotations

import base64
import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from edge_server import links
from edge_server.errors import ImageInvalid
from edge_server.images import prepare_image
from edge_server.settings import build_settings


def image_bytes(fmt="PNG", size=(64, 48), color=(200, 30, 30), **save) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt, **save)
    return buf.getvalue()


def data_uri(data: bytes, kind="png") -> str:
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


@pytest.fixture
def vision(make_app, tiny_gguf, tiny_mmproj):
    """An app running the tiny text model with the tiny projector (generic MTMD handler)."""
    def _make(**settings):
        app = make_app({"tiny-vision": {"path": str(tiny_gguf), "mmproj_path": str(tiny_mmproj), "n_ctx": 512},
                        "tiny": {"path": str(tiny_gguf), "n_ctx": 512}}, **settings)
        client = app.test_client()
        assert client.post("/model/launch", json={"model_name": "tiny-vision"}).status_code == 200
        return client
    return _make


class ImageSite:
    """A local web server with an image, a text page, a redirect, a slow page and two that drip."""

    def __init__(self, redirect_to: str = "/"):
        png = image_bytes()
        self.hits = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                site.hits.append(self.path)
                if self.path == "/cat.png":
                    self._send(200, "image/png", png)
                elif self.path == "/page.html":
                    self._send(200, "text/html", b"<html></html>")
                elif self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif self.path == "/slow.png":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.end_headers()
                    time.sleep(3)
                elif self.path == "/drip-headers.png":  # a byte every 0.2 s: never a read timeout
                    self._drip(b"HTTP/1.1 200 OK\r\n", b"X" * 100)
                elif self.path == "/drip-body.png":
                    self._drip(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n"
                               % len(png), png)
                else:
                    self._send(404, "text/plain", b"no")

            def _drip(self, head, body):
                try:
                    self.wfile.write(head)
                    for byte in body:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.2)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the server under test gave up, as it should

            def _send(self, status, kind, body):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site():
    s = ImageSite()
    yield s
    s.close()


def ask_images(client, files=(), links=None, json_body=None, **fields):
    if json_body is not None:
        return client.post("/generate/fromimagetext", json=json_body)
    data = {"model_name": "tiny-vision", "prompt": "What is this?", "max_new_tokens": "8", "temperature": "0",
            **fields}
    data["image_files"] = [(io.BytesIO(content), name) for name, content in files]
    if links:
        data["image_links"] = links
    return client.post("/generate/fromimagetext", data=data, content_type="multipart/form-data")


@pytest.mark.parametrize("handler", ["mtmd", "llava-1.5"])
def test_handlers_load_and_answer_from_an_image(make_app, tiny_gguf, tiny_mmproj, handler):
    app = make_app({"v": {"path": str(tiny_gguf), "mmproj_path": str(tiny_mmproj), "chat_handler": handler,
                          "n_ctx": 512}})
    client = app.test_client()
    assert client.post("/model/launch", json={"model_name": "v"}).status_code == 200
    r = client.post("/generate/fromimagetext", json={"model_name": "v", "prompt": "Describe.", "max_new_tokens": 6,
                                                      "temperature": 0, "image_links": [data_uri(image_bytes())]})
    assert r.status_code == 200 and r.get_data(as_text=True)


def test_multipart_with_several_uploads(vision):
    client = vision()
    r = ask_images(client, files=[("a.png", image_bytes()), ("b.jpg", image_bytes("JPEG", color=(0, 0, 255)))])
    assert r.status_code == 200, r.get_data(as_text=True)
    answer = r.get_data(as_text=True)
    assert answer
    turns = client.get("/chat/getchathistory", query_string={"model_name": "tiny-vision"}).json["turns"]
    assert turns[0] == {"role": "user", "content": "What is this?", "images": 2}
    assert len(turns) == 2 and turns[1]["role"] == "assistant" and turns[1]["content"] == answer


def test_the_image_changes_the_answer(vision):
    """Greedy answers to the same question differ with the picture: the pixels reach the model."""
    client = vision()
    answers = set()
    for color in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]:
        r = ask_images(client, files=[("x.png", image_bytes(color=color))], chat_id=f"c{color[0]}{color[2]}")
        answers.add(r.get_data(as_text=True))
    assert len(answers) > 1


def test_json_with_data_uri(vision):
    client = vision()
    r = ask_images(client, json_body={"model_name": "tiny-vision", "prompt": "Hi", "max_new_tokens": 5,
                                      "image_links": [data_uri(image_bytes("WEBP"), "webp")]})
    assert r.status_code == 200 and r.get_data(as_text=True)


def test_link_from_a_local_server_when_private_links_are_allowed(vision, site):
    client = vision(allow_private_links=True)
    r = ask_images(client, links=[f"{site.url}/cat.png"])
    assert r.status_code == 200 and r.get_data(as_text=True)
    assert site.hits == ["/cat.png"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "10.1.2.3", "192.168.1.20", "169.254.169.254", "[::1]"])
def test_guard_refuses_private_addresses(vision, site, host):
    port = site.url.rsplit(":", 1)[1]
    r = ask_images(vision(), links=[f"http://{host}:{port}/cat.png"])
    assert r.status_code == 400 and r.json["code"] == "link_not_allowed"
    assert site.hits == []


@pytest.mark.parametrize("target", ["http://127.0.0.1:{port}/cat.png", "http://10.0.0.7/cat.png"])
def test_guard_checks_every_redirect_hop(vision, monkeypatch, target):
    site = ImageSite()
    try:
        redirect = target.format(port=site.url.rsplit(":", 1)[1])
        site.close()
        site = ImageSite(redirect_to=redirect)
        first = f"{site.url}/redirect"
        original = links.check_host
        # Pretend the first hop is a public host; the redirect target must still be refused.
        monkeypatch.setattr(links, "check_host", lambda url, settings, label: None if url == first
                            else original(url, settings, label))
        public, calls = links._public, []
        # The first connection (to the local site) passes as public; everything after is judged for real.
        monkeypatch.setattr(links, "_public", lambda a: bool(calls.append(a)) or len(calls) == 1 or public(a))
        r = ask_images(vision(), links=[first])
        assert r.status_code == 400 and r.json["code"] == "link_not_allowed"
        assert site.hits == ["/redirect"]
    finally:
        site.close()


def test_link_errors(vision, site):
    client = vision(allow_private_links=True, link_timeout=0.5)
    r = ask_images(client, links=[f"{site.url}/page.html"])
    assert r.status_code == 422 and r.json["code"] == "image_invalid"
    r = ask_images(client, links=[f"{site.url}/missing.png"])
    assert r.status_code == 502 and r.json["code"] == "image_fetch_failed"
    r = ask_images(client, links=[f"{site.url}/slow.png"])
    assert r.status_code == 504 and r.json["code"] == "image_fetch_timeout"
    r = ask_images(client, links=["ftp://example.com/x.png"])
    assert r.status_code == 400 and r.json["code"] == "link_not_allowed"
    r = ask_images(client, links=["data:image/png;base64,!!!notbase64"])
    assert r.status_code == 422 and r.json["code"] == "image_invalid"


def test_decompression_bomb_is_refused(vision):
    buf = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buf, "PNG")  # 144 M pixels in a few hundred KB
    assert len(buf.getvalue()) < 1_000_000
    r = ask_images(vision(), files=[("bomb.png", buf.getvalue())])
    assert r.status_code == 422 and r.json["code"] == "image_invalid" and "pixels" in r.json["detail"]


def test_text_file_renamed_png(vision):
    r = ask_images(vision(), files=[("notes.png", b"just some text, not a picture\n" * 20)])
    assert r.status_code == 422 and r.json["code"] == "image_invalid"


def test_truncated_image(vision):
    r = ask_images(vision(), files=[("cut.jpg", image_bytes("JPEG", size=(400, 300))[:600])])
    assert r.status_code == 422 and r.json["code"] == "image_invalid"


def test_oversized_upload(vision):
    r = ask_images(vision(max_image_bytes=2000), files=[("big.bmp", image_bytes("BMP", size=(100, 100)))])
    assert r.status_code == 413 and r.json["code"] == "image_too_large"


def test_too_many_images(vision):
    r = ask_images(vision(max_images=2), files=[(f"{i}.png", image_bytes()) for i in range(3)])
    assert r.status_code == 413 and r.json["code"] == "too_many_images"


def test_whole_request_too_large(vision):
    r = ask_images(vision(max_body_bytes=50_000), files=[("big.bmp", image_bytes("BMP", size=(200, 200)))])
    assert r.status_code == 413


def test_text_model_asked_for_images(vision):
    client = vision()
    client.post("/model/launch", json={"model_name": "tiny"})
    r = ask_images(client, files=[("a.png", image_bytes())], model_name="tiny")
    assert r.status_code == 400 and r.json["code"] == "model_not_multimodal"


def test_no_images_and_bad_fields(vision):
    client = vision()
    assert ask_images(client).json["code"] == "invalid_request"
    assert ask_images(client, files=[("a.png", image_bytes())], max_new_tokens="many").status_code == 422
    r = ask_images(client, json_body={"model_name": "tiny-vision", "prompt": "x", "image_links": "not a list"})
    assert r.status_code == 422
    assert client.get("/chat/getchathistory", query_string={"model_name": "tiny-vision"}).json["turns"] == []


def test_intake_orients_converts_and_shrinks():
    settings = build_settings({"image_max_side": 1024}, environ={})
    photo = Image.new("RGB", (3000, 2000), (10, 120, 200))
    exif = photo.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": the camera was held upright
    buf = io.BytesIO()
    photo.save(buf, "JPEG", exif=exif.tobytes())
    out = Image.open(io.BytesIO(prepare_image(buf.getvalue(), settings, "photo")))
    assert out.format == "JPEG" and out.mode == "RGB"
    assert out.size == (683, 1024)  # upright and within 1024 pixels
    gif = io.BytesIO()
    frames = [Image.new("P", (40, 30), i) for i in (1, 2)]
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(prepare_image(gif.getvalue(), settings, "gif"))).size == (40, 30)
    rgba = io.BytesIO()
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(rgba, "PNG")
    assert Image.open(io.BytesIO(prepare_image(rgba.getvalue(), settings, "png"))).mode == "RGB"
    with pytest.raises(ImageInvalid):
        prepare_image(b"GIF89a" + b"\0" * 10, settings, "junk")


def test_redirects_are_bounded(vision):
    site = ImageSite(redirect_to="/redirect")  # a loop
    try:
        r = ask_images(vision(allow_private_links=True, link_max_redirects=3), links=[f"{site.url}/redirect"])
        assert r.status_code == 502 and r.json["code"] == "image_fetch_failed" and "redirects" in r.json["detail"]
        assert len(site.hits) == 4
    finally:
        site.close()


def test_bmp_and_webp_uploads(vision):
    client = vision()
    r = ask_images(client, files=[("a.bmp", image_bytes("BMP")), ("b.webp", image_bytes("WEBP"))])
    assert r.status_code == 200 and r.get_data(as_text=True)


@pytest.mark.parametrize("link", ["http://127.0.0.1:{port}\\@1.1.1.1/cat.png", "http://user@127.0.0.1:{port}/cat.png",
                                  "http://[64:ff9b::7f00:1]:{port}/cat.png", "http://[2002:7f00:1::1]:{port}/cat.png",
                                  "http://[::ffff:127.0.0.1]:{port}/cat.png", "http://127.0.0.1:{port}/cat.png\n"])
def test_guard_reads_urls_as_the_client_does(vision, site, link):
    """A backslash let urlsplit see 1.1.1.1 while requests connected to 127.0.0.1 (finding 5)."""
    r = ask_images(vision(), links=[link.format(port=site.url.rsplit(":", 1)[1])])
    assert r.status_code == 400 and r.json["code"] == "link_not_allowed", r.json
    assert site.hits == []


def test_embedded_ipv4_addresses_are_judged_by_what_they_carry():
    assert not links._public("64:ff9b::a00:1") and links._public("64:ff9b::808:808")
    assert not links._public("2002:c0a8:101::1") and links._public("2002:808:808::1")
    assert not links._public("::ffff:10.0.0.1")


def test_peer_is_checked_before_anything_is_sent(vision, site, monkeypatch):
    """If DNS said public but the connection lands on a private address, no request is sent."""
    monkeypatch.setattr(links, "check_host", lambda url, settings, label: None)
    r = ask_images(vision(), links=[f"{site.url}/cat.png"])
    assert r.status_code == 400 and r.json["code"] == "link_not_allowed"
    assert site.hits == []


@pytest.mark.parametrize("path", ["/drip-headers.png", "/drip-body.png"])
def test_one_deadline_for_a_dripping_link(vision, site, path):
    client = vision(allow_private_links=True, link_deadline=1.5)
    t = time.perf_counter()
    r = ask_images(client, links=[f"{site.url}{path}"])
    assert r.status_code == 504 and r.json["code"] == "image_fetch_timeout"
    assert time.perf_counter() - t < 3


def test_a_chat_with_pictures_never_gets_stuck(vision):
    """Image tokens were not counted when fitting the chat: after a few turns every request failed (finding 7)."""
    client = vision()
    png = image_bytes()
    for turn in range(14):
        r = ask_images(client, files=[("a.png", png)] * 4, prompt=f"turn {turn}: describe these pictures " * 3,
                       max_new_tokens="40")
        assert r.status_code == 200, (turn, r.json)
        r.get_data()
    turns = client.get("/chat/getchathistory", query_string={"model_name": "tiny-vision"}).json["turns"]
    assert len(turns) >= 20
