"""/docs in real Chromium (Debian's, driven by playwright): it renders, stays on the server, and works."""
from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest
from conftest import LiveServer

KEY = "browser-key-42"


@pytest.fixture
def docs_server(make_app, tiny_gguf):
    app = make_app({"tiny": {"path": str(tiny_gguf), "n_ctx": 256}}, api_key=KEY)
    assert app.test_client().post("/model/launch", json={"model_name": "tiny"},
                                  headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    server = LiveServer(app)
    yield server
    server.close()


def test_docs_render_offline_and_try_it_out_works(chromium, docs_server):
    page = chromium.new_page()
    hosts, refused = set(), []
    page.on("request", lambda request: hosts.add(urlsplit(request.url).netloc))
    page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text
            else None)
    page.goto(f"{docs_server.url}/docs", wait_until="networkidle")
    page.wait_for_selector("#operations-models-get_model_getactive")
    assert page.locator(".opblock").count() >= 14  # every operation is listed

    # Authorize with the key, as a user would.
    page.click("button.authorize")
    page.locator(".modal-ux input").first.fill(KEY)
    page.locator(".modal-ux button.authorize").first.click()
    page.click(".modal-ux button.btn-done")

    page.click("#operations-models-get_model_getactive .opblock-summary")
    page.click("#operations-models-get_model_getactive button.try-out__btn")
    page.click("#operations-models-get_model_getactive button.execute")
    result = page.locator("#operations-models-get_model_getactive .live-responses-table .highlight-code")
    result.first.wait_for()
    text = result.first.inner_text()
    if os.environ.get("SCREENSHOT_DIR"):
        page.screenshot(path=os.path.join(os.environ["SCREENSHOT_DIR"], "docs.png"), full_page=True)
    assert '"tiny"' in text, text
    assert hosts == {urlsplit(docs_server.url).netloc}, hosts  # nothing was fetched from anywhere else
    assert refused == [], refused  # the page's policy lets Swagger UI do all of that
    page.close()


def test_docs_cannot_be_framed(chromium, docs_server):
    """/docs had no Content-Security-Policy and no X-Frame-Options: any page could frame it (and trick a click on
    "Execute" there). Now it has the page's protections."""
    page = chromium.new_page()
    # "load" waits for the frame too: a page refused to a frame loads Chromium's error page instead
    page.set_content(f'<iframe id="docs" src="{docs_server.url}/docs/" width="800" height="600"></iframe>',
                     wait_until="load")
    frame = page.frame_locator("#docs")
    assert frame.locator("#swagger-ui").count() == 0  # refused: the frame holds Chromium's error page
    page.close()


def test_docs_fit_a_phone(chromium, docs_server):
    """Without a viewport meta a phone laid /docs out 980 px wide and shrank it: at 390 px it now lays out at the
    phone's width, nothing makes the page scroll sideways, and an operation opens and runs within the screen."""
    context = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                   device_scale_factor=2)
    page = context.new_page()
    page.goto(f"{docs_server.url}/docs", wait_until="networkidle")
    page.wait_for_selector("#operations-models-get_model_getactive")
    assert page.evaluate("window.innerWidth") == 390  # 980 without the meta
    page.click("#operations-models-post_model_launch .opblock-summary")
    page.click("#operations-models-post_model_launch button.try-out__btn")
    page.wait_for_selector("#operations-models-post_model_launch button.execute")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    execute = page.locator("#operations-models-post_model_launch button.execute").bounding_box()
    assert execute["x"] >= 0 and execute["x"] + execute["width"] <= 390, execute
    path = page.locator("#operations-models-post_model_launch .opblock-summary-path").bounding_box()
    assert path["x"] + path["width"] <= 390, path
    font = page.evaluate("getComputedStyle(document.querySelector('.opblock-summary-path')).fontSize")
    assert float(font[:-2]) >= 14  # readable without zooming
    if os.environ.get("SCREENSHOT_DIR"):
        page.screenshot(path=os.path.join(os.environ["SCREENSHOT_DIR"], "docs-phone.png"))
    context.close()
