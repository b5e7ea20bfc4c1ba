"""The built-in models on the model interface, through the real trainer: categorical strings and
timestamps for the sklearn model, texts (Japanese, empty, very long) beside numbers for the text
model, and the team's example model from examples/keyword_moderation."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from demo.moderation_posts import table as posts_table
from ml import artifacts, model_io, train
from tests.helpers import write_snapshot


def categorical_table(n: int = 600, seed: int = 0) -> pa.Table:
    """``country`` decides the label with ``amount``; ``signup`` is a timestamp; ``plan`` has nulls."""
    rng = np.random.default_rng(seed)
    countries = rng.choice(["jp", "de", "br", "us", "fr"], n)
    amount = rng.normal(50, 20, n)
    label = ((countries == "jp") | (countries == "br")) ^ (amount > 80)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return pa.table({
        "country": countries.tolist(),
        "plan": [None if i % 9 == 0 else ("pro" if i % 2 else "free") for i in range(n)],
        "amount": amount,
        "signup": pa.array([start + timedelta(hours=int(h)) for h in rng.integers(0, 5000, n)],
                           pa.timestamp("us", tz="UTC")),
        "target": label.astype(int),
    })


@pytest.mark.parametrize("estimator", ["HistGradientBoostingClassifier", "LogisticRegression",
                                       "RandomForestClassifier"])
def test_string_columns_are_categories_encoded_inside_the_model(tmp_path, estimator):
    write_snapshot(str(tmp_path / "s"), categorical_table())
    config = train.parse_config({"estimator": estimator, "target": "target", "params": {"max_iter": 300}
                                 if estimator != "RandomForestClassifier" else {"n_estimators": 30}})
    result = train.train(str(tmp_path / "s"), str(tmp_path / "m"), config)
    assert result["metrics"]["accuracy"] > 0.8  # country carries the signal: it was used
    manifest, model = model_io.load_verified_model(str(tmp_path / "m"))
    kinds = {c["name"]: (c["kind"], c["nullable"]) for c in manifest.schema}
    assert kinds == {"country": ("string", False), "plan": ("string", True), "amount": ("number", False),
                     "signup": ("timestamp", False)}
    encoding = json.loads(artifacts.open_file(manifest, manifest.file("model/encoding.json")).read())
    country = next(c for c in encoding["columns"] if c["name"] == "country")
    assert country["categories"] == ["br", "de", "fr", "jp", "us"]
    assert country["encode"] == ("onehot" if estimator == "LogisticRegression" else "ordinal")
    # a category never seen in training, and a missing plan, still predict
    unseen = pa.table({"country": ["zz", "jp"], "plan": [None, "pro"], "amount": [10.0, 10.0],
                       "signup": pa.array([datetime(2027, 1, 1, tzinfo=timezone.utc)] * 2,
                                          pa.timestamp("us", tz="UTC"))})
    assert len(model.predict(unseen)) == 2
    assert model.predict(unseen)[1] == 1  # jp with a small amount: the learnt rule


def test_the_sklearn_model_keeps_reproducible_bytes_with_categories(tmp_path):
    write_snapshot(str(tmp_path / "s"), categorical_table())
    config = train.parse_config({"estimator": "HistGradientBoostingClassifier", "target": "target"})
    first = train.train(str(tmp_path / "s"), str(tmp_path / "a"), config)
    second = train.train(str(tmp_path / "s"), str(tmp_path / "b"), config)
    assert first["digest"] == second["digest"]


def test_the_text_model_trains_on_texts_beside_numbers_and_handles_japanese_empty_and_long(tmp_path):
    write_snapshot(str(tmp_path / "s"), posts_table(3000, seed=1))
    config = train.parse_config({"model": "text", "target": "label", "params": {"C": 5.0}})
    result = train.train(str(tmp_path / "s"), str(tmp_path / "m"), config)
    assert result["metrics"]["accuracy"] > 0.85 and result["metrics"]["roc_auc"] > 0.85
    manifest, model = model_io.load_verified_model(str(tmp_path / "m"))
    assert manifest.extra["model"] == "text" and manifest.extra["model_class"] == "ml.models.text:TextClassifier"
    assert {f.name for f in manifest.files if f.name.startswith("model/")} == {
        "model/text_model.json", "model/idf.npy", "model/coef.npy", "model/intercept.npy"}
    probe = pa.table({"text": ["お前は本当にバカだな", "週末は家族と公園に行きました", "", "free crypto " * 20_000],
                      "length": [10, 14, 0, 240_000]})
    predicted = list(model.predict(probe))
    assert predicted[:2] == ["flagged", "ok"]  # Japanese without spaces: character n-grams
    assert len(predicted) == 4 and set(predicted) <= {"ok", "flagged"}
    assert model.predict_proba(probe).shape == (4, 2)


def test_the_text_model_refuses_string_columns_it_was_not_told_of(tmp_path):
    table = posts_table(200).append_column("author", pa.array(["a"] * 200))
    write_snapshot(str(tmp_path / "s"), table)
    code = train.main(["--data", str(tmp_path / "s"), "--output", str(tmp_path / "m"), "--config",
                       json.dumps({"model": "text", "target": "label", "params": {"text_columns": ["text"]}})])
    assert code == 2 and not (tmp_path / "m").exists()


def test_the_example_team_model_trains_and_serves_through_the_same_trainer(tmp_path, monkeypatch):
    monkeypatch.setenv("ML_MODEL_CLASSES", "keywords=keyword_moderation.model:KeywordModel")
    write_snapshot(str(tmp_path / "s"), posts_table(1500, seed=2).drop(["length"]))
    config = train.parse_config({"model": "keywords", "target": "label",
                                 "params": {"blocked_terms": ["ＳＰＡＭＬＩＮＫ"]}})
    result = train.train(str(tmp_path / "s"), str(tmp_path / "m"), config)
    assert result["metrics"]["accuracy"] > 0.8
    manifest, model = model_io.load_verified_model(str(tmp_path / "m"))
    assert (manifest.extra["model_package"], manifest.extra["model_package_version"]) == ("keyword-moderation",
                                                                                          "1.0.0")
    # its own post-processing: a blocked term (NFKC-normalised) wins over the model
    assert list(model.predict(pa.table({"text": ["see you at the meeting spamlink"]}))) == ["flagged"]


def test_the_text_model_hashes_a_large_table_in_worker_processes_into_the_same_bits(tmp_path, monkeypatch):
    from ml.models import text

    write_snapshot(str(tmp_path / "s"), posts_table(2400, seed=5))
    files, real = {}, text.TextClassifier._counts_in_parallel
    for n_jobs, parallel_rows in ((1, 10**9), (2, 400)):
        monkeypatch.setattr(text, "PARALLEL_ROWS", parallel_rows)
        monkeypatch.setattr(text, "CHUNK_ROWS", 400)  # 1,920 training rows: five chunks over two workers
        calls = []
        monkeypatch.setattr(text.TextClassifier, "_counts_in_parallel",
                            lambda self, texts, workers: calls.append(workers) or real(self, texts, workers))
        config = train.parse_config({"model": "text", "target": "label", "params": {"n_jobs": n_jobs}})
        train.train(str(tmp_path / "s"), str(tmp_path / f"m{n_jobs}"), config)
        # the fit's texts, then the held-out rows' for predict and for predict_proba
        assert calls == ([] if n_jobs == 1 else [2, 2, 2])
        manifest = artifacts.read_manifest(str(tmp_path / f"m{n_jobs}"))
        files[n_jobs] = {f.name: f.sha256 for f in manifest.files if f.name.startswith("model/")} | {
            "metrics": json.dumps(manifest.extra["metrics"], sort_keys=True)}
    assert files[1] == files[2]


@pytest.mark.parametrize("n_jobs", [0, -1, 1.5, True, "2"])
def test_the_text_model_refuses_a_bad_n_jobs(n_jobs):
    from ml.models.text import TextClassifier

    with pytest.raises(ValueError, match="n_jobs must be a positive integer"):
        TextClassifier(n_jobs=n_jobs)


def test_numbers_too_wide_for_float64_become_their_nearest_float64():
    """A BIGINT UNSIGNED at its maximum or a DECIMAL(38, 10): every model's matrix (and the
    server's warm-up rows) reads them, where pyarrow's safe cast refuses."""
    from decimal import Decimal

    from ml.snapshots import feature_matrix

    table = pa.table({"u": pa.array([2 ** 64 - 1, None], pa.uint64()),
                      "d": pa.array([Decimal("1234567890123456789012345678.0123456789"), Decimal("-1E-10")],
                                    pa.decimal128(38, 10))})
    with pytest.raises(pa.ArrowInvalid):
        table.column("u").cast(pa.float64())
    matrix = feature_matrix(table, ["u", "d"])
    assert matrix[0, 0] == float(2 ** 64 - 1) and str(matrix[1, 0]) == "nan"
    assert matrix[0, 1] == 1.2345678901234568e27 and matrix[1, 1] == -1e-10
