"""Turn a request body into a model's input, or a 4xx naming the row and feature that is wrong.

Every feature's kind (``ml.models.FeatureSchema``: number, boolean, string, list of strings,
time) decides what its values may be. A numeric schema parses straight into a float64 matrix;
any other into ``Columns``, one list per feature, made an Arrow table once per batch.

``JSON_FORMATS`` is the one definition of the JSON bodies: the parser dispatches on it, its
error messages list it, and ``ml/serving/openapi.py`` builds the request schemas from it, so
what the document promises and what the server accepts cannot drift apart:
``{"instances": rows or records}``; ``{"inputs": rows, records or columns}``; a top-level list
of rows or records; MLflow's ``{"dataframe_records": records}`` and
``{"dataframe_split": {"columns": [...], "data": rows}}``. A row is a list of the features'
values in order, a record an object keyed by feature name, columns an object of equally long
lists. text/csv: one row per line, optionally a header of feature names (a list feature's cell is
a JSON array). ``null`` (or an empty CSV cell, but for strings) is a missing value, accepted only
for features that had missing values in training. Bytes that are not UTF-8 inside a string are
refused naming their row and feature, and the model is never called for a refused request.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml.models.interface import FeatureSchema


class InputError(ValueError):
    """A client error: ``status`` is the HTTP code, the message says what to fix."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Columns:
    """A request's rows for a model with non-numeric features: one list of values per feature,
    turned into an Arrow table (``table``) once per batch."""

    __slots__ = ("values", "rows")

    def __init__(self, values: list[list], rows: int):
        self.values, self.rows = values, rows

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, len(self.values)

    def table(self, schema: FeatureSchema):
        import pyarrow as pa

        return pa.table({f.name: pa.array(v, arrow_type(f.kind)) for f, v in zip(schema.features, self.values)})


def arrow_type(kind: str):
    """The Arrow type a request's values of ``kind`` become (pyarrow imported only for non-numeric
    schemas: numbers parse into a matrix)."""
    import pyarrow as pa

    return {"number": pa.float64(), "boolean": pa.bool_(), "string": pa.string(), "strings": pa.list_(pa.string()),
            "timestamp": pa.timestamp("us", tz="UTC")}[kind]


def combine(parts: list):
    """One payload of several requests' rows, in order."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], np.ndarray):
        return np.vstack(parts)
    values = [[] for _ in parts[0].values]
    for part in parts:
        for column, more in zip(values, part.values):
            column.extend(more)
    return Columns(values, sum(p.rows for p in parts))


def matrix_table(matrix: np.ndarray, schema: FeatureSchema):
    """A float64 matrix of a numeric schema as the Arrow table a model's ``predict`` takes."""
    import pyarrow as pa

    columns = {f.name: pa.array(matrix[:, i], from_pandas=True) for i, f in enumerate(schema.features)}
    return pa.table({name: column.cast(pa.bool_()) if f.kind == "boolean" else column
                     for (name, column), f in zip(columns.items(), schema.features)})


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


MAX_TEXT_CHARS = 100_000  # the default longest string a feature may carry (ServeConfig.max_text_chars)


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


def _boolean_number(value: Any, row: int, col: int, schema: FeatureSchema) -> float:
    if value is True or value is False:
        return float(value)
    if value is None:
        return _missing(row, col, schema)
    if (type(value) is int or type(value) is float) and value in (0, 1):
        return float(value)
    raise InputError(f"row {row}, feature {schema.names[col]!r}: {value!r} is not true or false")


def _missing(row: int, col: int, schema: FeatureSchema) -> float:
    if not schema.missing_ok[col]:
        raise InputError(
            f"row {row}, feature {schema.names[col]!r}: missing value (null/NaN) not allowed; "
            f"this model never saw that feature missing in training"
        )
    return math.nan


def _value(value: Any, row: int, col: int, schema: FeatureSchema) -> Any:
    """A feature's value for the Arrow table of a non-numeric schema (None: missing)."""
    kind = schema.kinds[col]
    if kind == "number":
        number = _number(value, row, col, schema)
        return None if number != number else number
    if kind == "boolean":
        flag = _boolean_number(value, row, col, schema)
        return None if flag != flag else flag == 1.0
    if value is None:
        _missing(row, col, schema)
        return None
    if kind == "string":
        return _text(value, row, col, schema)
    if kind == "strings":
        if not isinstance(value, list):
            raise InputError(f"row {row}, feature {schema.names[col]!r}: {_kind_of(value)} given, but this feature is "
                             f"a list of strings")
        return [_text(v, row, col, schema, " (an item of the list)") for v in value]
    return _timestamp(value, row, col, schema)


def _kind_of(value: Any) -> str:
    return {list: "a list", dict: "an object", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def _text(value: Any, row: int, col: int, schema: FeatureSchema, where: str = "") -> str:
    if type(value) is not str:
        raise InputError(f"row {row}, feature {schema.names[col]!r}{where}: {_kind_of(value)} given, but this feature "
                         f"is a string")
    limit = getattr(schema, "max_text_chars", MAX_TEXT_CHARS)
    if len(value) > limit:
        raise InputError(f"row {row}, feature {schema.names[col]!r}{where}: {len(value):,} characters, more than "
                         f"the {limit:,}-character limit (ML_SERVE_MAX_TEXT_CHARS)", 413)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate: bytes that were not UTF-8 (see parse_json)
            raise InputError(f"row {row}, feature {schema.names[col]!r}{where}: not valid UTF-8 (at character "
                             f"{exc.start}); send text encoded as UTF-8") from None
    return value


def _timestamp(value: Any, row: int, col: int, schema: FeatureSchema):
    from datetime import datetime, timezone

    if type(value) is int or type(value) is float:
        if not math.isfinite(value):
            raise InputError(f"row {row}, feature {schema.names[col]!r}: {value} is not a time")
        return datetime.fromtimestamp(value, timezone.utc)
    if type(value) is str:
        try:
            stamp = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
        except ValueError:
            raise InputError(f"row {row}, feature {schema.names[col]!r}: {value[:40]!r} is not an ISO 8601 time "
                             f"(2026-12-01T10:00:00Z) nor seconds since 1970") from None
        return stamp.replace(tzinfo=timezone.utc) if stamp.tzinfo is None else stamp.astimezone(timezone.utc)
    raise InputError(f"row {row}, feature {schema.names[col]!r}: {_kind_of(value)} given, but this feature is a "
                     f"time (ISO 8601 or seconds since 1970)")


def _converters(schema: FeatureSchema) -> list:
    return [_boolean_number if k == "boolean" else _number for k in schema.kinds]


def _rows(rows: list, schema: FeatureSchema, lists: bool = True, records: bool = True):
    """Rows (``lists``) and/or records (``records``), as the body's format allows: a float64
    matrix for a numeric schema, else ``Columns``."""
    numeric = schema.numeric
    convert = _converters(schema) if numeric else [_value] * schema.width
    if numeric:
        out = np.empty((len(rows), schema.width), dtype=np.float64)
    else:
        columns = [[] for _ in range(schema.width)]
    for r, row in enumerate(rows):
        if isinstance(row, dict) and records:
            values = _record(row, r, schema, convert)
        elif isinstance(row, list) and lists:
            if len(row) != schema.width:
                raise InputError(f"row {r} has {len(row)} values; the model expects {schema.width} features "
                                 f"in this order: {schema.names}")
            values = [convert[c](v, r, c, schema) for c, v in enumerate(row)]
        else:
            shapes = [s for s, ok in ((f"a list of {schema.width} values", lists),
                                      ("an object keyed by feature name", records)) if ok]
            raise InputError(f"row {r} must be " + " or ".join(shapes))
        if numeric:
            out[r] = values
        else:
            for column, value in zip(columns, values):
                column.append(value)
    return out if numeric else Columns(columns, len(rows))


def _record(record: dict, r: int, schema: FeatureSchema, convert: list) -> list:
    if len(record) != schema.width or any(k not in schema.index for k in record):
        missing = [n for n in schema.names if n not in record]
        unknown = [k for k in record if k not in schema.index]
        parts = []
        if missing:
            parts.append(f"missing features {missing}")
        if unknown:
            parts.append(f"unknown features {unknown}")
        raise InputError(f"row {r}: " + ", ".join(parts))
    return [convert[c](record[n], r, c, schema) for c, n in enumerate(schema.names)]


def _columns(columns: dict, schema: FeatureSchema):
    missing = [n for n in schema.names if n not in columns]
    unknown = [k for k in columns if k not in schema.index]
    if missing or unknown:
        raise InputError(f"inputs: missing features {missing}, unknown features {unknown}")
    lengths = {len(v) if isinstance(v, list) else -1 for v in columns.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise InputError("inputs: every feature must map to a list of values, all of the same length")
    n = lengths.pop()
    return _rows([[columns[name][i] for name in schema.names] for i in range(n)], schema)


def _load_json(body: bytes, schema: FeatureSchema):
    import orjson

    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "utf-8" in str(exc).lower() and not schema.numeric:
            # bytes that are not UTF-8 inside a string: parse with them escaped, so the text check
            # names the row and the feature that holds them
            import json

            try:
                return json.loads(body.decode("utf-8", errors="surrogateescape"))
            except ValueError:
                pass
        raise InputError(f"body is not valid JSON: {exc}") from None


def parse_json(body: bytes, schema: FeatureSchema):
    doc = _load_json(body, schema)
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


def _csv_cell(cell: str, r: int, c: int, schema: FeatureSchema) -> Any:
    """A CSV cell as the JSON value it stands for: a number, true/false, a string, or for a list
    feature a JSON array of strings; an empty cell is missing (an empty string, for a string)."""
    kind = schema.kinds[c]
    if kind in ("string", "timestamp"):
        return cell if cell != "" or kind == "string" else None
    cell = cell.strip()
    if cell == "":
        return None
    if kind == "strings":
        import json

        try:
            return json.loads(cell)
        except ValueError:
            raise InputError(f"CSV row {r}, feature {schema.names[c]!r}: a list feature's cell is a JSON array of "
                             f'strings, such as ["a", "b"]') from None
    if kind == "boolean" and cell.lower() in ("true", "false"):
        return cell.lower() == "true"
    try:
        return float(cell)
    except ValueError:
        what = "true, false, 0 or 1" if kind == "boolean" else "a number"
        raise InputError(f"CSV row {r}, feature {schema.names[c]!r}: {cell[:40]!r} is not {what}") from None


def parse_csv(body: bytes, schema: FeatureSchema):
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        if schema.numeric:
            raise InputError("text/csv body is not UTF-8") from None
        text = body.decode("utf-8", errors="surrogateescape")  # the text check names the cell
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
        rows.append([_csv_cell(cell, r, c, schema) for c, cell in enumerate(cells)])
    return _checked(_rows(rows, schema))


def _checked(matrix):
    if matrix.shape[0] == 0:
        raise InputError("no rows to predict")
    return matrix


def parse_body(body: bytes, content_type: str, schema: FeatureSchema, max_rows: int):
    """A float64 matrix (numeric schemas) or ``Columns``, or InputError naming what is wrong.
    A string longer than ``schema.max_text_chars`` (set by the server) is refused, naming it."""
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
