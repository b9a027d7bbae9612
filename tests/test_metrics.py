"""/health (public, cheap) and /metrics (Prometheus text, behind the key) on a real server process."""
from __future__ import annotations

import requests
from conftest import ServerProcess
from fake_hub import FakeHub
from prometheus_client.parser import text_string_to_metric_families

KEY = "metrics-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def scrape(server) -> dict[tuple[str, tuple], float]:
    r = requests.get(f"{server.url}/metrics", headers=AUTH, timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_health_and_metrics_move_with_the_work(tmp_path, tiny_gguf, slow_gguf):
    hub = FakeHub().start()
    hub.add("org/tiny-GGUF", "tiny.gguf", tiny_gguf.read_bytes())
    server = ServerProcess(tmp_path / "data", {
        "hubbed": {"repo_id": "org/tiny-GGUF", "filename": "tiny.gguf", "n_ctx": 256},
        "slow": {"path": str(slow_gguf), "n_ctx": 1024}}, "--api-key", KEY,
        env={"HF_ENDPOINT": hub.url, "EDGE_QUEUE_SIZE": "0", "EDGE_PARALLEL": "1"})
    try:
        health = requests.get(f"{server.url}/health", timeout=5).json()  # no key needed
        assert health["status"] == "ok" and health["models_running"] == [] and health["rss_bytes"] > 10 << 20
        assert requests.get(f"{server.url}/metrics", timeout=5).status_code == 401

        for name in ("hubbed", "slow"):
            requests.post(f"{server.url}/model/launch", json={"model_name": name}, headers=AUTH,
                          timeout=60).raise_for_status()
        before = scrape(server)
        r = requests.post(f"{server.url}/generate/fromtext", headers=AUTH, stream=True, timeout=60,
                          json={"model_name": "hubbed", "prompt": "Hello", "max_new_tokens": 12})
        pieces = list(r.iter_content(chunk_size=None))
        after = scrape(server)

        generated = value(after, "edge_tokens_generated_total", model="hubbed")
        assert 1 <= generated <= 12 and generated >= len(pieces) - 1
        assert value(after, "edge_requests_total", route="/generate/fromtext", method="POST", status="200") == \
            value(before, "edge_requests_total", route="/generate/fromtext", method="POST", status="200") + 1
        assert value(after, "edge_time_to_first_token_seconds_count", model="hubbed") == 1
        assert value(after, "edge_tokens_per_second_count", model="hubbed") == 1
        assert value(after, "edge_model_load_seconds_count", model="hubbed") == 1
        assert value(after, "edge_downloaded_bytes_total", model="hubbed") == tiny_gguf.stat().st_size
        assert value(after, "edge_models_running") == 2
        assert value(after, "process_resident_memory_bytes") > 10 << 20
        assert value(after, "edge_request_duration_seconds_count", route="/model/launch") == 2

        # A busy model: the refusal is counted.
        hold = requests.post(f"{server.url}/generate/fromtext", headers=AUTH, stream=True, timeout=60,
                             json={"model_name": "slow", "prompt": "Go on", "max_new_tokens": 300})
        refused = requests.post(f"{server.url}/generate/fromtext", headers=AUTH, timeout=60,
                                json={"model_name": "slow", "prompt": "Me too"})
        assert refused.status_code == 503
        hold.close()
        assert value(scrape(server), "edge_busy_refusals_total", model="slow") == 1
        health = requests.get(f"{server.url}/health", timeout=5).json()
        assert sorted(health["models_running"]) == ["hubbed", "slow"] and health["uptime_seconds"] >= 0
    finally:
        server.close()
        hub.stop()
