"""CheckDataOperator: the data checks between the snapshot and training (ml/monitoring/checks.py).

The reference is the training snapshot of the version behind the first of ``aliases`` that
holds one (the spec's levels, production first): what the model in production learned from.
The columns that must still be there are the ones that version used (its features and
target), so a published snapshot without the extract's ``event_time`` passes. With none yet
(the model's first run) only the spec's rules apply. A failed check fails the run
before training with AirflowFailException, so without retries (the same snapshot fails the same
way; an unreachable registry is retried), with the report in the
task log, in the exception and in the XCom ``report``; Param ``check_data`` off skips it for a
run that must train on the snapshot anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context


class CheckDataOperator(BaseOperator):
    template_fields: Sequence[str] = ("data_uri", "model_name", "enabled")
    ui_color = "#fff4d6"

    def __init__(self, *, data_uri: str, model_name: str, aliases: Sequence[str], rules: dict[str, Any] | None = None,
                 enabled: bool | str = True, mlflow_conn_id: str = "mlflow_default", **kwargs) -> None:
        super().__init__(**kwargs)
        self.data_uri, self.model_name, self.aliases = data_uri, model_name, list(aliases)
        self.rules, self.enabled, self.mlflow_conn_id = rules, enabled, mlflow_conn_id

    def reference(self) -> tuple[str | None, str, list[str] | None]:
        """(the reference snapshot's URI, what it is, the columns its model used: features and
        target) or (None, why there is none, None)."""
        from mlflow.exceptions import MlflowException

        from ml import artifacts
        from operators.registry.mlflow_tracking import mlflow_target

        client = mlflow_target(self.mlflow_conn_id).client()
        for alias in self.aliases:
            try:
                version = client.get_model_version_by_alias(self.model_name, alias)
            except MlflowException:
                continue
            manifest = artifacts.read_manifest(version.source, kind="model")
            uri = manifest.extra.get("snapshot_uri")
            if not uri:
                return None, f"{self.model_name} version {version.version} ({alias}) records no training snapshot", None
            used = [f["name"] for f in manifest.schema] + [t for t in [manifest.extra.get("target")] if t]
            return uri, f"{alias} = {self.model_name} version {version.version}, trained on {uri}", used or None
        return None, f"no version of {self.model_name} holds {' or '.join(self.aliases)} yet", None

    def execute(self, context: Context) -> dict[str, Any]:
        from ml.monitoring.checks import RulesError, check_snapshot, render
        from ml.monitoring.profile import profile_table
        from ml.snapshots import read_snapshot

        if self.enabled in (False, "False", "false"):
            self.log.info("data checks skipped: Param check_data is off for this run")
            return {"skipped": True}
        manifest, table = read_snapshot(self.data_uri)
        self.log.info("checking snapshot %s: %d rows, %d columns", self.data_uri, table.num_rows, table.num_columns)
        reference_uri, about, used = self.reference()
        reference = None
        if reference_uri == self.data_uri:
            about += " (the same snapshot)"
        if reference_uri is not None:
            reference_manifest, reference_table = read_snapshot(reference_uri)
            reference = profile_table(reference_table)
            self.log.info("reference: %s (%d rows, digest %s)", about, reference_table.num_rows,
                          reference_manifest.digest[:12])
        else:
            self.log.info("reference: none (%s)", about)
        try:
            report = check_snapshot(table, reference, self.rules, required=used)
        except RulesError as exc:
            raise AirflowFailException(f"the model spec's data_checks are wrong: {exc}") from None
        report.update(snapshot=self.data_uri, snapshot_digest=manifest.digest, reference=about)
        text = render(report)
        context["ti"].xcom_push(key="report", value=report)
        if not report["passed"]:
            self.log.error("%s", text)
            raise AirflowFailException(f"{text}\nNothing was trained. Fix the source data, change the spec's "
                                       f"data_checks, or trigger the run with Param check_data off to train anyway")
        self.log.info("%s", text)
        return report
