"""Batch scoring: a verified snapshot in, Parquet predictions out, in shards of row groups.

``plan_shards`` reads only the snapshot's Parquet footers and cuts its rows into shards of
``rows_per_shard`` rows (row group ranges); ``score_shard`` reads one row group at a time and
scores it in record batches (memory bounded by the row group, flat however many rows there
are) and writes one Parquet file, atomically; ``commit_predictions`` lists the
shards in the partition's manifest. Each shard's file name comes from its shard number only
(the caller passes a write id fixed per DAG run), so a retried shard replaces its own file.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from ml import artifacts

log = logging.getLogger("ml.batch_scoring")
PREDICTION = "prediction"
MODEL_VERSION = "model_version"


def plan_shards(snapshot_uri: str, rows_per_shard: int = 1_000_000) -> list[dict[str, Any]]:
    """Shards of the verified snapshot, each ``rows_per_shard`` rows (the last one fewer):
    ``[{"shard": i, "parts": [[file, row group, start, stop]], "rows": n}]``. Row groups and
    files may be cut between shards; nothing but the footers is read. A shard verifies (hashes)
    the files it reads, so a file cut between two shards is hashed twice: one shard per core
    (``rows_per_shard`` = rows / cores) pays one start-up per core instead of one per file."""
    import pyarrow.parquet as pq

    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be at least 1, got {rows_per_shard}")
    manifest = artifacts.open_verified(snapshot_uri, kind="snapshot")
    shards: list[dict[str, Any]] = []
    current: dict[str, Any] = {"parts": [], "rows": 0}
    for entry in manifest.files_with_suffix(".parquet"):
        with artifacts.open_file(manifest, entry) as f:
            meta = pq.ParquetFile(f).metadata
        for group in range(meta.num_row_groups):
            start, rows = 0, meta.row_group(group).num_rows
            while start < rows:
                take = min(rows - start, rows_per_shard - current["rows"])
                current["parts"].append([entry.path, group, start, start + take])
                current["rows"] += take
                start += take
                if current["rows"] == rows_per_shard:
                    shards.append(current)
                    current = {"parts": [], "rows": 0}
    if current["rows"]:
        shards.append(current)
    for number, shard in enumerate(shards):
        shard["shard"] = number
    return shards


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}.parquet"


def score_shard(model_uri: str, model_version: str, snapshot_uri: str, shard: dict[str, Any], write_uri: str,
                batch_rows: int = 65_536, model=None, progress_every: float = 10.0,
                concurrent_shards: int = 1) -> dict[str, Any]:
    """Score one shard into ``write_uri/shard-NNNNN.parquet``; returns its name, rows and seconds.

    ``concurrent_shards``: how many shards run at once on this machine. Each predicts with
    cores // that many OpenMP threads: two shards of two threads each on two cores took 1.7x
    as long as two of one thread (the threads spin-wait on each other).

    The snapshot files this shard reads are verified first (digest); the model is loaded from
    its verified artifact unless ``model`` (a ``(manifest, model)`` pair) is given. Output
    columns: the input's columns that are not features (ids, times, the label if present),
    ``prediction`` and ``model_version``.
    """
    import joblib
    import pyarrow as pa
    import pyarrow.parquet as pq
    from threadpoolctl import threadpool_limits

    from ml.model_io import load_verified_model

    started = time.perf_counter()
    threads = max(1, joblib.cpu_count() // max(1, concurrent_shards))
    model_manifest, scorer = model or load_verified_model(model_uri)
    engine, checked = _accelerate(scorer), False
    features = [c["name"] for c in model_manifest.schema]
    snapshot = artifacts.read_manifest(snapshot_uri, kind="snapshot")
    entries = {e.path: e for e in snapshot.files}
    paths = list(dict.fromkeys(part[0] for part in shard["parts"]))
    for path in paths:
        if path not in entries:
            raise artifacts.ArtifactCorruptError(f"{snapshot_uri}: shard {shard['shard']} names {path}, "
                                                 f"which the snapshot's manifest does not list")
    artifacts.verify_files(snapshot, [entries[p] for p in paths])
    fs, root = artifacts.resolve(write_uri.rstrip("/"))
    target = f"{root}/{shard_name(shard['shard'])}"
    tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
    fs.makedirs(root, exist_ok=True)
    rows, last_report, writer = 0, time.monotonic(), None
    try:
        with threadpool_limits(limits=threads), fs.open(tmp, "wb") as out:
            for path, group, start, stop in shard["parts"]:
                with artifacts.open_file(snapshot, entries[path]) as f:
                    source = pq.ParquetFile(f)
                    missing = [c for c in features if c not in source.schema_arrow.names]
                    if missing:
                        raise ValueError(f"the snapshot lacks the model's feature columns {missing}")
                    keep = [c for c in source.schema_arrow.names if c not in features]
                    piece = source.read_row_group(group).slice(start, stop - start)
                for batch in piece.to_batches(max_chunksize=batch_rows):
                    table = pa.Table.from_batches([batch])
                    predicted = predictions(scorer, table.select(features), model_manifest)
                    if engine is not None and not checked:  # the first batch: the engine against scikit-learn
                        checked = True
                        if not _check_engine(engine, scorer, table.select(features), predicted):
                            engine = None
                    scored = table.select(keep).append_column(PREDICTION, pa.array(predicted)).append_column(
                        MODEL_VERSION, pa.array([model_version] * batch.num_rows, pa.string()))
                    if writer is None:
                        writer = pq.ParquetWriter(out, scored.schema)
                    writer.write_table(scored)
                    rows += batch.num_rows
                    if time.monotonic() - last_report >= progress_every:
                        last_report = time.monotonic()
                        log.info("shard %d: %d of %d rows scored", shard["shard"], rows, shard["rows"])
                del piece
            if writer is not None:
                writer.close()
        _replace(fs, tmp, target)
    except BaseException:
        try:
            fs.rm(tmp)
        except FileNotFoundError:
            pass
        raise
    seconds = time.perf_counter() - started
    log.info("shard %d: %d rows scored by version %s in %.2f s (%s)", shard["shard"], rows, model_version, seconds,
             "compiled tree engine" if engine is not None else "the model's own predict")
    return {"name": shard_name(shard["shard"]), "rows": rows, "seconds": round(seconds, 3)}


CHECK_ROWS = 2_000


def _accelerate(scorer):
    """The compiled tree engine on a built-in HistGradientBoosting model (ml/tree_engine.py),
    or None where it does not apply."""
    pipeline = getattr(scorer, "pipeline", None)
    if pipeline is None:
        return None
    from ml.tree_engine import accelerate

    return accelerate(pipeline)


def _check_engine(estimator, scorer, features, predicted) -> bool:
    """The engine's predictions on the first CHECK_ROWS rows against scikit-learn's own; on any
    difference the engine is taken off (``predicted`` is replaced by scikit-learn's) and False
    returned: the rest of the shard is scored by scikit-learn."""
    import numpy as np

    rows = features.slice(0, CHECK_ROWS)
    compiled = vars(estimator).pop("_predict_iterations")
    expected = np.asarray(scorer.predict(rows))
    if np.array_equal(expected, np.asarray(predicted[:len(expected)])):
        estimator._predict_iterations = compiled
        return True
    log.warning("the compiled tree engine disagreed with scikit-learn on the first %d rows: scikit-learn's own "
                "walk scores this shard", len(expected))
    predicted[:] = np.asarray(scorer.predict(features))
    return False


def predictions(model, features, manifest):
    """``model``'s outputs for ``features``, refused unless one per row (a model's own code may not
    keep the interface's promise, and a short column would shift every later row's prediction)."""
    import numpy as np

    predicted = np.asarray(model.predict(features))
    if predicted.ndim != 1 or len(predicted) != features.num_rows:
        raise ValueError(f"model {manifest.extra.get('model', '')} ({manifest.uri}) returned "
                         f"{predicted.shape} outputs for {features.num_rows} rows: one per row is required")
    return predicted


def _replace(fs, tmp: str, target: str) -> None:
    """A rename locally; on object stores a copy (the shard's file appears whole or not at all)."""
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        import os

        os.replace(tmp, target)
    else:
        fs.mv(tmp, target)


def commit_predictions(partition_uri: str, write_id: str, shards: list[dict[str, Any]], lineage: dict[str, Any],
                       extra: dict[str, Any]) -> artifacts.Manifest:
    """The partition's manifest over exactly the scored shards of this write (files of an
    earlier try with more shards are not listed, and removed after the commit)."""
    import pyarrow.parquet as pq

    writer = artifacts.ArtifactWriter(partition_uri, "predictions", write_id=write_id)
    wanted = {s["name"] for s in shards}
    adopted = writer.adopt(names=wanted)
    found = {e.name for e in adopted}
    if found != wanted:
        raise artifacts.ArtifactIncompleteError(f"{partition_uri}: shards {sorted(wanted - found)} are missing "
                                                f"from {writer.staging_uri}; re-run their scoring tasks")
    first = min(adopted, key=lambda e: e.path)
    with artifacts.open_file_at(partition_uri, first.path) as f:
        schema = pq.ParquetFile(f).schema_arrow
    from ml.snapshots import arrow_schema_fields

    manifest = writer.commit(schema=arrow_schema_fields(schema), row_count=sum(s["rows"] for s in shards),
                             lineage=lineage, extra=extra)
    writer.remove_unlisted()
    return manifest
