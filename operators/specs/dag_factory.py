"""The DAG factory: a model spec (models/<name>.yaml) gives that model's DAGs.

- ``<name>__train``: the training pipeline, deploying a version that passed the gate to the
  first level's endpoint and moving that level's alias;
- ``<name>__deploy``: deploy any version (or alias) to any of its levels' endpoints, or roll
  one back from its own ledger;
- ``<name>__score``: batch scoring, when the spec has ``batch_scoring``;
- ``<name>__monitor``: labelled feedback and drift of captured predictions, when the spec has
  ``monitoring``.

Each model has its own small DAG file, ``dags/models/<name>.py`` (``make model-dags`` writes
it), calling ``model_dags("<name>")``. So a broken spec raises in that file alone: Airflow shows
it as that file's import error (the file, the field, what to give) and every other model's DAGs
keep loading and running. Parsing reads the spec folder once per process (cached on each file's
size and modification time) and imports nothing heavy.
"""

from __future__ import annotations

import sys
from pathlib import Path

from operators.specs.model_spec import REPO, SPEC_FOLDER, ModelSpec, SpecError, _shown, load_specs

DAG_FILES = REPO / "dags" / "models"
_CACHE: dict[tuple, tuple] = {}


def dag_ids(name: str) -> dict[str, str]:
    return {"train": f"{name}__train", "deploy": f"{name}__deploy", "score": f"{name}__score",
            "monitor": f"{name}__monitor"}


def _specs(folder: Path):
    """load_specs(folder), again only when a spec or SQL file changed."""
    files = sorted(p for pattern in ("*.yaml", "*.yml", "**/*.sql") for p in folder.glob(pattern))
    key = (str(folder), tuple((str(p), (st := p.stat()).st_mtime_ns, st.st_size) for p in files))
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = load_specs(folder)
    return _CACHE[key]


def good_specs(folder: Path = SPEC_FOLDER) -> dict[str, ModelSpec]:
    """Every spec of the folder that checks, by model name (cached like the DAG files' reads)."""
    return dict(_specs(Path(folder))[0])


def spec_errors(folder: Path = SPEC_FOLDER) -> dict[str, SpecError]:
    """Model name (its spec file's stem) -> the error of its spec."""
    return {path.stem: error for path, error in _specs(Path(folder))[1].items()}


def spec_for(name: str, folder: Path = SPEC_FOLDER) -> ModelSpec:
    """The checked spec of model ``name``, or its SpecError (checked beside every other spec)."""
    specs, errors = _specs(Path(folder))
    for path, error in errors.items():
        if path.stem == name:
            raise error
    if name not in specs:
        raise SpecError(Path(folder) / f"{name}.yaml", "the file",
                        f"no spec for model {name!r} in {_shown(Path(folder))}: write {name}.yaml there "
                        f"(docs/model-specs.md), or delete the DAG file that asks for it")
    return specs[name]


def _labels(spec: ModelSpec, kind: str) -> dict:
    """What every DAG of the model carries: tags (the model, its owners, its own), owner, alerts."""
    raw = spec.raw
    tags = ["ml", kind, f"model:{spec.name}", *(f"owner:{o}" for o in spec.owners), *raw.get("tags", [])]
    return {"tags": list(dict.fromkeys(tags)), "owner": ", ".join(spec.owners),
            "slack_conn_id": raw.get("alerts", {}).get("slack_conn_id")}


def model_dags(name: str, folder: Path = SPEC_FOLDER, fileloc: str | None = None) -> dict:
    """The DAGs of model ``name`` by id; a SpecError (the importing file's import error) when its
    spec is broken."""
    from operators.pipelines.deploy import DeploySettings, Endpoint, deploy_dag
    from operators.pipelines.monitoring import MonitoringSettings, monitoring_dag
    from operators.pipelines.scoring import ScoringSettings, scoring_dag
    from operators.pipelines.training import NextLevel, TrainingSettings, training_pipeline

    spec = spec_for(name, folder)
    fileloc = fileloc or sys._getframe(1).f_code.co_filename
    raw, model, first, ids = spec.raw, spec.raw["model"], spec.levels[0], dag_ids(name)
    searchpath = [str(spec.path.parent)]
    doc = (f"Model **{name}** ({raw.get('description', '')}), declared in `{_shown(spec.path)}`; levels "
           f"{' -> '.join(f'{l.name} ({l.endpoint})' for l in spec.levels)}.")
    dags = [training_pipeline(TrainingSettings(
        dag_id=ids["train"], model_name=name, sql=raw["source"]["sql"], template_searchpath=searchpath,
        endpoint=first.endpoint, alias=first.name, deploy_target=first.target, endpoint_conn_id=first.conn_id,
        smoke_protocol=first.smoke_protocol,
        source_conn_id=raw["source"]["conn_id"], extract_from=raw["source"]["export"],
        compute=raw["training"]["compute"], resources=raw["training"]["resources"],
        timeout_hours=raw["training"]["timeout_hours"], schedule=raw["schedule"], catchup=raw["catchup"],
        retrain_on_new_snapshot=raw["retrain_on_new_snapshot"], model_class=model["class"],
        estimator=model.get("estimator", "HistGradientBoostingClassifier"), hyperparameters=model.get("params", {}),
        target=model["target"], features=model.get("features"), exclude=model.get("exclude", []),
        test_fraction=model.get("test_fraction", 0.2), seed=model.get("seed", 42),
        metric=raw["gate"]["metric"], direction=raw["gate"]["direction"], margin=raw["gate"]["margin"],
        source_table=None, data_checks=raw.get("data_checks"),
        next_levels=[NextLevel(l.name, l.endpoint, l.target, l.conn_id, l.promotion, l.smoke_protocol)
                     for l in spec.levels[1:]],
        description=f"{name}: train, register, gate, deploy to {first.name}"
                    + "".join(f", promote to {l.name}" for l in spec.levels[1:]),
        doc_md=doc, fileloc=fileloc, **_labels(spec, "training")))]
    dags.append(deploy_dag(DeploySettings(
        dag_id=ids["deploy"], model_name=name, fileloc=fileloc,
        endpoints=[Endpoint(level.endpoint, level.target, level.conn_id, level.smoke_protocol)
                   for level in spec.levels],
        endpoint_help="; one per level: " + ", ".join(f"{l.name} {l.endpoint}" for l in spec.levels),
        **_labels(spec, "deploy"))))
    if scoring := raw.get("batch_scoring"):
        dags.append(scoring_dag(ScoringSettings(
            dag_id=ids["score"], model_name=name, sql=scoring.get("sql", raw["source"]["sql"]),
            template_searchpath=searchpath, schedule=scoring.get("schedule"),
            alias=scoring.get("alias", spec.levels[-1].name), rows_per_shard=scoring.get("shard_rows", 100_000),
            source_conn_id=raw["source"]["conn_id"], extract_from=raw["source"]["export"], source_table=None,
            fileloc=fileloc, **_labels(spec, "scoring"))))
    if (monitoring := raw.get("monitoring")) is not None:
        feedback = monitoring.get("feedback")
        dags.append(monitoring_dag(MonitoringSettings(
            dag_id=ids["monitor"], model_name=name, train_dag_id=ids["train"],
            schedule=monitoring.get("schedule", "0 5 * * *"), lookback_days=monitoring.get("lookback_days", 7),
            capture_uri=monitoring.get("capture_uri"), drift_threshold=monitoring.get("drift_threshold", 0.2),
            drift_min_rows=monitoring.get("drift_min_rows", 200),
            feedback={"conn_id": raw["source"]["conn_id"], **feedback} if feedback else None,
            template_searchpath=searchpath, fileloc=fileloc, **_labels(spec, "monitoring"))))
    return {dag.dag_id: dag for dag in dags}


STUB = '''"""Airflow DAGs of model {name}, built from models/{name}.yaml (docs/model-specs.md).

Written by `make model-dags`; a broken spec is this file's import error alone."""

from operators.specs.dag_factory import model_dags

globals().update(model_dags("{name}"))
'''


def write_dag_files(folder: Path = SPEC_FOLDER, dag_files: Path = DAG_FILES, write: bool = True) -> list[str]:
    """Write the DAG file of every spec that has none (or only say so, ``write=False``); say
    which DAG files have no spec left."""
    said = []
    names = {p.stem for pattern in ("*.yaml", "*.yml") for p in Path(folder).glob(pattern)}
    for name in sorted(names):
        path = dag_files / f"{name}.py"
        if not path.exists() and write:
            dag_files.mkdir(parents=True, exist_ok=True)
            path.write_text(STUB.format(name=name))
            said.append(f"wrote  {_shown(path)}")
        elif not path.exists():
            said.append(f"error  {_shown(path)} is missing: models/{name}.yaml has no DAGs until `make model-dags` "
                        f"writes it")
    for path in sorted(dag_files.glob("*.py")):
        if path.stem not in names and path.name != "__init__.py":
            said.append(f"stale  {_shown(path)}: no spec {path.stem}.yaml is left; delete the file")
    return said


def main(argv: list[str] | None = None) -> int:
    """``--check``: say what is missing or stale, exit 1 on any; otherwise write what is missing."""
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    said = write_dag_files(write=not check)
    print("\n".join(said) or f"ok     every spec has its DAG file in {_shown(DAG_FILES)}")
    return 1 if check and said else 0


if __name__ == "__main__":
    sys.exit(main())
