"""The built-in ``sklearn`` model: one of eight scikit-learn estimators on numbers, booleans,
timestamps and categorical strings.

Columns become one float64 matrix (``Encoding``): numbers and booleans as they are (null: NaN),
timestamps as seconds since the epoch, and string columns as categories learnt in training (the
``max_categories`` most frequent): ordinal codes for tree models, one-hot columns for linear
ones; a category never seen in training counts as missing. The encoding is JSON beside the
estimator's skops file, so the artifact stays data-only and byte-for-byte reproducible. With
numeric columns only, the matrix is the columns themselves, so the server predicts from the matrix
it parses (``predict_matrix``) and keeps the compiled tree engine (ml/tree_engine.py).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.models.interface import Model, ModelContractError


@dataclass(frozen=True)
class EstimatorSpec:
    import_path: str
    task: str  # "classification" | "regression"
    handles_missing: bool = False  # accepts NaN natively: no imputer in front
    needs_scaling: bool = False  # linear: scaled inputs, categories one-hot


ESTIMATORS: dict[str, EstimatorSpec] = {
    "LogisticRegression": EstimatorSpec("sklearn.linear_model.LogisticRegression", "classification", needs_scaling=True),
    "RandomForestClassifier": EstimatorSpec("sklearn.ensemble.RandomForestClassifier", "classification"),
    "GradientBoostingClassifier": EstimatorSpec("sklearn.ensemble.GradientBoostingClassifier", "classification"),
    "HistGradientBoostingClassifier": EstimatorSpec(
        "sklearn.ensemble.HistGradientBoostingClassifier", "classification", handles_missing=True
    ),
    "LinearRegression": EstimatorSpec("sklearn.linear_model.LinearRegression", "regression", needs_scaling=True),
    "Ridge": EstimatorSpec("sklearn.linear_model.Ridge", "regression", needs_scaling=True),
    "RandomForestRegressor": EstimatorSpec("sklearn.ensemble.RandomForestRegressor", "regression"),
    "HistGradientBoostingRegressor": EstimatorSpec(
        "sklearn.ensemble.HistGradientBoostingRegressor", "regression", handles_missing=True
    ),
}


def build_estimator(name: str, params: dict[str, Any], seed: int):
    """The estimator with its params set; unknown or ill-typed params raise ValueError naming them."""
    if name not in ESTIMATORS:
        raise ValueError(f"estimator {name!r} is not allowed; choose one of {sorted(ESTIMATORS)}")
    module_name, cls_name = ESTIMATORS[name].import_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), cls_name)
    try:
        estimator = cls(**params)
    except TypeError as exc:
        raise ValueError(f"{name}: {exc}; valid params are {sorted(cls().get_params())}") from None
    if "random_state" in estimator.get_params() and "random_state" not in params:
        estimator.set_params(random_state=seed)
    try:
        estimator._validate_params()  # scikit-learn's own type/range check of every param
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: {exc}") from None
    return estimator


class Encoding:
    """Feature columns -> one float64 matrix, learnt on the training table; JSON round trip."""

    def __init__(self, columns: list[dict[str, Any]]):
        self.columns = columns  # [{"name", "kind", "encode": "value"|"seconds"|"ordinal"|"onehot", "categories"?}]
        self.identity = all(c["encode"] == "value" for c in columns)

    @classmethod
    def fit(cls, table, schema, spec: EstimatorSpec, max_categories: int) -> Encoding:
        import pyarrow.compute as pc

        columns = []
        for feature in schema.features:
            entry: dict[str, Any] = {"name": feature.name, "kind": feature.kind}
            if feature.kind == "string":
                counts = pc.value_counts(table.column(feature.name).drop_null()).to_pylist()
                ranked = sorted(counts, key=lambda c: (-c["counts"], c["values"]))[:max_categories]
                entry["categories"] = sorted(c["values"] for c in ranked)
                entry["encode"] = "onehot" if spec.needs_scaling else "ordinal"
                entry["unknown"] = "nan" if spec.handles_missing else -1.0
            else:
                entry["encode"] = "seconds" if feature.kind == "timestamp" else "value"
            columns.append(entry)
        return cls(columns)

    def matrix(self, table, order: str = "C"):
        """The float64 matrix, row-major, or column-major (``order="F"``: each column one copy,
        what the compiled tree engine reads without another)."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        from ml.snapshots import float_values

        parts = []
        for c in self.columns:
            column = table.column(c["name"])
            if c["encode"] == "value":
                parts.append(float_values(column))
            elif c["encode"] == "seconds":
                micros = column.cast(pa.timestamp("us")).cast(pa.int64()).to_numpy(zero_copy_only=False)
                parts.append(micros.astype(np.float64) / 1e6)
            else:
                codes = pc.index_in(column, value_set=pa.array(c["categories"], pa.string()))
                if c["encode"] == "ordinal":
                    unknown = np.nan if c["unknown"] == "nan" else float(c["unknown"])
                    parts.append(codes.cast(pa.float64()).fill_null(unknown).to_numpy(zero_copy_only=False))
                else:
                    index = codes.fill_null(-1).to_numpy(zero_copy_only=False)
                    onehot = np.zeros((len(index), len(c["categories"])))
                    known = index >= 0
                    onehot[np.nonzero(known)[0], index[known]] = 1.0
                    parts.append(onehot)
        if not parts:
            return np.empty((table.num_rows, 0))
        if order == "C":
            return np.column_stack(parts)
        out = np.empty((table.num_rows, sum(1 if p.ndim == 1 else p.shape[1] for p in parts)), order="F")
        at = 0
        for part in parts:
            width = 1 if part.ndim == 1 else part.shape[1]
            out[:, at:at + width] = part.reshape(len(part), width)
            at += width
        return out

    def to_json(self) -> bytes:
        return json.dumps({"columns": self.columns}, indent=1, sort_keys=True, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Encoding:
        return cls(json.loads(data)["columns"])


class SklearnModel(Model):
    """One of ``ESTIMATORS``, behind imputation and scaling where it needs them."""

    accepts = frozenset({"number", "boolean", "string", "timestamp"})
    MODEL_FILE, ENCODING_FILE = "model.skops", "encoding.json"

    def __init__(self, estimator: str = "HistGradientBoostingClassifier", params: dict[str, Any] | None = None,
                 seed: int = 42, max_categories: int = 64):
        if not isinstance(max_categories, int) or max_categories < 1:
            raise ValueError(f"max_categories must be a positive integer, got {max_categories!r}")
        self.estimator_name, self.params, self.seed, self.max_categories = estimator, dict(params or {}), seed, \
            max_categories
        self.pipeline = self._pipeline(build_estimator(estimator, self.params, seed))
        self.encoding: Encoding | None = None

    @property
    def spec(self) -> EstimatorSpec:
        return ESTIMATORS[self.estimator_name]

    @property
    def task(self) -> str:  # type: ignore[override]
        return self.spec.task

    def _pipeline(self, estimator):
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        steps = []
        if not self.spec.handles_missing:
            steps.append(("impute", SimpleImputer(strategy="median", keep_empty_features=True)))
        if self.spec.needs_scaling:
            steps.append(("scale", StandardScaler()))
        steps.append(("model", estimator))
        return Pipeline(steps)

    def declare_features(self, schema):
        schema = super().declare_features(schema)
        self._schema = schema
        return schema

    def fit(self, features, target) -> None:
        from ml.models.interface import FeatureSchema

        schema = getattr(self, "_schema", None) or FeatureSchema.from_table(features)
        self.encoding = Encoding.fit(features, schema, self.spec, self.max_categories)
        try:
            self.pipeline.fit(self.encoding.matrix(features), target)
        except ValueError as exc:  # scikit-learn's message names the problem (e.g. NaN, param value)
            raise ModelContractError(f"{self.estimator_name} could not be fitted: {exc}") from None

    def _final(self, matrix):
        """The matrix through the pipeline's transforms, and its final estimator: what
        ``Pipeline.predict`` does, without its per-call metadata routing and deep copy of the
        estimator tags (20 ``id()`` calls a request, each an audit event once a hook is in)."""
        for _, step in self.pipeline.steps[:-1]:
            matrix = step.transform(matrix)
        return matrix, self.pipeline.steps[-1][1]

    def predict(self, features):
        # column-major for the compiled tree engine (no row-major copy); row-major for the rest,
        # whose BLAS calls could round differently on another layout
        engine = "_predict_iterations" in vars(self.pipeline.steps[-1][1])
        matrix, estimator = self._final(self.encoding.matrix(features, "F" if engine else "C"))
        return estimator.predict(matrix)

    def trees_document(self) -> dict[str, Any] | None:
        """The fitted model as data for the compiled tree engine (``ml.tree_engine.TreeModel``), or
        None: only a lone HistGradientBoosting estimator on numeric (and boolean) columns has one."""
        if not self.encoding.identity or len(self.pipeline.steps) != 1:
            return None
        from ml.tree_engine import Unsupported, trees_document

        try:
            return trees_document(self.pipeline.steps[-1][1], [c["name"] for c in self.encoding.columns])
        except Unsupported:
            return None

    def predict_matrix(self, matrix):
        if not self.encoding.identity:
            raise NotImplementedError
        matrix, estimator = self._final(matrix)
        return estimator.predict(matrix)

    def predict_proba(self, features):
        if not hasattr(self.pipeline, "predict_proba"):
            return None
        return self.pipeline.predict_proba(self.encoding.matrix(features))

    @property
    def classes(self):
        classes = getattr(self.pipeline, "classes_", None)
        return None if classes is None else [c.item() if hasattr(c, "item") else c for c in classes]

    def save(self, directory: Path) -> None:
        from ml import model_io

        (directory / self.MODEL_FILE).write_bytes(model_io.dumps(self.pipeline))
        (directory / self.ENCODING_FILE).write_bytes(self.encoding.to_json())

    @classmethod
    def load(cls, directory: Path) -> SklearnModel:
        from ml import model_io

        pipeline = model_io.loads((directory / cls.MODEL_FILE).read_bytes())
        return cls.from_pipeline(pipeline, Encoding.from_json((directory / cls.ENCODING_FILE).read_bytes()))

    @classmethod
    def from_pipeline(cls, pipeline, encoding: Encoding | None, feature_names: list[str] | None = None):
        """Wrap a fitted pipeline (``encoding`` None: numeric features ``feature_names``, as every
        artifact written before the model interface held)."""
        if not hasattr(pipeline, "steps"):  # a bare estimator
            from sklearn.pipeline import Pipeline

            pipeline = Pipeline([("model", pipeline)])
        model = cls.__new__(cls)
        estimator = pipeline.steps[-1][1]
        model.estimator_name = type(estimator).__name__
        model.params, model.seed, model.max_categories = {}, 0, 64
        model.pipeline = pipeline
        if encoding is None:
            encoding = Encoding([{"name": n, "kind": "number", "encode": "value"} for n in (feature_names or [])])
        model.encoding = encoding
        return model
