"""Batch scoring: a verified snapshot in, Parquet predictions out, in shards of row groups.

``plan_shards`` reads only the snapshot's Parquet footers and cuts its rows into shards of
``rows_per_shard`` rows (row group ranges); ``score_shard`` scores a few row groups at a time on
its threads, in record batches (memory bounded by two files' bytes and a few row groups, flat
however many rows there are), and writes one Parquet file, atomically; ``commit_predictions``
lists the shards in the partition's manifest. A model whose artifact holds its trees as data
(``trees.json``) is scored by the compiled tree engine without loading scikit-learn. Each
shard's file name comes from its shard number only (the caller passes a write id fixed per DAG
run), so a retried shard replaces its own file.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ml import artifacts

log = logging.getLogger("ml.batch_scoring")
PREDICTION = "prediction"
MODEL_VERSION = "model_version"


def plan_shards(snapshot_uri: str, rows_per_shard: int = 1_000_000) -> list[dict[str, Any]]:
    """Shards of the verified snapshot, each ``rows_per_shard`` rows (the last one fewer):
    ``[{"shard": i, "parts": [[file, row group, start, stop]], "rows": n}]``. Row groups and
    files may be cut between shards; nothing but the footers is read, and no file is hashed
    here: the manifest's listing and the files' sizes are checked, and each shard verifies
    (hashes) the files whose rows it reads before it uses them, so hashing the whole snapshot
    here as well would read every byte twice. A file cut between two shards is hashed by both:
    one shard per core (``rows_per_shard`` = rows / cores) pays one start-up per core instead of
    one per file."""
    import pyarrow.parquet as pq

    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be at least 1, got {rows_per_shard}")
    manifest = artifacts.read_manifest(snapshot_uri, kind="snapshot")
    artifacts.check_listing(manifest)
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

    ``concurrent_shards``: how many shards run at once on this machine; each gets cores // that
    many threads. The threads score row groups side by side (Parquet decoding, the compiled tree
    engine and hashing release the GIL), each on one OpenMP thread (two shards of two OpenMP
    threads each on two cores took 1.7x as long as two of one: the threads spin-wait on each
    other), and the calling thread writes them in order. Another thread verifies (hashes) the
    shard's files one ahead of the rows being scored, starting before the model loads; no row of
    a file is read before its sha256 matched. The model is loaded from its verified artifact
    (``load_scorer``: its trees where it has them) unless ``model`` (a ``(manifest, model)`` pair)
    is given. Output columns: the input's columns
    that are not features (ids, times, the label if present), ``prediction`` and
    ``model_version``.
    """
    import joblib
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    threads = max(1, joblib.cpu_count() // max(1, concurrent_shards))
    snapshot = artifacts.read_manifest(snapshot_uri, kind="snapshot")
    entries = {e.path: e for e in snapshot.files}
    paths = list(dict.fromkeys(part[0] for part in shard["parts"]))
    for path in paths:
        if path not in entries:
            raise artifacts.ArtifactCorruptError(f"{snapshot_uri}: shard {shard['shard']} names {path}, "
                                                 f"which the snapshot's manifest does not list")
    last_part = {part[0]: i for i, part in enumerate(shard["parts"])}  # after it is written, its file goes
    fs, root = artifacts.resolve(write_uri.rstrip("/"))
    target = f"{root}/{shard_name(shard['shard'])}"
    tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
    with _FilesAhead(snapshot, [entries[p] for p in paths]) as files:
        model_manifest, scorer = model or load_scorer(model_uri)
        features = [c["name"] for c in model_manifest.schema]
        engine = _accelerate(scorer)
        if engine is not None and shard["parts"] and not _engine_agrees(engine, scorer, files, shard["parts"][0],
                                                                        features):
            engine = None
        fs.makedirs(root, exist_ok=True)
        rows, last_report, writer = 0, time.monotonic(), None
        part = _PartScorer(files, features, scorer, model_manifest, model_version, batch_rows)
        try:
            # one OpenMP thread in each scoring thread (a limit is per thread: set it where the work runs)
            with ThreadPoolExecutor(threads, initializer=threadpool_limits, initargs=(1,)) as pool, \
                    fs.open(tmp, "wb") as out:
                try:
                    for index, scored in enumerate(_in_order(pool, part, shard["parts"], ahead=threads + 1)):
                        if writer is None:
                            writer = _shard_writer(out, scored.schema)
                        writer.write_table(scored)
                        rows += scored.num_rows
                        del scored
                        path = shard["parts"][index][0]
                        if last_part[path] == index:
                            files.release(path)
                        if time.monotonic() - last_report >= progress_every:
                            last_report = time.monotonic()
                            log.info("shard %d: %d of %d rows scored", shard["shard"], rows, shard["rows"])
                finally:  # before its file closes (a failed shard's temporary file is removed below)
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
    how = getattr(scorer, "label", None) or ("the compiled tree engine" if engine is not None
                                             else "the model's own predict")
    log.info("shard %d: %d rows scored by version %s in %.2f s on %d thread(s) (%s)", shard["shard"], rows,
             model_version, seconds, threads, how)
    return {"name": shard_name(shard["shard"]), "rows": rows, "seconds": round(seconds, 3)}


def _shard_writer(out, schema):
    """The shard's Parquet writer: dictionary pages only for the model version (one value), where
    a page of ids or scores would be tried as a dictionary first and then given up."""
    import pyarrow.parquet as pq

    return pq.ParquetWriter(out, schema, use_dictionary=[MODEL_VERSION])


class _PartScorer:
    """One ``[file, row group, start, stop]`` part scored: the rows that are not features, then
    ``prediction`` and ``model_version``. Called from several threads at once: each call opens its
    own reader over the verified file. Only the built-in models predict in several threads at
    once; a team's own model class never promised that, so its predict calls take turns (reading
    and writing still overlap them)."""

    def __init__(self, files, features, scorer, manifest, model_version, batch_rows):
        self.files, self.features, self.scorer, self.manifest = files, features, scorer, manifest
        self.model_version, self.batch_rows = model_version, batch_rows
        built_in = isinstance(scorer, TreeScorer) or type(scorer).__module__ == "ml.models.sklearn_tabular"
        self.turns = contextlib.nullcontext() if built_in else threading.Lock()

    def __call__(self, part):
        import pyarrow as pa
        import pyarrow.parquet as pq

        path, group, start, stop = part
        source = pq.ParquetFile(self.files.get(path).open())
        names = source.schema_arrow.names
        missing = [c for c in self.features if c not in names]
        if missing:
            raise ValueError(f"the snapshot lacks the model's feature columns {missing} (in {path})")
        keep = [c for c in names if c not in self.features]
        piece = source.read_row_group(group, use_threads=False).slice(start, stop - start)
        scored = []
        for batch in piece.to_batches(max_chunksize=self.batch_rows):
            table = pa.Table.from_batches([batch])
            with self.turns:
                predicted = predictions(self.scorer, table.select(self.features), self.manifest)
            scored.append(table.select(keep).append_column(PREDICTION, pa.array(predicted))
                          .append_column(MODEL_VERSION, pa.repeat(pa.scalar(self.model_version, pa.string()),
                                                                  batch.num_rows)))
        return pa.concat_tables(scored) if scored else piece.select(keep)


def _in_order(pool, fn, items, ahead: int):
    """``fn(item)`` for each item on ``pool``, at most ``ahead`` running or done but not yet taken;
    results in the items' order. Those not yet started are cancelled when the caller stops."""
    pending: collections.deque = collections.deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


class _FilesAhead:
    """The shard's files verified in order by one thread, at most ``ahead`` of them verified and
    not yet released at once (a local file is mapped while held: memory stays bounded by
    ``ahead`` files, however many rows the shard has)."""

    def __init__(self, manifest, entries, ahead: int = 2):
        self._manifest, self._closed = manifest, False
        self._slots = threading.Semaphore(ahead)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="verify")
        self._files = {entry.path: self._pool.submit(self._verify, entry) for entry in entries}

    def _verify(self, entry):
        self._slots.acquire()
        if self._closed:
            return None
        return artifacts.VerifiedFile(self._manifest, entry)

    def get(self, path: str) -> artifacts.VerifiedFile:
        """The verified file (waits for its hashing; raises if it did not match its manifest)."""
        return self._files[path].result()

    def release(self, path: str) -> None:
        self._files.pop(path).result().close()
        self._slots.release()

    def __enter__(self) -> _FilesAhead:
        return self

    def __exit__(self, *exc) -> None:
        self._closed = True
        for _ in self._files:
            self._slots.release()  # wake a hashing thread waiting for a slot: it stops
        self._pool.shutdown(wait=True, cancel_futures=True)
        for future in self._files.values():
            if not future.cancelled() and future.exception() is None and future.result() is not None:
                future.result().close()


def load_scorer(model_uri: str):
    """(manifest, scorer) of a verified model artifact: its compiled trees where the trainer wrote
    them (``TreeScorer``: no scikit-learn import, ~2 s less start-up in each shard's process), else
    the model itself through the model interface."""
    import json

    from ml.model_io import load_model_of
    from ml.tree_engine import TREES_FILE

    manifest = artifacts.open_verified(model_uri, kind="model")
    if any(entry.name == TREES_FILE for entry in manifest.files):
        with artifacts.open_file(manifest, manifest.file(TREES_FILE)) as f:
            return manifest, TreeScorer(json.loads(f.read()))
    return manifest, load_model_of(manifest)


class TreeScorer:
    """A model's compiled trees (``trees.json``, written by the trainer only after they gave the
    model's own predictions exactly) behind the model interface's ``predict(table)``."""

    label = "compiled trees (trees.json)"

    def __init__(self, document):
        from ml.tree_engine import TreeModel

        self.model = TreeModel(document)

    def predict(self, features):
        from ml.snapshots import feature_matrix

        return self.model.predict(feature_matrix(features, self.model.features, order="F"))


CHECK_ROWS = 2_000


def _accelerate(scorer):
    """The compiled tree engine on a built-in HistGradientBoosting model (ml/tree_engine.py),
    or None where it does not apply."""
    pipeline = getattr(scorer, "pipeline", None)
    if pipeline is None:
        return None
    from ml.tree_engine import accelerate

    return accelerate(pipeline)


def _engine_agrees(estimator, scorer, files, part, features) -> bool:
    """The engine's predictions on the first CHECK_ROWS rows of the shard's first row group against
    scikit-learn's own; on any difference the engine is taken off (False, with a warning) and the
    shard is scored by scikit-learn."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, group, _, _ = part
    source = pq.ParquetFile(files.get(path).open())
    if any(c not in source.schema_arrow.names for c in features):
        return True  # the part itself says what is missing
    batch = next(source.iter_batches(batch_size=CHECK_ROWS, row_groups=[group], columns=features,
                                     use_threads=False), None)
    if batch is None:
        return True
    rows = pa.Table.from_batches([batch])
    predicted = np.asarray(scorer.predict(rows))
    compiled = vars(estimator).pop("_predict_iterations")
    expected = np.asarray(scorer.predict(rows))
    if np.array_equal(expected, predicted):
        estimator._predict_iterations = compiled
        return True
    log.warning("the compiled tree engine disagreed with scikit-learn on the first %d rows: scikit-learn's own "
                "walk scores this shard", len(expected))
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
