"""The trainer: ``python -m ml.train --data URI --output URI --config JSON``.

One command wherever it runs (local subprocess, Kubernetes pod, cloud jobs). It reads a
verified snapshot, fits the configured model (``ml.models``: a built-in or a class the
deployment allows) deterministically, evaluates its predictions on a held-out split, checks
the model's contract (one output per row; data-only files; load reads only them and predicts
the same, in time), and writes a model artifact (the model's files under ``model/``, metrics,
config, evaluation picture, holdout rows, manifest last). Exit codes: 0 ok, 2 bad config, data
or model (one line on stderr saying what is wrong; nothing is written), 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

from pathlib import Path

from ml import __version__
from ml.models.classes import ModelClassError
from ml.models.interface import ModelContractError
from ml.training_config import ConfigError, TrainingConfig, parse_config

log = logging.getLogger("ml.train")


class DataError(ValueError):
    """The snapshot cannot be trained on as configured; the message says why."""


def select_columns(table, config: TrainingConfig) -> list[str]:
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
    if not features:
        raise DataError("no feature columns left after removing the target and 'exclude'")
    return features


def target_values(table, target: str):
    """(the rows whose target is set, the target as a NumPy array)."""
    import numpy as np
    import pyarrow.compute as pc

    y_col = table.column(target)
    if y_col.null_count:
        log.warning("dropping %d rows whose target %r is null", y_col.null_count, target)
        table = table.filter(pc.is_valid(y_col))
        y_col = table.column(target)
    if table.num_rows == 0:
        raise DataError("the snapshot has no rows with a non-null target")
    y = y_col.to_numpy(zero_copy_only=False)
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"target column {target!r} holds {int((~np.isfinite(y)).sum())} NaN or infinite values; "
                        f"filter them out in the extract query")
    return table, y


def refuse_infinities(table, schema) -> None:
    import numpy as np

    from ml.snapshots import float_values

    found = {}
    for feature in schema.features:
        if feature.kind == "number":
            values = float_values(table.column(feature.name))
            if (n := int(np.isinf(values).sum())):
                found[feature.name] = n
    if found:
        raise DataError(
            f"feature columns hold infinite values (rows per column): {found}. Missing values are handled, "
            f"infinities are not: turn them into NULL in the extract query, or exclude the column")


def checked_predict(model, features, label: str, with_proba: bool = True):
    """(predictions, probabilities or None) of ``model`` on ``features``, refused unless it gives
    one output per row and, where it gives them, one probability row per row."""
    import numpy as np

    try:
        pred = np.asarray(model.predict(features))
        proba = model.predict_proba(features) if with_proba else None
    except ModelContractError:
        raise
    except Exception as exc:
        raise ModelContractError(f"{label}.predict raised {type(exc).__name__}: {exc}") from exc
    if pred.ndim != 1 or len(pred) != features.num_rows:
        raise ModelContractError(f"{label}.predict returned {len(pred) if pred.ndim else 'a scalar'} outputs "
                                 f"(shape {pred.shape}) for {features.num_rows} rows: it must return one per row")
    if proba is not None:
        proba = np.asarray(proba, dtype=np.float64)
        if proba.ndim != 2 or proba.shape[0] != features.num_rows:
            raise ModelContractError(f"{label}.predict_proba returned shape {proba.shape} for "
                                     f"{features.num_rows} rows: it must return rows x classes")
    return pred, proba


def evaluate(y, pred, proba, classes, task: str) -> dict[str, float]:
    """Held-out metrics from a model's predictions (and probabilities, columns in ``classes``
    order): classification accuracy, f1 and (with probabilities) roc_auc; regression rmse, mae, r2."""
    import numpy as np
    from sklearn import metrics

    if task == "regression":
        pred = pred.astype(np.float64)
        return {
            "rmse": float(np.sqrt(metrics.mean_squared_error(y, pred))),
            "mae": float(metrics.mean_absolute_error(y, pred)),
            "r2": float(metrics.r2_score(y, pred)),
        }
    binary = len(classes) == 2
    out = {
        "accuracy": float(metrics.accuracy_score(y, pred)),
        "f1": float(metrics.f1_score(y, pred, average="binary", pos_label=classes[-1]))
        if binary
        else float(metrics.f1_score(y, pred, average="macro")),
    }
    if proba is not None and len(np.unique(y)) == len(classes) and proba.shape[1] == len(classes):
        out["roc_auc"] = float(
            metrics.roc_auc_score(y, proba[:, 1]) if binary
            else metrics.roc_auc_score(y, proba, multi_class="ovr", labels=classes)
        )
    return out


def _same(a, b) -> bool:
    import numpy as np

    return a.shape == b.shape and bool(np.all((a == b) | ((a != a) & (b != b))))  # NaN equals NaN here


def save_and_reload(model, label: str, directory: Path, probe, expected, timeout: float):
    """Save ``model`` into ``directory``, check what it wrote, load it back confined to that folder
    and check it predicts ``expected`` on ``probe`` within ``timeout`` seconds: what the server
    will do, done before anything is registered."""
    from ml.models.contract import check_saved, confined

    try:
        model.save(directory)
    except Exception as exc:
        raise ModelContractError(f"{label}.save raised {type(exc).__name__}: {exc}") from exc
    check_saved(directory, label)
    try:
        with confined(directory, label):
            loaded = type(model).load(directory)
    except ModelContractError:
        raise
    except Exception as exc:
        raise ModelContractError(f"{label}.load of what it saved raised {type(exc).__name__}: {exc}") from exc
    started = time.perf_counter()
    again, _ = checked_predict(loaded, probe, label, with_proba=False)
    seconds = time.perf_counter() - started
    if seconds > timeout:
        raise ModelContractError(f"{label}.predict took {seconds:.2f} s for {probe.num_rows} rows, over the "
                                 f"{timeout:g} s predict timeout (config 'predict_timeout_seconds'); "
                                 f"the server would time out every request")
    if not _same(again, expected):
        raise ModelContractError(f"{label} predicts differently after save and load: save must write all of its "
                                 f"fitted state (and load read it back exactly)")
    return seconds


TREES_CHECK_ROWS = 100_000


def compiled_trees(model, features, label: str) -> dict[str, Any] | None:
    """The model's trees as data (``trees_document``, the built-in tree models), kept only where
    the compiled engine reading them predicts what the model itself predicts on ``features`` (up
    to TREES_CHECK_ROWS rows, missing values included), exactly. Batch scoring then reads the
    trees without loading scikit-learn."""
    import numpy as np

    document = getattr(model, "trees_document", lambda: None)()
    if document is None:
        return None
    from ml.snapshots import feature_matrix
    from ml.tree_engine import TREES_FILE, TreeModel

    rows = features.slice(0, TREES_CHECK_ROWS)
    compiled = TreeModel(json.loads(json.dumps(document)))  # what a reader of the file gets
    try:
        fast = compiled.predict(feature_matrix(rows, compiled.features, order="F"))
    except ImportError:  # no numba here: nothing to check the trees with, so none are kept
        return None
    if not np.array_equal(fast, np.asarray(model.predict(rows))):
        log.warning("%s: the compiled trees disagree with the model's own predictions; %s is not written and "
                    "batch scoring loads the model itself", label, TREES_FILE)
        return None
    return document


def train(data_uri: str, output_uri: str, config: TrainingConfig, lineage: dict[str, Any] | None = None) -> dict:
    """Train and write the model artifact; returns what the XCom return file holds."""
    import tempfile

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.model_selection import train_test_split

    from ml import artifacts, model_io
    from ml.models.classes import import_class, package_of
    from ml.models.interface import TASKS, FeatureSchema
    from ml.snapshots import read_snapshot

    started = time.perf_counter()
    snapshot, table = read_snapshot(data_uri)
    log.info("read snapshot %s: %d rows, digest %s", data_uri, table.num_rows, snapshot.digest[:12])
    features = select_columns(table, config)
    table, y = target_values(table, config.target)
    model, label = config.build(), config.label
    package, package_version = package_of(import_class(config.model_class))
    schema = model.declare_features(FeatureSchema.from_table(table.select(features)))
    refuse_infinities(table, schema)
    task = model.task
    if task not in TASKS:
        raise ModelContractError(f"{label}.task is {task!r}; it must be one of {TASKS}")
    stratify = None
    n_test = max(1, int(round(len(y) * config.test_fraction)))
    if task == "classification":
        _, counts = np.unique(y, return_counts=True)
        if len(counts) < 2:
            raise DataError(f"target {config.target!r} has a single class; a classifier needs at least two")
        # stratified where every class can be on both sides of the split
        stratify = y if counts.min() >= 2 and min(n_test, len(y) - n_test) >= len(counts) else None
    if len(y) - n_test < 2:
        raise DataError(f"only {len(y)} rows: too few to hold out {config.test_fraction:.0%} and still train")
    idx = np.arange(len(y))
    train_idx, test_idx = train_test_split(idx, test_size=n_test, random_state=config.seed, stratify=stratify)
    test_idx = np.sort(test_idx)  # the held-out rows in snapshot order, as holdout.parquet keeps them
    train_x, test_x = table.select(features).take(pa.array(train_idx)), table.select(features).take(pa.array(test_idx))
    try:
        model.fit(train_x, y[train_idx])
    except ModelContractError as exc:
        raise DataError(str(exc)) from None
    except Exception as exc:
        raise ModelContractError(f"{label}.fit raised {type(exc).__name__}: {exc}") from exc
    pred, proba = checked_predict(model, test_x, label)
    classes = None
    if task == "classification":
        classes = model.classes or sorted(np.unique(y[train_idx]).tolist())
        if proba is not None and proba.shape[1] != len(classes):
            raise ModelContractError(f"{label}.predict_proba gives {proba.shape[1]} columns for "
                                     f"{len(classes)} classes {classes}")
    metrics = evaluate(y[test_idx], pred, proba, classes, task)
    log.info("trained %s on %d rows, held-out metrics %s", label, len(train_idx), metrics)

    probe = test_x.slice(0, 16)
    with tempfile.TemporaryDirectory(prefix="ml-train-model-") as tmp:
        probe_seconds = save_and_reload(model, label, Path(tmp), probe, pred[:probe.num_rows],
                                        config.predict_timeout_seconds)
        trees = compiled_trees(model, table.select(features), label)
        writer = artifacts.ArtifactWriter(output_uri, "model")
        try:
            model_io.write_model_files(writer, tmp)
            if trees is not None:
                from ml.tree_engine import TREES_FILE

                writer.write_bytes(TREES_FILE, json.dumps(trees, sort_keys=True).encode())
            writer.write_bytes("metrics.json", json.dumps(metrics, indent=2, sort_keys=True).encode())
            writer.write_bytes("config.json", json.dumps(config.to_dict(), indent=2, sort_keys=True).encode())
            from ml.evaluation_picture import PICTURE_NAME, evaluation_svg

            picture = evaluation_svg(y[test_idx], pred, proba, classes or [], task,
                                     f"{label}: {len(test_idx)} held-out rows")
            writer.write_bytes(PICTURE_NAME, picture.encode())
            with writer.open("holdout.parquet") as f:
                pq.write_table(table.take(pa.array(test_idx)), f)
            extra = {
                "task": task,
                "model": config.model,
                "model_class": config.model_class,
                "model_package": package,
                "model_package_version": package_version,
                # the image that trained it, where it runs in one (set by its Dockerfile)
                "trainer_image": os.environ.get("ML_IMAGE", "none: trained outside an image"),
                "estimator": label,
                "params": config.params,
                "target": config.target,
                "target_type": str(table.schema.field(config.target).type),
                "classes": classes or [],
                # kept for readers of older artifacts; the schema's "nullable" says the same
                "features_with_missing": [f.name for f in schema.features if f.nullable],
                "metrics": metrics,
                "evaluation_picture": PICTURE_NAME,
                "n_train": int(len(train_idx)),
                "n_test": int(len(test_idx)),
                "probe_predict_seconds": round(probe_seconds, 6),
                "snapshot_uri": data_uri,
                "snapshot_digest": snapshot.digest,
                "trainer_version": __version__,
                "train_seconds": round(time.perf_counter() - started, 3),
            }
            manifest = writer.commit(
                schema=schema.to_manifest(),
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
    except (ConfigError, DataError, ModelClassError, ModelContractError, ArtifactError, json.JSONDecodeError,
            OSError) as exc:
        print(f"ml.train: error: {exc}", file=sys.stderr)
        _write_failure(f"ml.train: exit code 2 (bad input, not retried): {exc}")
        return 2
    if args.result_file:  # not bad input when this fails: exit 1, a retry may succeed
        write_result(args.result_file, result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
