"""End to end with a real model a person would recognise: Gemma 3 270M from PyPI, through waitress."""
from __future__ import annotations

import requests

from conftest import LiveServer


def test_gemma_knows_the_capital_of_france(make_app, gemma_gguf):
    app = make_app({"gemma": {"path": str(gemma_gguf), "n_ctx": 2048}})
    server = LiveServer(app)
    try:
        r = requests.post(f"{server.url}/model/launch", json={"model_name": "gemma"}, timeout=120)
        assert r.status_code == 200 and r.json() is None
        assert requests.get(f"{server.url}/model/getactive").json() == ["gemma"]
        r = requests.post(f"{server.url}/generate/fromtext", stream=True, timeout=120, json={
            "model_name": "gemma", "prompt": "What is the capital of France?", "max_new_tokens": 40,
            "temperature": 0})
        assert r.status_code == 200
        chunks = list(r.iter_content(chunk_size=None))
        answer = b"".join(chunks).decode("utf-8")
        assert "Paris" in answer, answer
        assert len(chunks) > 3  # it streamed
        assert "\nUser:" not in answer  # the fallback format's stop string ended it
        turns = requests.get(f"{server.url}/chat/getchathistory", params={"model_name": "gemma"}).json()["turns"]
        assert turns == [{"role": "user", "content": "What is the capital of France?"},
                         {"role": "assistant", "content": answer}]
    finally:
        server.close()
