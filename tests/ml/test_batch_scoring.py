"""Batch scoring: shards from footers, streamed scoring, one manifest over exactly the shards."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ml import artifacts, batch_scoring, model_io, train
from ml.snapshots import arrow_schema_fields, feature_matrix
from tests.helpers import breast_cancer_table, write_snapshot


def snapshot_in_row_groups(uri: str, table: pa.Table, group_rows: int, files: int = 2) -> artifacts.Manifest:
    writer = artifacts.ArtifactWriter(uri, "snapshot")
    per_file = -(-table.num_rows // files)
    for i in range(files):
        with writer.open(f"part-{i:05d}.parquet") as f:
            pq.write_table(table.slice(i * per_file, per_file), f, row_group_size=group_rows)
    return writer.commit(schema=arrow_schema_fields(table.schema), row_count=table.num_rows, lineage={})


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring-model")
    write_snapshot(str(root / "snap"), breast_cancer_table())
    train.train(str(root / "snap"), str(root / "m"), train.parse_config(
        {"estimator": "LogisticRegression", "target": "target", "params": {"max_iter": 500}}))
    return str(root / "m")


def test_shards_cover_every_row_once_in_shards_of_the_size_asked(tmp_path):
    table = breast_cancer_table()  # 569 rows: files of 285 and 284
    snapshot_in_row_groups(str(tmp_path / "s"), table, group_rows=50)
    shards = batch_scoring.plan_shards(str(tmp_path / "s"), rows_per_shard=120)
    assert [s["shard"] for s in shards] == list(range(len(shards)))
    assert sum(s["rows"] for s in shards) == table.num_rows
    assert [s["rows"] for s in shards] == [120, 120, 120, 120, 89]
    # the third shard ends the first file and starts the second: it verifies both
    assert [len({path for path, *_ in s["parts"]}) for s in shards] == [1, 1, 2, 1, 1]
    covered = sorted((path, group, row) for s in shards for path, group, start, stop in s["parts"]
                     for row in range(start, stop))
    assert len(covered) == len(set(covered)) == table.num_rows  # every row in exactly one shard
    with pytest.raises(ValueError, match="rows_per_shard"):
        batch_scoring.plan_shards(str(tmp_path / "s"), rows_per_shard=0)


def test_scored_shards_commit_one_partition_with_the_models_predictions(tmp_path, model):
    table = breast_cancer_table()
    snapshot_in_row_groups(str(tmp_path / "s"), table, group_rows=64)
    shards = batch_scoring.plan_shards(str(tmp_path / "s"), rows_per_shard=200)
    write = tmp_path / "p" / "w-run1"
    results = [batch_scoring.score_shard(model, "7", str(tmp_path / "s"), s, str(write), batch_rows=32)
               for s in shards]
    manifest = batch_scoring.commit_predictions(str(tmp_path / "p"), "run1", results, {"run_id": "r"}, {})
    assert manifest.kind == "predictions" and manifest.row_count == table.num_rows
    assert sorted(e.name for e in manifest.files) == [f"shard-{i:05d}.parquet" for i in range(len(shards))]
    artifacts.verify(artifacts.read_manifest(str(tmp_path / "p")))
    scored = pa.concat_tables(pq.read_table(artifacts.file_uri(manifest, e).removeprefix("file://"))
                              for e in sorted(manifest.files, key=lambda e: e.path))
    model_manifest, estimator = model_io.load_verified_model(model)
    features = [c["name"] for c in model_manifest.schema]
    assert scored.column("prediction").to_pylist() == estimator.pipeline.predict(feature_matrix(table, features)).tolist()
    assert set(scored.column("model_version").to_pylist()) == {"7"}
    assert "target" in scored.column_names and "mean_radius" not in scored.column_names


def test_a_retried_shard_replaces_its_file_and_leftovers_are_not_listed(tmp_path, model):
    snapshot_in_row_groups(str(tmp_path / "s"), breast_cancer_table(), group_rows=100)
    shards = batch_scoring.plan_shards(str(tmp_path / "s"), rows_per_shard=300)
    write = tmp_path / "p" / "w-run1"
    first = batch_scoring.score_shard(model, "1", str(tmp_path / "s"), shards[0], str(write))
    again = batch_scoring.score_shard(model, "1", str(tmp_path / "s"), shards[0], str(write))
    assert first["name"] == again["name"] and [p.name for p in write.iterdir()] == [first["name"]]
    (write / "shard-00099.parquet").write_bytes(b"from an earlier try with more shards")
    rest = [batch_scoring.score_shard(model, "1", str(tmp_path / "s"), s, str(write)) for s in shards[1:]]
    manifest = batch_scoring.commit_predictions(str(tmp_path / "p"), "run1", [again, *rest], {}, {})
    assert "shard-00099.parquet" not in {e.name for e in manifest.files}
    assert not (write / "shard-00099.parquet").exists()
    with pytest.raises(artifacts.ArtifactIncompleteError, match="shard-00005"):
        batch_scoring.commit_predictions(str(tmp_path / "p"), "run1", [{"name": "shard-00005.parquet", "rows": 1}],
                                         {}, {})
    assert artifacts.read_manifest(str(tmp_path / "p")).digest == manifest.digest  # the failed commit changed nothing


def test_a_modified_snapshot_file_is_refused_before_scoring(tmp_path, model):
    snapshot_in_row_groups(str(tmp_path / "s"), breast_cancer_table(), group_rows=100, files=1)
    shards = batch_scoring.plan_shards(str(tmp_path / "s"))
    manifest = artifacts.read_manifest(str(tmp_path / "s"))
    path = artifacts.file_uri(manifest, manifest.files[0]).removeprefix("file://")
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"\0\0\0\0")
    with pytest.raises(artifacts.ArtifactCorruptError, match="does not match"):
        batch_scoring.score_shard(model, "1", str(tmp_path / "s"), shards[0], str(tmp_path / "p" / "w-x"))
    assert not (tmp_path / "p").exists() or not any((tmp_path / "p").rglob("*.parquet"))


def test_a_shard_naming_a_file_the_snapshot_does_not_list_is_refused(tmp_path, model):
    snapshot_in_row_groups(str(tmp_path / "s"), breast_cancer_table(), group_rows=100, files=1)
    (shard,) = batch_scoring.plan_shards(str(tmp_path / "s"))
    forged = {**shard, "parts": [["w-elsewhere/part-00000.parquet", 0, 0, 10]]}
    with pytest.raises(artifacts.ArtifactCorruptError, match="names w-elsewhere/part-00000.parquet, which the "
                                                             "snapshot's manifest does not list"):
        batch_scoring.score_shard(model, "1", str(tmp_path / "s"), forged, str(tmp_path / "p" / "w-x"))


def test_a_snapshot_without_the_model_features_leaves_no_partial_shard_and_progress_is_logged(tmp_path, model,
                                                                                               caplog):
    table = breast_cancer_table()
    snapshot_in_row_groups(str(tmp_path / "other"), table.drop(["mean_radius"]), group_rows=100, files=1)
    (shard,) = batch_scoring.plan_shards(str(tmp_path / "other"))
    write = tmp_path / "p" / "w-x"
    with pytest.raises(ValueError, match=r"the snapshot lacks the model's feature columns \['mean_radius'\]"):
        batch_scoring.score_shard(model, "1", str(tmp_path / "other"), shard, str(write))
    assert list(write.iterdir()) == []  # the temporary file is removed, no shard file appears
    snapshot_in_row_groups(str(tmp_path / "s"), table, group_rows=100, files=1)
    (shard,) = batch_scoring.plan_shards(str(tmp_path / "s"))
    with caplog.at_level("INFO", logger="ml.batch_scoring"):
        done = batch_scoring.score_shard(model, "1", str(tmp_path / "s"), shard, str(write), batch_rows=100,
                                         progress_every=0)
    assert done["rows"] == table.num_rows
    assert f"shard 0: 100 of {table.num_rows} rows scored" in caplog.text


def test_a_shard_on_an_object_store_appears_whole_by_a_copy(tmp_path, model):
    import fsspec

    snapshot_in_row_groups(str(tmp_path / "s"), breast_cancer_table(), group_rows=100, files=1)
    (shard,) = batch_scoring.plan_shards(str(tmp_path / "s"))
    done = batch_scoring.score_shard(model, "1", str(tmp_path / "s"), shard, "memory://scores/w-x")
    memory = fsspec.filesystem("memory")
    assert memory.ls("/scores/w-x", detail=False) == [f"/scores/w-x/{done['name']}"]  # no temporary left
    with memory.open(f"/scores/w-x/{done['name']}", "rb") as f:
        assert pq.read_table(f).num_rows == 569


@pytest.fixture(scope="module")
def tree_model(tmp_path_factory):
    """A HistGradientBoosting model trained with missing values: its artifact has trees.json."""
    root = tmp_path_factory.mktemp("scoring-trees")
    write_snapshot(str(root / "snap"), with_holes(breast_cancer_table()))
    train.train(str(root / "snap"), str(root / "m"), train.parse_config(
        {"estimator": "HistGradientBoostingClassifier", "target": "target", "params": {"max_iter": 40}}))
    return str(root / "m")


def with_holes(table: pa.Table) -> pa.Table:
    values = table.column("mean_radius").to_pylist()
    values[::6] = [None] * len(values[::6])
    return table.set_column(0, "mean_radius", pa.array(values, pa.float64()))


SCORE_IN_A_FRESH_PROCESS = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s")
from ml import batch_scoring
model, snapshot, write = sys.argv[1:4]
results = [batch_scoring.score_shard(model, "3", snapshot, shard, write)
           for shard in batch_scoring.plan_shards(snapshot, rows_per_shard=250)]
print(json.dumps({"results": results, "sklearn_imported": "sklearn" in sys.modules}))
"""


def test_a_model_with_compiled_trees_is_scored_without_loading_scikit_learn(tmp_path, tree_model):
    """The shard reads trees.json: scikit-learn is never imported in its process (its ~2 s import
    was most of a shard's start-up), and the predictions are scikit-learn's row for row."""
    import json
    import subprocess
    import sys

    table = with_holes(breast_cancer_table())
    snapshot_in_row_groups(str(tmp_path / "s"), table, group_rows=64, files=3)
    proc = subprocess.run([sys.executable, "-c", SCORE_IN_A_FRESH_PROCESS, tree_model, str(tmp_path / "s"),
                           str(tmp_path / "p" / "w-run")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["sklearn_imported"] is False
    assert "(compiled trees (trees.json))" in proc.stderr
    scored = pa.concat_tables(pq.read_table(tmp_path / "p" / "w-run" / r["name"]) for r in out["results"])
    model_manifest, model = model_io.load_verified_model(tree_model)
    expected = model.pipeline.predict(feature_matrix(table, [c["name"] for c in model_manifest.schema]))
    assert scored.num_rows == table.num_rows
    assert scored.column("prediction").to_pylist() == expected.tolist()
    assert scored.column("target").to_pylist() == table.column("target").to_pylist()  # the rows' own order


def test_planning_reads_no_rows_but_refuses_a_file_of_another_size(tmp_path):
    snapshot_in_row_groups(str(tmp_path / "s"), breast_cancer_table(), group_rows=100, files=2)
    manifest = artifacts.read_manifest(str(tmp_path / "s"))
    path = artifacts.file_uri(manifest, manifest.files[1]).removeprefix("file://")
    with open(path, "ab") as f:
        f.write(b"appended")
    with pytest.raises(artifacts.ArtifactCorruptError, match=f"{manifest.files[1].path} is "
                                                             f"{manifest.files[1].size + 8} bytes, its manifest says"):
        batch_scoring.plan_shards(str(tmp_path / "s"))


def test_a_shard_holds_at_most_two_verified_files_and_releases_every_one(tmp_path, tree_model, monkeypatch):
    """Files are hashed one ahead of the rows being scored, never more than two held at once (a
    local file is mapped while held), each released when its rows are written, and all of them
    when a later file turns out modified: the shard then leaves no file behind."""
    live, most = [], [0]

    class Counted(artifacts.VerifiedFile):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            live.append(self)
            most[0] = max(most[0], len(live))

        def close(self):
            if self in live:
                live.remove(self)
            super().close()

    monkeypatch.setattr(artifacts, "VerifiedFile", Counted)
    table = breast_cancer_table()
    snapshot_in_row_groups(str(tmp_path / "s"), table, group_rows=20, files=5)
    (shard,) = batch_scoring.plan_shards(str(tmp_path / "s"), rows_per_shard=1000)
    done = batch_scoring.score_shard(tree_model, "1", str(tmp_path / "s"), shard, str(tmp_path / "p" / "w-a"),
                                     batch_rows=16)
    assert done["rows"] == table.num_rows and most[0] == 2 and live == []
    manifest = artifacts.read_manifest(str(tmp_path / "s"))
    with open(artifacts.file_uri(manifest, manifest.files[3]).removeprefix("file://"), "r+b") as f:
        f.seek(200)
        f.write(b"\xff\xff")
    with pytest.raises(artifacts.ArtifactCorruptError, match=f"{manifest.files[3].path} does not match"):
        batch_scoring.score_shard(tree_model, "1", str(tmp_path / "s"), shard, str(tmp_path / "p" / "w-b"))
    assert live == [] and list((tmp_path / "p" / "w-b").iterdir()) == []


def test_a_snapshot_on_an_object_store_is_hashed_as_it_streams_and_scored(tree_model):
    """Off the local disk nothing is mapped: each file is hashed as it streams, then every reader
    opens it again; a modified file is refused there too."""
    import fsspec

    table = breast_cancer_table()
    uri = "memory://scoring-input/snap"
    snapshot_in_row_groups(uri, table, group_rows=50, files=3)
    (shard,) = batch_scoring.plan_shards(uri, rows_per_shard=1000)
    done = batch_scoring.score_shard(tree_model, "1", uri, shard, "memory://scoring-output/w-a", batch_rows=40)
    memory = fsspec.filesystem("memory")
    with memory.open(f"/scoring-output/w-a/{done['name']}", "rb") as f:
        assert pq.read_table(f).column("target").to_pylist() == table.column("target").to_pylist()
    manifest = artifacts.read_manifest(uri)
    path = f"/scoring-input/snap/{manifest.files[2].path}"
    data = bytearray(memory.cat_file(path))
    data[300] ^= 0xFF
    memory.pipe_file(path, bytes(data))
    with pytest.raises(artifacts.ArtifactCorruptError, match=f"{manifest.files[2].path} does not match"):
        batch_scoring.score_shard(tree_model, "1", uri, shard, "memory://scoring-output/w-b")
