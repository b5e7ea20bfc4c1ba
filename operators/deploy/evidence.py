"""Promotion evidence: what a level's endpoint served, read from its own ``/metrics``.

A new version waits on the level below before the next level's alias moves. Over the same window
(from the wait's start), the lower endpoint, which serves the candidate, and the higher endpoint,
which serves the version the candidate would replace, are sampled; the difference of two samples
is what each served in the window: prediction requests, error answers (4xx and 5xx: a version
whose schema changed refuses the same clients' rows; the comparison with the incumbent, under
the same clients, keeps a client's own mistakes out of it), and the latency histogram
that gives a p99 (as Prometheus' ``histogram_quantile`` reads it: linear within its bucket).

The verdict, given the level's ``promotion`` rules:
- ``refuse`` as soon as the candidate has served ``min_requests`` with an error rate above the
  incumbent's by more than ``max_error_rate_increase`` (or a p99 above it by more than
  ``max_p99_increase`` as a share): evidence against it is not waited out;
- ``promote`` once it has served ``min_requests`` within both tolerances;
- ``wait`` otherwise, until the window's end (then the wait fails: not enough evidence).
An incumbent that served nothing in the window (or a higher level serving nothing yet) is no
baseline: the error rate must then be at most the tolerance itself, and p99 is not compared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# every prediction route's metrics path label: ml.serve's own, and the Open Inference Protocol's over
# REST and gRPC (ml/serving/oip), so clients of any of them count as evidence
PREDICT_PATHS = frozenset({"/invocations", "/v2/infer", "grpc/ModelInfer"})


@dataclass(frozen=True)
class Sample:
    """Cumulative counters of one endpoint at one moment."""

    requests: float
    errors: float
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count), +Inf last
    version: str | None = None

    def since(self, earlier: Sample | None) -> Sample:
        """What was served between ``earlier`` and this sample (a restart resets the counters:
        then all of this sample counts)."""
        if earlier is None or self.requests < earlier.requests:
            return self
        before = dict(earlier.buckets)
        return Sample(self.requests - earlier.requests, self.errors - earlier.errors,
                      tuple((le, count - before.get(le, 0.0)) for le, count in self.buckets), self.version)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p99(self) -> float | None:
        """The 99th percentile as Prometheus' ``histogram_quantile`` reads it: linear within the
        bucket that holds it; in the +Inf bucket, the highest finite bound."""
        total = self.buckets[-1][1] if self.buckets else 0.0
        if not total:
            return None
        rank, lower, below = 0.99 * total, 0.0, 0.0
        for le, count in self.buckets:
            if count >= rank:
                if math.isinf(le):
                    return lower
                return lower + (le - lower) * ((rank - below) / (count - below) if count > below else 1.0)
            lower, below = le, count
        return lower

    def as_dict(self) -> dict:
        # bounds as text: the triggerer's table holds strict JSON, without Infinity
        return {"requests": self.requests, "errors": self.errors,
                "buckets": [[str(le), count] for le, count in self.buckets], "version": self.version}

    @classmethod
    def from_dict(cls, d: dict | None) -> Sample | None:
        if d is None:
            return None
        return cls(d["requests"], d["errors"], tuple((float(le), c) for le, c in d["buckets"]), d.get("version"))


def parse_metrics(text: str, paths: frozenset[str] = PREDICT_PATHS) -> Sample:
    """The prediction routes' counters, summed, from an ml.serve ``/metrics`` page (the latency
    histograms of all routes share one set of buckets)."""
    from prometheus_client.parser import text_string_to_metric_families

    requests = errors = 0.0
    buckets: dict[float, float] = {}
    version = None
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "ml_serve_requests_total" and s.labels.get("path") in paths:
                requests += s.value
            elif s.name == "ml_serve_errors_total" and s.labels.get("path") in paths:
                errors += s.value  # 4xx too: a version whose schema changed refuses the clients' rows
            elif s.name == "ml_serve_request_latency_seconds_bucket" and s.labels.get("path") in paths:
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
            elif s.name == "ml_serve_model_info" and s.value == 1:
                version = s.labels.get("version")
    return Sample(requests, errors, tuple(sorted(buckets.items())), version)


@dataclass(frozen=True)
class Rules:
    min_requests: int = 100
    max_error_rate_increase: float = 0.01
    max_p99_increase: float = 0.25

    @classmethod
    def from_spec(cls, promotion: dict) -> Rules:
        return cls(**{k: promotion[k] for k in ("min_requests", "max_error_rate_increase", "max_p99_increase")
                      if k in promotion})


def verdict(candidate: Sample, incumbent: Sample | None, rules: Rules) -> tuple[str, str]:
    """("promote" | "refuse" | "wait", why), from what each served in the window."""
    baseline = incumbent if incumbent is not None and incumbent.requests else None
    served = f"{candidate.requests:.0f} requests, error rate {candidate.error_rate:.4f}, p99 {_s(candidate.p99)}"
    against = (f"the incumbent's {baseline.requests:.0f} requests, error rate {baseline.error_rate:.4f}, "
               f"p99 {_s(baseline.p99)}" if baseline else "no incumbent traffic")
    if candidate.requests < rules.min_requests:
        return "wait", f"{served}: fewer than {rules.min_requests} requests yet ({against})"
    allowed_errors = (baseline.error_rate if baseline else 0.0) + rules.max_error_rate_increase
    if candidate.error_rate > allowed_errors:
        return "refuse", f"{served}: error rate above {allowed_errors:.4f} ({against})"
    if baseline and baseline.p99 is not None and candidate.p99 is not None:
        allowed_p99 = baseline.p99 * (1 + rules.max_p99_increase)
        if candidate.p99 > allowed_p99:
            return "refuse", f"{served}: p99 above {_s(allowed_p99)} ({against})"
    return "promote", f"{served}: within the tolerances ({against})"


def _s(seconds: float | None) -> str:
    return "n/a" if seconds is None else ("+Inf" if math.isinf(seconds) else f"{seconds * 1000:.1f} ms")
