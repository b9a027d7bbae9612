"""What the server measures, for GET /metrics (Prometheus text): one registry per app, no global state.

The layers report plain facts (a request answered, a first token, an answer's tokens, a refusal, a load,
bytes downloaded); the model states are read when the metrics are scraped. prometheus_client is imported
lazily, at the first app built, and is pure Python (it installs in Termux).
"""
from __future__ import annotations

import time

# Seconds: from the quick answers of a phone to a Pi reading a long prompt.
LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
RATES = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 250)  # tokens per second
LOADS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector

        self.registry = CollectorRegistry(auto_describe=True)
        self.started = time.time()
        r = self.registry
        self.requests = Counter("edge_requests", "HTTP requests answered", ["route", "method", "status"], registry=r)
        self.duration = Histogram("edge_request_duration_seconds", "Time to the response headers (streams: until "
                                  "the first token)", ["route"], buckets=LATENCY, registry=r)
        self.first_token = Histogram("edge_time_to_first_token_seconds", "From the request reaching the model's "
                                     "queue to its first token", ["model"], buckets=LATENCY, registry=r)
        self.speed = Histogram("edge_tokens_per_second", "Decode speed of each answer after its first token",
                               ["model"], buckets=RATES, registry=r)
        self.tokens = Counter("edge_tokens_generated", "Tokens generated", ["model"], registry=r)
        self.refusals = Counter("edge_busy_refusals", "Requests refused with 503 busy", ["model"], registry=r)
        self.loads = Histogram("edge_model_load_seconds", "Time to load a model", ["model"], buckets=LOADS,
                               registry=r)
        self.downloaded = Counter("edge_downloaded_bytes", "Model bytes downloaded", ["model"], registry=r)
        ProcessCollector(registry=r)  # process_resident_memory_bytes and friends (Linux, Android)
        self._states = None

    def watch(self, manager) -> None:
        """Report models running and queue depth from the manager at each scrape."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        class States:
            def collect(self):
                running = list(manager.running())
                yield GaugeMetricFamily("edge_models_running", "Models loaded and serving", value=len(running))
                queued = GaugeMetricFamily("edge_queue_depth", "Requests waiting for the model", labels=["model"])
                prompt = CounterMetricFamily("edge_prompt_tokens", "Prompt tokens since the model was loaded: "
                                             "evaluated, or reused from a stream's cache", labels=["model", "how"])
                for name, waiting, counts in running:
                    queued.add_metric([name], waiting)
                    if counts is not None:
                        prompt.add_metric([name, "evaluated"], counts[0])
                        prompt.add_metric([name, "reused"], counts[1])
                yield queued
                yield prompt
                yield GaugeMetricFamily("edge_uptime_seconds", "Seconds since the server started",
                                        value=time.time() - metrics.started)

        metrics = self
        self._states = States()
        self.registry.register(self._states)

    def answered(self, model: str, tokens: int, first_token: float | None, decode_seconds: float) -> None:
        if first_token is not None:
            self.first_token.labels(model).observe(first_token)
        self.tokens.labels(model).inc(tokens)
        if tokens > 1 and decode_seconds > 0:
            self.speed.labels(model).observe((tokens - 1) / decode_seconds)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
