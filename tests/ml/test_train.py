"""The trainer CLI: deterministic models, metrics, manifest, and one clear line on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from ml import __version__ as ml_version
from ml import artifacts, model_io, train
from tests.helpers import breast_cancer_table, diabetes_table, write_snapshot

REPO = Path(__file__).resolve().parents[2]
HGB = {"estimator": "HistGradientBoostingClassifier", "target": "target", "params": {"max_iter": 30}}


@pytest.fixture(scope="module")
def cancer_snapshot(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("snap") / "cancer")
    write_snapshot(uri, breast_cancer_table(), lineage={"dag_id": "d", "run_id": "r1"})
    return uri


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ml.train", *args], capture_output=True, text=True, cwd=REPO,
        env={**os.environ, **(env or {})}, timeout=300,
    )


def test_cli_trains_evaluates_and_writes_a_verified_model(cancer_snapshot, tmp_path):
    out = str(tmp_path / "model")
    proc = run_cli("--data", cancer_snapshot, "--output", out, "--config", json.dumps(HGB),
                   "--lineage", json.dumps({"run_id": "r2", "task_id": "train"}))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    manifest = artifacts.open_verified(out, kind="model")
    assert result == {"model_uri": out, "digest": manifest.digest, "metrics": manifest.extra["metrics"]}
    assert set(manifest.extra["metrics"]) == {"accuracy", "f1", "roc_auc"}
    assert manifest.extra["metrics"]["roc_auc"] > 0.95
    assert {f.name for f in manifest.files} == {"model/model.skops", "model/encoding.json", "metrics.json",
                                                "config.json", "evaluation.svg", "holdout.parquet", "trees.json"}
    assert manifest.extra["model_class"] == "ml.models.sklearn_tabular:SklearnModel"
    assert (manifest.extra["model_package"], manifest.extra["model_package_version"]) == ("ml", ml_version)
    assert {c["kind"] for c in manifest.schema} == {"number"} and not any(c["nullable"] for c in manifest.schema)
    snapshot = artifacts.read_manifest(cancer_snapshot)
    assert manifest.lineage["snapshot_digest"] == snapshot.digest == manifest.extra["snapshot_digest"]
    assert manifest.lineage["run_id"] == "r2" and manifest.lineage["dag_id"] == "d"
    assert [c["name"] for c in manifest.schema] == [c for c in breast_cancer_table().column_names if c != "target"]
    assert manifest.extra["n_train"] + manifest.extra["n_test"] == 569 and manifest.row_count == manifest.extra["n_train"]
    with artifacts.open_file(manifest, manifest.file("model/model.skops")) as f:
        model = model_io.loads(f.read())
    import pyarrow.parquet as pq

    with artifacts.open_file(manifest, manifest.file("holdout.parquet")) as f:
        holdout = pq.read_table(f)
    assert holdout.num_rows == manifest.extra["n_test"]
    X = holdout.drop(["target"]).to_pandas().to_numpy()
    from sklearn.metrics import accuracy_score

    assert accuracy_score(holdout.column("target").to_numpy(), model.predict(X)) == pytest.approx(
        manifest.extra["metrics"]["accuracy"]
    )


def picture(manifest):
    import xml.etree.ElementTree as ET

    assert manifest.extra["evaluation_picture"] == "evaluation.svg"
    with artifacts.open_file(manifest, manifest.file("evaluation.svg")) as f:
        return ET.fromstring(f.read())  # well-formed XML, or this raises


def test_a_classifier_picture_has_its_confusion_matrix_and_roc_curve(cancer_snapshot, tmp_path):
    import numpy as np
    import pyarrow.parquet as pq
    from sklearn.metrics import confusion_matrix

    train.train(cancer_snapshot, str(tmp_path / "m"), train.parse_config(HGB))
    manifest, model = model_io.load_verified_model(str(tmp_path / "m"))
    svg = picture(manifest)
    ns = {"s": "http://www.w3.org/2000/svg"}
    cells = svg.findall(".//s:g[@class='confusion-matrix']/s:text", ns)[:4]
    with artifacts.open_file(manifest, manifest.file("holdout.parquet")) as f:
        holdout = pq.read_table(f)
    truth = holdout.column("target").to_numpy()
    expected = confusion_matrix(truth, model.predict(holdout.drop(["target"])))
    assert [int(c.text) for c in cells] == expected.ravel().tolist()
    assert int(np.sum(expected)) == manifest.extra["n_test"]
    roc = svg.find(".//s:g[@class='roc']", ns)
    assert f"ROC AUC {manifest.extra['metrics']['roc_auc']:.3f}" in "".join(roc.itertext())
    assert len(roc.find("s:polyline", ns).get("points").split()) >= 3


def test_a_regressor_picture_shows_residuals(tmp_path):
    write_snapshot(str(tmp_path / "diabetes"), diabetes_table())
    train.train(str(tmp_path / "diabetes"), str(tmp_path / "m"),
                train.parse_config({"estimator": "Ridge", "target": "target"}))
    svg = picture(artifacts.open_verified(str(tmp_path / "m")))
    ns = {"s": "http://www.w3.org/2000/svg"}
    assert svg.find(".//s:g[@class='confusion-matrix']", ns) is None
    dots = svg.findall(".//s:g[@class='residuals']/s:circle", ns)
    assert 50 < len(dots) <= 400


def test_training_is_deterministic_so_the_model_digest_repeats(cancer_snapshot, tmp_path):
    config = train.parse_config(HGB)
    a = train.train(cancer_snapshot, str(tmp_path / "a"), config)
    b = train.train(cancer_snapshot, str(tmp_path / "b"), config)
    assert a["digest"] == b["digest"]
    c = train.train(cancer_snapshot, str(tmp_path / "c"), train.parse_config({**HGB, "seed": 7}))
    assert c["digest"] != a["digest"]


def test_the_trees_are_written_as_data_only_for_a_tree_model_they_reproduce(tmp_path, monkeypatch, caplog):
    """trees.json (what batch scoring reads instead of scikit-learn) is written for a lone
    HistGradientBoosting model, after the compiled trees gave the model's own predictions on the
    training rows, missing values included; never for another estimator, nor when they disagree."""
    import numpy as np

    from ml import tree_engine

    table = breast_cancer_table()
    col = table.column("mean_radius").to_pylist()
    col[::7] = [None] * len(col[::7])
    write_snapshot(str(tmp_path / "holes"), table.set_column(0, "mean_radius", pa.array(col, pa.float64())))
    train.train(str(tmp_path / "holes"), str(tmp_path / "hgb"), train.parse_config(HGB))
    manifest = artifacts.open_verified(str(tmp_path / "hgb"))
    with artifacts.open_file(manifest, manifest.file("trees.json")) as f:
        document = json.loads(f.read())
    assert document["format"] == tree_engine.TREES_FORMAT and document["decision"] == "binary"
    assert document["features"] == [c["name"] for c in manifest.schema] and document["classes"] == [0, 1]
    train.train(str(tmp_path / "holes"), str(tmp_path / "logistic"), train.parse_config(
        {"estimator": "LogisticRegression", "target": "target", "params": {"max_iter": 300}}))
    assert "trees.json" not in {e.name for e in artifacts.read_manifest(str(tmp_path / "logistic")).files}

    honest = tree_engine.TreeModel.predict
    monkeypatch.setattr(tree_engine.TreeModel, "predict", lambda self, X, n_threads=1: np.where(
        np.arange(len(X)) == 3, 1 - honest(self, X, n_threads), honest(self, X, n_threads)))  # one row wrong
    with caplog.at_level("WARNING", logger="ml.train"):
        train.train(str(tmp_path / "holes"), str(tmp_path / "wrong"), train.parse_config(HGB))
    assert "trees.json" not in {e.name for e in artifacts.read_manifest(str(tmp_path / "wrong")).files}
    assert "the compiled trees disagree with the model's own predictions" in caplog.text


def test_regression_metrics_and_feature_selection(tmp_path):
    snap = str(tmp_path / "diabetes")
    write_snapshot(snap, diabetes_table())
    config = train.parse_config({"estimator": "Ridge", "target": "target", "features": ["bmi", "bp", "s5"]})
    result = train.train(snap, str(tmp_path / "m"), config)
    assert set(result["metrics"]) == {"rmse", "mae", "r2"}
    assert result["metrics"]["r2"] > 0.3
    manifest = artifacts.read_manifest(str(tmp_path / "m"))
    assert [c["name"] for c in manifest.schema] == ["bmi", "bp", "s5"]


def test_missing_values_are_imputed_or_handled_natively(tmp_path):
    table = breast_cancer_table()
    col = table.column("mean_radius").to_pylist()
    col[::5] = [None] * len(col[::5])
    table = table.set_column(0, "mean_radius", pa.array(col, pa.float64()))
    snap = str(tmp_path / "holes")
    write_snapshot(snap, table)
    for estimator in ("LogisticRegression", "HistGradientBoostingClassifier"):
        config = train.parse_config({"estimator": estimator, "target": "target", "params": {"max_iter": 300}})
        assert train.train(snap, str(tmp_path / estimator), config)["metrics"]["accuracy"] > 0.9


def test_the_result_file_holds_what_was_trained_and_is_absent_on_bad_input(cancer_snapshot, tmp_path, capsys):
    result_file = tmp_path / "return.json"
    args = ["--data", cancer_snapshot, "--output", str(tmp_path / "m"), "--result-file", str(result_file)]
    assert train.main([*args, "--config", json.dumps({**HGB, "estimator": "SVC"})]) == 2
    assert not result_file.exists()
    assert train.main([*args, "--config", json.dumps(HGB)]) == 0
    result = json.loads(result_file.read_text())
    manifest = artifacts.read_manifest(str(tmp_path / "m"), kind="model")
    assert result["model_uri"] == str(tmp_path / "m") and result["digest"] == manifest.digest
    assert result["metrics"] == manifest.extra["metrics"] and not (tmp_path / "return.json.tmp").exists()


def test_an_unwritable_result_file_is_not_called_bad_input(cancer_snapshot, tmp_path):
    proc = run_cli("--data", cancer_snapshot, "--output", str(tmp_path / "m"), "--config", json.dumps(HGB),
                   "--result-file", str(tmp_path / "missing-folder" / "return.json"))
    assert proc.returncode == 1  # a retry may succeed; exit 2 would stop retries
    assert "No such file or directory" in proc.stderr


BAD_CONFIGS = [
    ("{not json", "not valid JSON"),
    (json.dumps({**HGB, "estimator": "os.system"}), "is not allowed; choose one of"),
    (json.dumps({**HGB, "learning_rate": 0.1}), "unknown config keys ['learning_rate']"),
    (json.dumps({**HGB, "params": {"max_iter": -3}}), "'max_iter' parameter of HistGradientBoostingClassifier"),
    (json.dumps({**HGB, "params": {"n_trees": 3}}), "valid params are"),
    (json.dumps({**HGB, "test_fraction": 1.5}), "strictly between 0 and 1"),
    (json.dumps({"estimator": "Ridge"}), "needs 'target'"),
    (json.dumps({**HGB, "target": "nope"}), "target column 'nope' is not in the snapshot"),
    (json.dumps({**HGB, "features": ["mean_radius", "ghost"]}), "feature columns ['ghost'] are not in the snapshot"),
    (json.dumps({**HGB, "features": ["mean_radius", "target"]}), "target column 'target' is also listed as a feature"),
    (json.dumps([HGB]), "config must be a JSON object, got list"),
    (json.dumps({**HGB, "params": [30]}), "config 'params' must be a JSON object of model parameters"),
    (json.dumps({**HGB, "features": "mean_radius"}), "config 'features' must be a list of column names"),
    (json.dumps({**HGB, "features": []}), "config 'features' is an empty list"),
    (json.dumps({**HGB, "exclude": "mean_radius"}), "config 'exclude' must be a list of column names"),
    (json.dumps({**HGB, "seed": "42"}), "config 'seed' must be an integer, got '42'"),
]


@pytest.mark.parametrize("config,message", BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_bad_config_exits_2_with_one_clear_line(cancer_snapshot, tmp_path, capsys, config, message):
    out = tmp_path / "m"
    code = train.main(["--data", cancer_snapshot, "--output", str(out), "--config", config])
    assert code == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("ml.train: error:")]
    assert len(err) == 1 and message in err[0], err
    assert not out.exists() or not artifacts.manifest_exists(str(out))


def test_bad_config_message_on_stderr_from_the_real_cli(cancer_snapshot, tmp_path):
    proc = run_cli("--data", cancer_snapshot, "--output", str(tmp_path / "m"),
                   "--config", json.dumps({**HGB, "estimator": "SVC"}))
    assert proc.returncode == 2
    errors = [l for l in proc.stderr.splitlines() if l.startswith("ml.train: error:")]
    assert len(errors) == 1 and "'SVC' is not allowed" in errors[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "table,message",
    [
        (pa.table({"blob": [b"a", b"b", b"c", b"d"], "target": [0, 1, 0, 1]}),
         "feature column 'blob' has type binary, which no model can take"),
        (pa.table({"tags": [["a"], ["b"], [], None], "target": [0, 1, 0, 1]}),
         "not usable: ['tags (strings)']. Exclude them"),
        (pa.table({"x": [1.0, 2.0, 3.0, 4.0], "target": [1, 1, 1, 1]}), "single class"),
        (pa.table({"x": [1.0, float("inf"), 3.0, float("-inf")], "y": [0.5, 1.0, float("inf"), 2.0],
                   "target": [0, 1, 0, 1]}), "infinite values (rows per column): {'x': 2, 'y': 1}"),
        (pa.table({"x": [1.0, 2.0, 3.0, 4.0], "target": [0.5, float("nan"), 1.5, float("inf")]}),
         "target column 'target' holds 2 NaN or infinite values"),
    ],
)
def test_bad_data_exits_2(tmp_path, capsys, table, message):
    snap = str(tmp_path / "s")
    write_snapshot(snap, table)
    code = train.main(["--data", snap, "--output", str(tmp_path / "m"), "--config",
                       json.dumps({"estimator": "LogisticRegression", "target": "target"})])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()  # nothing written, so nothing half-written to read


@pytest.mark.parametrize("table,config,message", [
    (pa.table({"x": [1.0, 2.0], "target": [0.0, 1.0]}), {"exclude": ["x"]}, "no feature columns left"),
    (pa.table({"x": [1.0, 2.0], "target": pa.array([None, None], pa.float64())}), {},
     "the snapshot has no rows with a non-null target"),
    (pa.table({"x": [1.0, 2.0], "target": [0.5, 1.0]}), {"estimator": "Ridge"}, "only 2 rows: too few"),
    (pa.table({"x": [1.0, 2.0, 3.0, 4.0, 5.0], "target": [0.5, 1.0, 2.0, 3.0, 4.0]}),
     {"estimator": "Ridge", "params": {"solver": "lbfgs"}}, "Ridge could not be fitted: 'lbfgs' solver"),
])
def test_data_a_model_cannot_be_trained_on_exits_2_writing_nothing(tmp_path, capsys, table, config, message):
    snap = str(tmp_path / "s")
    write_snapshot(snap, table)
    code = train.main(["--data", snap, "--output", str(tmp_path / "m"), "--config",
                       json.dumps({"estimator": "LogisticRegression", "target": "target", **config})])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_rows_without_a_target_are_dropped_and_the_rest_trains(tmp_path):
    table = breast_cancer_table()
    target = table.column("target").to_pylist()
    with_gaps = table.set_column(table.column_names.index("target"), "target",
                                 pa.array([None if i % 10 == 0 else t for i, t in enumerate(target)], pa.int64()))
    write_snapshot(str(tmp_path / "s"), with_gaps)
    result = train.train(str(tmp_path / "s"), str(tmp_path / "m"), train.parse_config(HGB))
    manifest = artifacts.read_manifest(result["model_uri"])
    kept = table.num_rows - len(range(0, table.num_rows, 10))
    assert manifest.extra["n_train"] + manifest.extra["n_test"] == kept and manifest.row_count == manifest.extra["n_train"]


def test_a_config_file_and_a_lineage_that_is_not_an_object(cancer_snapshot, tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(HGB))
    code = train.main(["--data", cancer_snapshot, "--output", str(tmp_path / "m"), "--config", f"@{config}",
                       "--lineage", "[1]"])
    assert code == 2 and "--lineage must be a JSON object" in capsys.readouterr().err
    assert train.main(["--data", cancer_snapshot, "--output", str(tmp_path / "m"), "--config", f"@{config}",
                       "--lineage", '{"ticket": "ML-7"}']) == 0
    assert artifacts.read_manifest(str(tmp_path / "m")).lineage["ticket"] == "ML-7"


def test_a_failure_is_written_where_the_platform_reads_it_and_an_unwritable_place_is_ignored(tmp_path, capsys,
                                                                                           monkeypatch):
    failure = tmp_path / "failure"
    monkeypatch.setenv("ML_TRAIN_FAILURE_FILE", str(failure))
    assert train.main(["--data", str(tmp_path / "none"), "--output", str(tmp_path / "m"),
                       "--config", json.dumps(HGB)]) == 2
    assert failure.read_text().startswith("ml.train: exit code 2 (bad input, not retried): ")
    monkeypatch.setenv("ML_TRAIN_FAILURE_FILE", str(tmp_path / "no-such-dir" / "failure"))
    assert train.main(["--data", str(tmp_path / "none"), "--output", str(tmp_path / "m"),
                       "--config", json.dumps(HGB)]) == 2  # still the clear error, not an OSError


def test_snapshot_without_manifest_is_refused(tmp_path, capsys):
    (tmp_path / "s").mkdir()
    code = train.main(["--data", str(tmp_path / "s"), "--output", str(tmp_path / "m"), "--config", json.dumps(HGB)])
    assert code == 2
    assert "has no manifest.json" in capsys.readouterr().err


def test_cli_reads_and_writes_s3_through_moto(s3_bucket, moto_s3):
    snap = f"s3://{s3_bucket}/snapshots/cancer"
    write_snapshot(snap, breast_cancer_table())
    out = f"s3://{s3_bucket}/models/cancer"
    proc = run_cli("--data", snap, "--output", out, "--config", json.dumps(HGB), env=moto_s3.env)
    assert proc.returncode == 0, proc.stderr
    assert artifacts.open_verified(out, kind="model").extra["metrics"]["accuracy"] > 0.9
