"""The page as a new user meets it, in real Chromium at 390x844: launch and land in the chat, an empty chat that
says what to do, an answer cut at its limit that says so and goes on, the end of an answer kept in view, chat
pickers with whole names and distinct labels, and deleting a model whose file is the user's."""
from __future__ import annotations

import pytest
import requests
from conftest import ServerProcess
from test_web_app import Phone, history, wait_until

LONG = "qwen2.5-0.5b-instruct-q4_k_m-mine"  # a name as `edge-server add` makes it from a file name


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_gguf):
    data = tmp_path_factory.mktemp("first-run") / "data"
    proc = ServerProcess(data, {"tiny": {"path": str(tiny_gguf), "n_ctx": 1024},
                                LONG: {"path": str(tiny_gguf), "n_ctx": 512}})
    yield proc
    proc.close()


def test_launch_lands_in_the_chat_which_says_what_to_do(chromium, server):
    phone = Phone(chromium, server.url, settings={"max_new_tokens": 5, "temperature": 0})
    page = phone.page
    assert page.is_visible("#screen-models")  # nothing runs: the page starts on the models
    page.locator(".model[data-name=tiny] .launch").click()
    page.wait_for_selector("#screen-chat:not([hidden])", timeout=60_000)  # launched: on to its chat
    assert page.input_value("#model-pick") == "tiny"
    hint = page.locator(".empty-chat")
    hint.wait_for()
    assert "Type a question below" in hint.inner_text()
    phone.shot("empty-chat.png")

    # The tiny model always runs to its limit: the answer says it stopped there, and Continue goes on.
    phone.ask("Hello")
    phone.wait_answer()
    assert not page.is_visible(".empty-chat")
    cut = phone.answer().locator(".cut")
    assert "Stopped at 5 tokens" in cut.inner_text()
    chat_id = page.input_value("#chat-pick")
    turns = history(server, "tiny", chat_id)["turns"]
    assert turns[-1]["finish_reason"] == "length" and turns[-1]["completion_tokens"] == 5
    cut.locator("button.continue").click()
    page.wait_for_function("() => document.querySelectorAll('.msg').length === 4")
    phone.wait_answer()
    assert [t["content"] for t in history(server, "tiny", chat_id)["turns"] if t["role"] == "user"] == [
        "Hello", "Continue"]
    assert page.locator(".msg.assistant").first.locator("button.continue").count() == 0  # only the newest goes on
    phone.shot("cut-answer.png")

    # Reloaded, the stored chat shows the same note.
    page.reload()
    page.wait_for_selector("body[data-ready]")
    page.wait_for_function("() => document.querySelectorAll('.msg').length === 4")
    assert "Stopped at 5 tokens" in page.locator(".msg.assistant").first.inner_text()
    phone.close()


def test_the_end_of_a_long_answer_stays_in_view(chromium, server):
    requests.post(f"{server.url}/model/launch", json={"model_name": "tiny"}, timeout=60).raise_for_status()
    phone = Phone(chromium, server.url, settings={"max_new_tokens": 900})
    page = phone.page
    page.select_option("#model-pick", "tiny")
    phone.ask("Write a lot")
    phone.wait_answer()
    page.wait_for_timeout(300)  # let a late layout change land
    fits = page.evaluate("""() => {
        const box = document.getElementById('messages').getBoundingClientRect();
        const copy = [...document.querySelectorAll('.msg.assistant')].at(-1).querySelector('.actions .copy')
            .getBoundingClientRect();
        return [copy.bottom, box.bottom, document.getElementById('messages').scrollHeight > box.height];
    }""")
    copy_bottom, box_bottom, overflowing = fits
    assert overflowing  # the answer is longer than the screen, so keeping its end in view is the point
    assert copy_bottom <= box_bottom + 1, fits  # its Copy button is on screen, not just below it
    assert not page.is_visible("#jump")
    phone.close()


def test_pickers_show_whole_names_and_distinct_chats(chromium, server):
    for chat_id in ("first", "second", "third"):
        requests.post(f"{server.url}/model/launch", json={"model_name": LONG}, timeout=60).raise_for_status()
        requests.post(f"{server.url}/generate/fromtext", timeout=60, json={
            "model_name": LONG, "chat_id": chat_id, "prompt": "Tell me about the weather in Paris today please",
            "max_new_tokens": 2}).raise_for_status()
    phone = Phone(chromium, server.url)
    page = phone.page
    page.select_option("#model-pick", LONG)
    page.wait_for_function("() => document.getElementById('chat-pick').options.length >= 3")
    labels = page.evaluate("() => [...document.getElementById('chat-pick').options].map(o => o.textContent)")
    asked = [label for label in labels if label.startswith("Tell me")]
    assert len(asked) == 3 and len(set(asked)) == 3, labels  # the same first words, three labels
    # Each select shows its whole text: what it holds measures less than the box (less its arrow).
    for pick in ("#model-pick", "#chat-pick"):
        room, need = page.evaluate("""(sel) => {
            const s = document.querySelector(sel), ctx = document.createElement('canvas').getContext('2d');
            ctx.font = getComputedStyle(s).font;
            return [s.clientWidth - 40, ctx.measureText(s.options[s.selectedIndex].textContent).width];
        }""", pick)
        assert need <= room, (pick, need, room)
    phone.close()


def test_deleting_your_own_file_says_it_stays(chromium, server, tiny_gguf):
    requests.post(f"{server.url}/model/launch", json={"model_name": "tiny"}, timeout=60).raise_for_status()
    phone = Phone(chromium, server.url)
    page = phone.page
    phone.tab("models")
    card = page.locator(".model[data-name=tiny]")
    assert card.locator(".delete").inner_text() == "Delete chats"
    card.locator(".delete").click()
    assert "stays on disk" in page.inner_text("#confirm-text") and "files" not in page.inner_text("#confirm-text")
    page.click("#confirm-yes")
    page.wait_for_selector("#notice:not([hidden])")
    assert page.inner_text("#notice") == "Deleted tiny's chats; its file stays on disk."
    assert tiny_gguf.is_file()
    wait_until(lambda: requests.get(f"{server.url}/model/getactive", timeout=5).json() == [] or
               "tiny" not in requests.get(f"{server.url}/model/getactive", timeout=5).json())
    phone.close()
