"""Data checks before training: a new snapshot against the reference (the training snapshot of
the version in production) and against the model spec's rules.

What stops a run: a column the reference's model used gone (renamed or dropped) or of another
kind; a column gone all-null, or whose null rate rose past the limit; a numeric column whose
mean moved by more than ``max_mean_shift`` of the reference's standard deviations, or with more
than ``max_out_of_range`` of its values outside the reference's range; a categorical column with
more than ``max_new_categories`` of its rows in categories the reference never had; a text
column whose mean length changed by more than ``max_text_length_change`` (relative); and any of
the spec's own column rules (``min``, ``max``, ``max_null_rate``, ``categories``,
``max_length``) broken. Each failure names the column, the check, the figure and the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ml.monitoring.profile import column_profile, lengths, numbers

REPORT_FORMAT = "ml.data_check/1"
DEFAULT_RULES: dict[str, float] = {
    "max_null_rate_increase": 0.10,  # absolute: 0.02 -> 0.13 fails
    "max_mean_shift": 0.5,  # in the reference's standard deviations
    "max_out_of_range": 0.05,  # share of values outside the reference's [min, max]
    "max_new_categories": 0.01,  # share of rows in categories the reference never had
    "max_text_length_change": 0.5,  # relative change of the mean length
}
COLUMN_RULES = ("min", "max", "max_null_rate", "categories", "max_length")


class RulesError(ValueError):
    """The rules themselves are wrong (an unknown key, a limit that is not a number)."""


def rules_with_defaults(rules: dict[str, Any] | None) -> dict[str, Any]:
    rules = dict(rules or {})
    columns = rules.pop("columns", {}) or {}
    unknown = set(rules) - set(DEFAULT_RULES) - {"min_rows"}
    if unknown:
        raise RulesError(f"unknown data check rules {sorted(unknown)}; give any of {sorted(DEFAULT_RULES)}, "
                         f"min_rows or columns")
    for name, limits in columns.items():
        if not isinstance(limits, dict) or set(limits) - set(COLUMN_RULES):
            raise RulesError(f"column {name!r}: its rules must be a mapping of {list(COLUMN_RULES)}, got {limits!r}")
    return {**DEFAULT_RULES, **rules, "columns": columns}


def _failure(column: str | None, check: str, figure: Any, limit: Any, message: str) -> dict[str, Any]:
    return {"column": column, "check": check, "figure": figure, "limit": limit, "message": message}


def _share(mask: np.ndarray) -> float:
    return float(mask.mean()) if len(mask) else 0.0


def _against_reference(name: str, column: pa.ChunkedArray, now: dict, ref: dict, rules: dict) -> list[dict]:
    out = []
    if ref["null_rate"] < 1.0 and now["null_rate"] == 1.0 and len(column):
        out.append(_failure(name, "null_rate", 1.0, ref["null_rate"],
                            f"{name}: every value is null (the reference had {ref['null_rate']:.1%} null)"))
        return out
    rise = now["null_rate"] - ref["null_rate"]
    if rise > rules["max_null_rate_increase"]:
        out.append(_failure(name, "null_rate", round(now["null_rate"], 4), round(ref["null_rate"], 4),
                            f"{name}: {now['null_rate']:.1%} null against the reference's {ref['null_rate']:.1%} "
                            f"(+{rise:.1%}, at most +{rules['max_null_rate_increase']:.1%})"))
    if ref["kind"] == "number" and now["kind"] == "number" and ref.get("count") and now.get("count"):
        spread = ref["std"]
        moved = abs(now["mean"] - ref["mean"])
        shift = moved / spread if spread > 0 else (0.0 if moved <= 1e-12 * max(1.0, abs(ref["mean"])) else np.inf)
        if shift > rules["max_mean_shift"]:
            out.append(_failure(name, "mean_shift", round(float(shift), 3), rules["max_mean_shift"],
                                f"{name}: mean {now['mean']:.6g} against the reference's {ref['mean']:.6g}, "
                                f"{shift:.2f} of its standard deviations ({spread:.6g}; at most "
                                f"{rules['max_mean_shift']})"))
        values = numbers(column)
        outside = _share((values < ref["min"]) | (values > ref["max"]))
        if outside > rules["max_out_of_range"]:
            out.append(_failure(name, "range", round(outside, 4), rules["max_out_of_range"],
                                f"{name}: {outside:.1%} of the values outside the reference's range "
                                f"[{ref['min']:.6g}, {ref['max']:.6g}] (now [{now['min']:.6g}, {now['max']:.6g}]; "
                                f"at most {rules['max_out_of_range']:.1%})"))
    elif ref["kind"] == "category" and now["kind"] in ("category", "text"):
        present = column.drop_null()
        known = pa.array(list(ref["categories"]), type=present.type)
        unseen = pc.invert(pc.is_in(present, value_set=known))
        share = pc.sum(unseen).as_py() / len(present) if len(present) else 0.0
        if share > rules["max_new_categories"]:
            examples = pc.unique(pc.filter(present, unseen)).to_pylist()[:5]
            out.append(_failure(name, "categories", round(share, 4), rules["max_new_categories"],
                                f"{name}: {share:.1%} of the rows in categories the reference never had, such as "
                                f"{examples} (at most {rules['max_new_categories']:.1%})"))
    elif ref["kind"] == "text" and now["kind"] in ("category", "text"):
        before, after = ref["length"].get("mean"), now["length"].get("mean")
        if before and after is not None:
            change = abs(after - before) / before
            if change > rules["max_text_length_change"]:
                out.append(_failure(name, "text_length", round(change, 4), rules["max_text_length_change"],
                                    f"{name}: mean length {after:.1f} characters against the reference's "
                                    f"{before:.1f} ({change:+.0%} change; at most {rules['max_text_length_change']:.0%})"))
    return out


def _column_rules(name: str, column: pa.ChunkedArray, now: dict, limits: dict) -> list[dict]:
    out = []
    if "max_null_rate" in limits and now["null_rate"] > limits["max_null_rate"]:
        out.append(_failure(name, "max_null_rate", round(now["null_rate"], 4), limits["max_null_rate"],
                            f"{name}: {now['null_rate']:.1%} null, the spec allows {limits['max_null_rate']:.1%}"))
    if now["kind"] == "number":
        values = numbers(column)
        for rule, broken in (("min", lambda v, lim: v < lim), ("max", lambda v, lim: v > lim)):
            if rule in limits and (n := int(broken(values, limits[rule]).sum())):
                worst = now["min"] if rule == "min" else now["max"]
                out.append(_failure(name, rule, worst, limits[rule],
                                    f"{name}: {n} values {'below' if rule == 'min' else 'above'} the spec's {rule} "
                                    f"{limits[rule]} (the {'lowest' if rule == 'min' else 'highest'} {worst:.6g})"))
    elif now["kind"] in ("category", "text"):
        present = column.drop_null()
        if "categories" in limits:
            allowed = pa.array([str(c) for c in limits["categories"]], type=present.type)
            stray = pc.unique(pc.filter(present, pc.invert(pc.is_in(present, value_set=allowed)))).to_pylist()
            if stray:
                out.append(_failure(name, "categories", stray[:5], limits["categories"],
                                    f"{name}: values outside the spec's categories {limits['categories']}: {stray[:5]}"))
        if "max_length" in limits and len(present):
            longest = int(lengths(present).max())
            if longest > limits["max_length"]:
                out.append(_failure(name, "max_length", longest, limits["max_length"],
                                    f"{name}: a value of {longest} characters, the spec allows {limits['max_length']}"))
    return out


def check_snapshot(table: pa.Table, reference: dict[str, Any] | None, rules: dict[str, Any] | None = None,
                   required: Sequence[str] | None = None) -> dict[str, Any]:
    """The report on ``table``: ``passed``, ``failures`` (column, check, figure, limit, message) and
    ``notes`` (what was seen but stops nothing: new columns, no reference). ``required``: the
    reference's columns the model used (its features and target); another reference column gone
    (an extract's ``event_time``, an excluded id) is a note. None: every reference column."""
    rules = rules_with_defaults(rules)
    failures: list[dict] = []
    notes: list[str] = []
    if (least := rules.get("min_rows")) is not None and table.num_rows < least:
        failures.append(_failure(None, "min_rows", table.num_rows, least,
                                 f"{table.num_rows} rows, the spec asks for at least {least}"))
    profiles = {name: column_profile(table.column(name)) for name in table.column_names}
    if reference is None:
        notes.append("no reference snapshot (no version in production yet): the spec's rules only")
    else:
        gone = [n for n in reference["columns"] if n not in profiles]
        new = [n for n in profiles if n not in reference["columns"]]
        if required is not None:
            used = set(required)
            unused = [n for n in gone if n not in used]
            gone = [n for n in gone if n in used]
            if unused:
                notes.append(f"reference columns the model does not use are not in the new snapshot: {unused}")
        for name in gone:
            ref = reference["columns"][name]
            failures.append(_failure(name, "schema", None, ref["type"],
                                     f"{name} ({ref['type']}) is not in the new snapshot"
                                     + (f"; columns the reference did not have: {new} (renamed?)" if new else "")))
        if new:
            notes.append(f"columns the reference did not have: {new}")
        for name, now in profiles.items():
            ref = reference["columns"].get(name)
            if ref is None:
                continue
            if _base(ref["kind"]) != _base(now["kind"]):
                failures.append(_failure(name, "type", now["type"], ref["type"],
                                         f"{name}: {now['type']} against the reference's {ref['type']}"))
                continue
            failures.extend(_against_reference(name, table.column(name), now, ref, rules))
    for name, limits in rules["columns"].items():
        if name not in profiles:
            failures.append(_failure(name, "schema", None, "present",
                                     f"{name} has rules in the spec but is not in the snapshot"))
            continue
        failures.extend(_column_rules(name, table.column(name), profiles[name], limits))
    return {"format": REPORT_FORMAT, "rows": table.num_rows, "passed": not failures, "failures": failures,
            "notes": notes, "rules": rules}


def _base(kind: str) -> str:
    return "string" if kind in ("category", "text") else kind


def render(report: dict[str, Any]) -> str:
    """The report as the lines the task log and the failure show."""
    head = (f"data checks passed on {report['rows']} rows" if report["passed"] else
            f"data checks failed on {report['rows']} rows: {len(report['failures'])} failure(s)")
    lines = [head + (f" (reference: {report['reference']})" if report.get("reference") else "")]
    for f in report["failures"]:
        lines.append(f"  FAIL {f['column'] or '(table)'} [{f['check']}] {f['message']}")
    lines.extend(f"  note: {n}" for n in report["notes"])
    return "\n".join(lines)
