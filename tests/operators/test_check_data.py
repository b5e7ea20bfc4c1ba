"""CheckDataOperator with a real MLflow registry: the reference is the training snapshot of the
version in production (the highest level's alias that holds one); before any version, the
spec's rules alone; a failing snapshot stops the run with its report; Param check_data off
skips the checks."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pyarrow.compute as pc
import pytest
from airflow.sdk.exceptions import AirflowFailException

from ml import train
from operators.registry.register_model import RegisterModelOperator
from operators.training.check_data import CheckDataOperator
from tests.helpers import FakeTaskInstance, breast_cancer_table, write_snapshot


def run(operator, make_context):
    context = {**make_context(), "ti": FakeTaskInstance()}
    try:
        return operator.execute(context), {"report": context["ti"].xcom_pull(key="report")}
    except AirflowFailException as exc:
        return exc, {"report": context["ti"].xcom_pull(key="report")}


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "generic", "extra": {"tracking_uri": uri}}))
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def check(uri: str, **kwargs) -> CheckDataOperator:
    return CheckDataOperator(task_id="check_data", data_uri=uri, model_name="m",
                             aliases=["production", "development"], **kwargs)


def test_the_reference_is_the_training_snapshot_of_the_version_in_production(tmp_path, registry, make_context):
    table = breast_cancer_table()
    first = str(tmp_path / "snap-1")
    write_snapshot(first, table)
    passed, xcom = run(check(first), make_context)
    assert passed["passed"] and "no version of m holds production or development yet" in passed["reference"]
    assert xcom["report"]["snapshot"] == first

    train.train(first, str(tmp_path / "model-1"), train.parse_config(
        {"estimator": "LogisticRegression", "target": "target", "params": {"max_iter": 500}}))
    version = RegisterModelOperator(task_id="r", model_uri=str(tmp_path / "model-1"),
                                    model_name="m").execute(make_context())["version"]
    registry.set_registered_model_alias("m", "development", version)

    renamed = str(tmp_path / "snap-renamed")
    write_snapshot(renamed, table.rename_columns(["radius_mean" if n == "mean_radius" else n for n in table.column_names]))
    failed, xcom = run(check(renamed), make_context)
    assert isinstance(failed, AirflowFailException)
    message = str(failed)
    assert f"reference: development = m version {version}, trained on {first}" in message
    assert "FAIL mean_radius [schema] mean_radius (double) is not in the new snapshot" in message
    assert "['radius_mean'] (renamed?)" in message and "Nothing was trained" in message
    assert [f["column"] for f in xcom["report"]["failures"]] == ["mean_radius"]  # the report, for the page

    registry.set_registered_model_alias("m", "production", version)  # production comes first
    shifted = str(tmp_path / "snap-shifted")
    write_snapshot(shifted, table.set_column(0, "mean_radius", pc.multiply(table.column("mean_radius"), 2.0)))
    failed, xcom = run(check(shifted), make_context)
    assert "production = m version" in str(failed)
    assert {(f["column"], f["check"]) for f in xcom["report"]["failures"]} == {("mean_radius", "mean_shift"),
                                                                              ("mean_radius", "range")}
    same_kind = str(tmp_path / "snap-2")
    write_snapshot(same_kind, table.slice(0, 400))  # fewer rows of the same data
    passed, _ = run(check(same_kind), make_context)
    assert passed["passed"], passed


def test_the_specs_rules_param_off_and_wrong_rules(tmp_path, registry, make_context):
    table = breast_cancer_table()
    uri = str(tmp_path / "snap")
    write_snapshot(uri, table)
    failed, xcom = run(check(uri, rules={"columns": {"mean_radius": {"max": 20}}}), make_context)
    assert "FAIL mean_radius [max]" in str(failed) and "values above the spec's max 20" in str(failed)
    skipped, _ = run(check(uri, rules={"columns": {"mean_radius": {"max": 20}}}, enabled="False"), make_context)
    assert skipped == {"skipped": True}
    wrong, _ = run(check(uri, rules={"max_nul_rate_increase": 0.2}), make_context)
    assert "the model spec's data_checks are wrong: unknown data check rules ['max_nul_rate_increase']" in str(wrong)


def test_a_reference_column_the_model_did_not_use_may_be_gone(tmp_path, registry, make_context):
    """An extract's snapshot holds event_time, which training excludes; a snapshot a data team
    publishes without it is checked on the model's features and target only."""
    import pyarrow as pa

    table = breast_cancer_table()
    extracted = table.append_column("event_time", pa.array(range(table.num_rows), pa.int64()).cast(
        pa.timestamp("us", tz="UTC")))
    first = str(tmp_path / "snap-extracted")
    write_snapshot(first, extracted)
    train.train(first, str(tmp_path / "model"), train.parse_config(
        {"estimator": "LogisticRegression", "target": "target", "exclude": ["event_time"], "params": {"max_iter": 500}}))
    version = RegisterModelOperator(task_id="r", model_uri=str(tmp_path / "model"),
                                    model_name="m").execute(make_context())["version"]
    registry.set_registered_model_alias("m", "production", version)

    published = str(tmp_path / "snap-published")
    write_snapshot(published, table.take(list(range(0, table.num_rows, 2))))
    passed, _ = run(check(published), make_context)
    assert passed["passed"], passed
    assert "reference columns the model does not use are not in the new snapshot: ['event_time']" in passed["notes"]

    no_target = str(tmp_path / "snap-no-target")
    write_snapshot(no_target, table.drop(["target"]))
    failed, xcom = run(check(no_target), make_context)
    assert "FAIL target [schema] target (int64) is not in the new snapshot" in str(failed)
    assert [f["column"] for f in xcom["report"]["failures"]] == ["target"]
