"""Serving a model with text and list-of-strings features: every JSON format and CSV carry strings,
and bad input (bytes that are not UTF-8, a 10 MB string, a list for a string, a number for a
text, a missing text) is a 4xx naming the feature, with the model never called."""

from __future__ import annotations

import asyncio
import urllib.request
from unittest import mock

import orjson
import pyarrow as pa
import pytest

from tests.serving_helpers import in_process
from tests.serving.test_server_failures import call


def serve(text_model, scenario, **config):
    return in_process(scenario, model_uri=text_model, model_version="7", **config)


ROW = {"text": "buy cheap followers today limited offer", "length": 39, "tags": ["promo"]}
BODIES = {
    "instances records": {"instances": [ROW]},
    "instances rows": {"instances": [[ROW["text"], ROW["length"], ROW["tags"]]]},
    "inputs columns": {"inputs": {k: [v] for k, v in ROW.items()}},
    "dataframe_records": {"dataframe_records": [ROW]},
    "dataframe_split": {"dataframe_split": {"columns": ["text", "length", "tags"],
                                            "data": [[ROW["text"], ROW["length"], ROW["tags"]]]}},
    "bare list": [ROW],
}


def test_strings_and_lists_of_strings_in_every_json_format_and_in_csv(text_model):
    async def scenario(server):
        answers = {name: await call(server, "POST", "/invocations", orjson.dumps(body))
                   for name, body in BODIES.items()}
        csv = ('text,length,tags\n"buy cheap followers today limited offer",39,"[""promo""]"\n'
               '"週末は家族と公園に行きました, 本当に",18,[]\n').encode()
        answers["csv"] = await call(server, "POST", "/invocations", csv, {"content-type": "text/csv"})
        document = (await call(server, "GET", "/openapi.json"))[1]
        return answers, document

    answers, document = serve(text_model, scenario)
    for name, (status, body) in answers.items():
        assert status == 200, (name, body)
        assert body["predictions"][0] == "flagged" and body["model_version"] == "7", name
    assert answers["csv"][1]["predictions"] == ["flagged", "ok"]
    record = document["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "oneOf"][0]["properties"]["instances"]["items"]["oneOf"][1]
    assert record["properties"]["text"] == {"type": "string", "maxLength": 100_000}
    assert record["properties"]["tags"] == {"type": "array", "items": {"type": "string", "maxLength": 100_000}}
    assert record["properties"]["length"] == {"type": "number"}


BAD = [
    ("bytes that are not UTF-8", b'{"instances": [{"text": "ok \xff\xfe then", "length": 3, "tags": []}]}', 400,
     "row 0, feature 'text': not valid UTF-8 (at character 3); send text encoded as UTF-8"),
    ("not UTF-8 in a list", b'{"instances": [{"text": "fine", "length": 3, "tags": ["\xc3"]}]}', 400,
     "row 0, feature 'tags' (an item of the list): not valid UTF-8"),
    ("a list for a string", orjson.dumps({"instances": [{**ROW, "text": ["buy", "now"]}]}), 400,
     "row 0, feature 'text': a list given, but this feature is a string"),
    ("a number for a text", orjson.dumps({"instances": [{**ROW, "text": 42}]}), 400,
     "row 0, feature 'text': a number given, but this feature is a string"),
    ("a string for a list", orjson.dumps({"instances": [{**ROW, "tags": "promo"}]}), 400,
     "row 0, feature 'tags': a string given, but this feature is a list of strings"),
    ("a missing text column", orjson.dumps({"instances": [{"length": 3, "tags": []}]}), 400,
     "row 0: missing features ['text']"),
    ("a null text", orjson.dumps({"instances": [{**ROW, "text": None}]}), 400,
     "row 0, feature 'text': missing value (null/NaN) not allowed"),
    ("not UTF-8 in CSV", b'text,length,tags\n"bad \xff",3,[]\n', 400, "row 0, feature 'text': not valid UTF-8"),
]


@pytest.mark.parametrize("name,body,status,message", BAD, ids=[b[0] for b in BAD])
def test_bad_text_input_is_a_4xx_naming_the_feature_and_the_model_is_never_called(text_model, name, body, status,
                                                                                  message):
    async def scenario(server):
        with mock.patch.object(server.current.model, "predict", wraps=server.current.model.predict) as predict:
            content_type = "text/csv" if body.startswith(b"text,") else "application/json"
            answer = await call(server, "POST", "/invocations", body, {"content-type": content_type})
        return answer, predict.call_count

    (got_status, answer), calls = serve(text_model, scenario)
    assert got_status == status and message in answer["error"], answer
    assert calls == 0


def test_a_10_mb_string_is_refused_naming_its_feature_or_by_the_body_limit(text_model):
    huge = orjson.dumps({"instances": [{**ROW, "text": "spam " * 2_000_000}]})  # 10 MB of text

    async def scenario(server):
        with mock.patch.object(server.current.model, "predict") as predict:
            answer = await call(server, "POST", "/invocations", huge)
        return answer, predict.call_count

    (status, answer), calls = serve(text_model, scenario, max_body_bytes=16 << 20)
    assert status == 413 and calls == 0
    assert answer["error"] == ("row 0, feature 'text': 10,000,000 characters, more than the 100,000-character "
                               "limit (ML_SERVE_MAX_TEXT_CHARS)")
    (status, answer), calls = serve(text_model, scenario)  # the default 1 MiB body limit comes first
    assert status == 413 and "exceeds the 1048576-byte limit" in answer["error"] and calls == 0


def test_empty_and_long_texts_within_the_limit_predict(text_model):
    async def scenario(server):
        body = {"instances": [{**ROW, "text": ""}, {**ROW, "text": "ok " * 30_000}, {**ROW, "text": "お前は本当にバカだな"}]}
        return await call(server, "POST", "/invocations", orjson.dumps(body))

    status, answer = serve(text_model, scenario)
    assert status == 200 and len(answer["predictions"]) == 3


def test_schemathesis_finds_no_server_error_for_a_text_model(text_model):
    """Generated strings, lists and nulls of every kind the document allows, and beyond it."""
    import subprocess
    from pathlib import Path

    from tests.serving_helpers import ServerProcess

    repo = Path(__file__).resolve().parents[2]
    with ServerProcess("--model", text_model, "--max-body-bytes", "65536") as srv:
        proc = subprocess.run(
            [str(repo / ".venv" / "bin" / "schemathesis"), "run", srv.url + "/openapi.json",
             "--checks", "not_a_server_error", "--max-examples", "60", "--seed", "2", "--request-timeout", "10"],
            capture_output=True, text=True, timeout=600, cwd=repo)
        assert proc.returncode == 0, proc.stdout[-4000:]
        with urllib.request.urlopen(srv.url + "/ping", timeout=5) as resp:
            assert resp.status == 200


def test_concurrent_text_requests_share_predict_calls_and_get_their_own_answers(text_model):
    import time

    texts = ["buy cheap followers today limited offer", "see you at the meeting"] * 6

    async def scenario(server):
        model = server.current.model
        real, calls = model.predict, []

        def recording(features):
            calls.append(features.num_rows)
            time.sleep(0.05)  # requests arriving meanwhile wait for the next batch
            return real(features)

        alone = [list(real(pa.table({"text": [t], "length": [float(len(t))], "tags": [[]]})))[0] for t in texts]
        with mock.patch.object(model, "predict", recording):
            answers = await asyncio.gather(*[
                call(server, "POST", "/invocations", orjson.dumps({"instances": [{"text": t, "length": len(t),
                                                                                  "tags": []}]}))
                for t in texts])
        return answers, calls, alone

    answers, calls, alone = serve(text_model, scenario)
    assert sum(calls) == len(texts) and len(calls) < len(texts)  # batched: fewer predict calls than requests
    assert [a[1]["predictions"][0] for a in answers] == alone  # each request gets its own row's answer
    assert set(alone) == {"flagged", "ok"}
