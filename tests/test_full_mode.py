"""Full mode end to end: the heavy plugins in a real server process, on tiny random-weight models that
the tests build in code and serve from the fake hub as real repositories (config, safetensors,
tokenizer files, model_index.json), so the download, from_pretrained and generation all run for real."""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import threading
import time
import wave

import pytest
import requests

from conftest import ServerProcess

if os.environ.get("CI"):
    import diffusers  # noqa: F401  (tests/setup.sh installs full mode: in CI these tests must run, not skip)
    import torch  # noqa: F401
else:
    pytest.importorskip("torch", reason="full mode is not installed (pip install -r extra.requirements.txt)")
    pytest.importorskip("diffusers", reason="full mode is not installed (pip install -r extra.requirements.txt)")

REPOS = {"tiny-llama": "edge-test/tiny-llama", "tiny-llava": "edge-test/tiny-llava", "sd-turbo": "edge-test/tiny-sd",
         "tts-eng": "edge-test/tiny-vits", "stable-cascade": "edge-test/tiny-cascade"}
PRIOR_REPO = "edge-test/tiny-cascade-prior"
MODELS = {
    "tiny-llama": {"repo_id": REPOS["tiny-llama"], "backend": "transformers", "kind": "text"},
    "tiny-llava": {"repo_id": REPOS["tiny-llava"], "backend": "transformers", "kind": "vision"},
    # The catalog's own entries, pointed at the tiny repositories: their allow lists and variants are the real
    # ones (sd-turbo takes the fp16 weights, stable-cascade the bf16 ones; the repositories hold both).
    "sd-turbo": {"repo_id": REPOS["sd-turbo"]},
    "tts-eng": {"repo_id": REPOS["tts-eng"]},
    "stable-cascade": {"repo_id": REPOS["stable-cascade"], "prior_repo_id": PRIOR_REPO},
}


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    """Every tiny repository, as folders."""
    import diffusers_factory as df
    import transformers_factory as tf

    root = tmp_path_factory.mktemp("repos")
    folders = {"tiny-llama": tf.build_llama(root / "llama"), "tiny-llava": tf.build_vision(root / "llava"),
               "tts-eng": tf.build_vits(root / "vits"), "sd-turbo": df.build_sd(root / "sd", variant="fp16"),
               "stable-cascade": df.build_cascade_decoder(root / "cascade", variant="bf16"),
               "prior": df.build_cascade_prior(root / "cascade-prior", with_image_encoder=True, variant="bf16")}
    # What the real Stable Cascade repository also holds, and a download must skip: the original
    # checkpoints at the top and the lite variants.
    (folders["stable-cascade"] / "stage_c.safetensors").write_bytes(b"\0" * 4096)
    (folders["stable-cascade"] / "decoder_lite").mkdir()
    (folders["stable-cascade"] / "decoder_lite" / "config.json").write_text("{}")
    return folders


@pytest.fixture(scope="module")
def hub(repos):
    from fake_hub import FakeHub

    server = FakeHub().start()
    for name, repo_id in REPOS.items():
        server.add_folder(repo_id, repos[name])
    server.add_folder(PRIOR_REPO, repos["prior"])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, hub):
    proc = ServerProcess(tmp_path_factory.mktemp("full") / "data", MODELS, "--full", "--n-threads", "2",
                         env={"HF_ENDPOINT": hub.url})
    yield proc
    proc.close()


def launch(server, name: str, **body):
    response = requests.post(f"{server.url}/model/launch", json={"model_name": name, **body}, timeout=300)
    assert response.status_code == 200, (response.text, server.output()[-3000:])


def ask(server, name: str, prompt: str, chat_id: str = "default", **options) -> tuple[str, int]:
    """The streamed answer and how many chunks it came in."""
    body = {"model_name": name, "prompt": prompt, "chat_id": chat_id, "temperature": 0, **options}
    with requests.post(f"{server.url}/generate/fromtext", json=body, stream=True, timeout=120) as response:
        assert response.status_code == 200, response.text
        chunks = [c for c in response.iter_content(chunk_size=None, decode_unicode=True) if c]
    return "".join(chunks), len(chunks)


def test_text_model_downloads_streams_and_keeps_the_chat(server, hub):
    launch(server, "tiny-llama")
    assert any(path.startswith(f"/api/models/{REPOS['tiny-llama']}") for _, path, _ in hub.requests)
    status = requests.get(f"{server.url}/model/status", params={"model_name": "tiny-llama"}).json()
    assert status["state"] == "running" and status["bytes_done"] > 100_000

    first, chunks = ask(server, "tiny-llama", "Hello there", chat_id="c1", max_new_tokens=12)
    assert chunks >= 3 and first.strip()  # streamed token by token, not in one block
    again, _ = ask(server, "tiny-llama", "Hello there", chat_id="other", max_new_tokens=12)
    assert again == first  # greedy: the same prompt gives the same answer
    ask(server, "tiny-llama", "And then?", chat_id="c1", max_new_tokens=8)
    history = requests.get(f"{server.url}/chat/getchathistory",
                           params={"model_name": "tiny-llama", "chat_id": "c1"}).json()
    assert [t["role"] for t in history["turns"]] == ["user", "assistant"] * 2
    assert history["turns"][1]["content"] == first

    # Sampling with a seed repeats; a stop string cuts the answer before it.
    sampled = [ask(server, "tiny-llama", "Hi", chat_id=f"s{i}", temperature=0.9, seed=7, max_new_tokens=16)[0]
               for i in range(2)]
    assert sampled[0] == sampled[1]
    cut, _ = ask(server, "tiny-llama", "Hello there", chat_id="cut", max_new_tokens=12, stop=[first[3:6]])
    assert first.startswith(cut) and len(cut) < len(first)


def test_a_client_that_leaves_stops_the_answer(server):
    launch(server, "tiny-llama")
    body = {"model_name": "tiny-llama", "prompt": "Tell me everything", "chat_id": "gone", "max_new_tokens": 1500,
            "temperature": 0}
    with requests.post(f"{server.url}/generate/fromtext", json=body, stream=True, timeout=60) as response:
        pieces = response.iter_content(chunk_size=None)
        next(pieces), next(pieces)
    deadline = time.time() + 30
    while True:
        history = requests.get(f"{server.url}/chat/getchathistory",
                               params={"model_name": "tiny-llama", "chat_id": "gone"}).json()
        if not history["answering"]:
            break
        assert time.time() < deadline
        time.sleep(0.1)
    # The tiny model never ends an answer by itself: a stored answer this short was stopped.
    stored = history["turns"][1]["content"] if history["turns"] else ""
    full, _ = ask(server, "tiny-llama", "Tell me everything", chat_id="whole", max_new_tokens=300)
    assert len(stored) < len(full)


def test_vision_model_answers_about_a_picture(server):
    from PIL import Image

    launch(server, "tiny-llava")

    def about(colour: str) -> str:
        picture = io.BytesIO()
        Image.new("RGB", (80, 60), colour).save(picture, "PNG")
        uri = "data:image/png;base64," + base64.b64encode(picture.getvalue()).decode()
        body = {"model_name": "tiny-llava", "prompt": "What colour is it?", "image_links": [uri],
                "max_new_tokens": 8, "temperature": 0, "chat_id": colour}
        response = requests.post(f"{server.url}/generate/fromimagetext", json=body, timeout=120)
        assert response.status_code == 200 and response.text.strip(), response.text
        return response.text

    assert about("red") != about("blue")  # the answer depends on the picture, not only on the words
    history = requests.get(f"{server.url}/chat/getchathistory", params={"model_name": "tiny-llava",
                                                                          "chat_id": "red"}).json()
    assert history["turns"][0]["images"] == 1

    launch(server, "tiny-llama")
    body = {"model_name": "tiny-llama", "prompt": "What is it?", "image_links": ["data:image/png;base64,AAAA"]}
    refused = requests.post(f"{server.url}/generate/fromimagetext", json=body)
    assert refused.status_code == 400 and refused.json()["code"] == "model_not_multimodal"


def test_text_to_image_answers_a_png_of_the_size_asked(server, hub):
    from PIL import Image

    launch(server, "sd-turbo")
    fetched = [path for method, path, _ in hub.requests if method == "GET" and "/tiny-sd/resolve/" in path]
    assert any(path.endswith("unet/diffusion_pytorch_model.fp16.safetensors") for path in fetched)
    assert not any(path.endswith("unet/diffusion_pytorch_model.safetensors") for path in fetched)  # fp16 only
    body = {"model_name": "sd-turbo", "prompt": "a red cat", "image_size": 64, "inference_steps": 2, "seed": 3,
            "negative_prompt": "blurry", "guidance_scale": 5.0}
    first = requests.post(f"{server.url}/generate/imagefromtext", json=body, timeout=120)
    assert first.status_code == 200, first.text
    assert first.headers["Content-Type"] == "image/png" and first.headers["X-Image-Size"] == "64x64"
    image = Image.open(io.BytesIO(first.content))
    assert image.format == "PNG" and image.size == (64, 64)
    assert requests.post(f"{server.url}/generate/imagefromtext", json=body).content == first.content  # seeded

    rounded = requests.post(f"{server.url}/generate/imagefromtext", json={**body, "image_size": 100},
                            headers={"Accept": "image/jpeg"}, timeout=120)
    assert rounded.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(rounded.content)).size == (96, 96)  # Stable Diffusion draws in steps of 8
    assert "100x100 was asked" in rounded.headers["X-Image-Size-Note"]

    for bad in ({"inference_steps": 0}, {"image_size": 10_000}, {"prompt": 5}):
        refused = requests.post(f"{server.url}/generate/imagefromtext", json={**body, **bad})
        assert refused.status_code == 422 and refused.json()["code"] == "invalid_request"
    cannot = requests.post(f"{server.url}/generate/fromtext", json={"model_name": "sd-turbo", "prompt": "hi"})
    assert cannot.status_code == 400 and cannot.json()["code"] == "model_not_text"
    launch(server, "tiny-llama")
    cannot = requests.post(f"{server.url}/generate/imagefromtext", json={**body, "model_name": "tiny-llama"})
    assert cannot.status_code == 400 and cannot.json()["code"] == "model_not_image"


def test_stable_cascade_through_the_original_heavy_launch(server, hub):
    from PIL import Image

    response = requests.post(f"{server.url}/heavy/model/launch", params={"model_name": "stable-cascade"}, timeout=300)
    assert response.status_code == 200, (response.text, server.output()[-3000:])
    fetched = {(repo, file.split("/", 1)[1]) for method, path, _ in hub.requests if method == "GET"
               and "/resolve/" in path for repo, file in [path.split("/resolve/", 1)]}
    decoder, prior = f"/{REPOS['stable-cascade']}", f"/{PRIOR_REPO}"
    assert (decoder, "decoder/config.json") in fetched and (prior, "prior/config.json") in fetched
    assert not {(decoder, "stage_c.safetensors"), (decoder, "decoder_lite/config.json")} & fetched  # unused files
    body = {"model_name": "stable-cascade", "prompt": "a lighthouse", "image_size": 128, "inference_steps": 2,
            "seed": 1}
    drawn = requests.post(f"{server.url}/generate/imagefromtext", json=body, timeout=300)
    assert drawn.status_code == 200, drawn.text
    assert Image.open(io.BytesIO(drawn.content)).size == (128, 128)


def test_text_to_speech_answers_a_wav(server):
    response = requests.post(f"{server.url}/heavy/model/launch", json={"model_name": "tts-eng"}, timeout=300)
    assert response.status_code == 200, response.text

    def speak(text: str) -> wave.Wave_read:
        answer = requests.post(f"{server.url}/generate/texttospeech", json={"model_name": "tts-eng", "prompt": text},
                               timeout=120)
        assert answer.status_code == 200 and answer.headers["Content-Type"] == "audio/wav", answer.text
        return wave.open(io.BytesIO(answer.content))

    one = speak("Hello world.")
    assert one.getnchannels() == 1 and one.getsampwidth() == 2 and one.getframerate() == 16000
    assert one.getnframes() > 0
    three = speak("Hello world. " * 3)  # three sentences, spoken one at a time with pauses between
    assert three.getnframes() > 2 * one.getnframes()
    empty = requests.post(f"{server.url}/generate/texttospeech", json={"model_name": "tts-eng", "prompt": "  "})
    assert empty.status_code == 422


def test_kill_frees_the_model_and_it_stays_installed(server):
    launch(server, "sd-turbo")
    assert requests.delete(f"{server.url}/model/kill", json={"model_name": "sd-turbo"}).status_code == 200
    assert "sd-turbo" not in requests.get(f"{server.url}/model/getactive").json()
    assert requests.get(f"{server.url}/model/status", params={"model_name": "sd-turbo"}).json()["state"] == "installed"
    gone = requests.post(f"{server.url}/generate/imagefromtext", json={"model_name": "sd-turbo", "prompt": "x"})
    assert gone.status_code == 404 and gone.json()["code"] == "model_not_running"


def test_download_reports_progress_and_a_kill_keeps_what_is_done(make_app, repos, fake_hub):
    """In-process: the same store code as a lite model, for a whole repository."""
    fake_hub.add_folder("edge-test/slow-llama", repos["tiny-llama"])
    app = make_app({"slow-llama": {"repo_id": "edge-test/slow-llama", "backend": "transformers"}}, full=True,
                   hf_endpoint=fake_hub.url)
    client = app.test_client()
    fake_hub.delay = 0.3  # a second for the weights: long enough to watch, and to cancel
    seen = []
    launcher = threading.Thread(target=lambda: seen.append(client.post("/model/launch",
                                                                       json={"model_name": "slow-llama"})))
    launcher.start()
    progress = []
    while not progress or progress[-1] < 64 * 1024:
        status = app.test_client().get("/model/status", query_string={"model_name": "slow-llama"}).json
        if status["state"] == "downloading" and status["bytes_done"]:
            progress.append(status["bytes_done"])
        assert launcher.is_alive()
        time.sleep(0.02)
    assert len(set(progress)) >= 2 and progress == sorted(progress)
    assert status["bytes_total"] == sum(p.stat().st_size for p in repos["tiny-llama"].iterdir())
    assert client.delete("/model/kill", json={"model_name": "slow-llama"}).status_code == 200
    launcher.join()
    assert seen[0].status_code == 409 and seen[0].json["code"] == "download_cancelled"

    folder = app.extensions["edge_server"].settings.models_dir / "slow-llama"
    kept = {p.name for p in folder.iterdir() if not p.name.endswith((".part", ".etag"))}
    assert kept and "tokenizer_config.json" not in kept  # some files were done, the last one was not

    fake_hub.delay, before = 0, len(fake_hub.requests)
    assert client.post("/model/launch", json={"model_name": "slow-llama"}).status_code == 200
    fetched = {path.rsplit("/", 1)[1] for method, path, _ in fake_hub.requests[before:] if method == "GET"}
    assert "tokenizer_config.json" in fetched and not fetched & kept  # only what was missing
    answer = client.post("/generate/fromtext", json={"model_name": "slow-llama", "prompt": "Hi", "max_new_tokens": 4})
    assert answer.status_code == 200 and answer.text


def test_offline_and_unknown_repositories_answer_hub_codes(make_app, fake_hub):
    models = {"nowhere": {"repo_id": "edge-test/missing", "backend": "transformers"}}
    app = make_app(models, full=True, hf_endpoint=fake_hub.url)
    missing = app.test_client().post("/model/launch", json={"model_name": "nowhere"})
    assert missing.status_code == 502 and missing.json["code"] == "hub_not_found"
    offline = make_app(models, full=True, hf_offline=True).test_client().post("/model/launch",
                                                                              json={"model_name": "nowhere"})
    assert offline.status_code == 409 and offline.json["code"] == "hub_offline"


def test_registering_the_plugin_imports_no_torch():
    code = ("import sys; from edge_server.backends import build_registry; registry = build_registry(True); "
            "print(registry.names(), 'torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['diffusers', 'llama-cpp', 'transformers'] False False"


def test_full_mode_without_the_plugin_says_what_to_install(tmp_path, monkeypatch, capsys):
    from edge_server import cli
    from edge_server.backends import registry

    monkeypatch.setattr(registry, "entry_points", lambda group: [])
    assert cli.main(["--full", "--data-dir", str(tmp_path)]) == 2
    message = capsys.readouterr().err
    assert "full mode" in message and "pip install -r extra.requirements.txt" in message


def test_heavy_models_are_described_in_the_listing(make_app):
    listing = {m["model_name"]: m for m in make_app(full=True).test_client().get("/model/list").json["models"]}
    assert listing["tts-eng"]["kind"] == "speech-out" and listing["tts-eng"]["heavy"]
    assert listing["sd-turbo"]["kind"] == "image-out" and listing["stable-cascade"]["heavy"]
    lite = json.dumps(make_app().test_client().get("/model/list").json)
    assert "sd-turbo" not in lite and "tts-rus" not in lite


def test_pictures_queue_stop_and_leave_the_gguf_models_streaming(make_app, repos, tiny_gguf):
    """A picture model given as a local folder, its queue holding no one: a second picture is refused at
    once; a GGUF model streams meanwhile (heavy models compute on a thread of their own); a kill ends the
    picture with model_not_running, and a client that leaves ends it too."""
    import socket

    from conftest import LiveServer

    app = make_app({"sd": {"path": str(repos["sd-turbo"]), "backend": "diffusers", "kind": "image-out"},
                    "tiny": {"path": str(tiny_gguf), "n_ctx": 512}}, full=True, queue_size=0)
    for name in ("sd", "tiny"):
        assert app.test_client().post("/model/launch", json={"model_name": name}).status_code == 200
    live = LiveServer(app)
    long = {"model_name": "sd", "prompt": "a storm", "image_size": 1024, "inference_steps": 200}  # seconds a step
    small = {"model_name": "sd", "prompt": "a cat", "image_size": 64, "inference_steps": 1}

    def wait_until_busy():
        time.sleep(1)  # nothing competes for the model meanwhile: the long picture gets it, not a small one
        deadline = time.time() + 30
        while True:
            refused = requests.post(f"{live.url}/generate/imagefromtext", json=small, timeout=60)
            if refused.status_code == 503:
                return refused
            assert refused.status_code == 200 and time.time() < deadline  # the long one has not begun yet
            time.sleep(0.05)

    try:
        killed = []
        painter = threading.Thread(target=lambda: killed.append(
            requests.post(f"{live.url}/generate/imagefromtext", json=long, timeout=120)))
        painter.start()
        refused = wait_until_busy()
        assert refused.json()["code"] == "busy" and refused.headers["Retry-After"]
        text = requests.post(f"{live.url}/generate/fromtext", json={"model_name": "tiny", "prompt": "Hi",
                                                                     "max_new_tokens": 16}, timeout=30)
        assert text.status_code == 200 and painter.is_alive()  # answered while the picture paints
        began = time.time()
        assert requests.delete(f"{live.url}/model/kill", json={"model_name": "sd"}, timeout=60).status_code == 200
        painter.join(timeout=60)
        assert time.time() - began < 20 and killed[0].status_code == 404
        assert killed[0].json()["code"] == "model_not_running" and "stopped" in killed[0].json()["detail"]

        assert requests.post(f"{live.url}/model/launch", json={"model_name": "sd"}).status_code == 200
        body = json.dumps(long)
        leaving = socket.create_connection(("127.0.0.1", int(live.url.rsplit(":", 1)[1])))
        leaving.sendall(f"POST /generate/imagefromtext HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                        f"application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
        wait_until_busy()
        leaving.close()  # the client leaves: the picture stops at its next step
        began = time.time()
        while (answer := requests.post(f"{live.url}/generate/imagefromtext", json=small, timeout=60)).status_code == 503:
            assert time.time() - began < 20
            time.sleep(0.1)
        assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/png"
    finally:
        live.close()
    app.test_client().delete("/model/delete", json={"model_name": "sd"})
    assert (repos["sd-turbo"] / "model_index.json").is_file()  # a local folder is never deleted
