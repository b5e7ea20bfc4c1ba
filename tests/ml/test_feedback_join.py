"""The feedback join on a generated stream whose true figures are known by construction: two
versions over three days, late labels, corrected (duplicate) labels, labels of requests that were
never captured, requests captured twice, captured rows nobody labelled."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
from sklearn import metrics

from ml.monitoring.feedback import FeedbackError, below_floor, daily_metrics, join_feedback

DAY0 = datetime(2026, 12, 1, tzinfo=timezone.utc)


def captured_table(records: list[dict]) -> pa.Table:
    """The columns ml.serving.capture writes (request_id, model_version, ts, row, features, prediction)."""
    return pa.table({
        "request_id": pa.array([r["request_id"] for r in records], pa.string()),
        "model_version": pa.array([r["version"] for r in records], pa.string()),
        "ts": pa.array([r["ts"] for r in records], pa.timestamp("us", tz="UTC")),
        "row": pa.array([r["row"] for r in records], pa.int32()),
        "x": pa.array([r["x"] for r in records], pa.float64()),
        "prediction": pa.array([r["prediction"] for r in records], pa.int64())})


def generated_stream(seed: int = 7):
    rng = random.Random(seed)
    captured, labels, truth = [], [], {}
    for i in range(3000):
        version = "1" if i % 3 else "2"
        day = i % 3
        ts = DAY0 + timedelta(days=day, seconds=rng.randrange(86_400))
        rows = 1 + i % 4
        for row in range(rows):
            prediction = rng.randrange(2)
            captured.append({"request_id": f"r{i}", "version": version, "ts": ts, "row": row, "x": rng.random(),
                             "prediction": prediction})
            if rng.random() < 0.2:
                continue  # nobody labelled this row (yet)
            # version 2 is right more often than version 1, and day 2 is worse for both
            right = rng.random() < (0.9 if version == "2" else 0.7) - (0.2 if day == 2 else 0.0)
            label = prediction if right else 1 - prediction
            truth[(version, (DAY0 + timedelta(days=day)).strftime("%Y-%m-%d"))] = truth.get(
                (version, (DAY0 + timedelta(days=day)).strftime("%Y-%m-%d")), []) + [(prediction, label)]
            late = timedelta(days=rng.choice([0, 0, 1, 5]))  # a review arrives days later
            labelled_at = ts + late + timedelta(hours=1)
            if rng.random() < 0.1:  # a first review was wrong and a later one corrected it
                labels.append({"request_id": f"r{i}", "row": row, "label": 1 - label, "labelled_at": labelled_at})
                labels.append({"request_id": f"r{i}", "row": row, "label": label,
                               "labelled_at": labelled_at + timedelta(hours=3)})
            elif rng.random() < 0.05:  # listed after the right one, but reviewed before it: it does not win
                labels.append({"request_id": f"r{i}", "row": row, "label": label, "labelled_at": labelled_at})
                labels.append({"request_id": f"r{i}", "row": row, "label": 1 - label,
                               "labelled_at": labelled_at - timedelta(hours=2)})
            else:
                labels.append({"request_id": f"r{i}", "row": row, "label": label, "labelled_at": labelled_at})
    # a client that reused an id: the second capture (later, another answer) does not count
    first = captured[0]
    captured.append({**first, "ts": first["ts"] + timedelta(minutes=5), "prediction": 1 - first["prediction"]})
    # labels of requests capture did not sample
    for i in range(137):
        labels.append({"request_id": f"uncaptured-{i}", "row": 0, "label": 1, "labelled_at": DAY0})
    rng.shuffle(labels)
    return captured_table(captured), labels, truth


def test_the_join_gives_the_exact_metric_per_version_and_day():
    captured, labels, truth = generated_stream()
    joined = join_feedback(captured, labels)
    assert joined.unmatched_labels == 137
    assert len(joined) == sum(len(v) for v in truth.values())
    assert joined.duplicate_labels == sum(1 for _ in labels) - 137 - len(joined)
    figures = daily_metrics(joined, "accuracy")
    assert [(f["version"], f["day"]) for f in figures] == sorted(truth, key=lambda k: (k[1], k[0]))
    for f in figures:
        pairs = truth[(f["version"], f["day"])]
        assert f["rows"] == len(pairs)
        assert f["value"] == sum(p == y for p, y in pairs) / len(pairs)  # exact, not approximate
    f1 = {(f["version"], f["day"]): f["value"] for f in daily_metrics(joined, "f1")}
    for key, pairs in truth.items():
        assert f1[key] == pytest.approx(metrics.f1_score([y for _, y in pairs], [p for p, _ in pairs]), abs=1e-12)
    # version 2 beats version 1 each day; day 2 falls below a 0.6 floor for version 1 only
    low = below_floor(figures, 0.6, min_rows=50)
    assert {(f["version"], f["day"]) for f in low} == {("1", "2026-12-03")}


def test_labels_that_arrive_later_raise_the_days_count_without_moving_it():
    captured, labels, truth = generated_stream()
    cutoff = DAY0 + timedelta(days=3)
    early = [label for label in labels if label["labelled_at"] < cutoff]
    before = {(f["version"], f["day"]): f["rows"] for f in daily_metrics(join_feedback(captured, early), "accuracy")}
    after = {(f["version"], f["day"]): f["rows"] for f in daily_metrics(join_feedback(captured, labels), "accuracy")}
    assert set(before) == set(after)
    assert all(before[k] <= after[k] for k in after) and sum(before.values()) < sum(after.values())


def test_regression_labels_and_class_names_in_another_type():
    ts = [DAY0 + timedelta(hours=h) for h in range(4)]
    captured = pa.table({"request_id": ["a", "b", "c", "d"], "model_version": ["3"] * 4,
                         "ts": pa.array(ts, pa.timestamp("us", tz="UTC")), "row": pa.array([0] * 4, pa.int32()),
                         "prediction": [1.0, 2.0, 3.0, 4.0]})
    labels = pa.table({"request_id": ["a", "b", "c", "d"], "label": [1.5, 2.0, 2.0, None]})
    (figure,) = daily_metrics(join_feedback(captured, labels), "rmse")
    assert figure["rows"] == 3 and figure["value"] == pytest.approx(((0.25 + 0 + 1) / 3) ** 0.5)
    assert below_floor([figure], 0.5) == [figure]  # rmse: above the floor is worse
    # labels stored as text ("1") still match integer predictions (1)
    text = pa.table({"request_id": ["a", "b"], "label": ["1", "3"]})
    (acc,) = daily_metrics(join_feedback(captured, text), "accuracy")
    assert acc["value"] == 0.5


def test_a_label_table_without_the_request_id_or_an_unknown_metric_says_what_to_give():
    captured, labels, _ = generated_stream()
    with pytest.raises(FeedbackError, match="X-Request-Id"):
        join_feedback(captured, [{"id": "r1", "label": 1}])
    with pytest.raises(FeedbackError, match="roc_auc needs probabilities"):
        daily_metrics(join_feedback(captured, labels), "roc_auc")
