"""What the page shows, read from the two places that hold it: the MLflow registry (versions,
aliases, metrics, lineage tags) and Airflow's metadata database (each endpoint's ledger: the
asset events on ``endpoint.<name>``). Runs in the api-server, which may read the database."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LEDGER_PREFIX = "endpoint."
MAX_VERSIONS = 50


@dataclass
class Version:
    version: str
    source: str
    created_ms: int
    aliases: list[str]
    metrics: dict[str, float]
    lineage: dict[str, str]
    snapshot_digest: str
    estimator: str

    @property
    def trained_by(self) -> tuple[str, str] | None:
        dag, run = self.lineage.get("dag_id"), self.lineage.get("run_id")
        return (dag, run) if dag and run else None


@dataclass
class Model:
    name: str
    aliases: dict[str, str]
    versions: list[Version] = field(default_factory=list)  # newest first


@dataclass
class Endpoint:
    name: str
    ledger: list[dict[str, Any]]  # newest first: the asset events' extras, with the event time

    @property
    def serving(self) -> dict[str, Any] | None:
        """The last entry after which a version served (a deploy, or a rollback that restored one)."""
        for entry in self.ledger:
            if entry.get("outcome") in ("serving", "rolled_back") and entry.get("version"):
                return entry
        return None


def registry_client(conn_id: str = "mlflow_default"):
    """The registry client (see ``registry_target``)."""
    return registry_target(conn_id).client()


def registry_target(conn_id: str = "mlflow_default"):
    """The registry, from Airflow's connection as the api-server sees it (secrets backends,
    environment, database), else MLFLOW_TRACKING_URI."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    from operators.registry.mlflow_tracking import target_from_connection

    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        conn = None
    return target_from_connection(conn, conn_id)


def registry_models() -> tuple[list[Model], str | None]:
    """(the registered models, None), or ([], what is wrong and what to do): the page shows an
    unconfigured or unreachable registry as such, never as a server error."""
    import os

    from airflow.exceptions import AirflowException

    # the page waits seconds for an unreachable registry, not MLflow's minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        target = registry_target()
    except AirflowException as exc:
        return [], f"The model registry is not configured. {exc}."
    try:
        return models(target.client()), None
    except Exception as exc:  # refused, timed out, bad credentials, a database that is down
        return [], (f"The model registry at {redacted(target.tracking_uri)} could not be read "
                    f"({type(exc).__name__}: {redacted(str(exc))[:300]}). Check that it runs and that Airflow connection "
                    f"mlflow_default points at it.")


def redacted(text: str) -> str:
    """``text`` with the user and password of every URL in it replaced (the client's errors quote
    the URL they failed on)."""
    import re

    return re.sub(r"(://)[^/@\s]+@", r"\1***@", text)


def models(client) -> list[Model]:
    out = []
    for registered in client.search_registered_models(max_results=100):
        model = Model(registered.name, dict(registered.aliases or {}))
        found = client.search_model_versions(f"name = '{registered.name}'", max_results=MAX_VERSIONS,
                                             order_by=["version_number DESC"])
        for mv in found:
            tags = dict(mv.tags or {})
            metrics = dict(client.get_run(mv.run_id).data.metrics) if mv.run_id else {}
            metrics = {k: v for k, v in metrics.items() if not k.startswith("eval_")}  # the gate's, not held-out
            model.versions.append(Version(
                version=str(mv.version), source=mv.source, created_ms=int(mv.creation_timestamp or 0),
                aliases=sorted(a for a, v in model.aliases.items() if str(v) == str(mv.version)), metrics=metrics,
                lineage={k.removeprefix("lineage."): v for k, v in tags.items() if k.startswith("lineage.")},
                snapshot_digest=tags.get("snapshot_digest", ""), estimator=tags.get("estimator", "")))
        out.append(model)
    return out


def endpoints() -> list[Endpoint]:
    from sqlalchemy import select

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        assets = session.scalars(select(AssetModel).where(AssetModel.name.startswith(LEDGER_PREFIX))).all()
        out = []
        for asset in assets:
            events = session.scalars(select(AssetEvent).where(AssetEvent.asset_id == asset.id)
                                     .order_by(AssetEvent.timestamp.desc()).limit(200)).all()
            ledger = [{**(e.extra or {}), "event_time": e.timestamp.isoformat(), "source_dag_id": e.source_dag_id,
                       "source_run_id": e.source_run_id} for e in events if (e.extra or {}).get("outcome")]
            out.append(Endpoint(asset.name.removeprefix(LEDGER_PREFIX), ledger))
    return sorted(out, key=lambda e: e.name)


@dataclass
class Level:
    """One service level of a model: its endpoint, and the level a promotion from it goes to."""

    name: str
    endpoint: str
    next: Level | None = None


@dataclass
class ModelRow:
    """A row of the models x levels table: a model spec's levels, or (for an endpoint no spec
    names, deployed by ``ml_deploy``) the model it serves there."""

    name: str
    owners: list[str]
    tags: list[str]
    levels: list[Level]
    deploy_dag: str
    train_dag: str  # whose runs may wait for a person's approval of a promotion
    problem: str | None = None  # the spec's error: its DAGs do not load, so no button acts on them

    def matches(self, owner: str | None, tag: str | None) -> bool:
        return (not owner or owner in self.owners) and (not tag or tag in self.tags)


def model_rows(endpoint_list: list[Endpoint]) -> list[ModelRow]:
    """Every spec's model with its levels, then each other endpoint under the model it serves. A
    spec folder that cannot be read is no reason to hide the page: its good specs still count."""
    try:
        from operators.specs import model_spec
        from operators.specs.dag_factory import dag_ids, good_specs, spec_errors

        folder = model_spec.SPEC_FOLDER  # ML_MODEL_SPECS, as the DAG files read it
        specs, broken = good_specs(folder), {name: str(error) for name, error in spec_errors(folder).items()}
    except Exception:  # noqa: BLE001 - no specs here: the environment-configured DAGs only
        specs, broken = {}, {}
    rows = []
    for spec in sorted(specs.values(), key=lambda s: s.name):
        levels = [Level(level.name, level.endpoint) for level in spec.levels]
        for lower, higher in zip(levels, levels[1:]):
            lower.next = higher
        ids = dag_ids(spec.name)
        rows.append(ModelRow(spec.name, list(spec.owners), list(spec.raw.get("tags", [])), levels, ids["deploy"],
                             ids["train"]))
    named = {level.endpoint for row in rows for level in row.levels}
    others: dict[str, list[Level]] = {}
    for e in endpoint_list:
        if e.name not in named and e.ledger:  # an endpoint never deployed to, no spec's: nothing to show
            model = str((e.serving or e.ledger[0]).get("model") or "(unknown)")
            others.setdefault(model, []).append(Level("endpoint", e.name))
    for model, levels in sorted(others.items()):
        if model in broken:  # a model whose spec is broken: its endpoints, said as such, without buttons
            ids = dag_ids(model)
            rows.append(ModelRow(model, [], [], levels, ids["deploy"], ids["train"], broken[model]))
        else:
            rows.append(ModelRow(model, [], [], levels, "ml_deploy", "ml_training_pipeline"))
    return rows


def deploy_dags(rows: list[ModelRow] | None = None) -> dict[str, str]:
    """Endpoint -> the DAG that deploys to it: ``<model>__deploy`` for a spec's level, else
    the deployment's ``ml_deploy``."""
    rows = model_rows([]) if rows is None else rows
    return {level.endpoint: row.deploy_dag for row in rows for level in row.levels}


def deploy_dag_of(endpoint: str, dags: dict[str, str] | None = None) -> str:
    return (deploy_dags() if dags is None else dags).get(endpoint, "ml_deploy")


def level_of(endpoint: str) -> tuple[ModelRow, Level] | None:
    for row in model_rows([]):
        for level in row.levels:
            if level.endpoint == endpoint:
                return row, level
    return None


@dataclass
class Approval:
    """A promotion waiting for a person: the training run's ``approve_<level>`` task."""

    dag_id: str
    run_id: str
    task_id: str
    subject: str

    @property
    def level(self) -> str:
        return self.task_id.removeprefix("approve_")


def pending_approvals() -> dict[tuple[str, str], Approval]:
    """(training DAG, level) -> the approval its newest run waits for (the task parked as
    ``awaiting_input``, or ``deferred`` where an Airflow parks it that way)."""
    from sqlalchemy import select

    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        found = session.execute(
            select(TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id, HITLDetail.subject)
            .join(TaskInstance, TaskInstance.id == HITLDetail.ti_id)
            .where(HITLDetail.responded_at.is_(None), TaskInstance.state.in_(("awaiting_input", "deferred")),
                   TaskInstance.task_id.startswith("approve_"))
            .order_by(HITLDetail.created_at)).all()
    out = {}
    for dag_id, run_id, task_id, subject in found:
        approval = Approval(dag_id, run_id, task_id, subject)
        out[(dag_id, approval.level)] = approval
    return out


def evaluation_picture(client, model: str, version: str) -> bytes:
    """The evaluation picture of a version, read from its verified artifact."""
    from ml import artifacts

    source = client.get_model_version(model, version).source
    manifest = artifacts.open_verified(source, kind="model")
    name = manifest.extra.get("evaluation_picture")
    if not name:
        raise FileNotFoundError(f"{model} version {version} was trained without an evaluation picture")
    with artifacts.open_file(manifest, manifest.file(name)) as f:
        return f.read()
