"""Prometheus metrics of one server process (requests, errors, latency, batch sizes, model version)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("ml_serve_requests", "HTTP requests", ["path", "code"], registry=self.registry)
        self.errors = Counter("ml_serve_errors", "Requests answered 4xx/5xx", ["path", "code"], registry=self.registry)
        self.latency = Histogram("ml_serve_request_latency_seconds", "Request latency", ["path"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_rows = Histogram("ml_serve_batch_rows", "Rows per predict call", buckets=BATCH_BUCKETS,
                                    registry=self.registry)
        self.model = Gauge("ml_serve_model_info", "1 for the model version being served", ["version", "digest"],
                           registry=self.registry)
        self.model_failures = Counter("ml_serve_model_failures", "Batches the model failed, by what it did "
                                      "(raised, wrong_output_count, timeout)", ["reason"], registry=self.registry)
        self.captured = Counter("ml_serve_captured_rows", "Request rows written by prediction capture",
                                registry=self.registry)
        self.capture_dropped = Counter("ml_serve_capture_dropped_rows", "Sampled rows prediction capture dropped "
                                       "(its buffer full, or the write failed)", registry=self.registry)
        self.swaps = Counter("ml_serve_model_swaps", "Model loads by outcome", ["outcome"], registry=self.registry)

        self._children: dict[tuple[str, int], tuple] = {}

    def observe(self, path: str, code: int, seconds: float) -> None:
        children = self._children.get((path, code))
        if children is None:  # label lookups cost more than the increments: resolve once
            children = self._children[(path, code)] = (
                self.requests.labels(path, str(code)),
                self.errors.labels(path, str(code)) if code >= 400 else None,
                self.latency.labels(path),
            )
        requests, errors, latency = children
        requests.inc()
        if errors is not None:
            errors.inc()
        latency.observe(seconds)

    def serving(self, version: str, digest: str) -> None:
        self.model.clear()
        self.model.labels(version, digest[:12]).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
