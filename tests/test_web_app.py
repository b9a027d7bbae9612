"""The phone web app at / in real Chromium, as a 390x844 touch phone, against the real server process.

Every page here records the hosts it requests; each test ends by checking that only the server was asked.
Screenshots of both screens go to $SCREENSHOT_DIR (default: artifacts/screenshots in the checkout).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from conftest import ServerProcess
from fake_hub import FakeHub

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}
SHOTS = Path(os.environ.get("SCREENSHOT_DIR", Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"))
KEY = "phone-key-1234"

# Records, in the page, the length of the newest answer at every change: streaming shows as many lengths.
WATCH_GROWTH = """
window.__lengths = [];
new MutationObserver(() => {
  const answers = document.querySelectorAll('.msg.assistant .body');
  if (answers.length) window.__lengths.push(answers[answers.length - 1].textContent.length);
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


class Phone:
    """One phone browser tab: its page, the hosts it asked, the errors it met."""

    def __init__(self, chromium, url: str, path: str = "/", settings: dict | None = None, key: str | None = None,
                 insecure: bool = False, record_uploads: bool = False):
        self.url = url
        self.context = chromium.new_context(**PHONE)
        self.hosts: set[str] = set()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        init = WATCH_GROWTH
        if settings is not None:
            init += f"localStorage.setItem('edge.settings', {json.dumps(json.dumps(settings))});"
        if key is not None:
            init += f"localStorage.setItem('edge.key', {json.dumps(key)});"
        if record_uploads:  # keep the blobs the page puts in a form, to look at what it uploads
            init += ("window.__uploads = []; const append = FormData.prototype.append;"
                     "FormData.prototype.append = function (name, value) {"
                     "  if (value instanceof Blob) window.__uploads.push(value); return append.apply(this, arguments); };")
        if insecure:  # as over plain HTTP on a LAN address: no clipboard API
            init += ("Object.defineProperty(window, 'isSecureContext', {value: false});"
                     "Object.defineProperty(navigator, 'clipboard', {value: undefined});")
        self.context.add_init_script(init)
        self.page = self.context.new_page()
        self.page.on("request", lambda r: self.hosts.add(urlsplit(r.url).netloc))
        self.pending = 0  # requests in flight
        self.page.on("request", lambda r: setattr(self, "pending", self.pending + 1))
        for done in ("requestfinished", "requestfailed"):
            self.page.on(done, lambda r: setattr(self, "pending", self.pending - 1))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(url + path)
        self.page.wait_for_selector("body[data-ready]")

    def settle(self) -> None:
        """Wait until the page has no request in flight (for a while): its loads are done."""
        quiet = 0
        while quiet < 3:
            self.page.wait_for_timeout(50)  # lets playwright deliver the request events
            quiet = quiet + 1 if self.pending == 0 else 0

    def tab(self, name: str) -> None:
        self.page.click(f".tab[data-screen={name}]")

    def ask(self, text: str) -> None:
        self.page.evaluate("window.__lengths = []")
        self.page.fill("#prompt", text)
        self.page.click("#send")

    def answer(self):
        return self.page.locator(".msg.assistant").last

    def wait_answer(self, timeout: float = 120) -> str:
        self.answer().and_(self.page.locator("[data-done]")).wait_for(timeout=timeout * 1000)
        return self.answer().locator(".body").inner_text()

    def wait_text(self, length: int, timeout: float = 60) -> None:
        self.page.wait_for_function(
            f"() => {{ const a = document.querySelectorAll('.msg.assistant .body');"
            f" return a.length && a[a.length - 1].textContent.length >= {length}; }}", timeout=timeout * 1000)

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / name))

    def close(self) -> None:
        assert self.hosts == {urlsplit(self.url).netloc}, self.hosts  # nothing was asked of any other host
        assert self.errors == [], self.errors
        self.context.close()


def history(server, model: str, chat_id: str) -> dict:
    return requests.get(f"{server.url}/chat/getchathistory", params={"model_name": model, "chat_id": chat_id},
                        headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()


def current_chat(phone: Phone) -> str:
    return phone.page.input_value("#chat-pick")


def new_chat(phone: Phone) -> str:
    phone.settle()  # a model just picked loads its chats first
    before = current_chat(phone)
    phone.page.click("#new-chat")
    phone.page.wait_for_function(f"() => document.getElementById('chat-pick').value !== {json.dumps(before)}"
                                 " && !document.querySelector('.msg')")
    phone.settle()
    return current_chat(phone)


def wait_until(check, timeout: float = 60):
    deadline = time.time() + timeout
    while not (result := check()):
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)
    return result


# --- the real Gemma, downloaded from the local fake hub ----------------------------------------------------

@pytest.fixture(scope="module")
def gemma_server(tmp_path_factory, gemma_gguf):
    hub = FakeHub().start()
    hub.add("google/gemma-3-270m-it-GGUF", "gemma.gguf", gemma_gguf.read_bytes())
    hub.delay = 0.0015  # about 6 s for the whole file: long enough to watch the bar move
    data = tmp_path_factory.mktemp("gemma") / "data"
    server = ServerProcess(data, {"gemma": {"repo_id": "google/gemma-3-270m-it-GGUF", "filename": "gemma.gguf",
                                            "n_ctx": 2048, "description": "Gemma 3 270M, 4-bit"}},
                           env={"HF_ENDPOINT": hub.url, "EDGE_N_THREADS": "2"})
    yield server
    server.close()
    hub.stop()


def test_launch_chat_stop_and_history_with_gemma(chromium, gemma_server):
    phone = Phone(chromium, gemma_server.url, settings={"temperature": 0, "max_new_tokens": 48})
    page = phone.page
    assert page.is_visible("#screen-models")  # nothing runs yet: the page starts where a model can be launched
    card = page.locator(".model[data-name=gemma]")
    card.locator(".launch").click()

    # The bar moves while the file downloads.
    seen = set()
    while card.get_attribute("data-state") in (None, "absent", "downloading"):
        if page.locator(".model[data-name=gemma] progress").is_visible():
            seen.add(page.locator(".model[data-name=gemma] progress").evaluate("p => p.value / p.max"))
        time.sleep(0.05)
    assert len([f for f in seen if 0 < f < 1]) >= 3, seen
    card.and_(page.locator("[data-state=running]")).wait_for(timeout=60_000, state="attached")
    page.wait_for_selector("#screen-chat:not([hidden])")  # launched: the page went on to its chat
    phone.tab("models")
    assert "Running" in card.locator(".state").inner_text()
    phone.shot("models.png")

    # Ask: the answer grows over several renders and names Paris.
    phone.tab("chat")
    page.wait_for_selector("#model-pick option[value=gemma]", state="attached")
    phone.ask("What is the capital of France?")
    answer = phone.wait_answer()
    assert "Paris" in answer, answer
    lengths = page.evaluate("window.__lengths")
    assert len(set(lengths)) >= 3 and max(lengths) > min(lengths), lengths
    assert "tokens/s" in page.inner_text("#stats") and "first token" in page.inner_text("#stats")
    first_chat = current_chat(phone)

    # Stop mid-answer, then ask again at once: the model was freed.
    page.evaluate("localStorage.setItem('edge.settings', JSON.stringify({temperature: 0, max_new_tokens: 400}))")
    phone.ask("Count from one to fifty in words.")  # a long answer from Gemma as the second turn
    phone.wait_text(40)
    assert page.inner_text("#send") == "Stop"
    page.click("#send")
    phone.wait_answer(timeout=10)
    assert "Stopped." in phone.answer().inner_text()
    stopped = wait_until(lambda: (h := history(gemma_server, "gemma", first_chat)) and not h["answering"] and h)
    kept = stopped["turns"][-1]["content"]
    assert 40 <= len(kept) < 1200, kept  # what was seen is stored; nowhere near 400 tokens
    page.evaluate("localStorage.setItem('edge.settings', JSON.stringify({temperature: 0, max_new_tokens: 48}))")
    phone.ask("What is the capital of Italy?")
    assert "Rome" in phone.wait_answer(timeout=60)
    phone.shot("chat.png")

    # Reload: the history comes from the server.
    page.reload()
    page.wait_for_selector("body[data-ready]")
    page.wait_for_function("() => document.querySelectorAll('.msg').length === 6")
    assert "Paris" in page.locator(".msg.assistant").first.inner_text()
    assert current_chat(phone) == first_chat

    # A new chat, a system prompt, and switching back and forth.
    second_chat = new_chat(phone)
    assert second_chat != first_chat
    page.click("#chat-menu")
    page.click("#system-prompt")
    page.fill("#system-text", "You answer in one short sentence.")
    page.click("#system-form button[type=submit]")
    wait_until(lambda: history(gemma_server, "gemma", second_chat)["system_prompt"]
               == "You answer in one short sentence.")
    phone.ask("What is the capital of Spain?")
    assert "Madrid" in phone.wait_answer()
    page.select_option("#chat-pick", first_chat)
    page.wait_for_function("() => document.querySelectorAll('.msg').length === 6")
    page.select_option("#chat-pick", second_chat)
    page.wait_for_function("() => document.querySelectorAll('.msg').length === 2")
    assert "Madrid" in phone.answer().inner_text()
    page.click("#chat-menu")
    page.click("#system-prompt")
    assert page.input_value("#system-text") == "You answer in one short sentence."
    page.click("#system-cancel")
    phone.close()


def test_closing_the_page_mid_answer_still_stores_the_whole_answer(chromium, gemma_server):
    requests.post(f"{gemma_server.url}/model/launch", json={"model_name": "gemma"}, timeout=120).raise_for_status()
    phone = Phone(chromium, gemma_server.url, settings={"temperature": 0, "max_new_tokens": 200})
    chat_id = new_chat(phone)
    phone.ask("Count from one to one hundred in words, separated by commas.")
    phone.wait_text(20)
    seen = phone.answer().locator(".body").inner_text()
    phone.close()  # the screen locks, the tab is gone: the connection drops mid-answer
    chat = wait_until(lambda: (h := history(gemma_server, "gemma", chat_id)) and h["turns"] and not h["answering"]
                      and h, timeout=120)
    stored = chat["turns"][-1]["content"]
    assert len(stored) > len(seen) + 100, (seen, stored)  # generated to the end, not stopped at the drop
    assert stored.strip().startswith(seen.strip()[:12]), (seen, stored)


# --- the tiny models: photos, hostile chats, busy, scrolling, the key --------------------------------------

@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory, tiny_gguf, tiny_mmproj, slow_gguf):
    data = tmp_path_factory.mktemp("tiny") / "data"
    server = ServerProcess(data, {"tiny": {"path": str(tiny_gguf), "n_ctx": 512},
                                  "tiny-vision": {"path": str(tiny_gguf), "mmproj_path": str(tiny_mmproj),
                                                  "n_ctx": 512},
                                  "slow": {"path": str(slow_gguf), "n_ctx": 1024}},
                           "--api-key", KEY, env={"EDGE_QUEUE_SIZE": "0"})
    for name in ("tiny", "tiny-vision", "slow"):  # slow answers one at a time: another client makes it busy
        requests.post(f"{server.url}/model/launch", json={"model_name": name, "parallel": 1 if name == "slow" else None},
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=60).raise_for_status()
    server.data_dir = data
    yield server
    server.close()


def photo(width: int, height: int, orientation: int | None = None) -> bytes:
    from PIL import Image

    image = Image.new("RGB", (width, height), (200, 40, 40))
    image.paste((40, 40, 200), (0, 0, width // 2, height))
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def test_photo_is_shrunk_upright_and_answered(chromium, tiny_server):
    from PIL import Image

    phone = Phone(chromium, tiny_server.url, key=KEY, settings={"max_new_tokens": 12}, record_uploads=True)
    page = phone.page
    page.select_option("#model-pick", "tiny")
    assert page.is_hidden("#photo-buttons")  # text models take no photos
    page.select_option("#model-pick", "tiny-vision")
    page.wait_for_selector("#photo-buttons", state="visible")
    sideways = photo(3000, 1500, orientation=6)  # a phone held upright: stored wide, shown tall
    page.set_input_files("#gallery", [{"name": "cat.jpg", "mimeType": "image/jpeg", "buffer": sideways}])
    page.wait_for_selector("#thumbs canvas")
    with page.expect_request("**/generate/fromimagetext") as sent:
        phone.ask("What is in this photo?")
    assert sent.value.headers["content-type"].startswith("multipart/form-data")
    jpeg = bytes(page.evaluate("async () => Array.from(new Uint8Array(await window.__uploads[0].arrayBuffer()))"))
    uploaded = Image.open(io.BytesIO(jpeg))
    assert uploaded.format == "JPEG" and uploaded.size == (512, 1024), uploaded.size  # at most 1024 px, upright
    top, bottom = uploaded.getpixel((256, 100)), uploaded.getpixel((256, 900))
    assert top[2] > 150 > top[0] and bottom[0] > 150 > bottom[2], (top, bottom)  # the left (blue) half is on top
    assert len(jpeg) < len(sideways) / 3
    assert phone.wait_answer(timeout=60)
    assert "1 photo" in page.locator(".msg.user").last.inner_text()
    assert page.locator("#thumbs canvas").count() == 0
    phone.close()


HOSTILE = [
    {"role": "user", "content": "<img src=x onerror=\"window.__pwned='user'\">"},
    {"role": "assistant", "content": "Here: <img src=x onerror=\"window.__pwned='img'\"> and "
                                     "<script>window.__pwned='script'</script> "
                                     "[tap me](javascript:window.__pwned='link') "
                                     "![pixel](http://203.0.113.9/pixel.png) <a href=\"http://203.0.113.9/\">x</a> "
                                     "[the docs](https://example.com/docs)"
                                     "\n\n```\ncode <b>bold</b>\n```"},
]


def test_a_hostile_stored_turn_renders_inert_and_code_copies_without_the_clipboard_api(chromium, tiny_server):
    folder = tiny_server.data_dir / "chats" / "tiny"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hostile.json").write_text(json.dumps({"system_prompt": None, "turns": HOSTILE}))
    phone = Phone(chromium, tiny_server.url, key=KEY, insecure=True)
    page = phone.page
    page.select_option("#model-pick", "tiny")
    page.select_option("#chat-pick", "hostile")
    page.wait_for_function("() => document.querySelectorAll('.msg').length === 2")
    messages = page.locator("#messages")
    assert messages.locator("img, script, iframe").count() == 0
    assert messages.locator("a[href^='javascript']").count() == 0
    assert "onerror" in page.locator(".msg.user").inner_text()  # shown as the text it is
    answer = page.locator(".msg.assistant .body").inner_text()
    assert "<img src=x" in answer and "tap me" in answer
    page.locator(".msg.assistant a", has_text="tap me").click()
    assert messages.locator("a[href]").evaluate_all("links => links.map(a => a.rel)") == ["noopener noreferrer nofollow"]
    time.sleep(0.3)
    assert page.evaluate("window.__pwned") is None and phone.dialogs == []
    assert page.evaluate("window.isSecureContext") is False
    page.locator(".msg pre .copy").click()
    assert page.locator(".msg pre .copy").inner_text() == "Copied"
    phone.close()  # also: no request went to 203.0.113.9


def test_busy_model_says_so_and_retries(chromium, tiny_server):
    done = threading.Event()

    def hold():  # another client keeps the model busy (asking again if a random answer ends early)
        while not done.is_set():
            with requests.post(f"{tiny_server.url}/generate/fromtext", stream=True, timeout=60,
                               headers={"Authorization": f"Bearer {KEY}"},
                               json={"model_name": "slow", "prompt": "Go on", "max_new_tokens": 900,
                                     "chat_id": "holder"}) as r:
                for _ in r.iter_content(chunk_size=None):
                    if done.is_set():
                        break

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.3)
    phone = Phone(chromium, tiny_server.url, key=KEY, settings={"max_new_tokens": 8})
    page = phone.page
    page.select_option("#model-pick", "slow")
    phone.ask("Are you there?")
    page.wait_for_selector(".msg.assistant .note:has-text('busy')")
    done.set()  # the other client leaves; the page's next try gets the model
    holder.join(30)
    assert phone.wait_answer(timeout=60)
    assert "busy" not in phone.answer().inner_text()
    phone.close()


def test_auto_scroll_follows_only_a_reader_at_the_bottom(chromium, tiny_server):
    folder = tiny_server.data_dir / "chats" / "slow"
    folder.mkdir(parents=True, exist_ok=True)
    turns = [{"role": role, "content": f"Line {i} of an earlier exchange. " * 6} for i in range(12)
             for role in ("user", "assistant")]
    (folder / "long.json").write_text(json.dumps({"system_prompt": None, "turns": turns, "context_start": 12}))
    phone = Phone(chromium, tiny_server.url, key=KEY, settings={"max_new_tokens": 400})
    page = phone.page
    page.select_option("#model-pick", "slow")
    page.select_option("#chat-pick", "long")
    page.wait_for_function("() => document.querySelectorAll('.msg').length === 24")
    phone.ask("Tell me everything.")
    phone.wait_text(20)
    at_bottom = ("() => { const m = document.getElementById('messages');"
                 " return m.scrollHeight - m.scrollTop - m.clientHeight < 48; }")
    assert page.evaluate(at_bottom)  # it followed the text so far
    page.locator("#messages").evaluate("m => m.scrollTop = 0")  # the reader goes back up
    page.wait_for_selector("#jump", state="visible")
    grown = page.evaluate("document.getElementById('messages').scrollHeight")
    page.wait_for_function(f"() => document.getElementById('messages').scrollHeight > {grown}")
    assert page.locator("#messages").evaluate("m => m.scrollTop") == 0  # not pulled away while reading
    page.click("#jump")
    assert page.evaluate(at_bottom)
    page.click("#send")  # Stop
    phone.wait_answer(timeout=10)
    phone.close()


class CuttableProxy:
    """A TCP relay to the server whose open connections can be cut at once, as when a phone's network drops."""

    def __init__(self, port: int):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.port, self.open = port, []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.port))
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass

    def cut(self):
        for sock in self.open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.open = []

    def close(self):
        self.listener.close()
        self.cut()


def test_a_dropped_connection_shows_the_finished_answer_when_back(chromium, tiny_server):
    proxy = CuttableProxy(tiny_server.port)
    phone = Phone(chromium, proxy.url, key=KEY, settings={"max_new_tokens": 300})
    page = phone.page
    page.select_option("#model-pick", "slow")
    chat_id = new_chat(phone)
    phone.ask("Keep talking.")
    phone.wait_text(10)
    proxy.cut()  # the network goes away mid-answer, and comes back
    page.wait_for_selector(".msg.assistant .note:has-text('finishing')")
    seen = phone.answer().get_attribute("data-text")
    chat = wait_until(lambda: (h := history(tiny_server, "slow", chat_id)) and h["turns"] and not h["answering"]
                      and h, timeout=60)
    stored = chat["turns"][-1]["content"]
    assert len(stored) > len(seen)
    # The page shows what the server finished, in place of the note.
    page.wait_for_function("(stored) => { const a = document.querySelectorAll('.msg.assistant');"
                           " return a.length === 1 && a[0].dataset.text === stored && !document.querySelector('.waiting'); }",
                           arg=stored, timeout=30_000)
    phone.close()
    proxy.close()


def test_chat_controls_settings_errors_and_touch_targets(chromium, tiny_server):
    phone = Phone(chromium, tiny_server.url, key=KEY)
    page = phone.page
    page.select_option("#model-pick", "tiny")
    chat_id = new_chat(phone)

    # Settings from the sheet reach the request.
    page.click("#open-settings")
    page.fill("#settings-form [name=temperature]", "0.3")
    page.fill("#settings-form [name=max_new_tokens]", "5")
    page.click("#settings-form button[type=submit]")
    assert json.loads(page.evaluate("localStorage.getItem('edge.settings')")) == {"temperature": 0.3,
                                                                                 "max_new_tokens": 5}
    with page.expect_request("**/generate/fromtext") as sent:
        phone.ask("Hello")
    body = json.loads(sent.value.post_data)
    assert body["temperature"] == 0.3 and body["max_new_tokens"] == 5 and body["chat_id"] == chat_id
    assert body["on_disconnect"] == "finish"
    phone.wait_answer()

    # Touch targets and input fonts, as a phone needs them.
    small = page.evaluate("""() => [...document.querySelectorAll('button, select, textarea, label.button')]
        .filter(e => e.offsetParent !== null)
        .map(e => [e.id || e.className || e.textContent, e.getBoundingClientRect()])
        .filter(([, r]) => r.height < 44 || r.width < 44).map(([name]) => name)""")
    assert small == [], small
    assert float(page.evaluate("getComputedStyle(document.getElementById('prompt')).fontSize")[:-2]) >= 16

    # An answer given on another device shows when the page is looked at again.
    requests.post(f"{tiny_server.url}/generate/fromtext", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                  json={"model_name": "tiny", "chat_id": chat_id, "prompt": "From the laptop",
                        "max_new_tokens": 4}).raise_for_status()
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    page.wait_for_function("() => document.querySelectorAll('.msg').length === 4")
    assert "From the laptop" in page.locator(".msg.user").last.inner_text()

    # An error shows its detail, and the question goes back into the box.
    huge = "x" * 300_000
    page.fill("#prompt", huge)
    page.click("#send")
    page.wait_for_selector(".msg.assistant .error")
    assert "limit" in page.locator(".msg.assistant .error").inner_text()
    assert page.input_value("#prompt") == huge
    page.fill("#prompt", "")

    # Clear, then delete, after a confirmation each.
    page.click("#chat-menu")
    page.click("#clear-chat")
    page.click("#confirm-yes")
    page.wait_for_function("() => document.querySelectorAll('.msg').length === 0")
    assert history(tiny_server, "tiny", chat_id)["turns"] == []
    page.click("#chat-menu")
    page.click("#delete-chat")
    page.click("#confirm-yes")
    page.wait_for_function(f"() => document.getElementById('chat-pick').value !== {json.dumps(chat_id)}")
    listed = requests.get(f"{tiny_server.url}/chat/list", params={"model_name": "tiny"},
                          headers={"Authorization": f"Bearer {KEY}"}).json()["chats"]
    assert chat_id not in [c["chat_id"] for c in listed]
    phone.close()


def test_key_prompt_and_key_in_the_fragment(chromium, tiny_server):
    phone = Phone(chromium, tiny_server.url)
    page = phone.page
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", KEY)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#model-pick option[value=tiny]", state="attached")
    phone.close()

    phone = Phone(chromium, tiny_server.url, path=f"/#key={KEY}")
    page = phone.page
    page.wait_for_selector("#model-pick option[value=tiny]", state="attached")
    assert "#" not in page.url and KEY not in page.url  # taken out of the address bar
    assert page.evaluate("localStorage.getItem('edge.key')") == KEY
    assert not page.is_visible("#key-dialog")
    phone.close()
