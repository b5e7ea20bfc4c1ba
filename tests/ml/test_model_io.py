"""skops I/O: reproducible bytes (digest = identity), and untrusted types refused."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.preprocessing import FunctionTransformer

from ml import model_io
from ml.training_config import ESTIMATORS, parse_config


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_same_model_saves_to_identical_bytes_and_round_trips(estimator, tmp_path):
    import pyarrow as pa

    X, y = load_iris(return_X_y=True)
    target = y if ESTIMATORS[estimator].task == "classification" else X[:, 0]
    features = X if ESTIMATORS[estimator].task == "classification" else X[:, 1:]
    table = pa.table({f"x{i}": features[:, i] for i in range(features.shape[1])})
    params = {"max_iter": 500} if estimator == "LogisticRegression" else {}
    config = parse_config({"estimator": estimator, "target": "t", "params": params})
    saved = []
    for attempt in ("first", "second"):
        model = config.build()
        model.fit(table, target)
        (tmp_path / attempt).mkdir()
        model.save(tmp_path / attempt)
        saved.append({p.name: p.read_bytes() for p in (tmp_path / attempt).iterdir()})
    assert saved[0] == saved[1]
    loaded = type(model).load(tmp_path / "first")
    np.testing.assert_allclose(loaded.predict(table), model.predict(table))
    np.testing.assert_allclose(loaded.predict_matrix(features), model.predict(table))


def test_untrusted_type_is_refused():
    import os

    data = model_io.dumps(FunctionTransformer(func=os.system))
    with pytest.raises(ValueError, match="not trusted"):
        model_io.loads(data)


class _Planted:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_in_a_valid_artifact_is_refused_and_never_executed(tmp_path):
    import pickle

    from ml import artifacts

    marker = tmp_path / "unpickled"
    writer = artifacts.ArtifactWriter(str(tmp_path / "model"), "model")
    writer.write_bytes("model.skops", pickle.dumps(_Planted(str(marker))))  # digests match: only the format lies
    writer.commit(schema=[{"name": "x", "type": "double"}], row_count=None, lineage={})
    with pytest.raises(Exception):
        model_io.load_verified_model(str(tmp_path / "model"))
    assert not marker.exists()


def test_no_model_loading_path_can_unpickle():
    """Models load only through skops with the trusted list: nothing in ml/, operators/ or
    plugins/ imports pickle, cloudpickle or dill, or calls joblib.load."""
    import ast
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    found = []
    for path in [p for d in ("ml", "operators", "plugins") for p in (repo / d).rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] in ("pickle", "cloudpickle", "dill", "_pickle") for n in names):
                found.append(f"{path.relative_to(repo)} imports {names}")
            if isinstance(node, ast.Attribute) and node.attr == "load" and getattr(node.value, "id", "") == "joblib":
                found.append(f"{path.relative_to(repo)} calls joblib.load")
    assert found == []
