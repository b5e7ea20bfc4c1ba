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
