"""MonitorModelOperator: how each served version of a model is doing, from what its endpoints
captured (ml.serving.capture) and what people labelled since.

Each run reads the captured predictions of its look-back window (``lookback_days`` up to the
run's data interval end, or its run_after), and:

- joins them with the labels the spec's feedback SQL reads (ml.monitoring.feedback: late labels
  count on their prediction's day, a corrected label once, labels of requests never captured
  nowhere) and computes the metric per version and day;
- compares each version's captured inputs of the last day with its training snapshot (the
  version's model manifest names it) per feature (ml.monitoring.drift, PSI);
- writes the report, whole, to ``<report_root>/<model>/<day>.json``, records an asset event on
  ``<model>.monitoring`` with the figures, and pushes it as XCom ``report``;
- alerts in Slack when a version's day is past the floor or a feature drifted, and returns
  ``retrain`` (the DAG's next task triggers training when the spec asks for it).

Nothing captured yet is not a failure: the report says so. A label table that cannot be joined
(no request id column) fails saying what it must hold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

DAY = timedelta(days=1)


def hours_between(start: datetime, end: datetime) -> list[str]:
    """The capture partitions (``YYYY-MM-DDTHH``) of every hour touching [start, end)."""
    from ml.serving.capture import HOUR

    hour = start.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    out = []
    while hour < end:
        out.append(hour.strftime(HOUR))
        hour += timedelta(hours=1)
    return out


def _at(moment: datetime):
    """A UTC instant as an Arrow scalar of the captured ``ts`` column's type."""
    import pyarrow as pa

    return pa.scalar(moment, pa.timestamp("us", tz="UTC"))


class MonitorModelOperator(BaseOperator):
    template_fields: Sequence[str] = ("model_name", "capture_uri", "report_root", "feedback_sql")
    template_ext: Sequence[str] = (".sql",)
    ui_color = "#e4eefc"

    def __init__(self, *, model_name: str, capture_uri: str, report_root: str, lookback_days: int = 7,
                 feedback_sql: str | None = None, feedback_conn_id: str = "ml_source", label: str = "label",
                 metric: str = "accuracy", floor: float | None = None, min_rows: int = 50, retrain: bool = False,
                 drift_threshold: float = 0.2, drift_min_rows: int = 200, mlflow_conn_id: str = "mlflow_default",
                 slack_conn_id: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model_name, self.capture_uri, self.report_root = model_name, capture_uri, report_root
        self.lookback_days, self.feedback_sql, self.feedback_conn_id = int(lookback_days), feedback_sql, feedback_conn_id
        self.label_column, self.metric, self.floor, self.min_rows = label, metric, floor, int(min_rows)
        self.retrain, self.drift_threshold, self.drift_min_rows = bool(retrain), float(drift_threshold), int(drift_min_rows)
        self.mlflow_conn_id, self.slack_conn_id = mlflow_conn_id, slack_conn_id

    # -- inputs ---------------------------------------------------------------------------------
    def labels(self):
        import pyarrow as pa
        from airflow.sdk import BaseHook

        frame = BaseHook.get_connection(self.feedback_conn_id).get_hook().get_df(self.feedback_sql)
        self.log.info("read %d label row(s) on %s", len(frame), self.feedback_conn_id)
        return pa.Table.from_pandas(frame, preserve_index=False)

    def training_profile(self, version: str) -> tuple[dict | None, str]:
        """The profile of ``version``'s training snapshot, or (None, why not)."""
        from mlflow.exceptions import MlflowException

        from ml import artifacts
        from ml.monitoring.profile import profile_table
        from ml.snapshots import read_snapshot
        from operators.registry.mlflow_tracking import mlflow_target

        try:
            source = mlflow_target(self.mlflow_conn_id).client().get_model_version(self.model_name, version).source
        except MlflowException as exc:
            return None, f"version {version} is not in the registry ({exc.error_code})"
        uri = artifacts.read_manifest(source, kind="model").extra.get("snapshot_uri")
        if not uri:
            return None, f"version {version} records no training snapshot"
        return profile_table(read_snapshot(uri)[1]), uri

    # -- the run --------------------------------------------------------------------------------
    def execute(self, context: Context) -> dict[str, Any]:
        from ml import artifacts
        from ml.monitoring.drift import feature_drift
        from ml.monitoring.feedback import FeedbackError, below_floor, daily_metrics, join_feedback
        from ml.serving.capture import read_captured
        from operators.asset_events import emit_asset_event

        end = context.get("data_interval_end") or context["dag_run"].run_after
        end = datetime.fromtimestamp(end.timestamp(), timezone.utc)
        start = end - self.lookback_days * DAY
        captured = read_captured(self.capture_uri, self.model_name, hours_between(start, end))
        if captured is not None:  # the hour partitions hold whole hours: keep the window's rows
            import pyarrow.compute as pc

            ts = captured.column("ts")
            captured = captured.filter(pc.and_(pc.greater_equal(ts, _at(start)), pc.less(ts, _at(end))))
        rows = captured.num_rows if captured is not None else 0
        self.log.info("%s: %d captured row(s) from %s to %s under %s", self.model_name, rows, start.isoformat(),
                      end.isoformat(), self.capture_uri)
        report: dict[str, Any] = {"model": self.model_name, "from": start.isoformat(), "until": end.isoformat(),
                                  "captured_rows": rows, "versions": {}, "feedback": None, "drift": {}, "alerts": []}
        if captured is not None and rows:
            versions = captured.column("model_version").to_pylist()
            for v in sorted(set(versions)):
                report["versions"][v] = versions.count(v)

        if self.feedback_sql:
            try:
                joined = join_feedback(captured, self.labels(), label_column=self.label_column)
                figures = daily_metrics(joined, self.metric)
            except FeedbackError as exc:
                raise AirflowFailException(f"the feedback of {self.model_name} cannot be joined: {exc}") from None
            low = below_floor(figures, self.floor, self.min_rows) if self.floor is not None else []
            report["feedback"] = {"metric": self.metric, "floor": self.floor, "min_rows": self.min_rows,
                                  "figures": figures, "labelled_rows": len(joined),
                                  "unmatched_labels": joined.unmatched_labels,
                                  "duplicate_labels": joined.duplicate_labels, "unlabelled_rows": joined.unlabelled,
                                  "below_floor": low}
            for f in figures:
                self.log.info("version %s on %s: %s %.4f on %d labelled row(s)", f["version"], f["day"],
                              self.metric, f["value"], f["rows"])
            self.log.info("labels: %d joined, %d for requests not captured, %d replaced by a later label",
                          len(joined), joined.unmatched_labels, joined.duplicate_labels)
            for f in low:
                report["alerts"].append(f"version {f['version']} on {f['day']}: {self.metric} {f['value']:.4f} on "
                                        f"{f['rows']} labelled rows is past the floor {self.floor}")

        if captured is not None and rows:
            import pyarrow.compute as pc

            last_day = captured.filter(pc.greater_equal(captured.column("ts"), _at(end - DAY)))
            for version in sorted(set(last_day.column("model_version").to_pylist())):
                inputs = last_day.filter(pc.equal(last_day.column("model_version"), version))
                if inputs.num_rows < self.drift_min_rows:
                    report["drift"][version] = {"skipped": f"{inputs.num_rows} captured rows in the last day, "
                                                           f"fewer than {self.drift_min_rows}"}
                    continue
                profile, about = self.training_profile(version)
                if profile is None:
                    report["drift"][version] = {"skipped": about}
                    continue
                scores = feature_drift(profile, inputs, threshold=self.drift_threshold)
                report["drift"][version] = {"reference": about, "rows": inputs.num_rows, "features": scores}
                drifted = {name: s["psi"] for name, s in scores.items() if s["drifted"]}
                self.log.info("version %s drift (PSI, %d rows against %s): %s", version, inputs.num_rows, about,
                              ", ".join(f"{n} {s['psi']:.3f}" for n, s in sorted(scores.items(),
                                                                             key=lambda i: -i[1]["psi"])[:10]))
                if drifted:
                    report["alerts"].append(f"version {version}: {len(drifted)} feature(s) drifted past PSI "
                                            f"{self.drift_threshold}: " + ", ".join(
                                                f"{n} {p:.3f}" for n, p in sorted(drifted.items(), key=lambda i: -i[1])))

        report["retrain"] = bool(self.retrain and report["feedback"] and report["feedback"]["below_floor"])
        day = end.strftime("%Y-%m-%d")
        uri = f"{self.report_root.rstrip('/')}/{self.model_name}/{day}.json"
        fs, path = artifacts.resolve(uri)
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        artifacts._atomic_put(fs, path, json.dumps(report, indent=1, default=str).encode())
        self.log.info("report written to %s", uri)
        summary = {"report": uri, "captured_rows": rows, "alerts": len(report["alerts"])}
        if report["feedback"]:
            summary["figures"] = [{k: f[k] for k in ("version", "day", "value", "rows")}
                                  for f in report["feedback"]["figures"]][-14:]
        emit_asset_event(context, self.outlets, f"{self.model_name}.monitoring",
                         f"{self.report_root.rstrip('/')}/{self.model_name}", summary)
        context["ti"].xcom_push(key="report", value=report)
        if report["alerts"]:
            self.alert(context, report)
        return {"report": uri, "alerts": report["alerts"], "retrain": report["retrain"]}

    def alert(self, context: Context, report: dict[str, Any]) -> None:
        from operators.alerts import SlackAlert

        for line in report["alerts"]:
            self.log.warning("%s", line)
        text = (f":warning: *{self.model_name}* monitoring ({report['from'][:10]} to {report['until'][:10]}):\n"
                + "\n".join(f"- {line}" for line in report["alerts"])
                + ("\nTraining was triggered." if report["retrain"] else ""))
        SlackAlert(text=text, slack_conn_id=self.slack_conn_id).notify(context)


def retrain_wanted(result: dict[str, Any]) -> bool:
    """For the ShortCircuitOperator before the training trigger."""
    return bool(result and result.get("retrain"))
