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


@pytest.fixture(scope="session")
def text_model(tmp_path_factory):
    """The built-in text model on generated moderation posts, with a list-of-strings feature (tags)."""
    from demo.moderation_posts import table as posts_table

    root = tmp_path_factory.mktemp("text-model")
    table = posts_table(1200, seed=4)
    tags = [["promo", "link"] if label == "flagged" and i % 2 else (["chat"] if i % 3 else [])
            for i, label in enumerate(table.column("label").to_pylist())]
    write_snapshot(str(root / "snap"), table.append_column("tags", pa.array(tags, pa.list_(pa.string()))))
    train.train(str(root / "snap"), str(root / "m"), train.parse_config({"model": "text", "target": "label"}))
    return str(root / "m")
