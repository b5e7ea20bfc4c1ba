"""A loaded, verified, warmed-up model: what the server swaps atomically."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml.serving.inputs import FeatureSchema


@dataclass
class LoadedModel:
    version: str
    uri: str
    digest: str
    schema: FeatureSchema
    estimator: Any
    task: str
    load_seconds: float = 0.0
    loaded_at: float = field(default_factory=time.time)

    def predict(self, matrix: np.ndarray) -> list:
        return self.estimator.predict(matrix).tolist()


def load_model(uri: str, version: str | None = None) -> LoadedModel:
    """Verify every digest, load the skops model, warm it up on held-out rows.

    Raises (ArtifactError, ValueError) without side effects, so a failed load leaves the
    currently served model in place.
    """
    from ml.model_io import load_verified_model, read_holdout
    from ml.snapshots import feature_matrix

    started = time.perf_counter()
    manifest, estimator = load_verified_model(uri)
    names = [c["name"] for c in manifest.schema]
    schema = FeatureSchema(names, set(manifest.extra.get("features_with_missing", [])))
    warm = np.zeros((1, len(names)))
    if any(e.name == "holdout.parquet" for e in manifest.files):
        warm = feature_matrix(read_holdout(manifest, columns=names, rows=16), names)
    expected = estimator.predict(warm)  # first-call costs paid here, not by a user request
    from ml.serving.fast_trees import accelerate

    # one NumPy pass over all trees for request-sized batches, kept only if it gives the
    # same predictions as scikit-learn on the held-out rows
    if (changed := accelerate(estimator)) is not None and not np.array_equal(estimator.predict(warm), expected):
        del changed._predict_iterations
    return LoadedModel(
        version=version or manifest.digest[:12], uri=uri, digest=manifest.digest, schema=schema,
        estimator=estimator, task=manifest.extra.get("task", ""),
        load_seconds=time.perf_counter() - started,
    )
