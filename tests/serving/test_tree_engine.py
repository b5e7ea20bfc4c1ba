"""The compiled tree engine gives scikit-learn's raw scores and predictions bit for bit (binary,
multiclass, regression; missing values in training and at prediction; 32- and 64-bit leaf
words; one thread and several), leaves other models alone, and batch scoring takes it off
when it disagrees with scikit-learn."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from sklearn.ensemble import (HistGradientBoostingClassifier, HistGradientBoostingRegressor,
                              RandomForestClassifier)

from ml import tree_engine
from ml.tree_engine import accelerate


def data(seed: int, classes: int | None, rows: int = 1500):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 8))
    X[rng.random(X.shape) < 0.1] = np.nan  # missing values, so splits learn a side for them
    score = np.nan_to_num(X[:, 0]) * 2 + np.nan_to_num(X[:, 1]) - np.nan_to_num(X[:, 2]) ** 2
    y = score if classes is None else np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1]))
    probe = rng.normal(size=(20_000, 8)) * 1.5
    probe[rng.random(probe.shape) < 0.15] = np.nan
    probe[:50] = X[:50]  # values equal to training values: the `<=` edge of every threshold
    probe[50:60] = np.inf
    probe[60:70] = -np.inf
    return X, y, probe


@pytest.mark.parametrize("estimator,classes", [
    (HistGradientBoostingClassifier(max_iter=60, random_state=0), 2),
    (HistGradientBoostingClassifier(max_iter=40, max_depth=4, random_state=0), 4),
    (HistGradientBoostingRegressor(max_iter=80, max_leaf_nodes=63, random_state=0), None),  # 64-bit words
])
def test_predictions_are_the_same_bits_as_scikit_learn(estimator, classes, monkeypatch):
    X, y, probe = data(classes or 0, classes)
    model = estimator.fit(X, y)
    fast = copy.deepcopy(model)
    assert accelerate(fast) is fast and accelerate(fast) is fast  # a second call changes nothing more
    for size in (1, 2, 7, 32, 500):
        for start in range(0, 2000 - size, 331):
            rows = probe[start:start + size]
            assert np.array_equal(fast._raw_predict(rows), model._raw_predict(rows))
            assert np.array_equal(fast.predict(rows), model.predict(rows))
    complete = np.nan_to_num(probe[:500], posinf=9.0, neginf=-9.0)  # no missing value at all
    assert np.array_equal(fast.predict(complete), model.predict(complete))
    monkeypatch.setattr(tree_engine, "ROWS_PER_THREAD", 1000)  # the rows split over two threads
    assert np.array_equal(fast._raw_predict(probe, n_threads=2), model._raw_predict(probe, n_threads=1))
    words = {f.mask.dtype for f in tree_engine.CompiledForests(model).forests}
    assert words == ({np.dtype(np.uint64)} if classes is None else {np.dtype(np.uint32)})


@pytest.mark.parametrize("estimator,classes", [
    (HistGradientBoostingClassifier(max_iter=60, random_state=0), 2),
    (HistGradientBoostingClassifier(max_iter=40, max_depth=4, random_state=0), 4),
    (HistGradientBoostingRegressor(max_iter=80, max_leaf_nodes=63, random_state=0), None),
])
def test_the_trees_as_data_predict_what_scikit_learn_predicts(estimator, classes):
    """A model's trees written as JSON and read back (what batch scoring reads instead of loading
    scikit-learn) give its predictions with the same values and dtype, string labels included,
    for row-major, column-major and strided matrices."""
    import json

    X, y, probe = data(classes or 0, classes)
    if classes == 4:
        y = np.array(["low", "mid", "high", "top"], dtype=object)[y]
    model = estimator.fit(X, y)
    document = json.loads(json.dumps(tree_engine.trees_document(model, [f"x{i}" for i in range(8)])))
    compiled = tree_engine.TreeModel(document)
    assert compiled.features == [f"x{i}" for i in range(8)]
    for rows in (probe, np.asfortranarray(probe), probe[::3], probe[:1]):
        ours, theirs = compiled.predict(rows), model.predict(rows)
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
    assert np.array_equal(compiled.predict(probe, n_threads=2), model.predict(probe))


def test_trees_the_engine_cannot_say_are_refused_as_data():
    X, y, _ = data(3, None)
    poisson = HistGradientBoostingRegressor(loss="poisson", max_iter=5).fit(X, np.abs(y))
    with pytest.raises(tree_engine.Unsupported, match="LogLink"):
        tree_engine.trees_document(poisson, [f"x{i}" for i in range(8)])
    Xc = np.column_stack([np.nan_to_num(X[:, :3]), np.random.default_rng(0).integers(0, 4, len(X))])
    categorical = HistGradientBoostingClassifier(max_iter=5, categorical_features=[3]).fit(Xc, y > 0)
    with pytest.raises(tree_engine.Unsupported, match="categorical"):
        tree_engine.trees_document(categorical, ["a", "b", "c", "d"])
    with pytest.raises(tree_engine.Unsupported, match="format"):
        tree_engine.TreeModel({"format": "something/9"})


def test_other_models_and_unsupported_trees_are_left_alone():
    X, y, _ = data(1, 2)
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(np.nan_to_num(X), y)
    assert accelerate(forest) is None and "_predict_iterations" not in vars(forest)
    Xc = np.column_stack([np.nan_to_num(X[:, :3]), np.random.default_rng(0).integers(0, 4, len(X))])
    categorical = HistGradientBoostingClassifier(max_iter=10, categorical_features=[3]).fit(Xc, y)
    assert accelerate(categorical) is None and "_predict_iterations" not in vars(categorical)
    Xb, yb, _ = data(2, None, rows=4000)
    wide = HistGradientBoostingRegressor(max_iter=3, max_leaf_nodes=100, min_samples_leaf=2).fit(Xb, yb)
    with pytest.raises(tree_engine.Unsupported, match="leaves"):
        tree_engine.CompiledForests(wide)
    assert accelerate(wide) is None and "_predict_iterations" not in vars(wide)


def test_the_model_of_a_pipeline_is_accelerated_and_the_server_loads_it_so(trained_models):
    from sklearn.pipeline import Pipeline

    from ml.model_io import load_verified_model
    from ml.serving.model import load_model

    _, model = load_verified_model(trained_models["1"])
    pipeline = model.pipeline
    assert isinstance(pipeline, Pipeline) and accelerate(pipeline) is pipeline.steps[-1][1]
    loaded = load_model(trained_models["1"], "1")
    assert loaded.uses_matrix  # numeric features: requests go to the pipeline as the matrix they parse into
    assert "_predict_iterations" in vars(loaded.model.pipeline.steps[-1][1])  # kept: same predictions at load
    assert loaded.trees is not None  # and its own trees predict without scikit-learn's wrapper


def test_quick_compiled_trees_are_predicted_on_the_event_loop_and_slow_ones_are_not(trained_models, monkeypatch):
    from ml.serving import model as served

    monkeypatch.setattr(served, "INLINE_SECONDS", 1.0)
    assert served.load_model(trained_models["1"], "1").inline_predict
    monkeypatch.setattr(served, "INLINE_SECONDS", 0.0)  # slower than the bound: the predict thread
    slow = served.load_model(trained_models["1"], "1")
    assert slow.trees is not None and not slow.inline_predict


def test_batch_scoring_takes_the_engine_off_when_it_disagrees(tmp_path, caplog):
    """A wrong engine (here: one that adds 1 to every raw score) is caught on the shard's first
    batch; the shard's predictions are scikit-learn's, and the log says so."""
    import pyarrow.parquet as pq

    from ml import batch_scoring, model_io, train
    from ml.snapshots import feature_matrix
    from tests.helpers import breast_cancer_table, write_snapshot

    table = breast_cancer_table()
    write_snapshot(str(tmp_path / "s"), table)
    train.train(str(tmp_path / "s"), str(tmp_path / "m"), train.parse_config(
        {"estimator": "HistGradientBoostingClassifier", "target": "target", "params": {"max_iter": 20}}))
    manifest, model = model_io.load_verified_model(str(tmp_path / "m"))
    expected = model.pipeline.predict(feature_matrix(table, [c["name"] for c in manifest.schema]))
    estimator = accelerate(model.pipeline)
    compiled = estimator._predict_iterations

    def wrong(X, predictors, raw, is_binned, n_threads):
        compiled(X, predictors, raw, is_binned, n_threads)
        raw += 10.0

    estimator._predict_iterations = wrong
    shard = batch_scoring.plan_shards(str(tmp_path / "s"))[0]
    result = batch_scoring.score_shard(str(tmp_path / "m"), "1", str(tmp_path / "s"), shard, str(tmp_path / "w"),
                                       model=(manifest, model), batch_rows=100)
    scored = pq.read_table(tmp_path / "w" / result["name"]).column("prediction").to_numpy()
    assert np.array_equal(scored, expected)
    assert "disagreed with scikit-learn" in caplog.text and "_predict_iterations" not in vars(estimator)
