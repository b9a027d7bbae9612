"""The API key, Host and Origin checks, body types and CORS, through a real waitress server."""
from __future__ import annotations

import base64
import os
import socket
import stat
import subprocess
import sys

import pytest
import requests
from conftest import LiveServer

KEY = "test-key-0123456789"


@pytest.fixture
def tiny_models(tiny_gguf):
    return {"tiny": {"path": str(tiny_gguf), "n_ctx": 256}}


@pytest.fixture
def serve(make_app, tiny_models):
    """Start a live server with the given settings; closed after the test."""
    servers = []

    def _serve(**settings):
        servers.append(LiveServer(make_app(tiny_models, **settings)))
        return servers[-1]

    yield _serve
    for server in servers:
        server.close()


def bearer(key=KEY):
    return {"Authorization": f"Bearer {key}"}


def test_key_is_required_and_compared(serve):
    url = serve(api_key=KEY).url
    for headers in ({}, bearer("wrong"), {"Authorization": KEY}, {"X-API-Key": "wrong"}, bearer(KEY + "x")):
        r = requests.get(f"{url}/model/getactive", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["code"] == "unauthorized" and r.headers["WWW-Authenticate"] == "Bearer"
    basic = lambda user, password: {"Authorization": "Basic " + base64.b64encode(  # noqa: E731
        f"{user}:{password}".encode()).decode()}
    for headers in (basic("edge", "wrong"), basic(KEY, ""), {"Authorization": "Basic !!"}):
        assert requests.get(f"{url}/model/getactive", headers=headers).status_code == 401, headers
    for headers in (bearer(), {"Authorization": f"bearer {KEY}"}, {"X-API-Key": KEY}, basic("edge", KEY),
                    basic("", KEY)):
        assert requests.get(f"{url}/model/getactive", headers=headers).json() == [], headers
    # A refused launch loads nothing.
    assert requests.post(f"{url}/model/launch", json={"model_name": "tiny"}).status_code == 401
    assert requests.get(f"{url}/model/getactive", headers=bearer()).json() == []


def test_public_paths_need_no_key(serve):
    url = serve(api_key=KEY).url
    page = requests.get(f"{url}/")
    assert page.status_code == 200 and "/docs/" in page.text
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self';")
    script = requests.get(f"{url}/web/js/main.js")
    assert script.status_code == 200 and script.headers["Content-Type"].startswith("text/javascript")
    assert requests.get(f"{url}/web/%2e%2e/api/web.py").status_code == 404
    assert requests.head(f"{url}/").status_code == 200
    assert requests.get(f"{url}/health").json()["status"] == "ok"
    assert requests.get(f"{url}/openapi.json").json()["openapi"] == "3.1.0"
    docs = requests.get(f"{url}/docs")  # redirected to /docs/
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    assert requests.get(f"{url}/docs/swagger-ui-bundle.js").status_code == 200
    preflight = requests.options(f"{url}/model/launch")
    assert preflight.status_code == 200


def test_loopback_needs_no_key_unless_one_is_set(serve, data_dir):
    url = serve().url
    assert requests.get(f"{url}/model/getactive").status_code == 200
    assert not (data_dir / "api_key").exists()


def test_lan_bind_makes_and_keeps_a_key(make_app, tiny_models, data_dir):
    first = make_app(tiny_models, host="0.0.0.0").extensions["edge_server"].api_key
    path = data_dir / "api_key"
    assert first and len(first) >= 24 and path.read_text().strip() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert make_app(tiny_models, host="0.0.0.0").extensions["edge_server"].api_key == first
    assert make_app(tiny_models, host="0.0.0.0", api_key="mine").extensions["edge_server"].api_key == "mine"
    assert make_app(tiny_models, host="0.0.0.0", no_auth=True).extensions["edge_server"].api_key is None


def test_key_command_prints_and_rotates(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}

    def key(*args):
        out = subprocess.run([sys.executable, "-m", "edge_server", "key", "--data-dir", str(tmp_path), *args],
                             capture_output=True, text=True, env=env, timeout=60, check=True)
        return out.stdout.strip()

    first = key()
    assert first and key() == first
    rotated = key("--rotate")
    assert rotated != first and key() == rotated == (tmp_path / "api_key").read_text().strip()
    env["EDGE_API_KEY"] = "from-env"
    assert key() == "from-env"


def test_simple_cross_site_bodies_are_refused(serve):
    """What a hostile page can send without a CORS preflight: text/plain, forms, multipart."""
    server = serve()
    url = server.url
    body = '{"model_name": "tiny"}'
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        r = requests.post(f"{url}/model/launch", data=body, headers={"Content-Type": kind})
        assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type", kind
    r = requests.post(f"{url}/chat/addsystemprompt", data='{"model_name": "tiny", "system_prompt": "evil"}',
                      headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert requests.get(f"{url}/model/getactive").json() == []
    assert requests.get(f"{url}/chat/getchathistory", params={"model_name": "tiny"}).json()["system_prompt"] is None
    # JSON, no Content-Type at all, and multipart where the spec takes uploads still pass the guard.
    assert requests.post(f"{url}/model/launch", data=body).status_code == 200
    r = requests.post(f"{url}/generate/fromimagetext", files={"image_files": ("a.png", b"x")},
                      data={"model_name": "tiny", "prompt": "hi"})
    assert r.json()["code"] == "model_not_multimodal"


def test_foreign_origin_is_refused_on_writes(serve):
    url = serve().url
    evil = {"Origin": "http://evil.example"}
    r = requests.post(f"{url}/model/launch", json={"model_name": "tiny"}, headers=evil)
    assert r.status_code == 403 and r.json()["code"] == "origin_not_allowed"
    r = requests.delete(f"{url}/chat/clearchat", json={"model_name": "tiny"}, headers={"Origin": "null"})
    assert r.status_code == 403
    assert requests.get(f"{url}/model/getactive").json() == []
    # Reads are allowed (the browser keeps the answer from a foreign page), and get no CORS header.
    r = requests.get(f"{url}/model/getactive", headers=evil)
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
    # The server's own pages post with their own origin.
    assert requests.post(f"{url}/model/launch", json={"model_name": "tiny"}, headers={"Origin": url}).status_code == 200


def test_dns_rebinding_host_is_refused(serve):
    server = serve(allowed_hosts="pi.example")
    url, port = server.url, server.server.effective_port
    r = requests.get(f"{url}/model/getactive", headers={"Host": f"evil.example:{port}"})
    assert r.status_code == 403 and r.json()["code"] == "host_not_allowed"
    assert requests.get(f"{url}/", headers={"Host": "rebind.evil.example"}).status_code == 403
    own = socket.gethostname().split(".")[0]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "[::1]", "192.168.1.20", f"{own}.local:{port}",
                 own, "pi.example", "PI.example:80"):
        assert requests.get(f"{url}/model/getactive", headers={"Host": host}).status_code == 200, host


def test_cors_for_allowed_origins(serve):
    app_origin = "http://app.example:3000"
    url = serve(api_key=KEY, cors_origins=f"{app_origin},http://other.example").url
    asked = "authorization, content-type, x-stainless-os, x-stainless-lang"
    preflight = requests.options(f"{url}/generate/fromtext", headers={
        "Origin": app_origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": asked,
        "Access-Control-Request-Private-Network": "true"})
    assert preflight.status_code == 200  # no key on a preflight
    h = preflight.headers
    assert h["Access-Control-Allow-Origin"] == app_origin
    assert {x.strip() for x in h["Access-Control-Allow-Headers"].split(",")} >= {
        "authorization", "content-type", "x-stainless-os", "x-stainless-lang"}
    assert "POST" in h["Access-Control-Allow-Methods"] and h["Access-Control-Allow-Private-Network"] == "true"
    r = requests.post(f"{url}/model/launch", json={"model_name": "tiny"}, headers={"Origin": app_origin, **bearer()})
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == app_origin
    # A 401 carries the CORS header too, so the page can read why.
    r = requests.get(f"{url}/model/getactive", headers={"Origin": app_origin})
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == app_origin
    # Not listed: no CORS headers, and writes refused.
    stranger = {"Origin": "http://stranger.example", "Access-Control-Request-Method": "POST"}
    assert "Access-Control-Allow-Origin" not in requests.options(f"{url}/model/launch", headers=stranger).headers
    r = requests.delete(f"{url}/model/kill", json={"model_name": "tiny"}, headers={**stranger, **bearer()})
    assert r.status_code == 403


def test_cors_star_only_when_written(serve):
    url = serve(cors_origins="*").url
    r = requests.post(f"{url}/model/launch", json={"model_name": "tiny"}, headers={"Origin": "http://any.example"})
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "http://any.example"


def test_cors_origins_are_exact_and_case_blind(serve):
    """An origin with regex characters is no pattern (flask-cors would read it as one)."""
    url = serve(cors_origins="https://*.example.com,http://Pc.lan:3000").url
    r = requests.get(f"{url}/model/getactive", headers={"Origin": "https://xexample.com.evil.net"})
    assert "Access-Control-Allow-Origin" not in r.headers
    r = requests.post(f"{url}/model/launch", json={"model_name": "tiny"}, headers={"Origin": "http://pc.lan:3000"})
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "http://pc.lan:3000"


def test_wrong_method_is_405_whatever_the_body(serve):
    r = requests.post(f"{serve().url}/health", data="x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed" and r.headers["Allow"]


def test_key_file_mode_is_kept_private(make_app, tiny_models, data_dir):
    data_dir.mkdir(parents=True)
    (data_dir / "api_key").write_text("kept-key\n")
    os.chmod(data_dir / "api_key", 0o644)
    assert make_app(tiny_models, host="0.0.0.0").extensions["edge_server"].api_key == "kept-key"
    assert stat.S_IMODE((data_dir / "api_key").stat().st_mode) == 0o600


def test_docs_have_the_pages_protections(client):
    """/docs could be framed by any page: no Content-Security-Policy, no X-Frame-Options."""
    import base64
    import hashlib
    import re

    r = client.get("/docs/")
    policy = r.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy and r.headers["X-Frame-Options"] == "DENY"
    scripts = next(part for part in policy.split(";") if part.strip().startswith("script-src"))
    assert "unsafe-inline" not in scripts and "unsafe-eval" not in scripts
    for script in re.findall(rb"<script>(.*?)</script>", r.get_data(), re.DOTALL):  # only the inline one sent runs
        assert f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'" in policy
    assert client.get("/docs/swagger-ui-bundle.js").headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in client.get("/docs/oauth2-redirect.html").headers["Content-Security-Policy"]
    assert client.get("/").headers["X-Frame-Options"] == "DENY"
