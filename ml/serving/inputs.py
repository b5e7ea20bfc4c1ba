"""Turn a request body into a feature matrix, or a 4xx naming what is wrong.

``JSON_FORMATS`` is the one definition of the JSON bodies: the parser dispatches on it, its
error messages list it, and ``ml/serving/openapi.py`` builds the request schemas from it, so
what the document promises and what the server accepts cannot drift apart:
``{"instances": rows or records}``; ``{"inputs": rows, records or columns}``; a top-level list
of rows or records; MLflow's ``{"dataframe_records": records}`` and
``{"dataframe_split": {"columns": [...], "data": rows}}``. A row is a list of the features'
values in order, a record an object keyed by feature name, columns an object of equally long
lists. text/csv: one row per line, optionally a header of feature names. ``null`` (or an empty
CSV cell) is a missing value, accepted only for features that had missing values in training.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np


class InputError(ValueError):
    """A client error: ``status`` is the HTTP code, the message says what to fix."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class FeatureSchema:
    def __init__(self, names: list[str], missing_allowed: set[str]):
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.missing_ok = [n in missing_allowed for n in self.names]

    @property
    def width(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class JsonFormat:
    """A JSON body: ``{key: value}`` (``key`` None: the body is the value), where the value may
    take any of ``shapes`` ("rows": a list of rows and/or records, "records": a list of
    records, "columns": an object of lists, "split": ``{"columns", "data"}``)."""

    key: str | None
    shapes: tuple[str, ...]
    summary: str


JSON_FORMATS = (
    JsonFormat("instances", ("rows",), "rows (lists in feature order) or records (objects by feature name)"),
    JsonFormat("inputs", ("rows", "columns"), "rows, records, or columns (feature name -> list of values)"),
    JsonFormat("dataframe_records", ("records",), "MLflow's records: objects keyed by feature name"),
    JsonFormat("dataframe_split", ("split",), 'MLflow\'s split: {"columns": feature names in order, "data": rows}'),
    JsonFormat(None, ("rows",), "a bare list of rows or records"),
)
_BY_KEY = {f.key: f for f in JSON_FORMATS if f.key}
_KEYS_TEXT = ", ".join(f'"{k}"' for k in _BY_KEY)


def _number(value: Any, row: int, col: int, schema: FeatureSchema) -> float:
    if type(value) is float or type(value) is int:  # bool is deliberately not a number here
        if not math.isfinite(value):
            if math.isnan(value):
                return _missing(row, col, schema)
            raise InputError(f"row {row}, feature {schema.names[col]!r}: {value} is not a finite number")
        return float(value)
    if value is None:
        return _missing(row, col, schema)
    raise InputError(f"row {row}, feature {schema.names[col]!r}: {value!r} is not a number")


def _missing(row: int, col: int, schema: FeatureSchema) -> float:
    if not schema.missing_ok[col]:
        raise InputError(
            f"row {row}, feature {schema.names[col]!r}: missing value (null/NaN) not allowed; "
            f"this model never saw that feature missing in training"
        )
    return math.nan


def _rows(rows: list, schema: FeatureSchema, lists: bool = True, records: bool = True) -> np.ndarray:
    """Rows (``lists``) and/or records (``records``), as the body's format allows."""
    out = np.empty((len(rows), schema.width), dtype=np.float64)
    for r, row in enumerate(rows):
        if isinstance(row, dict) and records:
            out[r] = _record(row, r, schema)
        elif isinstance(row, list) and lists:
            if len(row) != schema.width:
                raise InputError(f"row {r} has {len(row)} values; the model expects {schema.width} features "
                                 f"in this order: {schema.names}")
            out[r] = [_number(v, r, c, schema) for c, v in enumerate(row)]
        else:
            shapes = [s for s, ok in ((f"a list of {schema.width} numbers", lists),
                                      ("an object keyed by feature name", records)) if ok]
            raise InputError(f"row {r} must be " + " or ".join(shapes))
    return out


def _record(record: dict, r: int, schema: FeatureSchema) -> list[float]:
    if len(record) != schema.width or any(k not in schema.index for k in record):
        missing = [n for n in schema.names if n not in record]
        unknown = [k for k in record if k not in schema.index]
        parts = []
        if missing:
            parts.append(f"missing features {missing}")
        if unknown:
            parts.append(f"unknown features {unknown}")
        raise InputError(f"row {r}: " + ", ".join(parts))
    return [_number(record[n], r, c, schema) for c, n in enumerate(schema.names)]


def _columns(columns: dict, schema: FeatureSchema) -> np.ndarray:
    missing = [n for n in schema.names if n not in columns]
    unknown = [k for k in columns if k not in schema.index]
    if missing or unknown:
        raise InputError(f"inputs: missing features {missing}, unknown features {unknown}")
    lengths = {len(v) if isinstance(v, list) else -1 for v in columns.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise InputError("inputs: every feature must map to a list of values, all of the same length")
    n = lengths.pop()
    return _rows([[columns[name][i] for name in schema.names] for i in range(n)], schema)


def parse_json(body: bytes, schema: FeatureSchema) -> np.ndarray:
    import orjson

    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"body is not valid JSON: {exc}") from None
    if isinstance(doc, list):
        return _checked(_rows(doc, schema))
    if not isinstance(doc, dict):
        raise InputError(f"JSON body must be an object with one of {_KEYS_TEXT}, or a list of rows")
    keys = [k for k in doc if k in _BY_KEY]
    if len(keys) != 1 or len(doc) != 1:
        raise InputError(f"JSON body must be an object with exactly one of {_KEYS_TEXT} (or a list of rows); "
                         f"got keys {sorted(doc)}")
    fmt, value = _BY_KEY[keys[0]], doc[keys[0]]
    if "split" in fmt.shapes:
        if not isinstance(value, dict) or set(value) - {"index"} != {"columns", "data"} \
                or not isinstance(value["data"], list):
            raise InputError(f'"{fmt.key}" needs "columns" (feature names) and "data" (a list of rows), '
                             f'and at most "index" besides')
        if value["columns"] != schema.names:
            raise InputError(f"{fmt.key} columns must be exactly {schema.names}")
        return _checked(_rows(value["data"], schema, records=False))
    if isinstance(value, dict) and "columns" in fmt.shapes:
        return _checked(_columns(value, schema))
    if not isinstance(value, list):
        raise InputError(f'"{fmt.key}" must be {fmt.summary}')
    return _checked(_rows(value, schema, lists="rows" in fmt.shapes))


def parse_csv(body: bytes, schema: FeatureSchema) -> np.ndarray:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("text/csv body is not UTF-8") from None
    try:
        lines = [row for row in csv.reader(io.StringIO(text, newline="")) if row]
    except csv.Error as exc:
        raise InputError(f"text/csv body is not valid CSV: {exc}") from None
    if lines and [c.strip() for c in lines[0]] == schema.names:
        lines = lines[1:]
    rows = []
    for r, cells in enumerate(lines):
        if len(cells) != schema.width:
            raise InputError(f"CSV row {r} has {len(cells)} values; the model expects {schema.width}: {schema.names}")
        row = []
        for c, cell in enumerate(cells):
            cell = cell.strip()
            if cell == "":
                row.append(None)
                continue
            try:
                row.append(float(cell))
            except ValueError:
                raise InputError(f"CSV row {r}, feature {schema.names[c]!r}: {cell!r} is not a number") from None
        rows.append(row)
    return _checked(_rows(rows, schema))


def _checked(matrix: np.ndarray) -> np.ndarray:
    if matrix.shape[0] == 0:
        raise InputError("no rows to predict")
    return matrix


def parse_body(body: bytes, content_type: str, schema: FeatureSchema, max_rows: int) -> np.ndarray:
    if not body:
        raise InputError("empty body: send JSON rows or CSV")
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json":
        matrix = parse_json(body, schema)
    elif media == "text/csv":
        matrix = parse_csv(body, schema)
    else:
        raise InputError(f"unsupported content type {content_type!r}: use application/json or text/csv", 415)
    if matrix.shape[0] > max_rows:
        raise InputError(f"{matrix.shape[0]} rows in one request; the limit is {max_rows}", 413)
    return matrix
