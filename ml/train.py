"""The trainer: ``python -m ml.train --data URI --output URI --config JSON``.

One command wherever it runs (local subprocess, Kubernetes pod, later cloud jobs). It
reads a verified snapshot, fits a scikit-learn Pipeline deterministically, evaluates it
on a held-out split, and writes a model artifact (skops model, metrics, config, evaluation
picture, holdout rows, manifest last). Exit codes: 0 ok, 2 bad config or data (one line on stderr saying
what is wrong), 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

from ml import __version__
from ml.training_config import ConfigError, TrainingConfig, build_estimator, parse_config

log = logging.getLogger("ml.train")


class DataError(ValueError):
    """The snapshot cannot be trained on as configured; the message says why."""


def select_columns(table, config: TrainingConfig) -> list[str]:
    import pyarrow as pa

    names = table.column_names
    if config.target not in names:
        raise DataError(f"target column {config.target!r} is not in the snapshot; columns are {names}")
    if config.features is not None:
        missing = [c for c in config.features if c not in names]
        if missing:
            raise DataError(f"feature columns {missing} are not in the snapshot; columns are {names}")
        if config.target in config.features:
            raise DataError(f"target column {config.target!r} is also listed as a feature")
        features = list(config.features)
    else:
        features = [c for c in names if c != config.target and c not in config.exclude]
    bad = [
        f"{c} ({table.schema.field(c).type})"
        for c in features
        if not (pa.types.is_integer(table.schema.field(c).type)
                or pa.types.is_floating(table.schema.field(c).type)
                or pa.types.is_boolean(table.schema.field(c).type))
    ]
    if bad:
        raise DataError(
            f"feature columns must be numeric or boolean; not usable: {bad}. "
            f"Encode them in the extract query, or list them in config 'exclude'"
        )
    if not features:
        raise DataError("no feature columns left after removing the target and 'exclude'")
    return features


def to_matrices(table, features: list[str], target: str):
    import pyarrow.compute as pc

    from ml.snapshots import feature_matrix

    y_col = table.column(target)
    if y_col.null_count:
        log.warning("dropping %d rows whose target %r is null", y_col.null_count, target)
        table = table.filter(pc.is_valid(y_col))
        y_col = table.column(target)
    if table.num_rows == 0:
        raise DataError("the snapshot has no rows with a non-null target")
    X = feature_matrix(table, features)
    import numpy as np

    infinite = np.isinf(X).sum(axis=0)
    if infinite.any():
        found = {features[i]: int(n) for i, n in enumerate(infinite) if n}
        raise DataError(
            f"feature columns hold infinite values (rows per column): {found}. Missing values are handled, "
            f"infinities are not: turn them into NULL in the extract query, or exclude the column")
    y = y_col.to_numpy(zero_copy_only=False)
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"target column {target!r} holds {int((~np.isfinite(y)).sum())} NaN or infinite values; "
                        f"filter them out in the extract query")
    return table, X, y


def build_pipeline(config: TrainingConfig):
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps = []
    if not config.spec.handles_missing:
        steps.append(("impute", SimpleImputer(strategy="median", keep_empty_features=True)))
    if config.spec.needs_scaling:
        steps.append(("scale", StandardScaler()))
    steps.append(("model", build_estimator(config)))
    return Pipeline(steps)


def evaluate(model, X, y, task: str) -> dict[str, float]:
    """Held-out metrics. Classification: accuracy, f1, roc_auc; regression: rmse, mae, r2."""
    import numpy as np
    from sklearn import metrics

    pred = model.predict(X)
    if task == "regression":
        return {
            "rmse": float(np.sqrt(metrics.mean_squared_error(y, pred))),
            "mae": float(metrics.mean_absolute_error(y, pred)),
            "r2": float(metrics.r2_score(y, pred)),
        }
    classes = model.classes_
    binary = len(classes) == 2
    out = {
        "accuracy": float(metrics.accuracy_score(y, pred)),
        "f1": float(metrics.f1_score(y, pred, average="binary" if binary else "macro", pos_label=classes[-1]))
        if binary
        else float(metrics.f1_score(y, pred, average="macro")),
    }
    if hasattr(model, "predict_proba") and len(np.unique(y)) == len(classes):
        proba = model.predict_proba(X)
        out["roc_auc"] = float(
            metrics.roc_auc_score(y, proba[:, 1]) if binary else metrics.roc_auc_score(y, proba, multi_class="ovr")
        )
    return out


def train(data_uri: str, output_uri: str, config: TrainingConfig, lineage: dict[str, Any] | None = None) -> dict:
    """Train and write the model artifact; returns what the XCom return file holds."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.model_selection import train_test_split

    from ml import artifacts, model_io
    from ml.snapshots import arrow_schema_fields, read_snapshot

    started = time.perf_counter()
    snapshot, table = read_snapshot(data_uri)
    log.info("read snapshot %s: %d rows, digest %s", data_uri, table.num_rows, snapshot.digest[:12])
    features = select_columns(table, config)
    table, X, y = to_matrices(table, features, config.target)
    task = config.spec.task
    stratify = None
    if task == "classification":
        _, counts = np.unique(y, return_counts=True)
        if len(counts) < 2:
            raise DataError(f"target {config.target!r} has a single class; a classifier needs at least two")
        stratify = y if counts.min() >= 2 else None
    n_test = max(1, int(round(len(y) * config.test_fraction)))
    if len(y) - n_test < 2:
        raise DataError(f"only {len(y)} rows: too few to hold out {config.test_fraction:.0%} and still train")
    idx = np.arange(len(y))
    train_idx, test_idx = train_test_split(
        idx, test_size=n_test, random_state=config.seed, stratify=stratify
    )
    model = build_pipeline(config)
    try:
        model.fit(X[train_idx], y[train_idx])
    except ValueError as exc:  # scikit-learn's message names the problem (e.g. NaN, param value)
        raise DataError(f"{config.estimator} could not be fitted: {exc}") from None
    metrics = evaluate(model, X[test_idx], y[test_idx], task)
    log.info("trained %s on %d rows, held-out metrics %s", config.estimator, len(train_idx), metrics)

    writer = artifacts.ArtifactWriter(output_uri, "model")
    try:
        writer.write_bytes("model.skops", model_io.dumps(model))
        writer.write_bytes("metrics.json", json.dumps(metrics, indent=2, sort_keys=True).encode())
        writer.write_bytes("config.json", json.dumps(config.to_dict(), indent=2, sort_keys=True).encode())
        from ml.evaluation_picture import PICTURE_NAME, evaluation_svg

        picture = evaluation_svg(model, X[test_idx], y[test_idx], task,
                                 f"{config.estimator}: {len(test_idx)} held-out rows")
        writer.write_bytes(PICTURE_NAME, picture.encode())
        holdout = table.take(pa.array(sorted(test_idx)))
        with writer.open("holdout.parquet") as f:
            pq.write_table(holdout, f)
        extra = {
            "task": task,
            "estimator": config.estimator,
            "params": config.params,
            "target": config.target,
            "target_type": str(table.schema.field(config.target).type),
            "classes": [c.item() if hasattr(c, "item") else c for c in getattr(model, "classes_", [])],
            # features that had missing values in training: the only ones a server may accept as null
            "features_with_missing": [f for i, f in enumerate(features) if bool(np.isnan(X[:, i]).any())],
            "metrics": metrics,
            "evaluation_picture": PICTURE_NAME,
            "n_train": int(len(train_idx)),
            "n_test": int(len(test_idx)),
            "snapshot_uri": data_uri,
            "snapshot_digest": snapshot.digest,
            "trainer_version": __version__,
            "train_seconds": round(time.perf_counter() - started, 3),
        }
        manifest = writer.commit(
            schema=arrow_schema_fields(table.select(features).schema),
            row_count=int(len(train_idx)),
            lineage={**snapshot.lineage, **(lineage or {}), "snapshot_digest": snapshot.digest,
                     # the code that trained it: the image's build commit, where it runs in one
                     "trainer_code_version": os.environ.get("ML_CODE_VERSION", "unknown")},
            extra=extra,
        )
    except BaseException:
        writer.abort()
        raise
    return {"model_uri": output_uri, "digest": manifest.digest, "metrics": metrics}


def write_result(path: str, result: dict[str, Any]) -> None:
    """The one way results leave the trainer: a JSON file the caller reads (locally a temporary
    file; in a pod ``/airflow/xcom/return.json``, which the XCom sidecar hands to Airflow)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, path)  # the sidecar never reads half a result


def _write_failure(message: str) -> None:
    """Where the platform reads why a job failed (SageMaker: ``/opt/ml/output/failure`` becomes
    the job's FailureReason), named by ``ML_TRAIN_FAILURE_FILE``; nothing when unset."""
    path = os.environ.get("ML_TRAIN_FAILURE_FILE")
    if path:
        try:
            with open(path, "w") as f:
                f.write(message[:1000])
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.train", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="snapshot artifact URI")
    parser.add_argument("--output", required=True, help="model artifact URI to write")
    parser.add_argument("--config", required=True, help="training config as JSON (or @path to a JSON file)")
    parser.add_argument("--lineage", default="{}", help="JSON object merged into the manifest lineage")
    parser.add_argument("--result-file", help="where to write the result JSON (model_uri, digest, metrics)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    from ml.artifacts import ArtifactError

    try:
        raw = args.config
        if raw.startswith("@"):
            with open(raw[1:]) as f:
                raw = f.read()
        config = parse_config(raw)
        lineage = json.loads(args.lineage)
        if not isinstance(lineage, dict):
            raise ConfigError("--lineage must be a JSON object")
        result = train(args.data, args.output, config, lineage)
    except (ConfigError, DataError, ArtifactError, json.JSONDecodeError, OSError) as exc:
        print(f"ml.train: error: {exc}", file=sys.stderr)
        _write_failure(f"ml.train: exit code 2 (bad input, not retried): {exc}")
        return 2
    if args.result_file:  # not bad input when this fails: exit 1, a retry may succeed
        write_result(args.result_file, result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
