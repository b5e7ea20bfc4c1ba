"""Read a snapshot artifact (Parquet parts + manifest) as one Arrow table, verified first."""

from __future__ import annotations

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from ml import artifacts


def arrow_schema_fields(schema: pa.Schema) -> list[dict[str, str]]:
    """The manifest's schema form: [{"name": ..., "type": ...}]."""
    return [{"name": f.name, "type": str(f.type)} for f in schema]


def read_snapshot(uri: str, fs: fsspec.AbstractFileSystem | None = None) -> tuple[artifacts.Manifest, pa.Table]:
    manifest = artifacts.open_verified(uri, kind="snapshot", fs=fs)
    parts = manifest.files_with_suffix(".parquet")
    if not parts:
        raise artifacts.ArtifactCorruptError(f"{uri}: snapshot manifest lists no .parquet file")
    tables = []
    for entry in parts:
        with artifacts.open_file(manifest, entry, fs=fs) as f:
            tables.append(pq.read_table(f))
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if manifest.row_count is not None and table.num_rows != manifest.row_count:
        raise artifacts.ArtifactCorruptError(
            f"{uri}: manifest says {manifest.row_count} rows, files hold {table.num_rows}"
        )
    return manifest, table


def float_values(column):
    """A numeric (or boolean) column as float64 NumPy, nulls NaN: what every model sees. An
    integer above 2**53 (a BIGINT UNSIGNED at its maximum) or a decimal becomes its nearest
    float64; pyarrow's default safe cast would refuse it."""
    return column.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)


def feature_matrix(table: pa.Table, names: list[str], order: str = "C"):
    """The float64 matrix of ``names`` (in that order); nulls become NaN. ``order="F"``:
    column-major, each column written once into its place (what the compiled tree engine reads
    without another copy)."""
    import numpy as np

    if order == "C":
        return np.column_stack([float_values(table.column(n)) for n in names])
    matrix = np.empty((table.num_rows, len(names)), order="F")
    for i, name in enumerate(names):
        matrix[:, i] = float_values(table.column(name))
    return matrix
