"""FeedbackAccuracyOperator: promotion on labelled feedback. The version serving on the level
below answers the rows of the spec's feedback table (the model's features and the label a person
gave, as human review results arrive), and its accuracy on them must reach the spec's floor.

The rows are scored by the endpoint itself, so what is judged is what serves (its
pre-processing, its version), not a copy loaded in the worker. The endpoint must serve the
version under promotion when the check starts; rows without a label do not count; a table without
the model's features or label column, or with fewer labelled rows than ``min_rows``, fails saying
so. Runs after the level's evidence wait and before its alias moves.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

BATCH_ROWS = 500


def same_label(predicted: Any, label: Any) -> bool:
    """A prediction equals its label: as numbers when both are (1 == 1.0 == True), else as text."""
    try:
        return math.isclose(float(predicted), float(label), rel_tol=0, abs_tol=1e-9)
    except (TypeError, ValueError):
        return str(predicted) == str(label)


class FeedbackAccuracyOperator(BaseOperator):
    template_fields: Sequence[str] = ("version",)
    ui_color = "#e8f7e4"

    def __init__(self, *, version, endpoint: dict[str, Any], conn_id: str, table: str, label: str, floor: float,
                 min_rows: int = 1, **kwargs) -> None:
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)
        self.version, self.endpoint, self.conn_id, self.table = version, endpoint, conn_id, table
        self.label_column, self.floor, self.min_rows = label, float(floor), int(min_rows)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk import BaseHook

        from operators.deploy.endpoint_client import EndpointError, invoke, ping
        from operators.deploy.promotion import endpoint_url

        name = self.endpoint["endpoint"]
        url = endpoint_url(self.endpoint, "/invocations")
        served = ping(url)
        if not served or str(served.get("model_version")) != str(self.version):
            raise AirflowFailException(f"endpoint {name} serves version {(served or {}).get('model_version')} now, "
                                       f"not {self.version}: its answers are no evidence for version {self.version}")
        features = list(served["features"])
        # the table name is the spec's, checked against ^[A-Za-z_][A-Za-z0-9_.]*$ by its schema
        frame = BaseHook.get_connection(self.conn_id).get_hook().get_df(f"SELECT * FROM {self.table}")
        missing = [c for c in [*features, self.label_column] if c not in frame.columns]
        if missing:
            raise AirflowFailException(f"feedback table {self.table} (connection {self.conn_id}) has no column(s) "
                                       f"{missing}: it must hold the model's features {features} and the label "
                                       f"{self.label_column!r} a person gave")
        labelled = frame[frame[self.label_column].notna()]
        if len(labelled) < self.min_rows:
            raise AirflowFailException(f"feedback table {self.table} has {len(labelled)} labelled row(s), fewer than "
                                       f"the {self.min_rows} the promotion needs")
        records = json.loads(labelled[features].to_json(orient="records", date_format="iso"))
        labels = labelled[self.label_column].tolist()
        correct = 0
        for start in range(0, len(records), BATCH_ROWS):
            try:
                answer = invoke(url, records[start:start + BATCH_ROWS], timeout=60)
            except EndpointError as exc:
                raise AirflowFailException(f"endpoint {name} could not score the feedback rows: {exc}") from None
            if str(answer.get("model_version")) != str(self.version):
                raise AirflowFailException(f"endpoint {name} switched to version {answer.get('model_version')} "
                                           f"while scoring the feedback for version {self.version}")
            correct += sum(same_label(p, y) for p, y in zip(answer["predictions"], labels[start:start + BATCH_ROWS]))
            self.log.info("Scored %d of %d feedback rows on %s", min(start + BATCH_ROWS, len(records)), len(records),
                          name)
        accuracy = correct / len(records)
        figures = {"accuracy": accuracy, "rows": len(records), "floor": self.floor, "table": self.table}
        if accuracy < self.floor:
            raise AirflowFailException(f"version {self.version} is not promoted: accuracy {accuracy:.4f} on "
                                       f"{len(records)} labelled row(s) of {self.table} is below the floor "
                                       f"{self.floor:.4f}")
        self.log.info("Accuracy %.4f on %d labelled row(s) of %s reaches the floor %.4f", accuracy, len(records),
                      self.table, self.floor)
        return figures
