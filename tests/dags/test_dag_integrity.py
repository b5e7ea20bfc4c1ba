"""Every DAG file imports cleanly, has no cycle, retries every task, and stays light to parse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
HEAVY = ["sklearn", "pandas", "mlflow", "pyarrow", "boto3", "botocore", "kubernetes", "google.cloud",
         "adbc_driver_postgresql", "skops", "scipy"]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "ml_training_pipeline" in dagbag.dags


def test_no_cycles_and_every_task_retries(dagbag):
    for dag_id, dag in dagbag.dags.items():
        order = [t.task_id for t in dag.topological_sort()]  # raises on a cycle
        assert len(order) == len(dag.tasks)
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"


def test_training_pipeline_shape_schedule_and_params(dagbag):
    dag = dagbag.dags["ml_training_pipeline"]
    assert [t.task_id for t in dag.topological_sort()] == [
        "extract", "wait_for_snapshot", "train", "wait_for_model", "register"]
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"  # backfills get real data intervals
    assert dag.max_active_runs == 1
    for task_id in ("wait_for_snapshot", "wait_for_model"):
        assert dag.get_task(task_id).deferrable
    params = dag.params
    params.validate()  # defaults satisfy their own schemas
    assert {"estimator", "hyperparameters", "compute", "test_fraction"} <= set(params.keys())
    schema = params.get_param("compute").schema
    assert schema["enum"] == ["local", "kubernetes"]
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        params.get_param("test_fraction").resolve(0.9)
    with pytest.raises(ParamValidationError):
        params.get_param("estimator").resolve("os.system")
    train = dag.get_task("train")
    assert train.retry_exponential_backoff and train.max_retry_delay


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, cwd=DAGS.parent)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("dag_file", sorted(p.name for p in DAGS.glob("*.py")))
def test_dag_file_imports_no_heavy_library(dag_file):
    baseline = _modules_after("import airflow.sdk")
    loaded = _modules_after(f"import runpy; runpy.run_path({str(DAGS / dag_file)!r})")
    heavy = sorted(m for m in loaded - baseline if m.split(".")[0] in HEAVY or m.startswith("google.cloud"))
    assert heavy == [], f"{dag_file} pulls heavy modules at parse time: {heavy[:10]}"
