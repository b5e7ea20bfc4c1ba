"""Promotion on labelled feedback against a real ml.serve: the version serving on the level below
answers the feedback table's rows, and its accuracy on their labels decides."""

from __future__ import annotations

import json
import sqlite3

import pytest
from airflow.sdk.exceptions import AirflowFailException

from operators.deploy.feedback import FeedbackAccuracyOperator, same_label
from tests.helpers import breast_cancer_table
from tests.serving_helpers import ServerProcess


@pytest.fixture
def feedback_db(tmp_path, monkeypatch):
    """The breast-cancer rows with their true labels, as a reviewed-feedback table in SQLite."""
    rows = breast_cancer_table().to_pylist()
    path = tmp_path / "feedback.db"
    columns = list(rows[0])
    with sqlite3.connect(path) as db:
        db.execute(f"CREATE TABLE reviewed ({', '.join(f'[{c}]' for c in columns)})")
        db.executemany(f"INSERT INTO reviewed VALUES ({', '.join('?' * len(columns))})",
                       [tuple(r.values()) for r in rows])
        db.execute("CREATE TABLE flipped AS SELECT * FROM reviewed")
        db.execute("UPDATE flipped SET target = 1 - target")
        db.execute("INSERT INTO flipped (target) VALUES (NULL)")  # an unlabelled row does not count
        db.execute("CREATE TABLE unlabelled AS SELECT * FROM reviewed LIMIT 0")
    monkeypatch.setenv("AIRFLOW_CONN_FEEDBACK_DB", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return len(rows)


def check(version: str, table: str, floor: float, **kw) -> FeedbackAccuracyOperator:
    return FeedbackAccuracyOperator(task_id="feedback_production", version=version,
                                    endpoint={"endpoint": "m-dev", "target": "local", "conn_id": "ml_endpoint_m_dev"},
                                    conn_id="feedback_db", table=table, label="target", floor=floor, **kw)


def test_the_serving_version_is_promoted_on_reviewed_labels_and_refused_below_the_floor(trained_models, feedback_db,
                                                                                         monkeypatch):
    with ServerProcess("--model", trained_models["2"], "--model-version", "2") as srv:
        monkeypatch.setenv("AIRFLOW_CONN_ML_ENDPOINT_M_DEV", json.dumps(
            {"conn_type": "http", "host": "127.0.0.1", "port": srv.port, "password": "unused-admin-token"}))
        figures = check("2", "reviewed", 0.9).execute({})
        assert figures["rows"] == feedback_db and figures["accuracy"] >= 0.9
        # every label flipped: the same version's accuracy is 1 - the above, far below the floor
        with pytest.raises(AirflowFailException, match=r"version 2 is not promoted: accuracy 0\.0\d+ on "
                                                       rf"{feedback_db} labelled row\(s\) of flipped is below the floor"):
            check("2", "flipped", 0.9).execute({})
        with pytest.raises(AirflowFailException, match=r"has 0 labelled row\(s\), fewer than the 1"):
            check("2", "unlabelled", 0.9).execute({})
        with pytest.raises(AirflowFailException, match=r"serves version 2 now, not 3"):
            check("3", "reviewed", 0.9).execute({})
        # the labels live in another column than the model's target: said, with what the table must hold
        op = check("2", "reviewed", 0.9)
        op.label_column = "verdict"
        with pytest.raises(AirflowFailException, match=r"has no column\(s\) \['verdict'\]: it must hold the model's "
                                                       r"features"):
            op.execute({})


def test_a_prediction_equals_its_label_as_numbers_when_both_are_else_as_text():
    assert same_label(1, 1.0) and same_label(True, 1) and same_label("1", 1)
    assert not same_label(0, 1) and same_label("spam", "spam") and not same_label("spam", "ham")
    assert not same_label(None, "spam")
