"""Prediction capture: a real server writes every sampled request's rows, answers, id and version
as hourly Parquet partitions, off the request path; the id is answered in a header; a full
buffer or a failed write drops samples and counts them, and no request fails for it."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from ml.models.interface import Feature, FeatureSchema
from ml.serving.capture import CaptureWriter, PredictionCapture, encode_frame, read_captured
from tests.serving_helpers import ServerProcess, request


def invoke(url: str, rows, request_id: str | None = None) -> tuple[str, list]:
    headers = {"Content-Type": "application/json", **({"X-Request-Id": request_id} if request_id else {})}
    req = urllib.request.Request(url + "/invocations", data=json.dumps({"inputs": rows}).encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.headers["x-request-id"], json.loads(resp.read())["predictions"]


def test_a_real_server_captures_every_request_with_its_id_version_and_answers(tmp_path, trained_models):
    captures = tmp_path / "captures"
    rows = trained_models["rows"]
    sent: dict[str, list] = {}
    with ServerProcess("--model", trained_models["1"], "--model-version", "1", "--name", "bc", "--capture-rate", "1",
                       "--capture-uri", str(captures), "--capture-flush-seconds", "0.2") as server:
        for i in range(20):
            request_id, predictions = invoke(server.url, rows[: 1 + i % 3], f"req-{i}" if i % 2 else None)
            assert len(request_id) >= 5  # given back, or generated and given back
            sent[request_id] = predictions
        status, answer = request(server.url + "/v2/models/bc/infer", json.dumps({"inputs": [
            {"name": name, "datatype": "FP64", "shape": [1], "data": [rows[0][i] if rows[0][i] is not None
                                                                    else float("nan")]}
            for i, name in enumerate(trained_models["features"])]}).replace("NaN", '"NaN"').encode(),
            headers={"X-Request-Id": "v2-request"})
        assert status == 200, answer
    table = read_captured(str(captures), "bc")  # the server stopped: what was buffered is written
    assert table is not None
    captured = table.to_pylist()
    by_request: dict[str, list] = {}
    for row in sorted(captured, key=lambda r: (r["request_id"], r["row"])):
        by_request.setdefault(row["request_id"], []).append(row)
    assert set(by_request) == set(sent) | {"v2-request"}
    for request_id, predictions in sent.items():
        assert [r["prediction"] for r in by_request[request_id]] == predictions
        assert [r["row"] for r in by_request[request_id]] == list(range(len(predictions)))
    assert {r["model_version"] for r in captured} == {"1"}
    first = trained_models["features"][1]
    assert by_request["req-1"][0][first] == pytest.approx(rows[0][1])  # the features as the model saw them
    assert all(p.name.startswith("hour=") for p in (captures / "bc").iterdir())
    assert not [p for p in captures.rglob("*") if p.is_file() and not p.name.endswith(".parquet")]  # no tmp left


def test_a_writer_process_that_dies_loses_only_what_it_held_and_is_started_again(tmp_path, trained_models):
    """The server writes nothing itself: its writer process killed, requests are answered all the
    same, the rows it held are counted as dropped, and the next writer writes what follows."""
    import os
    import signal
    import subprocess
    import time

    from tests.serving_helpers import metric_value

    captures, rows = tmp_path / "captures", trained_models["rows"]
    with ServerProcess("--model", trained_models["1"], "--name", "bc", "--capture-rate", "1", "--capture-uri",
                       str(captures), "--capture-flush-seconds", "600") as server:  # nothing written before the kill

        def writer_pid() -> int:
            found = subprocess.run(["pgrep", "-P", str(server.proc.pid), "-f", "ml.serving.capture_writer"],
                                   capture_output=True, text=True).stdout.split()
            return int(found[0]) if found else 0

        first = writer_pid()
        assert first, "no capture writer process under the server"
        before = {invoke(server.url, rows[:2])[0] for _ in range(10)}
        time.sleep(1.5)  # shipped to the writer
        os.kill(first, signal.SIGKILL)
        after = {invoke(server.url, rows[:1])[0] for _ in range(10)}  # answered while no writer runs
        deadline = time.monotonic() + 30
        while not (writer_pid() and writer_pid() != first) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert writer_pid() not in (0, first), "the capture writer was not started again"
        assert metric_value(server.url, "ml_serve_capture_dropped_rows") >= 20  # the 10 x 2 rows it held
        again = {invoke(server.url, rows[:1])[0] for _ in range(5)}
        time.sleep(1.5)
    written = set(read_captured(str(captures), "bc").column("request_id").to_pylist())
    assert again <= written and not (before & written)
    assert len(after) == 10


class FakeModel:
    version = "7"
    schema = FeatureSchema([Feature("x", "number", True, "double")])


class Counter:
    def __init__(self):
        self.value = 0

    def inc(self, n=1):
        self.value += n


def test_a_full_buffer_drops_and_counts_samples_and_a_failed_write_loses_only_its_rows(tmp_path):
    """In process: the server's half hands its frames straight to a CaptureWriter, whose
    writes come back as the writer process's reports do."""
    metrics = SimpleNamespace(captured=Counter(), capture_dropped=Counter())
    warnings = []
    writer = CaptureWriter(str(tmp_path / "c"))
    capture = PredictionCapture(str(tmp_path / "c"), 1.0, lambda m: "m", max_rows=5, metrics=metrics,
                                log=lambda level, message, **f: warnings.append((message, f)), sink=writer.add)
    model = FakeModel()
    for i in range(4):
        capture.offer(f"r{i}", model, np.full((2, 1), float(i)), [i, i])  # 2 rows each: the third does not fit
    assert capture.dropped_rows == 4 and metrics.capture_dropped.value == 4
    capture.ship()
    assert capture.in_flight == 4  # shipped, not yet written: still counted against max_rows
    capture.offer("r8", model, np.ones((2, 1)), [1, 1])
    assert capture.dropped_rows == 6
    for report in writer.flush():
        capture.acknowledge({"written": report[0]})
    assert capture.written_rows == 4 and metrics.captured.value == 4 and capture.in_flight == 0
    table = read_captured(str(tmp_path / "c"), "m")
    assert sorted(table.column("request_id").to_pylist()) == ["r0", "r0", "r1", "r1"]
    assert table.column("x").to_pylist() == [0.0, 0.0, 1.0, 1.0] and table.column("prediction").to_pylist() == [0, 0, 1, 1]
    capture.offer("r9", model, np.ones((2, 1)), [1, 1])  # room again after the write
    assert capture.dropped_rows == 6

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the capture folder should be")
    broken = CaptureWriter(str(blocked))
    capture = PredictionCapture(str(blocked), 1.0, lambda m: "m", metrics=metrics, sink=broken.add,
                                log=lambda level, message, **f: warnings.append((message, f)))
    capture.offer("x", model, np.ones((3, 1)), [1, 1, 1])
    capture.ship()
    ((rows, error),) = broken.flush()
    assert rows == 3 and error
    capture.acknowledge({"dropped": rows, "error": error})
    assert capture.dropped_rows == 3 and capture.in_flight == 0  # counted, said, not raised
    assert warnings and warnings[-1][0] == "captured predictions not written" and warnings[-1][1]["rows"] == 3


def test_a_frame_across_an_hours_end_goes_to_both_partitions(tmp_path):
    writer = CaptureWriter(str(tmp_path))
    hour = 1_796_000_400  # 2026-11-30T01:00 UTC
    items = [(f"r{i}", FakeModel(), np.full((i + 1, 1), float(i)), [i] * (i + 1), hour - 1.5 + i) for i in range(3)]
    writer.add(encode_frame("m", FakeModel(), items)[4:])
    assert sorted(rows for rows, _ in writer.flush()) == [3, 3]  # r0 (1 row), r1 (2) before; r2 (3) after
    partitions = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert len(partitions) == 2
    table = read_captured(str(tmp_path), "m", hours=[partitions[1].split("=", 1)[1]])
    assert table.column("request_id").to_pylist() == ["r2"] * 3 and table.column("row").to_pylist() == [0, 1, 2]
    assert table.column("x").to_pylist() == [2.0] * 3


def test_the_rate_samples_that_share_of_requests_and_zero_captures_none(tmp_path):
    capture = PredictionCapture(str(tmp_path), 0.25, lambda m: "m", sink=lambda body: None)
    capture._random = np.random.default_rng(5).random
    for i in range(4000):
        capture.offer(str(i), FakeModel(), np.ones((1, 1)), [0])
    assert 900 < capture.in_flight < 1100  # sampled: shipped (and not written) or pending
    with pytest.raises(ValueError, match="capture rate 1.5 is not a share between 0 and 1"):
        PredictionCapture(str(tmp_path), 1.5, lambda m: "m")
    assert read_captured(str(tmp_path / "nothing"), "m") is None


def test_the_server_refuses_a_rate_without_a_place_to_write(trained_models):
    from ml.serve import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--model", trained_models["1"], "--capture-rate", "0.5"])
    with pytest.raises(SystemExit):
        parse_args(["--model", trained_models["1"], "--capture-rate", "2", "--capture-uri", "/tmp/x"])
    assert Path(parse_args(["--model", trained_models["1"]])[1].model_uri) == Path(trained_models["1"])
