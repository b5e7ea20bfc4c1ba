"""Prediction capture: a share of the requests and their answers, written to the artifact store
as hourly Parquet partitions, for the monitoring DAG (drift, labelled feedback).

Never on the request path: a sampled request only appends references (its rows, its answers,
its id, the version, the time) to a bounded buffer on the event loop; a writer thread turns the
buffer into Arrow tables and Parquet files every ``flush_seconds``. A full buffer drops the
sample and counts it (``ml_serve_capture_dropped_rows``); a failed write counts its rows there
too and logs why; neither slows or fails a request. Each file is written whole, then renamed
into place (object stores: one PUT), so a reader never sees half a file:

    <uri>/<model name>/hour=2026-12-07T06/<version>-<unique>.parquet

Columns: ``request_id``, ``model_version``, ``ts`` (UTC, microseconds), ``row`` (the row's index
in its request), one per feature, ``prediction``.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import deque
from datetime import datetime, timezone
from typing import Any

HOUR = "%Y-%m-%dT%H"
# requests turned into Arrow at a time by the writer, between which it yields to the event loop
CHUNK_REQUESTS = 128


class PredictionCapture:
    def __init__(self, uri: str, rate: float, model_name, max_rows: int = 100_000, flush_seconds: float = 30.0,
                 metrics=None, log=None):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"capture rate {rate} is not a share between 0 and 1 (0.1: one request in ten)")
        self.uri, self.rate, self.max_rows, self.flush_seconds = uri.rstrip("/"), rate, max_rows, flush_seconds
        self.model_name = model_name  # a callable: the served model's protocol name, read at write time
        self.metrics, self.log = metrics, log or (lambda level, message, **fields: None)
        # deque: append (the loop) and popleft (the writer) are atomic; each counter has one writer,
        # so the rows buffered are offered - taken without a lock on the request path
        self._buffer: deque[tuple] = deque()
        self._offered_rows = 0
        self._taken_rows = 0
        self._wake = threading.Event()
        self._stopped = False
        self._random = random.random
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self.written_rows = 0
        self.dropped_rows = 0

    def start(self) -> None:
        self._thread.start()

    def offer(self, request_id: str, model, payload, predictions) -> None:
        """Called on the event loop after a request was answered: O(1), no copy, no I/O."""
        if self._random() >= self.rate:
            return
        rows = payload.shape[0]
        if self._offered_rows - self._taken_rows + rows > self.max_rows:
            self.dropped_rows += rows
            if self.metrics is not None:
                self.metrics.capture_dropped.inc(rows)
            return
        # a gRPC request without an id gets one here, only when sampled
        self._buffer.append((request_id or uuid.uuid4().hex, model, payload, predictions, time.time()))
        self._offered_rows += rows

    def _take(self) -> list[tuple]:
        taken, buffer = [], self._buffer
        for _ in range(len(buffer)):
            taken.append(buffer.popleft())
        self._taken_rows += sum(item[2].shape[0] for item in taken)
        return taken

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Write what is buffered now; the rows written."""
        taken = self._take()
        if not taken:
            return 0
        groups: dict[tuple, list] = {}
        for item in taken:  # a file per hour and model version: its columns have one type
            hour = datetime.fromtimestamp(item[4], timezone.utc).strftime(HOUR)
            groups.setdefault((hour, id(item[1])), []).append(item)
        written = 0
        for (hour, _), items in groups.items():
            rows = sum(i[2].shape[0] for i in items)
            try:
                self._write(hour, items)
                written += rows
            except Exception as exc:  # the artifact store is down, a disk is full: count, say, go on
                self.dropped_rows += rows
                if self.metrics is not None:
                    self.metrics.capture_dropped.inc(rows)
                self.log("warning", "captured predictions not written", rows=rows, error=repr(exc))
        self.written_rows += written
        if self.metrics is not None and written:
            self.metrics.captured.inc(written)
        return written

    def _write(self, hour: str, items: list[tuple]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from ml import artifacts

        model = items[0][1]
        tables = []
        for start in range(0, len(items), CHUNK_REQUESTS):
            tables.append(self._table(model, items[start:start + CHUNK_REQUESTS]))
            time.sleep(0)  # hands the GIL to the event loop: a request waits one chunk at most, not a flush
        table = pa.concat_tables(tables, promote_options="permissive")
        sink = pa.BufferOutputStream()
        # dictionaries only for text (ids, versions, categories): tried on every float column they
        # cost the writer ~10x the rest of the write, and save nothing on measurements
        text = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        pq.write_table(table, sink, use_dictionary=text)
        name = self.model_name(model)
        path = f"{self.uri}/{name}/hour={hour}/{_safe(model.version)}-{uuid.uuid4().hex[:12]}.parquet"
        fs, target = artifacts.resolve(path)
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        artifacts._atomic_put(fs, target, sink.getvalue().to_pybytes())

    @staticmethod
    def _table(model, items: list[tuple]):
        """One Arrow table of captured requests: a numeric model's matrices stacked into one
        (one conversion for the chunk, not one per request); other payloads each."""
        import numpy as np
        import pyarrow as pa

        counts = np.fromiter((item[2].shape[0] for item in items), np.int64, len(items))
        payloads = [item[2] for item in items]
        if all(isinstance(p, np.ndarray) for p in payloads):
            features = model.inputs(np.vstack(payloads))
        else:
            features = pa.concat_tables([model.inputs(p) for p in payloads], promote_options="permissive")
        total = int(counts.sum())
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        columns: dict[str, Any] = {
            "request_id": pa.DictionaryArray.from_arrays(
                pa.array(np.repeat(np.arange(len(items), dtype=np.int32), counts)),
                pa.array([item[0] for item in items], pa.string())).cast(pa.string()),
            "model_version": pa.array(np.full(total, model.version, dtype=object), pa.string()),
            "ts": pa.array(np.repeat(np.fromiter((int(item[4] * 1_000_000) for item in items), np.int64, len(items)),
                                     counts)).cast(pa.timestamp("us", tz="UTC")),
            "row": pa.array((np.arange(total) - starts).astype(np.int32))}
        for name in features.column_names:
            columns[name] = features.column(name)
        columns["prediction"] = pa.array([p for item in items for p in item[3]])
        return pa.table(columns)

    def stop(self) -> None:
        """Write what is left (at shutdown)."""
        self._stopped = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.flush()


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def read_captured(uri: str, model_name: str, hours: list[str] | None = None):
    """The captured rows of ``model_name`` (every hour, or those in ``hours``) as one Arrow table,
    or None when none were captured. Only complete ``.parquet`` files are read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ml import artifacts

    fs, root = artifacts.resolve(f"{uri.rstrip('/')}/{model_name}")
    if not fs.exists(root):
        return None
    tables = []
    for partition in sorted(fs.ls(root, detail=False)):
        hour = partition.rstrip("/").rsplit("hour=", 1)[-1]
        if hours is not None and hour not in hours:
            continue
        for path in sorted(fs.ls(partition, detail=False)):
            if path.endswith(".parquet"):
                with fs.open(path, "rb") as f:
                    tables.append(pq.read_table(f))
    return pa.concat_tables(tables, promote_options="permissive") if tables else None
