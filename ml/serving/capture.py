"""Prediction capture: a share of the requests and their answers, written to the artifact store
as hourly Parquet partitions, for the monitoring DAG (drift, labelled feedback).

Never on the request path, and out of the server's process: a sampled request appends
references (its rows, its answers, its id, the version, the time) to a list on the event loop;
every ``CHUNK_REQUESTS`` requests (and each second for the rest) the loop packs them into one
frame (a small JSON header and the rows' float64 bytes: ~1 us a request) and hands it to the
pipe of a writer process (``ml/serving/capture_writer.py``), which builds the Arrow tables and
Parquet files every ``flush_seconds``. The conversion ran first in a writer thread of the
server: the thread and the event loop took turns at the GIL, and p99 rose by half under load
(docs/monitoring.md). The writer process runs at a lower priority (nice 10).

At most ``max_rows`` rows are on their way (packed, in the pipe, or buffered by the writer, until
it says they were written): past that a sample is dropped and counted
(``ml_serve_capture_dropped_rows``), as are the rows of a failed write and of a writer that
died (it is started again); none of it slows or fails a request. Each file is written whole,
then renamed into place (object stores: one PUT), so a reader never sees half a file:

    <uri>/<model name>/hour=2026-12-07T06/<version>-<unique>.parquet

Columns: ``request_id``, ``model_version``, ``ts`` (UTC, microseconds), ``row`` (the row's index
in its request), one per feature, ``prediction``.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson

HOUR = "%Y-%m-%dT%H"
# requests packed into one frame for the writer process
CHUNK_REQUESTS = 128
SHIP_SECONDS = 1.0  # the rest of a chunk goes at least this often
RESTART_SECONDS = 10.0  # a writer that died is started again at most this often


# ------------------------------------------------------------------ frames (server -> writer)
def encode_frame(name: str, model, items: list[tuple]) -> bytes:
    """One frame for ``items`` of one model: (request id, model, payload, predictions, time).
    A numeric model's matrices go as one float64 block; other payloads as their value lists."""
    counts = [item[2].shape[0] for item in items]
    payloads = [item[2] for item in items]
    header: dict[str, Any] = {
        "name": name, "version": model.version, "schema": model.schema.to_manifest(),
        "ids": [item[0] for item in items], "ts": [item[4] for item in items], "counts": counts,
        "predictions": [p for item in items for p in item[3]]}
    if all(isinstance(p, np.ndarray) for p in payloads):
        matrix = np.ascontiguousarray(np.vstack(payloads), dtype=np.float64)
        header["matrix"] = list(matrix.shape)
        blob = matrix.tobytes()
    else:
        header["columns"] = [p.values for p in payloads]
        blob = b""
    head = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    return (4 + len(head) + len(blob)).to_bytes(4, "little") + len(head).to_bytes(4, "little") + head + blob


def decode_frame(body: bytes) -> dict[str, Any]:
    """A frame's body (after its length) back into its header, with ``matrix`` an array."""
    n = int.from_bytes(body[:4], "little")
    header = orjson.loads(body[4:4 + n])
    if "matrix" in header:
        header["matrix"] = np.frombuffer(body[4 + n:], np.float64).reshape(header["matrix"])
    return header


def split_frames(buffer: bytearray) -> list[bytes]:
    """The whole frames at the start of ``buffer`` (removed from it); a partial one stays."""
    frames, start = [], 0
    while len(buffer) - start >= 4:
        n = int.from_bytes(buffer[start:start + 4], "little")
        if len(buffer) - start - 4 < n:
            break
        frames.append(bytes(buffer[start + 4:start + 4 + n]))
        start += 4 + n
    del buffer[:start]
    return frames


# ------------------------------------------------------------------ the writer's side
class CaptureWriter:
    """Buffers decoded frames and writes them as Parquet, a file per hour and model version.
    Runs in the writer process (``capture_writer.py``); tests call it directly."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self._frames: list[dict] = []

    def add(self, body: bytes) -> None:
        self._frames.append(decode_frame(body))

    def flush(self) -> list[tuple[int, str | None]]:
        """Write what is buffered: (rows, None) per file written, (rows, error) per failed write."""
        frames, self._frames = self._frames, []
        groups: dict[tuple, list[dict]] = {}
        for frame in frames:  # a file per hour, model and version: its columns have one type
            hours = (np.asarray(frame["ts"]) // 3600).astype(np.int64)
            distinct = np.unique(hours)
            for hour in distinct:
                part = frame if len(distinct) == 1 else _select(frame, hours == hour)
                groups.setdefault((int(hour), part["name"], part["version"]), []).append(part)
        out = []
        for (hour, name, version), parts in groups.items():
            rows = sum(sum(p["counts"]) for p in parts)
            try:
                self._write(datetime.fromtimestamp(hour * 3600, timezone.utc).strftime(HOUR), name, version, parts)
                out.append((rows, None))
            except Exception as exc:  # the artifact store is down, a disk is full: say so, go on
                out.append((rows, repr(exc)))
        return out

    def _write(self, hour: str, name: str, version: str, parts: list[dict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from ml import artifacts

        table = pa.concat_tables([_table(p) for p in parts], promote_options="permissive")
        sink = pa.BufferOutputStream()
        # dictionaries only for text (ids, versions, categories): tried on every float column they
        # cost the writer ~10x the rest of the write, and save nothing on measurements
        text = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        pq.write_table(table, sink, use_dictionary=text)
        path = f"{self.uri}/{name}/hour={hour}/{_safe(version)}-{uuid.uuid4().hex[:12]}.parquet"
        fs, target = artifacts.resolve(path)
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        artifacts._atomic_put(fs, target, sink.getvalue().to_pybytes())


def _select(frame: dict, keep: np.ndarray) -> dict:
    """The requests of ``frame`` where ``keep`` (a frame that spans an hour's end)."""
    counts = np.asarray(frame["counts"])
    rows = np.repeat(keep, counts)
    part = {**frame, "ids": [i for i, k in zip(frame["ids"], keep) if k],
            "ts": [t for t, k in zip(frame["ts"], keep) if k], "counts": counts[keep].tolist(),
            "predictions": [p for p, k in zip(frame["predictions"], rows) if k]}
    if "matrix" in frame:
        part["matrix"] = frame["matrix"][rows]
    else:
        part["columns"] = [c for c, k in zip(frame["columns"], keep) if k]
    return part


def _table(frame: dict):
    """One Arrow table of a frame's requests."""
    import pyarrow as pa

    from ml.models.interface import FeatureSchema
    from ml.serving.inputs import arrow_type, matrix_table

    schema = FeatureSchema.from_manifest(frame["schema"])
    counts = np.asarray(frame["counts"], np.int64)
    if "matrix" in frame:
        features = matrix_table(frame["matrix"], schema)
    else:
        values = [[v for request in frame["columns"] for v in request[i]] for i in range(len(schema.features))]
        features = pa.table({f.name: pa.array(v, arrow_type(f.kind)) for f, v in zip(schema.features, values)})
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    columns: dict[str, Any] = {
        "request_id": pa.DictionaryArray.from_arrays(
            pa.array(np.repeat(np.arange(len(counts), dtype=np.int32), counts)),
            pa.array(frame["ids"], pa.string())).cast(pa.string()),
        "model_version": pa.array(np.full(total, frame["version"], dtype=object), pa.string()),
        "ts": pa.array(np.repeat((np.asarray(frame["ts"]) * 1_000_000).astype(np.int64), counts)).cast(
            pa.timestamp("us", tz="UTC")),
        "row": pa.array((np.arange(total) - starts).astype(np.int32))}
    for name in features.column_names:
        columns[name] = features.column(name)
    columns["prediction"] = pa.array(frame["predictions"])
    return pa.table(columns)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


# ------------------------------------------------------------------ the server's side
class PredictionCapture:
    """The server's half: samples, packs and ships; ``start``/``stop`` run on the event loop.

    ``sink``: where frames go instead of a writer process (tests: a ``CaptureWriter``'s ``add``,
    whose ``flush`` results go back through ``acknowledge``)."""

    def __init__(self, uri: str, rate: float, model_name, max_rows: int = 100_000, flush_seconds: float = 30.0,
                 metrics=None, log=None, sink=None):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"capture rate {rate} is not a share between 0 and 1 (0.1: one request in ten)")
        self.uri, self.rate, self.max_rows, self.flush_seconds = uri.rstrip("/"), rate, max_rows, flush_seconds
        self.model_name = model_name  # a callable: the served model's protocol name, read when packed
        self.metrics, self.log = metrics, log or (lambda level, message, **fields: None)
        self._sink = sink
        self._pending: list[tuple] = []
        self._pending_rows = 0
        self._random = random.random
        self._process: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task] = []
        self._shipper: asyncio.Task | None = None
        self._started_at = 0.0
        self._writer_dropped = 0  # of the shipped rows, those the writer lost
        self.shipped_rows = 0  # handed to the writer
        self.written_rows = 0
        self.dropped_rows = 0

    @property
    def in_flight(self) -> int:
        """Rows sampled and not yet written or dropped: what ``max_rows`` bounds."""
        return self._pending_rows + self._unwritten

    @property
    def _unwritten(self) -> int:
        """Rows shipped to the writer that it has not yet said it wrote or lost."""
        return self.shipped_rows - self.written_rows - self._writer_dropped

    def offer(self, request_id: str, model, payload, predictions) -> None:
        """Called on the event loop after a request was answered: O(1), no copy, no I/O (but
        once in ``CHUNK_REQUESTS`` requests, packing them: ~0.1 ms)."""
        if self._random() >= self.rate:
            return
        rows = payload.shape[0]
        if self.in_flight + rows > self.max_rows:
            self._drop(rows)
            return
        # a gRPC request without an id gets one here, only when sampled
        self._pending.append((request_id or uuid.uuid4().hex, model, payload, predictions, time.time()))
        self._pending_rows += rows
        if len(self._pending) >= CHUNK_REQUESTS:
            self.ship()

    def _drop(self, rows: int) -> None:
        self.dropped_rows += rows
        if self.metrics is not None:
            self.metrics.capture_dropped.inc(rows)

    def ship(self) -> None:
        """Pack what is pending into frames (one per model object) and hand them to the writer."""
        items, self._pending, self._pending_rows = self._pending, [], 0
        if not items:
            return
        groups: dict[int, list[tuple]] = {}
        for item in items:
            groups.setdefault(id(item[1]), []).append(item)
        for group in groups.values():
            group_rows = sum(item[2].shape[0] for item in group)
            try:
                frame = encode_frame(self.model_name(group[0][1]), group[0][1], group)
                self._send(frame)
            except Exception as exc:  # a value the frame cannot hold, a writer gone: count, say, go on
                self._drop(group_rows)
                self.log("warning", "captured predictions not written", rows=group_rows, error=repr(exc))
                continue
            self.shipped_rows += group_rows

    def _send(self, frame: bytes) -> None:
        if self._sink is not None:
            self._sink(frame[4:])
            return
        process = self._process
        if process is None or process.returncode is not None or process.stdin.is_closing():
            raise RuntimeError("the capture writer process is not running")
        process.stdin.write(frame)

    def acknowledge(self, report: dict) -> None:
        """The writer wrote (``written``) or lost (``dropped``, ``error``) rows it was given."""
        if written := report.get("written", 0):
            self.written_rows += written
            if self.metrics is not None:
                self.metrics.captured.inc(written)
        if dropped := report.get("dropped", 0):
            self._writer_dropped += dropped
            self._drop(dropped)
        if dropped or report.get("error"):  # an error without rows: a frame the writer could not read
            self.log("warning", "captured predictions not written", rows=dropped, error=report.get("error"))

    # ---------------------------------------------------------------- the writer process
    async def start(self) -> None:
        if self._sink is None:
            await self._spawn()
        self._shipper = asyncio.get_running_loop().create_task(self._ship_every())

    async def _spawn(self) -> None:
        root = str(Path(__file__).resolve().parents[2])  # the folder holding ml/
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ml.serving.capture_writer", "--uri", self.uri,
            "--flush-seconds", str(self.flush_seconds), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=env)
        self._started_at = time.monotonic()
        self._readers.append(asyncio.get_running_loop().create_task(self._read_reports(self._process)))

    async def _read_reports(self, process) -> None:
        async for line in process.stdout:
            try:
                self.acknowledge(orjson.loads(line))
            except orjson.JSONDecodeError:
                self.log("warning", "capture writer said something unexpected", line=line[:200].decode(errors="replace"))

    async def _ship_every(self) -> None:
        while True:
            await asyncio.sleep(SHIP_SECONDS)
            process = self._process
            if process is not None and process.returncode is not None:
                if lost := self._unwritten:  # what it had not written went with it
                    self.acknowledge({"dropped": lost, "error": f"the capture writer exited ({process.returncode})"})
                if time.monotonic() - self._started_at >= RESTART_SECONDS:
                    self.log("warning", "capture writer exited; starting it again", returncode=process.returncode)
                    try:
                        await self._spawn()
                    except Exception as exc:  # tried again in RESTART_SECONDS; samples meanwhile are dropped
                        self._started_at = time.monotonic()
                        self.log("error", "capture writer not started", error=repr(exc))
            self.ship()

    async def stop(self, timeout: float = 60.0) -> None:
        """Ship what is left and let the writer write it (at shutdown)."""
        if self._shipper is not None:
            self._shipper.cancel()
        self.ship()
        process = self._process
        if process is not None and process.returncode is None:
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except asyncio.TimeoutError:
                process.kill()
                self.log("warning", "capture writer did not finish in time; killed", seconds=timeout)
        for reader in self._readers:  # the writer's last reports: what it wrote at the end
            try:
                await asyncio.wait_for(reader, 5)
            except asyncio.TimeoutError:
                reader.cancel()


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
