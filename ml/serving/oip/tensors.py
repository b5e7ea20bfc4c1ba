"""Open Inference Protocol tensors <-> a model's rows, for REST (JSON or binary) and gRPC alike.

One input tensor per feature of the model's declared schema, named after it, shape ``[-1]``
(``[N]`` or ``[N, 1]`` accepted): FP64 for a number (any integer or float type is taken), BOOL
for a boolean, BYTES (UTF-8) for a string, BYTES holding a JSON array of strings for a list of
strings, BYTES (ISO 8601) or a number (seconds since 1970) for a time. Outputs: ``label``, one
per row (BYTES, BOOL, INT64 or FP64, as the model's labels are), and for a classifier that gives
them ``probabilities`` (FP64, ``[N, classes]``). Every refusal is an ``InputError`` naming the
tensor and what to send instead; REST makes it a 4xx, gRPC INVALID_ARGUMENT.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml.models.interface import FeatureSchema
from ml.serving.inputs import Columns, InputError, _value

NUMPY = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
         "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
         "FP32": np.float32, "FP64": np.float64}
DATATYPES = (*NUMPY, "BYTES")
NUMERIC = frozenset(NUMPY) - {"BOOL"}
# the datatype each feature kind is declared with, and every datatype it takes
DECLARED = {"number": "FP64", "boolean": "BOOL", "string": "BYTES", "strings": "BYTES", "timestamp": "BYTES"}
ACCEPTED = {"number": NUMERIC, "boolean": frozenset({"BOOL"}), "string": frozenset({"BYTES"}),
            "strings": frozenset({"BYTES"}), "timestamp": NUMERIC | {"BYTES"}}
LABEL, PROBABILITIES = "label", "probabilities"
# gRPC typed contents: the field each datatype's values travel in
CONTENTS_FIELD = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
                  "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
                  "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
                  "FP64": "fp64_contents", "BYTES": "bytes_contents"}


@dataclass
class Tensor:
    """A decoded tensor: ``data`` is a flat NumPy array, or a list of ``bytes`` for BYTES."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any
    parameters: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Outputs:
    """What a served model answers with: the label's datatype, and the classes when it gives
    probabilities (None: no ``probabilities`` output)."""

    label_datatype: str
    classes: tuple | None

    @property
    def names(self) -> tuple[str, ...]:
        return (LABEL, PROBABILITIES) if self.classes else (LABEL,)

    def metadata(self) -> list[dict]:
        out = [{"name": LABEL, "datatype": self.label_datatype, "shape": [-1]}]
        if self.classes:
            out.append({"name": PROBABILITIES, "datatype": "FP64", "shape": [-1, len(self.classes)]})
        return out


def label_datatype(values: list) -> str:
    """The protocol datatype of a model's labels, from a sample of them."""
    kinds = {type(v) for v in values}
    if kinds and kinds <= {bool, np.bool_}:
        return "BOOL"
    if kinds and all(issubclass(k, (int, np.integer)) and k is not bool for k in kinds):
        return "INT64"
    if kinds and all(issubclass(k, (int, float, np.number)) for k in kinds):
        return "FP64"
    return "BYTES"


def input_metadata(schema: FeatureSchema) -> list[dict]:
    return [{"name": f.name, "datatype": DECLARED[f.kind], "shape": [-1]} for f in schema.features]


def element_count(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def check_shape(name: str, datatype: str, shape: Any) -> tuple[int, ...]:
    if datatype not in DATATYPES:
        raise InputError(f"input {name!r}: unknown datatype {datatype!r}; the protocol's are {', '.join(DATATYPES)}")
    if not isinstance(shape, (list, tuple)) or not all(type(d) is int and d >= 0 for d in shape):
        raise InputError(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    return tuple(shape)


def decode_bytes_elements(name: str, raw: bytes, count: int) -> list[bytes]:
    """BYTES in binary form: each element a 4-byte little-endian length, then that many bytes."""
    out, at, end = [], 0, len(raw)
    while at < end:
        if at + 4 > end:
            raise InputError(f"input {name!r}: binary BYTES data ends inside an element's 4-byte length")
        (size,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + size > end:
            raise InputError(f"input {name!r}: a BYTES element of {size} bytes runs past the end of the data")
        out.append(raw[at:at + size])
        at += size
    if len(out) != count:
        raise InputError(f"input {name!r}: {len(out)} BYTES elements for a shape of {count} elements")
    return out


def from_raw(name: str, datatype: str, shape: Any, raw: bytes) -> Tensor:
    """A tensor sent as raw bytes (REST binary extension, gRPC raw_input_contents)."""
    shape = check_shape(name, datatype, shape)
    count = element_count(shape)
    if datatype == "BYTES":
        return Tensor(name, datatype, shape, decode_bytes_elements(name, raw, count))
    dtype = np.dtype(NUMPY[datatype]).newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise InputError(f"input {name!r}: {len(raw)} bytes of {datatype} data; shape {list(shape)} needs "
                         f"{count * dtype.itemsize}")
    return Tensor(name, datatype, shape, np.frombuffer(raw, dtype=dtype))


def _flatten(values: Any) -> list:
    if not isinstance(values, list):
        return [values]
    if values and isinstance(values[0], list):
        flat: list = []
        for v in values:
            flat.extend(_flatten(v))
        return flat
    return values


def from_json(tensor: Any) -> Tensor:
    """A tensor of a REST JSON body: ``{"name", "datatype", "shape", "data"}`` (data flat or nested)."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise InputError('each input must be an object with "name", "datatype", "shape" and "data"')
    name, datatype = tensor["name"], tensor.get("datatype")
    shape = check_shape(name, datatype, tensor.get("shape"))
    if "data" not in tensor:
        raise InputError(f'input {name!r}: no "data" (nor binary data: parameters.binary_data_size)')
    values = _flatten(tensor["data"])
    if len(values) != element_count(shape):
        raise InputError(f"input {name!r}: {len(values)} values for shape {list(shape)} "
                         f"({element_count(shape)} elements)")
    if datatype == "BYTES":
        if not all(type(v) is str for v in values):
            raise InputError(f"input {name!r}: BYTES data in JSON must be strings")
        return Tensor(name, datatype, shape, [v.encode("utf-8", "surrogateescape") for v in values])
    try:
        data = np.asarray(values, dtype=NUMPY[datatype])
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"input {name!r}: data are not all {datatype} values") from None
    if datatype == "BOOL" and not all(type(v) is bool for v in values):
        raise InputError(f"input {name!r}: BOOL data must be true or false")
    return Tensor(name, datatype, shape, data)


def from_contents(name: str, datatype: str, shape: Any, contents) -> Tensor:
    """A gRPC tensor sent in its typed contents field."""
    shape = check_shape(name, datatype, shape)
    if datatype == "FP16":
        raise InputError(f"input {name!r}: FP16 travels only as raw_input_contents")
    values = getattr(contents, CONTENTS_FIELD[datatype])[:]  # a list: NumPy reads it 10x faster than the container
    if len(values) != element_count(shape):
        raise InputError(f"input {name!r}: {len(values)} values in {CONTENTS_FIELD[datatype]} for shape "
                         f"{list(shape)} ({element_count(shape)} elements)")
    if datatype == "BYTES":
        return Tensor(name, datatype, shape, values)
    return Tensor(name, datatype, shape, np.array(values, dtype=NUMPY[datatype]))


def rows_of(tensors: list[Tensor], schema: FeatureSchema, max_rows: int):
    """The model's payload (a float64 matrix for a numeric schema, else ``Columns``) from one
    tensor per feature, or an InputError naming what is wrong."""
    by_name: dict[str, Tensor] = {}
    for t in tensors:
        if t.name not in schema.index:
            raise InputError(f"unknown input {t.name!r}; this model's inputs are {schema.names} (GET the model's "
                             f"metadata for their datatypes)")
        if t.name in by_name:
            raise InputError(f"input {t.name!r} given twice")
        by_name[t.name] = t
    missing = [n for n in schema.names if n not in by_name]
    if missing:
        raise InputError(f"missing inputs {missing}; this model's inputs are {schema.names}")
    rows = None
    for f in schema.features:
        t = by_name[f.name]
        if t.datatype not in ACCEPTED[f.kind]:
            raise InputError(f"input {f.name!r} is {t.datatype}; this model takes {DECLARED[f.kind]} for it "
                             f"(a {f.kind} feature)")
        if len(t.shape) not in (1, 2) or (len(t.shape) == 2 and t.shape[1] != 1):
            raise InputError(f"input {f.name!r} has shape {list(t.shape)}; give [rows] or [rows, 1]")
        if rows is None:
            rows = t.shape[0]
        elif t.shape[0] != rows:
            raise InputError(f"input {f.name!r} has {t.shape[0]} rows, input {schema.names[0]!r} {rows}: every "
                             f"input must have the same number of rows")
    if not rows:
        raise InputError("no rows to predict")
    if rows > max_rows:
        raise InputError(f"{rows} rows in one request; the limit is {max_rows}", 413)
    if schema.numeric:
        matrix = np.empty((rows, schema.width), dtype=np.float64)
        for c, name in enumerate(schema.names):
            matrix[:, c] = by_name[name].data
        if not np.isfinite(matrix).all():  # one check for the common case; the details when it fails
            _check_not_finite(matrix, schema)
        return matrix
    values = []
    for c, f in enumerate(schema.features):
        t = by_name[f.name]
        if t.datatype == "BYTES":
            items = [_text(b, r, f.name) for r, b in enumerate(t.data)]
            if f.kind == "strings":
                items = [_string_list(s, r, f.name) for r, s in enumerate(items)]
        else:
            items = t.data.tolist()
        values.append([_value(v, r, c, schema) for r, v in enumerate(items)])
    return Columns(values, rows)


def _check_not_finite(matrix: np.ndarray, schema: FeatureSchema) -> None:
    """NaN is a missing value, allowed where the feature had missing values in training; an
    infinity never is."""
    for c, f in enumerate(schema.features):
        column = matrix[:, c]
        if np.isinf(column).any():
            row = int(np.flatnonzero(np.isinf(column))[0])
            raise InputError(f"row {row}, feature {f.name!r}: {column[row]} is not a finite number")
        if not schema.missing_ok[c] and np.isnan(column).any():
            row = int(np.flatnonzero(np.isnan(column))[0])
            raise InputError(f"row {row}, feature {f.name!r}: missing value (NaN) not allowed; this model "
                             f"never saw that feature missing in training")


def _text(raw: bytes, row: int, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"row {row}, feature {name!r}: not valid UTF-8 (at byte {exc.start}); send text "
                         f"encoded as UTF-8") from None


def _string_list(text: str, row: int, name: str) -> list:
    import json

    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, list):
        raise InputError(f'row {row}, feature {name!r}: a list of strings travels as BYTES holding a JSON array, '
                         f'such as ["a", "b"]')
    return value


def label_array(labels: list, datatype: str):
    """Labels as the array their datatype says (BYTES: a list of UTF-8 bytes)."""
    if datatype == "BYTES":
        return [str(v).encode("utf-8") for v in labels]
    return np.asarray(labels, dtype=NUMPY[datatype])


def encode_bytes_elements(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def raw_of(datatype: str, data) -> bytes:
    """A tensor's data as raw little-endian bytes (BYTES: length-prefixed elements)."""
    if datatype == "BYTES":
        return encode_bytes_elements(data)
    return np.ascontiguousarray(data, dtype=np.dtype(NUMPY[datatype]).newbyteorder("<")).tobytes()


def json_data(datatype: str, data) -> list:
    if datatype == "BYTES":
        return [b.decode("utf-8", "replace") for b in data]
    return np.asarray(data).ravel().tolist()
