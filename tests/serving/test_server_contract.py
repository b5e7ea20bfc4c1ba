"""The server contract with a real process: formats, a malformed-input suite (4xx only, never
5xx, server stays up), metrics, admin authentication, tampered artifacts refused."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys

import pytest

from ml import artifacts
from ml.serving.app import _ROUTES
from ml.serving.inputs import JSON_FORMATS
from tests.serving_helpers import REPO, ServerProcess, post_json, request

TOKEN = "test-admin-token"


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    return tmp_path_factory.mktemp("admin-uploads")


@pytest.fixture(scope="module")
def server(trained_models, uploads):
    with ServerProcess("--model", trained_models["1"], "--model-version", "1", "--max-body-bytes", "65536",
                       "--max-rows", "100", "--artifact-root", trained_models["root"],
                       env={"ML_SERVE_ADMIN_TOKEN": TOKEN, "ML_SERVE_ARTIFACT_ROOTS": f"file://{uploads}"}) as srv:
        yield srv


def rows(trained_models, n=3):
    return [[0.0 if v is None else v for v in row] for row in trained_models["rows"][:n]]


def test_ping_reports_the_version_and_features(server, trained_models):
    status, body = request(server.url + "/ping")
    assert status == 200 and body["model_version"] == "1" and body["features"] == trained_models["features"]


def test_every_accepted_format_gives_the_same_predictions(server, trained_models):
    names, data = trained_models["features"], rows(trained_models)
    records = [dict(zip(names, r)) for r in data]
    columns = {n: [r[i] for r in data] for i, n in enumerate(names)}
    out = io.StringIO()
    csv.writer(out).writerows([names, *data])
    bodies = [
        ({"instances": data}, "application/json"), ({"instances": records}, "application/json"),
        ({"inputs": data}, "application/json"), ({"inputs": columns}, "application/json"),
        (data, "application/json"), (records, "application/json"),
        ({"dataframe_records": records}, "application/json"),
        ({"dataframe_split": {"columns": names, "data": data}}, "application/json"),
    ]
    answers = [post_json(server.url + "/invocations", doc, content_type=ct) for doc, ct in bodies]
    answers.append(request(server.url + "/invocations", out.getvalue().encode(), content_type="text/csv"))
    answers.append(request(server.url + "/invocations",
                           "\n".join(",".join(map(str, r)) for r in data).encode(), content_type="text/csv"))
    assert all(status == 200 for status, _ in answers), answers
    assert len({json.dumps(body["predictions"]) for _, body in answers}) == 1
    assert answers[0][1]["model_version"] == "1" and len(answers[0][1]["predictions"]) == 3


def test_missing_value_accepted_only_where_training_saw_one(server, trained_models):
    data = rows(trained_models, 1)
    ok = [[None] + data[0][1:]]
    assert post_json(server.url + "/invocations", {"instances": ok})[0] == 200
    bad = [data[0][:1] + [None] + data[0][2:]]
    status, body = post_json(server.url + "/invocations", {"instances": bad})
    assert status == 400 and f"feature {trained_models['features'][1]!r}: missing value" in body["error"]


def malformed_cases(names, good):
    width = len(names)
    return [
        ("wrong width", {"instances": [good[:-1]]}, "application/json", 400, f"expects {width} features"),
        ("wrong names", {"instances": [{**dict(zip(names[1:], good[1:])), "bogus": 1.0}]}, "application/json",
         400, "missing features ['" + names[0] + "'], unknown features ['bogus']"),
        ("non-numeric", {"instances": [["x"] + good[1:]]}, "application/json", 400, "'x' is not a number"),
        ("boolean", {"instances": [[True] + good[1:]]}, "application/json", 400, "True is not a number"),
        ("infinite", b'{"instances": [[1e400' + b"".join(b", %r" % v for v in good[1:]) + b"]]}",
         "application/json", 400, "number is infinity"),
        ("NaN token", b'{"instances": [[NaN' + b"".join(b", %r" % v for v in good[1:]) + b"]]}",
         "application/json", 400, "not valid JSON"),
        ("empty body", b"", "application/json", 400, "empty body"),
        ("no rows", {"instances": []}, "application/json", 400, "no rows"),
        ("invalid JSON", b"{not json", "application/json", 400, "not valid JSON"),
        ("wrong envelope", {"rows": [good]}, "application/json", 400, 'exactly one of "instances"'),
        ("scalar row", {"instances": [5]}, "application/json", 400, "row 0 must be a list"),
        ("ragged columns", {"inputs": {n: [1.0] * (1 + (i == 0)) for i, n in enumerate(names)}}, "application/json",
         400, "same length"),
        ("wrong content type", {"instances": [good]}, "text/plain", 415, "unsupported content type"),
        ("csv non-numeric", (",".join(["abc"] + [str(v) for v in good[1:]])).encode(), "text/csv", 400,
         "'abc' is not a number"),
        ("csv wrong width", b"1,2,3", "text/csv", 400, f"expects {width}"),
        ("csv not utf-8", b"\xff\xfe\x00", "text/csv", 400, "not UTF-8"),
        ("json not utf-8", b'{"instances": [["\xff\xfe"]]}', "application/json", 400, "not valid JSON"),
        ("json in utf-16", json.dumps({"instances": [good]}).encode("utf-16"), "application/json", 400,
         "not valid JSON"),
        # found by schemathesis: a bare carriage return made the csv module raise (a 500); it is a line break
        ("csv bare carriage return", b'\\\r"x\r-2', "text/csv", 400, f"expects {width}"),
        ("oversized body", {"instances": [good] * 300}, "application/json", 413, "byte limit"),
        ("too many rows", {"instances": [[0] * width] * 101}, "application/json", 413, "the limit is 100"),
    ]


def test_malformed_inputs_get_4xx_naming_the_problem_and_the_server_stays_up(server, trained_models):
    names, good = trained_models["features"], rows(trained_models, 1)[0]
    failures = []
    for label, doc, content_type, want, fragment in malformed_cases(names, good):
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        status, answer = request(server.url + "/invocations", body, content_type=content_type)
        if status != want or fragment not in answer.get("error", ""):
            failures.append((label, status, answer))
    assert failures == []
    assert request(server.url + "/nowhere")[0] == 404
    assert request(server.url + "/invocations", method="GET")[0] == 405
    assert request(server.url + "/ping")[0] == 200
    status, answer = post_json(server.url + "/invocations", {"instances": [good]})
    assert status == 200 and answer["model_version"] == "1"


def test_a_huge_chunked_body_is_refused_before_it_is_read_whole(server, trained_models):
    """No Content-Length to refuse it by: the server counts as it reads, answers 413 once past its
    limit (64 KiB here) and keeps serving; it never buffers the 32 MB."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    chunk = b"[" + b"1.0," * 16_383 + b"1.0]"  # 64 KiB
    conn.putrequest("POST", "/invocations")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    try:
        conn.send(b'f\r\n{"instances": [\r\n')
        for _ in range(512):  # up to 32 MB, unless the server has already answered and closed
            conn.send(b"%x\r\n%s,\r\n" % (len(chunk) + 1, chunk))
        conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    response = conn.getresponse()
    assert response.status == 413
    assert "exceeds the 65536-byte limit" in json.loads(response.read())["error"]
    conn.close()
    status, answer = post_json(server.url + "/invocations", {"instances": rows(trained_models, 1)})
    assert status == 200 and answer["model_version"] == "1"


def test_metrics_count_requests_errors_latency_batches_and_version(server, trained_models):
    post_json(server.url + "/invocations", {"instances": rows(trained_models, 2)})
    post_json(server.url + "/invocations", {"instances": [[1]]})
    status, text = request(server.url + "/metrics")
    assert status == 200
    assert 'ml_serve_requests_total{code="200",path="/invocations"}' in text
    assert 'ml_serve_errors_total{code="400",path="/invocations"}' in text
    assert 'ml_serve_request_latency_seconds_bucket{le="0.01",path="/invocations"}' in text
    assert "ml_serve_batch_rows_count" in text
    assert 'ml_serve_model_info{digest=' in text and 'version="1"' in text


def test_openapi_document_describes_the_routes(server):
    status, doc = request(server.url + "/openapi.json")
    assert status == 200 and set(doc["paths"]) == set(_ROUTES)
    assert all(set(doc["paths"][path]) == {m.lower() for m in methods} for path, methods in _ROUTES.items())


def test_every_json_format_of_the_one_definition_is_documented_and_accepted_alike(server, trained_models):
    """Each entry of JSON_FORMATS in each of its shapes: the document's request schema matches it
    through exactly one alternative, and the server answers it with the same predictions."""
    from jsonschema import Draft202012Validator

    doc = request(server.url + "/openapi.json")[1]
    alternatives = doc["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    names, data = trained_models["features"], rows(trained_models, 2)
    shaped = {"rows": data, "records": [dict(zip(names, r)) for r in data],
              "columns": {n: [r[i] for r in data] for i, n in enumerate(names)},
              "split": {"columns": names, "data": data}}
    fits = {"rows": ("rows", "records"), "records": ("records",), "columns": ("columns",), "split": ("split",)}
    bodies = [(fmt.key, shape, shaped[shape] if fmt.key is None else {fmt.key: shaped[shape]})
              for fmt in JSON_FORMATS for declared in fmt.shapes for shape in fits[declared]
              if fmt.key is not None or shape != "columns"]
    assert {key for key, _, _ in bodies} == {f.key for f in JSON_FORMATS}
    predictions = set()
    for key, shape, body in bodies:
        matching = [a for a in alternatives["oneOf"] if Draft202012Validator(a).is_valid(body)]
        assert len(matching) == 1, (key, shape)
        status, answer = post_json(server.url + "/invocations", body)
        assert status == 200, (key, shape, answer)
        predictions.add(json.dumps(answer["predictions"]))
    assert len(predictions) == 1
    refused = [({"dataframe_records": data}, "must be an object keyed by feature name"),
               ({"instances": data, "inputs": data}, "exactly one of"),
               ({"dataframe_split": {"columns": names[::-1], "data": data}}, "columns must be exactly"),
               ({"rows": data}, '"instances", "inputs", "dataframe_records", "dataframe_split"')]
    for body, message in refused:
        assert not Draft202012Validator(alternatives).is_valid(body), body
        status, answer = post_json(server.url + "/invocations", body)
        assert status == 400 and message in answer["error"], (body, answer)


def test_admin_needs_the_token_and_refuses_tampered_models(server, trained_models, uploads):
    url = server.url + "/admin/model"
    assert post_json(url, {"uri": trained_models["2"], "version": "2"})[0] == 401
    assert post_json(url, {"uri": trained_models["2"]}, headers={"Authorization": "Bearer wrong"})[0] == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    tampered = uploads / "v3-tampered"
    shutil.copytree(trained_models["3"], tampered)
    entry = artifacts.read_manifest(str(tampered)).file("model/model.skops")
    (tampered / entry.path).write_bytes(b"evil")
    status, body = post_json(url, {"uri": str(tampered), "version": "3"}, headers=auth)
    assert status == 422 and "does not match its manifest" in body["error"] and body["model_version"] == "1"
    assert request(server.url + "/ping")[1]["model_version"] == "1"
    status, body = post_json(url, {"uri": trained_models["2"], "version": "2"}, headers=auth)
    assert status == 200 and body == {**body, "model_version": "2", "previous_version": "1"}
    assert post_json(server.url + "/invocations", {"instances": rows(trained_models, 1)})[1]["model_version"] == "2"
    status, body = post_json(url, {"uri": trained_models["1"], "version": "1"}, headers=auth)
    assert status == 200 and body["previous_version"] == "2"


def test_admin_loads_models_only_inside_the_artifact_roots(server, trained_models, uploads, tmp_path):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    serving = request(server.url + "/ping")[1]["model_version"]
    outside = tmp_path / "v2-copy"  # a whole, valid model: refused for where it is, not for what it is
    shutil.copytree(trained_models["2"], outside)
    sneaky = f"{uploads}/../{outside.parent.name}/{outside.name}"  # .. is resolved before the comparison
    (uploads / "link").symlink_to(outside)  # and so are symlinks
    for uri in (str(outside), f"file://{outside}", sneaky, str(uploads / "link"), "s3://elsewhere/models/v2"):
        status, body = post_json(server.url + "/admin/model", {"uri": uri, "version": "9"}, headers=auth)
        assert status == 403 and "outside this server's artifact roots" in body["error"], (uri, body)
        assert body["model_version"] == serving
    assert request(server.url + "/ping")[1]["model_version"] == serving
    inside = uploads / "v2-inside"
    shutil.copytree(trained_models["2"], inside)
    status, body = post_json(server.url + "/admin/model", {"uri": f"file://{inside}", "version": "2i"}, headers=auth)
    assert status == 200 and body["model_version"] == "2i"


def test_admin_is_disabled_without_a_token(trained_models):
    with ServerProcess("--model", trained_models["1"], env={"ML_SERVE_ADMIN_TOKEN": ""}) as srv:
        status, body = post_json(srv.url + "/admin/model", {"uri": trained_models["2"]},
                                 headers={"Authorization": "Bearer x"})
        assert status == 404 and "ML_SERVE_ADMIN_TOKEN" in body["error"]


def test_a_tampered_model_at_startup_exits_with_the_reason(trained_models, tmp_path):
    tampered = tmp_path / "t"
    shutil.copytree(trained_models["1"], tampered)
    (tampered / artifacts.read_manifest(str(tampered)).file("model/model.skops").path).write_bytes(b"x")
    proc = subprocess.run([sys.executable, "-m", "ml.serve", "--model", str(tampered), "--port", "1"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "does not match its manifest" in proc.stdout + proc.stderr


def test_schemathesis_finds_no_server_error(server):
    proc = subprocess.run(
        [str(REPO / ".venv" / "bin" / "schemathesis"), "run", server.url + "/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", "60", "--seed", "1", "--request-timeout", "10"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert request(server.url + "/ping")[0] == 200
