"""The OpenAI (/v1) and Ollama (/api) dialects, through the real `openai` and `ollama` client packages,
unchanged, against a real server process with the real Gemma 3 270M and the tiny vision model."""
from __future__ import annotations

import base64
import io
import re
import threading
import time

import ollama
import openai
import pytest
import requests
from conftest import LiveServer, ServerProcess

KEY = "dialect-key"
ORIGIN = "http://app.example"
PULLED = "gemma-3-270m-it"  # a catalog model, on the fake hub as the tiny model's bytes


@pytest.fixture(scope="module")
def hub(tiny_gguf):
    from fake_hub import FakeHub

    from edge_server.catalog import Catalog

    server = FakeHub().start()
    spec = Catalog.load().get(PULLED)
    server.add(spec.repo_id, spec.filename, tiny_gguf.read_bytes())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, gemma_gguf, tiny_gguf, tiny_mmproj, hub):
    models = {"gemma": {"path": str(gemma_gguf), "n_ctx": 2048},
              "tiny-vision": {"path": str(tiny_gguf), "mmproj_path": str(tiny_mmproj), "n_ctx": 512}}
    proc = ServerProcess(tmp_path_factory.mktemp("dialects") / "data", models, "--api-key", KEY, "--cors-origins",
                         ORIGIN, env={"HF_ENDPOINT": hub.url})
    yield proc
    proc.close()


@pytest.fixture
def oa(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


@pytest.fixture
def ol(server):
    return ollama.Client(host=server.url, headers={"Authorization": f"Bearer {KEY}"})


FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def png(colour: str) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(out, "PNG")
    return out.getvalue()


def test_a_request_loads_an_installed_model_once(server, ol):
    auth = {"Authorization": f"Bearer {KEY}"}
    assert requests.get(f"{server.url}/model/getactive", headers=auth).json() == []
    reply = ol.chat(model="gemma:latest", messages=FRANCE, options={"temperature": 0, "num_predict": 24})
    assert "Paris" in reply.message.content and reply.done and reply.load_duration > 0
    assert requests.get(f"{server.url}/model/getactive", headers=auth).json() == ["gemma"]
    again = ol.chat(model="gemma", messages=FRANCE, options={"temperature": 0, "num_predict": 24})
    assert again.load_duration == 0 and again.message.content == reply.message.content  # no second copy


def test_openai_models_and_chat(oa):
    listed = {m.id: m for m in oa.models.list()}
    assert {"gemma", "tiny-vision"} <= set(listed) and PULLED not in listed  # what is on the device
    assert listed["tiny-vision"].model_extra["architecture"]["input_modalities"] == ["text", "image"]
    assert oa.models.retrieve("gemma").owned_by == "edge-server"

    reply = oa.chat.completions.create(model="gemma", messages=FRANCE, temperature=0, max_tokens=24)
    assert "Paris" in reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 5 and reply.usage.completion_tokens > 2
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

    cut = oa.chat.completions.create(model="gemma", messages=FRANCE, temperature=0, max_completion_tokens=3)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 3
    stopped = oa.chat.completions.create(model="gemma", messages=FRANCE, temperature=0, max_tokens=24,
                                         stop=["Paris"])
    assert "Paris" not in stopped.choices[0].message.content and stopped.choices[0].finish_reason == "stop"


def test_openai_streams_chunks_and_usage_only_when_asked(oa):
    chunks = list(oa.chat.completions.create(model="gemma", messages=FRANCE, temperature=0, max_tokens=24,
                                             stream=True))
    assert chunks[0].choices[0].delta.role == "assistant" and len(chunks) > 4
    assert all(c.choices and c.object == "chat.completion.chunk" and c.usage is None for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert "Paris" in "".join(c.choices[0].delta.content or "" for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])

    with_usage = list(oa.chat.completions.create(model="gemma", messages=FRANCE, temperature=0, max_tokens=24,
                                                 stream=True, stream_options={"include_usage": True}))
    assert with_usage[-1].choices == [] and with_usage[-1].usage.completion_tokens > 2
    assert with_usage[-2].choices[0].finish_reason == "stop"

    text = oa.completions.create(model="gemma", prompt="The capital of France is", temperature=0, max_tokens=8)
    assert text.choices[0].text.strip() and text.object == "text_completion"


def test_openai_vision_errors_and_key(server, oa):
    uri = "data:image/png;base64," + base64.b64encode(png("red")).decode()
    message = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                            {"type": "image_url", "image_url": {"url": uri}}]}]
    seen = oa.chat.completions.create(model="tiny-vision", messages=message, max_tokens=8, temperature=0)
    assert seen.choices[0].message.content is not None and seen.usage.prompt_tokens > 10  # the image's tokens
    with pytest.raises(openai.BadRequestError) as refused:
        oa.chat.completions.create(model="gemma", messages=message, max_tokens=8)
    assert refused.value.body["code"] == "model_not_multimodal"
    with pytest.raises(openai.NotFoundError) as unknown:
        oa.chat.completions.create(model="no-such-model", messages=FRANCE)
    assert unknown.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError) as absent:  # in the catalog, not on the device: never downloaded
        oa.chat.completions.create(model="qwen2.5-0.5b-4", messages=FRANCE)
    assert absent.value.body["code"] == "model_not_installed"
    five = [{"role": "user", "content": [{"type": "image_url", "image_url": uri}] * 5}, {"content": "no role"}]
    with pytest.raises(openai.UnprocessableEntityError) as malformed:  # the message, before the images are counted
        oa.chat.completions.create(model="tiny-vision", messages=five, max_tokens=8)
    assert "messages[1]" in malformed.value.body["message"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()

    preflight = requests.options(f"{server.url}/v1/chat/completions", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-stainless-os,x-stainless-lang,"
                                          "x-stainless-package-version,x-stainless-retry-count,x-stainless-timeout"})
    assert preflight.status_code == 200 and preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "x-stainless-retry-count" in preflight.headers["Access-Control-Allow-Headers"].lower()


def test_ollama_lists_shows_chats_and_generates(server, ol):
    ol.chat(model="gemma", messages=FRANCE, options={"num_predict": 1})  # running, for ps
    tags = {m.model: m for m in ol.list().models}
    assert tags["gemma:latest"].details.format == "gguf" and tags["gemma:latest"].details.family == "gemma3"
    assert tags["gemma:latest"].details.parameter_size == "268.10M"
    assert tags["gemma:latest"].details.quantization_level == "Q4_K_M"
    raw = requests.get(f"{server.url}/api/tags", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", m["modified_at"]) for m in raw["models"])
    assert "gemma:latest" in {m.model for m in ol.ps().models}
    assert "vision" in ol.show("tiny-vision").capabilities and ol.show("gemma").modelinfo["gemma3.context_length"]
    assert requests.get(f"{server.url}/api/version", headers={"Authorization": f"Bearer {KEY}"}).json()["version"]
    assert requests.head(f"{server.url}/").status_code == 200  # apps check that an Ollama is there

    parts = list(ol.chat(model="gemma", messages=FRANCE, stream=True, options={"temperature": 0, "num_predict": 24}))
    assert len(parts) > 4 and not any(p.done for p in parts[:-1]) and parts[-1].done
    assert "Paris" in "".join(p.message.content for p in parts)
    last = parts[-1]
    assert last.done_reason == "stop" and last.eval_count > 2 and last.prompt_eval_count > 5
    assert last.total_duration >= last.eval_duration > 0 and last.prompt_eval_duration > 0

    said = ol.generate(model="gemma", prompt="What is the capital of France?", system="Answer in one word.",
                       options={"temperature": 0, "num_predict": 16})
    assert said.response.strip() and said.done
    limited = ol.generate(model="gemma", prompt="Write a long story about a lighthouse keeper.",
                          options={"num_predict": 5, "temperature": 0})
    assert limited.done_reason == "length" and limited.eval_count == 5
    looked = ol.chat(model="tiny-vision", messages=[{"role": "user", "content": "What is it?",
                                                     "images": [png("blue")]}], options={"num_predict": 4})
    assert looked.done and looked.prompt_eval_count > 10


def test_ollama_errors_and_key(server, ol):
    with pytest.raises(ollama.ResponseError) as unknown:
        ol.chat(model="no-such-model", messages=FRANCE)
    assert unknown.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as absent:
        ol.generate(model="qwen2.5-0.5b-4", prompt="hi")
    assert absent.value.status_code == 404 and "not installed" in absent.value.error
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=server.url).list()
    assert refused.value.status_code == 401
    # The 401 says how each known client sends the key (llm-ollama shows an empty list, so this is where to look).
    assert "headers={'Authorization': 'Bearer <key>'}" in refused.value.error
    assert "OLLAMA_HOST=http://edge:<key>@HOST:PORT" in refused.value.error
    # llm-ollama reads a key in OLLAMA_HOST's URL as basic auth: the key as the password is accepted.
    import httpx

    assert ollama.Client(host=server.url, auth=httpx.BasicAuth("edge", KEY)).list().models is not None
    with pytest.raises(ollama.ResponseError) as wrong:
        ollama.Client(host=server.url, auth=httpx.BasicAuth("edge", KEY + "x")).list()
    assert wrong.value.status_code == 401
    with pytest.raises(openai.AuthenticationError) as no_key:
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()
    assert "api_key" in str(no_key.value)


def test_ollama_pull_shows_progress_then_delete(server, ol, hub):
    auth = {"Authorization": f"Bearer {KEY}"}
    hub.delay = 0.5  # seconds a piece: the download outlasts the client that starts it
    with requests.post(f"{server.url}/api/pull", json={"model": PULLED}, headers=auth, stream=True) as leaving:
        lines = leaving.iter_lines()
        assert next(lines) == b'{"status": "pulling manifest"}'
        assert b'"completed"' in next(lines)  # downloading now
    began = time.perf_counter()  # the client left: its download is cancelled, not finished
    while (status := requests.get(f"{server.url}/model/status", params={"model_name": PULLED},
                                  headers=auth).json())["state"] == "downloading":
        assert time.perf_counter() - began < 3
        time.sleep(0.05)
    assert status["state"] == "absent"

    hub.delay = 0.1  # a second or so for the tiny file: several progress lines
    try:
        progress = list(ol.pull(PULLED, stream=True))
    finally:
        hub.delay = 0
    statuses = [p.status for p in progress]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    sizes = [(p.completed, p.total) for p in progress if p.total]
    assert sizes and sizes[-1][0] == sizes[-1][1] and len({done for done, _ in sizes}) >= 2
    assert any(req[1].endswith(".gguf") and req[0] == "GET" for req in hub.requests)
    assert f"{PULLED}:latest" in {m.model for m in ol.list().models}
    reply = ol.generate(model=PULLED, prompt="hi", options={"num_predict": 2})  # loads what was pulled
    assert reply.done
    assert ol.delete(PULLED).status == "success"
    assert f"{PULLED}:latest" not in {m.model for m in ol.list().models}


def test_the_dialects_and_the_seed_endpoints_queue_in_turn(server, oa, ol):
    """Three clients, one model: each waits its turn, in the order they asked."""
    started, first_byte = {}, {}
    auth = {"Authorization": f"Bearer {KEY}"}
    story = "Write a long story about a lighthouse keeper."  # greedy: a second of text, no early end

    def seed():
        started["seed"] = time.perf_counter()
        with requests.post(f"{server.url}/generate/fromtext", headers=auth, stream=True, timeout=60,
                           json={"model_name": "gemma", "prompt": story, "max_new_tokens": 48, "temperature": 0,
                                 "chat_id": "queue"}) as response:
            for _ in response.iter_content(chunk_size=None):
                first_byte.setdefault("seed", time.perf_counter())

    def openai_client():
        started["openai"] = time.perf_counter()
        for _ in oa.chat.completions.create(model="gemma", messages=[{"role": "user", "content": story}],
                                            max_tokens=48, temperature=0, stream=True):
            first_byte.setdefault("openai", time.perf_counter())

    def ollama_client():
        started["ollama"] = time.perf_counter()
        for _ in ol.chat(model="gemma", messages=[{"role": "user", "content": story}], stream=True,
                         options={"num_predict": 48, "temperature": 0}):
            first_byte.setdefault("ollama", time.perf_counter())

    threads = []
    for work in (seed, openai_client, ollama_client):
        threads.append(threading.Thread(target=work))
        threads[-1].start()
        time.sleep(0.25)
    for thread in threads:
        thread.join(timeout=120)
    assert set(first_byte) == {"seed", "openai", "ollama"}
    assert first_byte["seed"] < first_byte["openai"] < first_byte["ollama"]


@pytest.fixture
def busy_server(make_app, gemma_gguf):
    """Gemma answering one at a time with no queue: a second request while one streams gets 503 busy at once."""
    app = make_app({"gemma": {"path": str(gemma_gguf), "n_ctx": 1024}}, queue_size=0, parallel=1)
    assert app.test_client().post("/model/launch", json={"model_name": "gemma"}).status_code == 200
    live = LiveServer(app)
    yield app, live
    live.close()


def test_openai_retries_a_busy_model_and_a_closed_stream_frees_it(busy_server):
    app, live = busy_server
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="none", max_retries=0)
    story = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
    stream = client.chat.completions.create(model="gemma", messages=story, max_tokens=400, temperature=0,
                                            stream=True)
    next(iter(stream))
    with pytest.raises(openai.InternalServerError) as busy:  # 503, surfaced as the client's own error
        client.chat.completions.create(model="gemma", messages=FRANCE, max_tokens=8)
    assert busy.value.status_code == 503 and busy.value.response.headers["Retry-After"]
    stream.close()  # leaving early: the model is free within a token, long before 400 tokens (8 s here)
    began = time.perf_counter()
    while (free := requests.post(f"{live.url}/v1/chat/completions", timeout=30, json={
            "model": "gemma", "messages": FRANCE, "max_tokens": 8, "temperature": 0})).status_code == 503:
        assert time.perf_counter() - began < 3
        time.sleep(0.05)
    assert free.status_code == 200 and free.json()["choices"][0]["message"]["content"]

    holder = requests.post(f"{live.url}/v1/chat/completions", stream=True, timeout=60, json={
        "model": "gemma", "messages": story, "max_tokens": 150, "temperature": 0, "stream": True})
    next(holder.iter_content(chunk_size=None))
    threading.Timer(1.0, holder.close).start()  # the other client leaves a second later
    retrying = openai.OpenAI(base_url=f"{live.url}/v1", api_key="none", max_retries=4)
    answer = retrying.chat.completions.create(model="gemma", messages=FRANCE, max_tokens=8, temperature=0)
    assert answer.choices[0].message.content  # after 503s, honouring Retry-After, it got its turn
    refusals = app.extensions["edge_server"].metrics.refusals.labels("gemma")._value.get()
    assert refusals >= 2
