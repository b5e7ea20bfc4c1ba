"""Labelled feedback: captured predictions (ml.serving.capture) joined with the labels people gave
later, and the model's metric per served version and day.

The join key is the request id the server answered in ``X-Request-Id`` (gRPC: the request's
``id``) and the row's index in its request (``row``; a label table without one labels row 0, a
single-row request). What the rules are for a stream that is never clean:

- a **late** label counts on the day its prediction was made, not the day it arrived: the
  monitoring DAG recomputes its whole look-back window each run, so a day's figure grows more
  exact as its labels come in;
- a **duplicate** label (the same request and row labelled twice: a review corrected) counts
  once, the latest by ``labelled_at`` (ties: the later row of the table);
- a label for a request that was **not captured** (capture samples; the request was older than
  the window) counts nowhere but in ``unmatched_labels``;
- a request captured twice (a client reusing its id) counts its first capture;
- a label that is null counts nowhere (not labelled yet).

Metrics: classification ``accuracy`` and ``f1`` (binary: the positive class is the last of the
sorted labels, as training's ``classes[-1]``; else macro); regression ``rmse``, ``mae``, ``r2``.
``roc_auc`` needs the probabilities, which capture does not keep: asked for, it is an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

CLASSIFICATION = ("accuracy", "f1")
REGRESSION = ("rmse", "mae", "r2")
HIGHER_IS_BETTER = {"accuracy": True, "f1": True, "r2": True, "rmse": False, "mae": False}


class FeedbackError(ValueError):
    """The labels or the captured predictions cannot be joined as given: what is wrong and the fix."""


@dataclass
class Joined:
    """Labelled predictions: one entry per captured (request, row) that has a label."""

    version: list[str] = field(default_factory=list)
    day: list[str] = field(default_factory=list)
    prediction: list[Any] = field(default_factory=list)
    label: list[Any] = field(default_factory=list)
    unmatched_labels: int = 0  # labels of requests that were not captured
    duplicate_labels: int = 0  # labels replaced by a later one for the same request and row
    unlabelled: int = 0  # captured rows no label names (yet)

    def __len__(self) -> int:
        return len(self.label)


def _day(value) -> str:
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d")
    raise FeedbackError(f"captured ts {value!r} is not a timestamp")


def _order(value) -> tuple:
    """labelled_at as a sortable key: None first (an unknown time loses to any known one)."""
    if value is None:
        return (0, 0.0)
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return (1, value.timestamp())
    try:
        return (1, float(value))
    except (TypeError, ValueError):
        raise FeedbackError(f"labelled_at {value!r} is neither a timestamp nor a number") from None


def join_feedback(captured, labels, *, label_column: str = "label", id_column: str = "request_id",
                  row_column: str = "row", time_column: str = "labelled_at") -> Joined:
    """``captured``: a table read by ``ml.serving.capture.read_captured`` (or None: nothing
    captured); ``labels``: an Arrow table (or a list of dicts) with ``id_column``, ``label_column``
    and optionally ``row_column`` and ``time_column``."""
    import pyarrow as pa

    if isinstance(labels, list):
        labels = pa.Table.from_pylist(labels)
    missing = [c for c in (id_column, label_column) if c not in labels.column_names]
    if missing:
        raise FeedbackError(f"the labels have no column(s) {missing} (they have {labels.column_names}): each label "
                            f"names the request id the server answered in X-Request-Id ({id_column!r}) and gives "
                            f"the true value ({label_column!r})")
    n = labels.num_rows
    ids = labels.column(id_column).to_pylist()
    rows = labels.column(row_column).to_pylist() if row_column in labels.column_names else [0] * n
    times = labels.column(time_column).to_pylist() if time_column in labels.column_names else [None] * n
    values = labels.column(label_column).to_pylist()

    latest: dict[tuple[str, int], tuple[tuple, int, Any]] = {}
    duplicates = 0
    for i in range(n):
        if ids[i] is None or values[i] is None:
            continue
        key = (str(ids[i]), int(rows[i] or 0))
        rank = (_order(times[i]), i)
        if key in latest:
            duplicates += 1
            if rank < latest[key][:2]:
                continue
        latest[key] = (*rank, values[i])

    joined = Joined(duplicate_labels=duplicates)
    seen: set[tuple[str, int]] = set()
    if captured is not None and captured.num_rows:
        for c in ("request_id", "row", "model_version", "ts", "prediction"):
            if c not in captured.column_names:
                raise FeedbackError(f"the captured predictions have no column {c!r}: read them with "
                                    "ml.serving.capture.read_captured")
        order = sorted(range(captured.num_rows), key=captured.column("ts").to_pylist().__getitem__)
        cap_ids, cap_rows = captured.column("request_id").to_pylist(), captured.column("row").to_pylist()
        versions, stamps = captured.column("model_version").to_pylist(), captured.column("ts").to_pylist()
        predictions = captured.column("prediction").to_pylist()
        for j in order:
            key = (str(cap_ids[j]), int(cap_rows[j]))
            if key in seen:
                continue  # the same id captured again: its first answer stands
            seen.add(key)
            label = latest.get(key)
            if label is None:
                joined.unlabelled += 1
                continue
            joined.version.append(str(versions[j]))
            joined.day.append(_day(stamps[j]))
            joined.prediction.append(predictions[j])
            joined.label.append(label[2])
    joined.unmatched_labels = sum(1 for key in latest if key not in seen)
    return joined


def _class(value) -> str:
    """A label as a class name: 1, 1.0 and True are one class; text stays text."""
    if isinstance(value, bool):
        return str(int(value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(int(number)) if math.isfinite(number) and number == int(number) else repr(number)


def metric_value(metric: str, predictions: list, labels: list) -> float:
    import numpy as np
    from sklearn import metrics

    if metric in REGRESSION:
        try:
            y, p = np.asarray(labels, np.float64), np.asarray(predictions, np.float64)
        except (TypeError, ValueError):
            raise FeedbackError(f"{metric} needs numeric labels and predictions") from None
        if metric == "rmse":
            return float(np.sqrt(metrics.mean_squared_error(y, p)))
        if metric == "mae":
            return float(metrics.mean_absolute_error(y, p))
        return float(metrics.r2_score(y, p)) if len(y) > 1 else float("nan")
    if metric not in CLASSIFICATION:
        raise FeedbackError(f"metric {metric!r} cannot be computed from captured labels; give one of "
                            f"{', '.join(CLASSIFICATION + REGRESSION)} (roc_auc needs probabilities, which capture "
                            "does not keep)")
    y, p = [_class(v) for v in labels], [_class(v) for v in predictions]
    if metric == "accuracy":
        return float(metrics.accuracy_score(y, p))
    classes = sorted(set(y) | set(p))
    if len(classes) <= 2:
        return float(metrics.f1_score(y, p, average="binary", pos_label=classes[-1], zero_division=0.0))
    return float(metrics.f1_score(y, p, average="macro", zero_division=0.0))


def daily_metrics(joined: Joined, metric: str) -> list[dict[str, Any]]:
    """The metric per (version, day) with its labelled rows, sorted by day then version."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(joined.version, joined.day)):
        groups.setdefault(key, []).append(i)
    out = []
    for (version, day), index in sorted(groups.items(), key=lambda item: (item[0][1], item[0][0])):
        out.append({"version": version, "day": day, "metric": metric, "rows": len(index),
                    "value": metric_value(metric, [joined.prediction[i] for i in index],
                                          [joined.label[i] for i in index])})
    return out


def below_floor(figures: list[dict[str, Any]], floor: float, min_rows: int = 1) -> list[dict[str, Any]]:
    """The (version, day) figures on the wrong side of ``floor`` (for rmse and mae: above it),
    counting only those with at least ``min_rows`` labels."""
    out = []
    for f in figures:
        if f["rows"] < min_rows or f["value"] != f["value"]:
            continue
        worse = f["value"] < floor if HIGHER_IS_BETTER[f["metric"]] else f["value"] > floor
        if worse:
            out.append(f)
    return out
