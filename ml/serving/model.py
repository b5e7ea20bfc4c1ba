"""A loaded, verified, warmed-up model: what the server swaps atomically.

Whatever the model (a built-in or a team's own class), the server holds it behind this one
object: the schema requests are validated against, and ``predict`` on a batch, which checks that
the model gave one output per row and turns what went wrong in the model's code into a
``ModelFailure`` naming the model, so that only that batch's requests fail.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml.models.interface import FeatureSchema, Model
from ml.serving.inputs import Columns, matrix_table
from ml.serving.oip.tensors import Outputs, label_datatype


# a model whose compiled trees predict the warm-up rows (up to 16) faster than this may predict on the
# server's event loop: the benchmark's 100 trees take ~25 us; a forest a hundred times larger does not
INLINE_SECONDS = 0.0005


class ModelFailure(RuntimeError):
    """The model did something wrong with a batch (raised, wrong output count, too slow):
    a 5xx for that batch's requests, naming the model and what it did."""

    def __init__(self, message: str, reason: str, status: int = 500):
        super().__init__(message)
        self.reason, self.status = reason, status


@dataclass
class LoadedModel:
    version: str
    uri: str
    digest: str
    schema: FeatureSchema
    model: Model
    task: str
    name: str = "model"  # the model's name in the manifest (sklearn, text, a team's own)
    load_seconds: float = 0.0
    loaded_at: float = field(default_factory=time.time)
    uses_matrix: bool = False  # a numeric schema and a model with predict_matrix: no Arrow table per batch
    # the compiled tree engine straight from the model's trees (ml.tree_engine.TreeModel), when it
    # predicts exactly what the model does: a batch skips scikit-learn's per-call input checks
    trees: Any = None
    # its compiled trees predict the warm-up rows in under INLINE_SECONDS: the server predicts its small
    # batches on the event loop, skipping the hop to the predict thread (ml/serving/batcher.py)
    inline_predict: bool = False
    # the Open Inference Protocol's outputs: the labels' datatype, the classes of its probabilities
    outputs: Outputs = Outputs("BYTES", None)

    @property
    def label(self) -> str:
        return f"model {self.name!r} version {self.version}"

    def inputs(self, payload):
        """What the model's predict takes for a parsed payload."""
        if isinstance(payload, Columns):
            return payload.table(self.schema)
        return matrix_table(payload, self.schema)

    def predict(self, payload) -> list:
        rows = payload.shape[0]
        try:
            if self.trees is not None:  # set only for a numeric schema: payload is a matrix
                out = self.trees.predict(payload)
            elif self.uses_matrix:
                out = self.model.predict_matrix(payload)
            else:
                out = self.model.predict(self.inputs(payload))
            out = out.tolist() if isinstance(out, np.ndarray) else list(out)
        except Exception as exc:
            raise ModelFailure(f"{self.label} failed to predict {rows} rows: {type(exc).__name__}: {exc}",
                               "raised") from exc
        if len(out) != rows:
            raise ModelFailure(f"{self.label} returned {len(out)} outputs for {rows} rows; a model must return "
                               f"one per row", "wrong_output_count")
        return out

    def predict_with_proba(self, payload) -> list[tuple]:
        """(label, class probabilities) per row, for the protocol's ``probabilities`` output."""
        labels = self.predict(payload)
        classes = self.outputs.classes or ()
        try:
            proba = np.asarray(self.model.predict_proba(self.inputs(payload)), dtype=np.float64)
        except Exception as exc:
            raise ModelFailure(f"{self.label} failed to give probabilities for {len(labels)} rows: "
                               f"{type(exc).__name__}: {exc}", "raised") from exc
        if proba.shape != (len(labels), len(classes)):
            raise ModelFailure(f"{self.label} gave probabilities of shape {proba.shape} for {len(labels)} rows and "
                               f"{len(classes)} classes", "wrong_output_count")
        return list(zip(labels, proba.tolist()))


def _outputs(loaded: LoadedModel, warm, expected: list | None) -> Outputs:
    """What the model answers with, from its task, its classes and its answers at warm-up."""
    if loaded.task == "regression":
        return Outputs("FP64", None)
    try:  # a team's model may declare its classes oddly: then it serves labels, without probabilities
        declared = list(loaded.model.classes or [])
    except Exception:
        declared = []
    classes = None
    if warm is not None and declared:
        try:
            proba = loaded.model.predict_proba(loaded.inputs(warm))
            if proba is not None and np.shape(proba) == (warm.shape[0], len(declared)):
                classes = tuple(declared)
        except Exception:  # a model without usable probabilities still serves its labels
            pass
    sample = expected or declared
    return Outputs(label_datatype(sample) if sample else "BYTES", classes)


def _warm_rows(manifest, schema: FeatureSchema):
    """Up to 16 held-out rows as the payload a request would give, or None."""
    if not any(e.name == "holdout.parquet" for e in manifest.files):
        return None
    from ml.model_io import read_holdout

    table = read_holdout(manifest, columns=schema.names, rows=16)
    if schema.numeric:
        from ml.snapshots import feature_matrix

        return feature_matrix(table, schema.names)
    values = []
    for feature in schema.features:
        column = table.column(feature.name)
        values.append(column.cast("float64").to_pylist() if feature.kind == "number" else column.to_pylist())
    return Columns(values, table.num_rows)


def load_model(uri: str, version: str | None = None, predict_timeout: float | None = None,
               max_text_chars: int | None = None) -> LoadedModel:
    """Verify every digest, check the model's class may run here, load it confined to its files,
    warm it up on held-out rows (within ``predict_timeout`` seconds, else refused).

    Raises (ArtifactError, ModelClassError, ModelContractError, ModelFailure) without side
    effects, so a failed load leaves the currently served model in place.
    """
    from ml.model_io import load_verified_model

    started = time.perf_counter()
    manifest, model = load_verified_model(uri)
    schema = FeatureSchema.from_manifest(manifest.schema, set(manifest.extra.get("features_with_missing", [])))
    if max_text_chars is not None:
        schema.max_text_chars = max_text_chars
    uses_matrix = schema.numeric and type(model).predict_matrix is not Model.predict_matrix
    loaded = LoadedModel(
        version=version or manifest.digest[:12], uri=uri, digest=manifest.digest, schema=schema, model=model,
        task=manifest.extra.get("task", ""), name=manifest.extra.get("model", "sklearn"), uses_matrix=uses_matrix)
    warm = _warm_rows(manifest, schema)
    if warm is None:
        warm = np.zeros((1, schema.width)) if schema.numeric else None
    if uses_matrix:
        try:
            model.predict_matrix(warm)
        except NotImplementedError:
            loaded.uses_matrix = False
    if warm is not None:
        expected = loaded.predict(warm)  # first-call costs paid here, not by a user request
        began = time.perf_counter()
        if loaded.predict(warm) != expected:
            raise ModelFailure(f"{loaded.label} gives different predictions for the same rows twice", "unstable")
        seconds = time.perf_counter() - began
        if predict_timeout is not None and seconds > predict_timeout:
            raise ModelFailure(f"{loaded.label} took {seconds:.2f} s to predict {warm.shape[0]} held-out rows at "
                               f"load, over the {predict_timeout:g} s predict timeout: every request would time out",
                               "too_slow", 504)
        _accelerate(loaded, warm, expected)
    loaded.outputs = _outputs(loaded, warm, expected if warm is not None else None)
    loaded.load_seconds = time.perf_counter() - started
    return loaded


def _accelerate(loaded: LoadedModel, warm, expected: list[Any]) -> None:
    """The built-in HistGradientBoosting models' compiled tree engine (ml/tree_engine.py), kept only
    if it gives the same predictions as scikit-learn on the held-out rows: inside scikit-learn's
    predict for every batch, and, for a numeric schema, also without it (``TreeModel`` on the
    model's trees). scikit-learn's input checks cost about 0.25 ms a call, twenty times the
    trees' own walk of a few rows: what limited the gRPC infer under load."""
    pipeline = getattr(loaded.model, "pipeline", None)
    if pipeline is None:
        return
    from ml.tree_engine import Unsupported, TreeModel, accelerate

    if (changed := accelerate(pipeline)) is not None and loaded.predict(warm) != expected:
        del changed._predict_iterations
        return
    trees_document = getattr(loaded.model, "trees_document", None)
    document = trees_document() if changed is not None and loaded.uses_matrix and trees_document else None
    if document is None or document["features"] != loaded.schema.names:
        return
    try:
        loaded.trees = TreeModel(document)
    except Unsupported:
        return
    if loaded.predict(warm) != expected:
        loaded.trees = None
        return
    timings = []
    for _ in range(3):
        began = time.perf_counter()
        loaded.predict(warm)
        timings.append(time.perf_counter() - began)
    loaded.inline_predict = min(timings) < INLINE_SECONDS
