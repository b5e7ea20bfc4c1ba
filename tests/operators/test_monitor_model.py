"""MonitorModelOperator end to end on real parts: two registered versions served by real ml.serve
processes capturing every request, labels in a PostgreSQL table (late, corrected, and for
requests never captured), a real MLflow registry naming each version's training snapshot. The
report gives each version's exact accuracy per day, flags drift on the version that was sent
shifted inputs only, alerts, and asks for retraining."""

from __future__ import annotations

import json
import urllib.request
from datetime import datetime, timedelta, timezone

import pendulum
import psycopg2
import pytest

from ml import train
from operators.monitoring.monitor_model import MonitorModelOperator, hours_between, retrain_wanted
from operators.registry.register_model import RegisterModelOperator
from tests.helpers import FakeTaskInstance, breast_cancer_table, write_snapshot
from tests.serving_helpers import ServerProcess


def invoke(url: str, rows: list[dict], request_id: str) -> list:
    req = urllib.request.Request(url + "/invocations", data=json.dumps({"instances": rows}).encode(),
                                 headers={"Content-Type": "application/json", "X-Request-Id": request_id})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["x-request-id"] == request_id
        return json.loads(resp.read())["predictions"]


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "generic", "extra": {"tracking_uri": uri}}))


def test_feedback_and_drift_per_version_from_real_captures_and_a_label_table(tmp_path, registry, make_context,
                                                                              make_database, monkeypatch):
    table = breast_cancer_table()
    snapshot = str(tmp_path / "snap")
    write_snapshot(snapshot, table)
    versions = {}
    for name, estimator in (("a", "LogisticRegression"), ("b", "HistGradientBoostingClassifier")):
        train.train(snapshot, str(tmp_path / f"model-{name}"), train.parse_config(
            {"estimator": estimator, "target": "target", "params": {"max_iter": 200}}))
        versions[name] = RegisterModelOperator(task_id="r", model_uri=str(tmp_path / f"model-{name}"),
                                               model_name="m").execute(make_context())["version"]
    features = [r for r in table.drop(["target"]).to_pylist()]
    targets = table.column("target").to_pylist()
    captures = tmp_path / "captures"
    sent: dict[str, tuple[str, int, int]] = {}  # request id -> (version, prediction, true label)
    for name, shift in (("a", 1.0), ("b", 3.0)):
        with ServerProcess("--model", str(tmp_path / f"model-{name}"), "--model-version", versions[name], "--name",
                           "m", "--capture-rate", "1", "--capture-uri", str(captures),
                           "--capture-flush-seconds", "0.2") as server:
            for i in range(0, len(features), 2):  # 285 single-row requests
                row = {**features[i], "mean_radius": features[i]["mean_radius"] * shift}
                (prediction,) = invoke(server.url, [row], f"{name}-{i}")
                sent[f"{name}-{i}"] = (versions[name], int(prediction), int(targets[i]))

    # the labels people gave: version a's are the truth; one in three of version b's says its
    # answer was wrong; a corrected label (the later one counts), and labels of requests never captured
    labels, expected = [], {}
    now = datetime.now(timezone.utc)
    for j, (request_id, (version, prediction, truth)) in enumerate(sent.items()):
        label = truth if version == versions["a"] else (1 - prediction if j % 3 == 0 else prediction)
        late = timedelta(days=2 if j % 5 == 0 else 0)  # arrives two days later: counts on the prediction's day
        labels.append((request_id, label, now + late))
        if j % 11 == 0:
            labels.append((request_id, 1 - label, now - timedelta(hours=1)))  # an earlier review, corrected
        expected.setdefault(version, []).append(prediction == label)
    labels += [(f"never-captured-{k}", 1, now) for k in range(9)]
    uri = make_database("mlp_feedback")
    with psycopg2.connect(uri) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE reviews (request_id text, label integer, labelled_at timestamptz)")
        cur.executemany("INSERT INTO reviews VALUES (%s, %s, %s)", labels)
    conn.close()
    monkeypatch.setenv("AIRFLOW_CONN_ML_LABELS", uri.replace("postgresql://", "postgres://"))

    from airflow.sdk import AssetAlias

    alias = AssetAlias("m__monitor.monitoring")
    op = MonitorModelOperator(task_id="monitor", model_name="m", capture_uri=str(captures),
                              report_root=str(tmp_path / "reports"), lookback_days=3,
                              feedback_sql="SELECT request_id, label, labelled_at FROM reviews", feedback_conn_id="ml_labels",
                              floor=0.8, min_rows=50, retrain=True, drift_threshold=0.2, drift_min_rows=100,
                              outlets=[alias])
    end = pendulum.instance(now + timedelta(hours=1))
    context = {**make_context(start=None, end=None, run_after=end.isoformat()), "ti": FakeTaskInstance()}
    added = []
    context["outlet_events"][alias].add = lambda asset, extra: added.append((asset, extra))
    result = op.execute(context)

    report = context["ti"].xcom_pull(key="report")
    assert report["captured_rows"] == len(sent) and report["versions"] == {versions["a"]: 285, versions["b"]: 285}
    feedback = report["feedback"]
    assert feedback["unmatched_labels"] == 9 and feedback["labelled_rows"] == len(sent)
    assert feedback["duplicate_labels"] == sum(1 for j in range(len(sent)) if j % 11 == 0)
    figures = {f["version"]: f for f in feedback["figures"]}
    assert {f["day"] for f in feedback["figures"]} == {now.strftime("%Y-%m-%d")}
    for version, hits in expected.items():
        assert figures[version]["rows"] == len(hits)
        assert figures[version]["value"] == sum(hits) / len(hits)  # exact
    assert figures[versions["a"]]["value"] > 0.9 and figures[versions["b"]]["value"] < 0.7
    assert [f["version"] for f in feedback["below_floor"]] == [versions["b"]]
    # drift: version b was sent mean_radius tripled; version a the training rows themselves
    drift_a, drift_b = report["drift"][versions["a"]], report["drift"][versions["b"]]
    assert drift_b["features"]["mean_radius"]["drifted"] and drift_b["features"]["mean_radius"]["psi"] > 1
    assert not [n for n, s in drift_a["features"].items() if s["drifted"]], drift_a
    assert drift_a["reference"] == snapshot and len(drift_a["features"]) == len(features[0])
    assert result["retrain"] and retrain_wanted(result) and len(result["alerts"]) == 2
    assert any("mean_radius" in a for a in result["alerts"]) and any("floor 0.8" in a for a in result["alerts"])
    # the report is on disk whole, and the asset event names it with the figures
    written = json.loads((tmp_path / "reports" / "m" / f"{end.strftime('%Y-%m-%d')}.json").read_text())
    assert written["feedback"]["figures"] == feedback["figures"]
    ((asset, extra),) = added
    assert asset.name == "m.monitoring" and extra["alerts"] == 2 and extra["report"] == result["report"]


def test_nothing_captured_yet_is_a_report_not_a_failure_and_a_bad_label_table_says_what_it_needs(
        tmp_path, registry, make_context, make_database, monkeypatch):
    uri = make_database("mlp_feedback")
    with psycopg2.connect(uri) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE reviews (id text, label integer)")
        cur.execute("INSERT INTO reviews VALUES ('x', 1)")
    conn.close()
    monkeypatch.setenv("AIRFLOW_CONN_ML_LABELS", uri.replace("postgresql://", "postgres://"))
    op = MonitorModelOperator(task_id="monitor", model_name="m", capture_uri=str(tmp_path / "none"),
                              report_root=str(tmp_path / "reports"))
    context = {**make_context(), "ti": FakeTaskInstance()}
    context["outlet_events"]  # no outlets: nothing recorded
    result = op.execute(context)
    assert result == {"report": f"{tmp_path}/reports/m/2026-01-02.json", "alerts": [], "retrain": False}
    assert context["ti"].xcom_pull(key="report")["captured_rows"] == 0
    from airflow.sdk.exceptions import AirflowFailException

    bad = MonitorModelOperator(task_id="monitor", model_name="m", capture_uri=str(tmp_path / "none"),
                               report_root=str(tmp_path / "reports"), feedback_sql="SELECT * FROM reviews",
                               feedback_conn_id="ml_labels", floor=0.5)
    with pytest.raises(AirflowFailException, match="no column\\(s\\) \\['request_id'\\].*X-Request-Id"):
        bad.execute({**make_context(), "ti": FakeTaskInstance()})


def test_the_window_reads_every_hour_partition_it_touches():
    start = datetime(2026, 12, 1, 22, 30, tzinfo=timezone.utc)
    assert hours_between(start, start + timedelta(hours=2)) == ["2026-12-01T22", "2026-12-01T23", "2026-12-02T00"]
