"""Small builders shared by tests: snapshots from scikit-learn's bundled data."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from ml import artifacts
from ml.snapshots import arrow_schema_fields


def write_snapshot(uri: str, table: pa.Table, fs=None, lineage: dict | None = None) -> artifacts.Manifest:
    writer = artifacts.ArtifactWriter(uri, "snapshot", fs=fs)
    with writer.open("part-00000.parquet") as f:
        pq.write_table(table, f)
    return writer.commit(schema=arrow_schema_fields(table.schema), row_count=table.num_rows,
                         lineage=lineage or {"dag_id": "test"})


def breast_cancer_table() -> pa.Table:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    return pa.Table.from_pandas(frame, preserve_index=False)


def diabetes_table() -> pa.Table:
    from sklearn.datasets import load_diabetes

    return pa.Table.from_pandas(load_diabetes(as_frame=True).frame, preserve_index=False)


class FakeTaskInstance:
    """XCom push/pull between operator calls, as the task runner provides it."""

    def __init__(self):
        self.xcoms: dict[tuple[str | None, str], object] = {}
        self.task_id = "deploy"

    def xcom_push(self, key: str, value) -> None:
        self.xcoms[(self.task_id, key)] = value

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value"):
        return self.xcoms.get((task_ids or self.task_id, key))


def two_versions(root) -> dict:
    """Two classifier versions ("1", "2") of one snapshot under ``root``, as ``Served`` values."""
    from ml import train
    from operators.deploy.targets import Served

    write_snapshot(str(root / "snap"), breast_cancer_table())
    for name, seed in (("v1", 1), ("v2", 2)):
        train.train(str(root / "snap"), str(root / name), train.parse_config(
            {"estimator": "HistGradientBoostingClassifier", "target": "target", "params": {"max_iter": 20},
             "seed": seed}))
    return {"v1": Served("1", str(root / "v1")), "v2": Served("2", str(root / "v2"))}
