"""The artifact contract: manifest last, digests verified, incomplete or tampered refused."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pytest

from ml import artifacts
from ml.snapshots import read_snapshot
from tests.helpers import write_snapshot

TABLE = pa.table({"x": [1.0, 2.0, float("nan"), None], "label": [0, 1, 0, 1]})


def test_manifest_lists_every_file_with_digest_schema_rows_and_lineage(tmp_path):
    uri = f"file://{tmp_path}/snap"
    written = write_snapshot(uri, TABLE, lineage={"dag_id": "d", "run_id": "r"})
    manifest = artifacts.open_verified(uri, kind="snapshot")
    assert manifest.digest == written.digest
    assert manifest.kind == "snapshot" and manifest.row_count == 4
    assert [c["name"] for c in manifest.schema] == ["x", "label"]
    assert manifest.schema[0]["type"] == "double"
    assert manifest.lineage == {"dag_id": "d", "run_id": "r"}
    assert manifest.created_at.endswith("+00:00")
    (entry,) = manifest.files
    on_disk = tmp_path / "snap" / entry.path
    assert on_disk.stat().st_size == entry.size
    import hashlib

    assert hashlib.sha256(on_disk.read_bytes()).hexdigest() == entry.sha256
    _, table = read_snapshot(uri)
    import pyarrow.compute as pc

    assert table.column("x").null_count == 1  # NaN stays a value, None stays null
    assert pc.sum(pc.is_nan(table.column("x"))).as_py() == 1
    assert table.column("label").to_pylist() == [0, 1, 0, 1]


def test_directory_without_manifest_is_refused(tmp_path):
    uri = str(tmp_path / "snap")
    writer = artifacts.ArtifactWriter(uri, "snapshot")
    writer.write_bytes("part-00000.parquet", b"half written")  # never committed
    with pytest.raises(artifacts.ArtifactIncompleteError, match="no manifest.json"):
        artifacts.open_verified(uri)
    with pytest.raises(artifacts.ArtifactIncompleteError):
        read_snapshot(uri)
    assert not artifacts.manifest_exists(uri)


def test_tampered_file_is_refused(tmp_path):
    uri = str(tmp_path / "snap")
    manifest = write_snapshot(uri, TABLE)
    path = tmp_path / "snap" / manifest.files[0].path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(artifacts.ArtifactCorruptError, match="does not match its manifest"):
        artifacts.open_verified(uri)


def test_missing_listed_file_is_refused(tmp_path):
    uri = str(tmp_path / "snap")
    manifest = write_snapshot(uri, TABLE)
    (tmp_path / "snap" / manifest.files[0].path).unlink()
    with pytest.raises(artifacts.ArtifactCorruptError, match="is missing"):
        artifacts.open_verified(uri)


def test_edited_manifest_is_refused(tmp_path):
    uri = str(tmp_path / "snap")
    write_snapshot(uri, TABLE)
    path = tmp_path / "snap" / "manifest.json"
    body = json.loads(path.read_text())
    body["files"][0]["sha256"] = "0" * 64
    path.write_text(json.dumps(body))
    with pytest.raises(artifacts.ArtifactCorruptError):
        artifacts.open_verified(uri)
    path.write_text("{not json")
    with pytest.raises(artifacts.ArtifactCorruptError, match="not a valid manifest"):
        artifacts.read_manifest(uri)


def test_wrong_kind_is_refused(tmp_path):
    uri = str(tmp_path / "snap")
    write_snapshot(uri, TABLE)
    with pytest.raises(artifacts.ArtifactKindError, match="expected 'model'"):
        artifacts.read_manifest(uri, kind="model")


def test_rewrite_swaps_atomically_and_removes_the_old_write(tmp_path):
    uri = str(tmp_path / "snap")
    first = write_snapshot(uri, TABLE)
    second = write_snapshot(uri, TABLE.slice(0, 2))
    assert first.digest != second.digest
    children = sorted(p.name for p in (tmp_path / "snap").iterdir())
    assert children == ["manifest.json", second.files[0].path.split("/")[0]]
    assert artifacts.open_verified(uri).digest == second.digest


def test_failed_rewrite_leaves_the_previous_artifact_readable(tmp_path):
    uri = str(tmp_path / "snap")
    first = write_snapshot(uri, TABLE)
    writer = artifacts.ArtifactWriter(uri, "snapshot")
    with pytest.raises(RuntimeError):
        with writer.open("part-00000.parquet") as f:
            f.write(b"partial")
            raise RuntimeError("writer crashed")
    writer.abort()
    manifest = artifacts.open_verified(uri)
    assert manifest.digest == first.digest
    assert len([p for p in (tmp_path / "snap").iterdir() if p.name.startswith("w-")]) == 1


def test_content_digest_ignores_write_ids_and_time(tmp_path):
    a = write_snapshot(str(tmp_path / "a"), TABLE)
    b = write_snapshot(str(tmp_path / "b"), TABLE)
    assert a.files[0].path != b.files[0].path
    assert a.digest == b.digest


def test_commit_refuses_empty_artifact_and_bad_names(tmp_path):
    writer = artifacts.ArtifactWriter(str(tmp_path / "x"), "model")
    with pytest.raises(ValueError, match="empty artifact"):
        writer.commit(schema=[], row_count=0, lineage={})
    with pytest.raises(ValueError, match="invalid artifact file name"):
        with writer.open("manifest.json"):
            pass
    with pytest.raises(ValueError, match="kind must be one of"):
        artifacts.ArtifactWriter(str(tmp_path / "y"), "dataset")


def test_local_manifest_write_leaves_no_temp_file(tmp_path):
    write_snapshot(str(tmp_path / "s"), TABLE)
    assert not [p for p in os.listdir(tmp_path / "s") if ".tmp-" in p]


def test_memory_filesystem_round_trip():
    uri = "memory://ml-tests/snap"
    manifest = write_snapshot(uri, TABLE)
    _, table = read_snapshot(uri)
    assert table.num_rows == 4 and artifacts.open_verified(uri).digest == manifest.digest


def test_a_manifest_that_is_not_one_and_ambiguous_file_names_are_refused(tmp_path):
    uri = f"file://{tmp_path}/snap"
    write_snapshot(uri, TABLE)
    manifest = artifacts.read_manifest(uri)
    body = json.loads((tmp_path / "snap" / artifacts.MANIFEST_NAME).read_text())
    del body["files"]
    with pytest.raises(artifacts.ArtifactCorruptError, match="is not a valid manifest: 'files'"):
        artifacts.Manifest.from_json(json.dumps(body), uri=uri)
    name = manifest.files[0].name
    twice = artifacts.Manifest(**{**manifest.__dict__, "files": manifest.files * 2})
    with pytest.raises(artifacts.ArtifactCorruptError, match=f"lists 2 files named '{name}', expected exactly one"):
        twice.file(name)
    with pytest.raises(artifacts.ArtifactCorruptError, match="manifest digest does not match its file list"):
        artifacts.verify(artifacts.Manifest(**{**manifest.__dict__, "digest": "0" * 64}))


def test_a_written_file_is_a_write_only_stream_that_counts_and_hashes(tmp_path):
    import hashlib

    import pyarrow.parquet as pq

    writer = artifacts.ArtifactWriter(f"file://{tmp_path}/a", kind="snapshot")
    with writer.open("part.parquet") as f:
        assert f.writable() and not f.readable() and not f.seekable() and not f.closed
        pq.write_table(TABLE, f)  # a library writer that asks tell() and flushes
        assert f.tell() == f.size > 0
        f.flush()
    assert f.closed
    (entry,) = writer._entries
    data = next((tmp_path / "a").glob("w-*/part.parquet")).read_bytes()
    assert entry.sha256 == hashlib.sha256(data).hexdigest() and entry.size == len(data)


def test_a_write_id_is_checked_and_a_write_commits_once(tmp_path):
    with pytest.raises(ValueError, match="write_id may hold letters, digits"):
        artifacts.ArtifactWriter(f"file://{tmp_path}/a", kind="snapshot", write_id="../escape")
    writer = artifacts.ArtifactWriter(f"file://{tmp_path}/a", kind="snapshot", write_id="shard-1")
    assert writer.adopt() == []  # nothing staged yet
    writer.write_bytes("x.bin", b"x")
    writer.commit(schema=[], row_count=None, lineage={})
    with pytest.raises(RuntimeError, match="artifact already committed"):
        writer.commit(schema=[], row_count=None, lineage={})
    writer.abort()  # after the commit: a no-op, the artifact stays
    assert artifacts.open_verified(f"file://{tmp_path}/a").files[0].name == "x.bin"
    writer.remove_unlisted()


def test_abort_and_cleanup_of_a_write_whose_files_are_gone_do_not_fail(tmp_path):
    import shutil

    writer = artifacts.ArtifactWriter(f"file://{tmp_path}/a", kind="snapshot")
    writer.write_bytes("x.bin", b"x")
    shutil.rmtree(tmp_path / "a")
    writer.abort()  # best effort: nothing left to remove
    writer.remove_unlisted()
    writer._remove_stale_writes()
    assert not (tmp_path / "a").exists()


def test_a_copy_onto_an_identical_artifact_copies_nothing(tmp_path):
    src, dest = f"file://{tmp_path}/src", f"file://{tmp_path}/dest"
    write_snapshot(src, TABLE)
    assert artifacts.copy_verified(src, src, kind="snapshot").uri == src  # onto itself
    first = artifacts.copy_verified(src, dest, kind="snapshot")
    stamp = (tmp_path / "dest" / artifacts.MANIFEST_NAME).stat().st_mtime_ns
    again = artifacts.copy_verified(src, dest, kind="snapshot")
    assert again.digest == first.digest and again.uri == first.uri
    assert (tmp_path / "dest" / artifacts.MANIFEST_NAME).stat().st_mtime_ns == stamp  # not rewritten
