"""skops I/O: reproducible bytes (digest = identity), and untrusted types refused."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.preprocessing import FunctionTransformer

from ml import model_io
from ml.training_config import ESTIMATORS, parse_config
from ml.train import build_pipeline


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_same_model_saves_to_identical_bytes_and_round_trips(estimator):
    X, y = load_iris(return_X_y=True)
    target = y if ESTIMATORS[estimator].task == "classification" else X[:, 0]
    features = X if ESTIMATORS[estimator].task == "classification" else X[:, 1:]
    params = {"max_iter": 500} if estimator == "LogisticRegression" else {}
    config = parse_config({"estimator": estimator, "target": "t", "params": params})
    first = build_pipeline(config).fit(features, target)
    second = build_pipeline(config).fit(features, target)
    data = model_io.dumps(first)
    assert data == model_io.dumps(second)
    np.testing.assert_allclose(model_io.loads(data).predict(features), first.predict(features))


def test_untrusted_type_is_refused():
    import os

    data = model_io.dumps(FunctionTransformer(func=os.system))
    with pytest.raises(ValueError, match="not trusted"):
        model_io.loads(data)
