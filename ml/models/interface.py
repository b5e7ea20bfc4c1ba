"""The model interface every model implements, built-in or a team's own.

A model is fitted on an Arrow table of feature columns and the target, saves itself as data
files into a directory it is given, loads from such a directory (already verified against the
manifest), and predicts on a batch: an Arrow table of its declared feature columns, one output
per row. Its code comes from the image (``package.module:Class``, allowed by the deployment:
``ml/models/classes.py``); the artifact holds only data. See docs/custom-models.md.

The feature schema (names, kinds, which may be missing) is what the server validates requests
against and builds its OpenAPI document from: the trainer derives it from the snapshot, the model
may narrow it (``declare_features``), and the manifest records it.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

# What a feature column may hold, by the values a request carries for it.
KINDS = ("number", "boolean", "string", "strings", "timestamp")
TASKS = ("classification", "regression")


class ModelContractError(ValueError):
    """A model broke the interface's contract; the message names the model and what it did."""


def kind_of(arrow_type) -> str | None:
    """The kind of an Arrow type, or None where no kind fits (a struct, a binary column, ...)."""
    import pyarrow as pa

    t = arrow_type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and (
            pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)):
        return "strings"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "timestamp"
    return None


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str  # one of KINDS
    nullable: bool = False  # a request may leave it missing (null): it was missing in training
    type: str = ""  # the snapshot's Arrow type, as recorded

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "kind": self.kind, "nullable": self.nullable}


class FeatureSchema:
    """The features a model takes, in order. One definition for validation, messages and OpenAPI."""

    def __init__(self, features: Sequence[Feature]):
        self.features = tuple(features)
        self.names = [f.name for f in self.features]
        self.index = {n: i for i, n in enumerate(self.names)}
        self.kinds = [f.kind for f in self.features]
        self.missing_ok = [f.nullable for f in self.features]
        # every feature a number or a boolean: requests parse straight into a float64 matrix
        self.numeric = all(k in ("number", "boolean") for k in self.kinds)

    @property
    def width(self) -> int:
        return len(self.features)

    def to_manifest(self) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self.features]

    @classmethod
    def from_manifest(cls, fields: Sequence[dict[str, Any]], nullable: set[str] | None = None) -> FeatureSchema:
        """From a manifest's schema; artifacts written before kinds existed held numbers only, and
        name their nullable features in ``features_with_missing`` (``nullable``)."""
        return cls([Feature(f["name"], f.get("kind", "number"),
                            bool(f.get("nullable", f["name"] in (nullable or ()))), f.get("type", ""))
                    for f in fields])

    @classmethod
    def from_table(cls, table) -> FeatureSchema:
        """Every column of ``table``; nullable where the column holds a null (or a NaN)."""
        import pyarrow.compute as pc

        features = []
        for field, column in zip(table.schema, table.columns):
            kind = kind_of(field.type)
            if kind is None:
                raise ModelContractError(f"feature column {field.name!r} has type {field.type}, which no model can "
                                         f"take; use one of {KINDS}, cast it in the extract query, or exclude it")
            missing = column.null_count > 0
            if not missing and kind == "number" and field.type.id in (10, 11, 12):  # half, float, double
                missing = bool(pc.any(pc.is_nan(column)).as_py())
            features.append(Feature(field.name, kind, missing, str(field.type)))
        return cls(features)


class Model(abc.ABC):
    """A model: about 30 lines for a team's own (docs/custom-models.md has a complete one).

    Construct with the model's parameters (the training config's ``params``; a ``seed`` parameter,
    when the constructor has one, gets the config's seed). ``fit`` learns, ``save`` writes data
    files only (JSON, ``.npy``/``.npz`` read back with ``allow_pickle=False``, skops, safetensors,
    ONNX, ...: never a pickle), ``load`` reads back only what ``save`` wrote, ``predict`` gives one
    output per row. The trainer checks each of these (ml/models/contract.py) before anything is
    registered; the server checks the output length of every batch.
    """

    #: "classification" or "regression"; an instance may set it from its parameters
    task: ClassVar[str] = "classification"
    #: the feature kinds this model can take (see KINDS); the trainer refuses others, naming them
    accepts: ClassVar[frozenset[str]] = frozenset(KINDS)

    @abc.abstractmethod
    def fit(self, features, target) -> None:
        """Learn from ``features`` (a pyarrow.Table of the feature columns) and ``target`` (a NumPy
        array, one value per row)."""

    @abc.abstractmethod
    def predict(self, features) -> Sequence:
        """One output per row of ``features`` (a pyarrow.Table with the declared columns):
        a class label or a number."""

    def predict_proba(self, features):
        """Class probabilities (rows x ``classes``), or None when the model gives none."""
        return None

    @property
    def classes(self) -> list | None:
        """Classification: the labels, in ``predict_proba``'s column order (None: the labels seen)."""
        return None

    @abc.abstractmethod
    def save(self, directory: Path) -> None:
        """Write the fitted state into ``directory`` (it exists and is empty) as data files only."""

    @classmethod
    @abc.abstractmethod
    def load(cls, directory: Path) -> Model:
        """The model ``save`` wrote into ``directory``, reading only files in it."""

    def predict_matrix(self, matrix):
        """Optional speed-up where every feature is a number or boolean: the same outputs as
        ``predict`` from a float64 matrix (columns in feature order, NaN where missing), with no
        Arrow table built per batch. The server uses it only where a class overrides it."""
        raise NotImplementedError

    def declare_features(self, schema: FeatureSchema) -> FeatureSchema:
        """The schema requests are validated against, from the training columns' schema. The
        default refuses kinds outside ``accepts``; override to narrow it further."""
        refused = [f"{f.name} ({f.kind})" for f in schema.features if f.kind not in self.accepts]
        if refused:
            raise ModelContractError(
                f"{type(self).__name__} takes features of kinds {sorted(self.accepts)}; not usable: {refused}. "
                f"Exclude them (config 'exclude'), or choose a model that takes them")
        return schema
