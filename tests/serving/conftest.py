from __future__ import annotations

import pyarrow as pa
import pytest

from ml import train
from tests.helpers import breast_cancer_table, write_snapshot


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory):
    """v1 and v2 (different seeds) on the breast-cancer data, whose first feature has missing values."""
    root = tmp_path_factory.mktemp("serving-models")
    table = breast_cancer_table()
    col = table.column(0).to_pylist()
    col[::7] = [None] * len(col[::7])
    table = table.set_column(0, table.schema.field(0).name, pa.array(col, pa.float64()))
    write_snapshot(str(root / "snap"), table)
    models = {}
    for version, seed in (("1", 1), ("2", 2), ("3", 3)):
        config = train.parse_config({"estimator": "HistGradientBoostingClassifier", "target": "target",
                                     "params": {"max_iter": 30}, "seed": seed})
        train.train(str(root / "snap"), str(root / f"v{version}"), config)
        models[version] = str(root / f"v{version}")
    models["root"] = str(root)
    models["features"] = [n for n in table.column_names if n != "target"]
    models["rows"] = [[v if v is not None else None for v in row.values()]
                      for row in table.drop(["target"]).slice(0, 5).to_pylist()]
    return models
