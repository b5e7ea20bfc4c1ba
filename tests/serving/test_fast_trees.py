"""The vectorised tree walk gives scikit-learn's predictions bit for bit (binary, multiclass,
regression; missing values in training and at prediction), leaves other models alone, and
hands big batches back to scikit-learn."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from sklearn.ensemble import (HistGradientBoostingClassifier, HistGradientBoostingRegressor,
                              RandomForestClassifier)

from ml.serving.fast_trees import MAX_ROWS, accelerate


def data(seed: int, classes: int | None):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(1500, 8))
    X[rng.random(X.shape) < 0.1] = np.nan  # missing values, so splits learn a side for them
    score = np.nan_to_num(X[:, 0]) * 2 + np.nan_to_num(X[:, 1]) - np.nan_to_num(X[:, 2]) ** 2
    y = score if classes is None else np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1]))
    probe = rng.normal(size=(600, 8)) * 1.5
    probe[rng.random(probe.shape) < 0.15] = np.nan
    probe[:50] = X[:50]  # values equal to training values: the `<=` edge of every threshold
    return X, y, probe


@pytest.mark.parametrize("estimator,classes", [
    (HistGradientBoostingClassifier(max_iter=60, random_state=0), 2),
    (HistGradientBoostingClassifier(max_iter=40, max_depth=4, random_state=0), 4),
    (HistGradientBoostingRegressor(max_iter=80, max_leaf_nodes=63, random_state=0), None),
])
def test_predictions_are_the_same_bits_as_scikit_learn(estimator, classes):
    X, y, probe = data(classes or 0, classes)
    model = estimator.fit(X, y)
    fast = copy.deepcopy(model)
    assert accelerate(fast) is fast
    for size in (1, 2, 7, MAX_ROWS):
        for start in range(0, len(probe) - size, 97):
            rows = probe[start:start + size]
            assert np.array_equal(fast._raw_predict(rows), model._raw_predict(rows))
            assert np.array_equal(fast.predict(rows), model.predict(rows))
    complete = np.nan_to_num(probe[:MAX_ROWS])  # no missing value: the walk's other branch
    assert np.array_equal(fast.predict(complete), model.predict(complete))
    big = probe[:MAX_ROWS + 1]  # scikit-learn's own walk
    assert np.array_equal(fast.predict(big), model.predict(big))


def test_other_models_and_categorical_splits_are_left_alone():
    X, y, _ = data(1, 2)
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(np.nan_to_num(X), y)
    assert accelerate(forest) is None and "_predict_iterations" not in vars(forest)
    Xc = np.column_stack([np.nan_to_num(X[:, :3]), np.random.default_rng(0).integers(0, 4, len(X))])
    categorical = HistGradientBoostingClassifier(max_iter=10, categorical_features=[3]).fit(Xc, y)
    assert accelerate(categorical) is None and "_predict_iterations" not in vars(categorical)


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
