"""Every feature kind through the request parser (JSON and CSV), what each refuses, and a model
with categorical strings, booleans and timestamps served end to end."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import orjson
import pyarrow as pa
import pytest

from ml import train
from ml.models import Feature, FeatureSchema
from ml.models.interface import kind_of
from ml.serving.inputs import Columns, InputError, combine, matrix_table, parse_body
from tests.helpers import write_snapshot
from tests.serving.test_server_failures import call
from tests.serving_helpers import in_process

MIXED = FeatureSchema([Feature("amount", "number", True), Feature("member", "boolean"),
                       Feature("country", "string", True), Feature("tags", "strings"),
                       Feature("seen", "timestamp", True)])
NUMERIC = FeatureSchema([Feature("x", "number"), Feature("flag", "boolean", True)])


def parse(body, schema=MIXED, content_type="application/json"):
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse_body(data, content_type, schema, 100)


def test_every_kind_parses_from_json_into_columns():
    parsed = parse({"instances": [
        {"amount": 3, "member": True, "country": "jp", "tags": ["a", "b"], "seen": "2026-12-01T10:00:00Z"},
        {"amount": None, "member": 0, "country": None, "tags": [], "seen": 1796112000},
        [float("nan"), False, "de", ["c"], "2026-12-01T10:00:00+09:00"],
        [1.5, 1, "fr", [], "2026-12-01T10:00:00"],  # a naive time is UTC
        [2.0, True, "br", [], None],
    ]})
    assert isinstance(parsed, Columns) and parsed.shape == (5, 5)
    table = parsed.table(MIXED)
    assert table.column("amount").to_pylist() == [3.0, None, None, 1.5, 2.0]
    assert table.column("member").to_pylist() == [True, False, False, True, True]
    assert table.column("country").to_pylist() == ["jp", None, "de", "fr", "br"]
    assert table.column("tags").to_pylist() == [["a", "b"], [], ["c"], [], []]
    utc = timezone.utc
    assert table.column("seen").to_pylist() == [
        datetime(2026, 12, 1, 10, tzinfo=utc), datetime.fromtimestamp(1796112000, utc),
        datetime(2026, 12, 1, 1, tzinfo=utc), datetime(2026, 12, 1, 10, tzinfo=utc), None]
    both = combine([parsed, parse({"instances": [[1, True, "us", [], None]]})])
    assert both.shape == (6, 5) and both.table(MIXED).column("country").to_pylist()[-1] == "us"


BAD_VALUES = [
    ({"member": "yes"}, "feature 'member': 'yes' is not true or false"),
    ({"member": None}, "feature 'member': missing value (null/NaN) not allowed"),
    ({"amount": "3"}, "feature 'amount': '3' is not a number"),
    ({"tags": None}, "feature 'tags': missing value (null/NaN) not allowed"),
    ({"tags": ["a", 1]}, "feature 'tags' (an item of the list): a number given, but this feature is a string"),
    ({"country": {"code": "jp"}}, "feature 'country': an object given, but this feature is a string"),
    ({"country": True}, "feature 'country': a boolean given, but this feature is a string"),
    ({"seen": "yesterday"}, "feature 'seen': 'yesterday' is not an ISO 8601 time"),
    ({"seen": [2026]}, "feature 'seen': a list given, but this feature is a time"),
]


@pytest.mark.parametrize("change,message", BAD_VALUES, ids=[m for _, m in BAD_VALUES])
def test_each_kind_refuses_what_it_cannot_hold_naming_row_and_feature(change, message):
    record = {"amount": 1, "member": True, "country": "jp", "tags": [], "seen": None, **change}
    with pytest.raises(InputError) as raised:
        parse({"instances": [record]})
    assert raised.value.status == 400
    assert f"row 0, {message}" in str(raised.value)


def test_a_non_finite_time_and_an_unparsable_non_utf8_body_are_refused():
    from ml.serving.inputs import _timestamp

    with pytest.raises(InputError, match="feature 'seen': nan is not a time"):
        _timestamp(math.nan, 0, 4, MIXED)
    with pytest.raises(InputError, match="body is not valid JSON"):
        parse(b'{"instances": [\xff')  # not UTF-8 and not JSON either: the plain JSON error


def test_every_kind_parses_from_csv():
    body = ('amount,member,country,tags,seen\n'
            '3,true,jp,"[""a""]",2026-12-01T10:00:00Z\n'
            ',0,,[],\n').encode()
    table = parse(body, content_type="text/csv").table(MIXED)
    assert table.column("amount").to_pylist() == [3.0, None]
    assert table.column("member").to_pylist() == [True, False]
    assert table.column("country").to_pylist() == ["jp", ""]  # an empty cell is the empty string
    assert table.column("tags").to_pylist() == [["a"], []]
    assert table.column("seen").to_pylist()[1] is None
    for line, message in (("3,maybe,jp,[],", "'maybe' is not true, false, 0 or 1"),
                          ("x,true,jp,[],", "'x' is not a number"),
                          ("3,true,jp,a b,", "a list feature's cell is a JSON array of strings")):
        with pytest.raises(InputError, match=message):
            parse(line.encode(), content_type="text/csv")


def test_booleans_in_a_numeric_schema_stay_a_matrix_and_become_a_table_for_models_without_one():
    matrix = parse({"instances": [[1.5, True], [2.0, None], [3.0, 0]]}, NUMERIC)
    assert isinstance(matrix, np.ndarray) and matrix[0].tolist() == [1.5, 1.0] and math.isnan(matrix[1, 1])
    table = matrix_table(matrix, NUMERIC)
    assert table.column("flag").to_pylist() == [True, None, False] and table.schema.field("flag").type == pa.bool_()
    with pytest.raises(InputError, match="row 0, feature 'flag': 2 is not true or false"):
        parse({"instances": [[1.0, 2]]}, NUMERIC)
    csv = parse(b"x,flag\n1,true\n2,\n", NUMERIC, "text/csv")
    assert csv[0].tolist() == [1.0, 1.0] and math.isnan(csv[1, 1])


def test_kinds_of_arrow_types():
    assert kind_of(pa.dictionary(pa.int8(), pa.string())) == "string"
    assert kind_of(pa.large_string()) == "string" and kind_of(pa.large_list(pa.large_string())) == "strings"
    assert kind_of(pa.date32()) == "timestamp" and kind_of(pa.decimal128(38, 10)) == "number"
    assert kind_of(pa.list_(pa.int64())) is None and kind_of(pa.binary()) is None


def test_a_model_of_categories_booleans_and_times_is_served_with_its_schema(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    country = rng.choice(["jp", "de", "br"], n)
    member = rng.random(n) < 0.5
    table = pa.table({"country": country.tolist(), "member": member.tolist(),
                      "seen": pa.array([datetime(2026, 1, 1, tzinfo=timezone.utc)] * n, pa.timestamp("us", tz="UTC")),
                      "target": ((country == "jp") | member).astype(int)})
    write_snapshot(str(tmp_path / "s"), table)
    train.train(str(tmp_path / "s"), str(tmp_path / "m"), train.parse_config(
        {"estimator": "HistGradientBoostingClassifier", "target": "target", "params": {"max_iter": 20}}))

    async def scenario(server):
        rows = [{"country": "jp", "member": False, "seen": "2026-02-01T00:00:00Z"},
                {"country": "de", "member": False, "seen": 1790000000},
                {"country": "zz", "member": True, "seen": "2026-02-01T00:00:00Z"}]  # an unseen category
        answer = await call(server, "POST", "/invocations", orjson.dumps({"instances": rows}))
        document = (await call(server, "GET", "/openapi.json"))[1]
        return server.current.uses_matrix, answer, document

    uses_matrix, (status, answer), document = in_process(scenario, model_uri=str(tmp_path / "m"), model_version="1")
    assert not uses_matrix  # strings and times: an Arrow table per batch
    assert status == 200 and answer["predictions"] == [1, 0, 1]
    record = document["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "oneOf"][0]["properties"]["instances"]["items"]["oneOf"][1]["properties"]
    assert record["member"] == {"type": "boolean"} and record["seen"]["oneOf"][0]["format"] == "date-time"
