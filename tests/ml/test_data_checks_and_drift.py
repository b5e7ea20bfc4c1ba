"""Data checks before training and drift, on generated tables with fixed seeds: a snapshot like
its reference passes; a renamed column, a column gone all-null, shifted ranges, new categories
and longer texts are each stopped with a report naming the column and the figure; the spec's
own rules hold without a reference; drift is flagged on a shifted stream and not on an
unshifted one."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from ml.monitoring.checks import RulesError, check_snapshot, render
from ml.monitoring.drift import feature_drift, psi
from ml.monitoring.profile import profile_table

WORDS = ["good", "bad", "spam", "offer", "hello", "meeting", "tomorrow", "free", "money", "thanks"]


def table(seed: int, rows: int = 2000, shift: float = 0.0, words: tuple[int, int] = (3, 12),
          colours=("red", "green", "blue"), colour_p=(0.5, 0.3, 0.2)) -> pa.Table:
    rng = np.random.default_rng(seed)
    amount = rng.normal(50 + shift, 10, rows)
    amount[rng.random(rows) < 0.02] = np.nan  # 2 % missing, as the reference had
    count = rng.integers(0, 20, rows)
    colour = rng.choice(list(colours), rows, p=list(colour_p))
    text = [" ".join(rng.choice(WORDS, rng.integers(*words))) for _ in range(rows)]
    return pa.table({"amount": amount, "count": count, "colour": colour, "text": text,
                     "target": rng.integers(0, 2, rows),
                     "event_time": pa.array(np.arange(rows).astype("datetime64[s]"))})


@pytest.fixture(scope="module")
def reference():
    return profile_table(table(seed=1))


def failures(report) -> dict[tuple[str, str], dict]:
    return {(f["column"], f["check"]): f for f in report["failures"]}


def test_the_profile_is_json_and_says_each_columns_kind(reference):
    assert json.loads(json.dumps(reference)) == reference  # data only: it can be stored and read back
    kinds = {name: c["kind"] for name, c in reference["columns"].items()}
    assert kinds == {"amount": "number", "count": "number", "colour": "category", "text": "text",
                     "target": "number", "event_time": "time"}
    assert 0.01 < reference["columns"]["amount"]["null_rate"] < 0.03  # NaN counts as missing
    assert set(reference["columns"]["colour"]["categories"]) == {"red", "green", "blue"}


def test_a_snapshot_like_its_reference_passes(reference):
    report = check_snapshot(table(seed=2), reference)
    assert report["passed"], render(report)
    assert report["failures"] == []


def test_a_renamed_column_is_stopped_naming_both_names(reference):
    renamed = table(seed=2).rename_columns(["amount_eur", "count", "colour", "text", "target", "event_time"])
    report = check_snapshot(renamed, reference)
    assert not report["passed"]
    gone = failures(report)[("amount", "schema")]
    assert "amount (double) is not in the new snapshot" in gone["message"] and "['amount_eur'] (renamed?)" in \
        gone["message"]
    assert "columns the reference did not have: ['amount_eur']" in report["notes"]


def test_a_column_gone_all_null_is_stopped(reference):
    now = table(seed=2)
    now = now.set_column(1, "count", pa.nulls(now.num_rows, pa.int64()))
    report = check_snapshot(now, reference)
    found = failures(report)
    assert list(found) == [("count", "null_rate")]
    assert found[("count", "null_rate")]["figure"] == 1.0 and "every value is null" in render(report)


def test_a_null_rate_that_rose_past_the_limit_is_stopped_and_one_within_it_is_not(reference):
    now = table(seed=2)
    amount = now.column("amount").to_numpy().copy()
    amount[:300] = np.nan  # +15 % null
    report = check_snapshot(now.set_column(0, "amount", pa.array(amount)), reference)
    assert ("amount", "null_rate") in failures(report)
    amount = now.column("amount").to_numpy().copy()
    amount[:100] = np.nan  # +5 %: within the default 10 %
    assert check_snapshot(now.set_column(0, "amount", pa.array(amount)), reference)["passed"]


def test_shifted_ranges_are_stopped_with_the_figures(reference):
    report = check_snapshot(table(seed=2, shift=30), reference)  # three standard deviations up
    found = failures(report)
    assert set(found) == {("amount", "mean_shift"), ("amount", "range")}
    assert 2.7 < found[("amount", "mean_shift")]["figure"] < 3.3
    assert 0.1 < found[("amount", "range")]["figure"] < 0.4  # a fifth beyond the reference's maximum (~85)
    small = check_snapshot(table(seed=2, shift=2), reference)  # 0.2 standard deviations: passes
    assert small["passed"], render(small)


def test_new_categories_and_longer_texts_are_stopped(reference):
    report = check_snapshot(table(seed=2, colours=("red", "green", "purple"), words=(20, 40)), reference)
    found = failures(report)
    assert set(found) == {("colour", "categories"), ("text", "text_length")}
    assert "such as ['purple']" in found[("colour", "categories")]["message"]
    assert found[("text", "text_length")]["figure"] > 1.0  # more than twice as long


def test_a_column_of_another_kind_is_stopped(reference):
    now = table(seed=2)
    now = now.set_column(1, "count", pa.array([str(v) for v in now.column("count").to_pylist()]))
    assert list(failures(check_snapshot(now, reference))) == [("count", "type")]


def test_the_specs_rules_hold_with_or_without_a_reference():
    now = table(seed=2, colours=("red", "green", "purple"))
    rules = {"min_rows": 10, "max_mean_shift": 5.0,
             "columns": {"count": {"min": 1, "max": 18}, "colour": {"categories": ["red", "green", "blue"]},
                         "text": {"max_length": 40}, "amount": {"max_null_rate": 0.0}, "missing": {"min": 0}}}
    report = check_snapshot(now, None, rules)
    found = failures(report)
    assert set(found) == {("count", "min"), ("count", "max"), ("colour", "categories"), ("text", "max_length"),
                          ("amount", "max_null_rate"), ("missing", "schema")}
    assert found[("colour", "categories")]["figure"] == ["purple"]
    assert "no reference snapshot" in report["notes"][0]
    assert check_snapshot(now.slice(0, 5), None, {"min_rows": 10})["failures"][0]["check"] == "min_rows"
    with pytest.raises(RulesError, match=r"unknown data check rules \['max_mean_shfit'\]"):
        check_snapshot(now, None, {"max_mean_shfit": 1})
    with pytest.raises(RulesError, match="column 'count': its rules must be a mapping"):
        check_snapshot(now, None, {"columns": {"count": {"minimum": 1}}})


def test_drift_is_flagged_on_a_shifted_stream_and_not_on_an_unshifted_one(reference):
    steady = feature_drift(reference, table(seed=3, rows=1000))
    assert set(steady) == {"amount", "count", "colour", "text", "target"}  # event_time: not a feature kind
    assert not any(d["drifted"] for d in steady.values()), steady
    assert max(d["psi"] for d in steady.values()) < 0.05
    moved = feature_drift(reference, table(seed=3, rows=1000, shift=5, colour_p=(0.2, 0.3, 0.5), words=(8, 20)))
    assert {n for n, d in moved.items() if d["drifted"]} == {"amount", "colour", "text"}
    assert moved["text"]["kind"] == "text length" and moved["amount"]["psi"] > 0.2


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift():
    even = np.full(10, 0.1)
    assert psi(even, even) == 0.0
    assert 0 < psi(even, np.r_[np.full(5, 0.12), np.full(5, 0.08)]) < psi(even, np.r_[np.full(5, 0.18), np.full(5, 0.02)])
    assert np.isfinite(psi(even, np.r_[1.0, np.zeros(9)]))  # an empty bin does not divide by zero
