"""The contract over real HTTP object-store clients: s3fs against moto's server, gcsfs against a GCS emulator."""

from __future__ import annotations

import pyarrow as pa
import pytest

from ml import artifacts
from ml.snapshots import read_snapshot
from tests.helpers import write_snapshot

TABLE = pa.table({"x": [0.5, 1.5, None], "y": ["a", "", None]})


def test_s3_round_trip_rewrite_and_tamper(s3_bucket):
    uri = f"s3://{s3_bucket}/snapshots/interval=1"
    with pytest.raises(artifacts.ArtifactIncompleteError):
        artifacts.read_manifest(uri)
    first = write_snapshot(uri, TABLE)
    second = write_snapshot(uri, TABLE.slice(0, 1))
    manifest, table = read_snapshot(uri)
    assert manifest.digest == second.digest != first.digest
    assert table.num_rows == 1
    fs, root = artifacts.resolve(uri)
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(root, detail=False)) == sorted(
        ["manifest.json", second.files[0].path.split("/")[0]]
    )
    fs.pipe_file(f"{root}/{manifest.files[0].path}", b"tampered")
    with pytest.raises(artifacts.ArtifactCorruptError):
        artifacts.open_verified(uri)


def test_gcs_round_trip_and_missing_manifest(gcs_fs, gcs_emulator):
    uri = f"gs://{gcs_emulator.bucket}/snapshots/interval=1"
    with pytest.raises(artifacts.ArtifactIncompleteError):
        artifacts.read_manifest(uri, fs=gcs_fs)
    written = write_snapshot(uri, TABLE, fs=gcs_fs)
    manifest, table = read_snapshot(uri, fs=gcs_fs)
    assert manifest.digest == written.digest
    assert table.column("y").to_pylist() == ["a", "", None]
