"""A table's column profiles: what the data checks and the drift measure compare a new table with.

A profile is JSON (no pickle, no code): per column its Arrow type, its kind, its null rate, and
by kind its range and moments (numbers), its category shares (a string column of few distinct
values), or its text lengths. Numbers and text lengths also keep the reference's decile edges
and the share of rows in each bin, so drift is measured against the reference's own bins.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PROFILE_FORMAT = "ml.data_profile/1"
# a string column with at most this many distinct values, each seen twice on average, is categorical
CATEGORY_LIMIT = 50
BINS = 10


def kind_of(arrow_type: pa.DataType) -> str:
    """number, string (category or text by its values), time or other."""
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type) \
            or pa.types.is_boolean(arrow_type):
        return "number"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type) or pa.types.is_time(arrow_type):
        return "time"
    return "other"


def numbers(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The column as float64, nulls and NaN dropped (what models see as missing)."""
    values = column.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    return values[~np.isnan(values)]


def lengths(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Each non-null string's length in characters."""
    return pc.utf8_length(column.drop_null()).to_numpy(zero_copy_only=False).astype(np.float64)


def bins(values: np.ndarray) -> dict[str, list[float]]:
    """Decile edges of ``values`` (ties merged) and the share of values in each bin they make."""
    if not len(values):
        return {"edges": [], "shares": []}
    edges = np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1)[1:-1]))
    return {"edges": edges.tolist(), "shares": binned_shares(values, edges.tolist()).tolist()}


def binned_shares(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Shares of ``values`` in the bins (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    counts = np.bincount(np.searchsorted(np.asarray(edges, np.float64), values, side="left"),
                         minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def _numbers_profile(values: np.ndarray) -> dict[str, Any]:
    if not len(values):
        return {"count": 0}
    return {"count": int(len(values)), "min": float(values.min()), "max": float(values.max()),
            "mean": float(values.mean()), "std": float(values.std()), **bins(values)}


def column_profile(column: pa.ChunkedArray) -> dict[str, Any]:
    rows = len(column)
    kind = kind_of(column.type)
    profile: dict[str, Any] = {"type": str(column.type), "kind": kind}
    nulls = column.null_count
    if kind == "number":
        values = numbers(column)
        nulls = rows - len(values)  # NaN is missing too
        profile.update(_numbers_profile(values))
    elif kind == "string":
        counts = pc.value_counts(column.drop_null())
        distinct = len(counts)
        present = rows - nulls
        if distinct and distinct <= CATEGORY_LIMIT and distinct * 2 <= present:
            profile["kind"] = "category"
            values = counts.field("values").to_pylist()
            shares = (counts.field("counts").to_numpy(zero_copy_only=False) / present).tolist()
            profile["categories"] = dict(sorted(zip(values, shares)))
        else:
            profile["kind"] = "text"
        profile["length"] = _numbers_profile(lengths(column))
    profile["nulls"] = int(nulls)
    profile["null_rate"] = nulls / rows if rows else 0.0
    return profile


def profile_table(table: pa.Table) -> dict[str, Any]:
    """Every column's profile, in the table's column order."""
    return {"format": PROFILE_FORMAT, "rows": table.num_rows,
            "columns": {name: column_profile(table.column(name)) for name in table.column_names}}
