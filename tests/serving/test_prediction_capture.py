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

from ml.serving.capture import PredictionCapture, read_captured
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


class FakeModel:
    version = "7"

    def inputs(self, matrix):
        return pa.table({"x": matrix[:, 0]})


class Counter:
    def __init__(self):
        self.value = 0

    def inc(self, n=1):
        self.value += n


def test_a_full_buffer_drops_and_counts_samples_and_a_failed_write_loses_only_its_rows(tmp_path):
    metrics = SimpleNamespace(captured=Counter(), capture_dropped=Counter())
    warnings = []
    capture = PredictionCapture(str(tmp_path / "c"), 1.0, lambda m: "m", max_rows=5, metrics=metrics,
                                log=lambda level, message, **f: warnings.append((message, f)))
    model = FakeModel()
    for i in range(4):
        capture.offer(f"r{i}", model, np.full((2, 1), float(i)), [i, i])  # 2 rows each: the third does not fit
    assert capture.dropped_rows == 4 and metrics.capture_dropped.value == 4
    assert capture.flush() == 4 and metrics.captured.value == 4
    assert sorted(read_captured(str(tmp_path / "c"), "m").column("request_id").to_pylist()) == ["r0", "r0", "r1", "r1"]
    capture.offer("r9", model, np.ones((2, 1)), [1, 1])  # room again after the write
    assert capture.flush() == 2

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the capture folder should be")
    broken = PredictionCapture(str(blocked), 1.0, lambda m: "m", metrics=metrics,
                               log=lambda level, message, **f: warnings.append((message, f)))
    broken.offer("x", model, np.ones((3, 1)), [1, 1, 1])
    assert broken.flush() == 0 and broken.dropped_rows == 3  # counted, said, not raised
    assert warnings and warnings[-1][0] == "captured predictions not written" and warnings[-1][1]["rows"] == 3


def test_the_rate_samples_that_share_of_requests_and_zero_captures_none(tmp_path):
    capture = PredictionCapture(str(tmp_path), 0.25, lambda m: "m")
    capture._random = np.random.default_rng(5).random
    for i in range(4000):
        capture.offer(str(i), FakeModel(), np.ones((1, 1)), [0])
    assert 900 < len(capture._buffer) < 1100
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
