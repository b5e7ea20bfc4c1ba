"""The SLO's arithmetic: percentiles, the judgement against slo.toml, the printed report.
Kept apart from the locustfile so that reading a report never imports Locust (and gevent)."""

from __future__ import annotations


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil
    return sorted_values[int(rank) - 1]


def judge(report: dict, objective: dict) -> list[str]:
    """The SLO's breaches, each saying what was measured against what was required."""
    breaches = []
    if report["requests"] < objective.get("min_requests", 0):
        breaches.append(f"{report['requests']} requests are too few to judge a valid rate of "
                        f"{objective['valid_rate_min']:.4%}: at least {objective['min_requests']} are needed")
    if report["valid_rate"] < objective["valid_rate_min"]:
        breaches.append(f"valid rate {report['valid_rate']:.4%} is below {objective['valid_rate_min']:.4%}")
    if report["p95_ms"] is None or report["p95_ms"] > objective["p95_ms_max"]:
        breaches.append(f"p95 {report['p95_ms']} ms is above {objective['p95_ms_max']} ms")
    return breaches


def format_report(report: dict) -> str:
    lines = [
        f"requests {report['requests']} in {report['seconds']} s ({report['rps']} req/s, {report['users']} users)",
        f"valid rate {report['valid_rate']:.4%} ({report['valid']} valid)",
        f"latency of valid requests: p50 {report['p50_ms']} ms, p95 {report['p95_ms']} ms, p99 {report['p99_ms']} ms",
        f"model versions answering: {report['versions']}",
    ]
    for reason, count in sorted(report["failures"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  failed x{count}: {reason}")
    objective = report["objective"]
    lines.append(f"SLO (valid rate >= {objective['valid_rate_min']:.2%}, p95 <= {objective['p95_ms_max']} ms): "
                 + ("held" if not report["breaches"] else "BREACHED: " + "; ".join(report["breaches"])))
    return "\n".join(lines)
