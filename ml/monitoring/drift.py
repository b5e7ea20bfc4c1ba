"""Drift: how far a table's features moved from a reference profile, per feature, as the
population stability index (PSI) over the reference's own bins: deciles for numbers, text
lengths' deciles for text, the reference's categories (and one bin for any other) for
categorical features. PSI = sum((a - e) * ln(a / e)) over bins; each share is floored at
``FLOOR`` so an empty bin counts without dividing by zero. The usual reading: under 0.1 stable,
0.1-0.25 a moderate shift, over 0.25 a large one; ``threshold`` (default 0.2) flags a feature.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ml.monitoring.profile import binned_shares, lengths, numbers

FLOOR = 1e-4
DEFAULT_THRESHOLD = 0.2


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.maximum(np.asarray(expected, np.float64), FLOOR)
    a = np.maximum(np.asarray(actual, np.float64), FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def _category_shares(column: pa.ChunkedArray, categories: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    present = column.drop_null()
    names = list(categories)
    seen = pc.value_counts(present)
    counts = dict(zip(seen.field("values").to_pylist(), seen.field("counts").to_pylist()))
    total = max(len(present), 1)
    actual = [counts.get(name, 0) / total for name in names]
    actual.append(1.0 - sum(actual))  # any category the reference never had
    expected = [categories[name] for name in names] + [0.0]
    return np.asarray(expected), np.asarray(actual)


def feature_drift(reference: dict[str, Any], table: pa.Table, features: list[str] | None = None,
                  threshold: float = DEFAULT_THRESHOLD) -> dict[str, dict[str, Any]]:
    """{feature: {"kind", "psi", "drifted", "rows"}} for each feature in both (default: every
    reference column the table has that is a number, a category or text)."""
    out: dict[str, dict[str, Any]] = {}
    names = features or [n for n in reference["columns"] if n in table.column_names]
    for name in names:
        ref = reference["columns"].get(name)
        if ref is None or name not in table.column_names:
            raise KeyError(f"feature {name!r} is not in both the reference profile and the table")
        column = table.column(name)
        if ref["kind"] == "number" and ref.get("edges") is not None and ref.get("count"):
            values = numbers(column)
            expected, actual = np.asarray(ref["shares"]), binned_shares(values, ref["edges"])
        elif ref["kind"] == "text" and ref["length"].get("count"):
            values = lengths(column)
            expected, actual = np.asarray(ref["length"]["shares"]), binned_shares(values, ref["length"]["edges"])
        elif ref["kind"] == "category":
            expected, actual = _category_shares(column, ref["categories"])
            values = column.drop_null()
        else:
            continue
        score = psi(expected, actual) if len(values) else 0.0
        out[name] = {"kind": ref["kind"] if ref["kind"] != "text" else "text length", "psi": round(score, 5),
                     "drifted": bool(score > threshold), "rows": int(len(values))}
    return out
