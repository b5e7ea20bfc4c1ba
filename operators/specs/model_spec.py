"""Model specs: one YAML file per model in ``models/``, checked against
``models/model-spec.schema.json`` and then against what the schema cannot say (the SQL file is
there, the model class is one this deployment allows, no two specs share a name or an endpoint).

A spec's error names its file, the field and what to give, and belongs to that spec alone: the
loader returns the good specs beside the errors, so one broken file breaks only its own DAGs.
Light at parse time: PyYAML's C loader and jsonschema, both already imported by Airflow.

    python -m operators.specs.model_spec [models/]      check every spec, exit 1 on any error
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# The deployment's specs: ML_MODEL_SPECS (e.g. a folder git-synced from the teams' repository), or models/.
SPEC_FOLDER = Path(os.environ.get("ML_MODEL_SPECS") or REPO / "models")
SCHEMA_PATH = REPO / "models" / "model-spec.schema.json"
DEFAULTS = {"source": {"conn_id": "ml_source", "export": "sql"},
            "training": {"compute": "local", "resources": {"cpu": "1", "memory": "2Gi", "gpu": 0}, "timeout_hours": 4},
            "schedule": "0 3 * * *", "catchup": False, "retrain_on_new_snapshot": True,
            "gate": {"metric": "accuracy", "direction": "maximize", "margin": 0.0}}


class SpecError(ValueError):
    """What is wrong with one spec file: the file, the field, what to give."""

    def __init__(self, path: Path, where: str, problem: str):
        self.path, self.where, self.problem = path, where, problem
        super().__init__(f"{_shown(path)}: {where}: {problem}")


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class Level:
    name: str
    endpoint: str
    conn_id: str
    target: str | None
    canary_percent: int | None
    promotion: dict[str, Any]
    smoke_protocol: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    path: Path
    raw: dict[str, Any]  # as written, defaults filled in
    levels: list[Level] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.raw["name"]

    @property
    def owners(self) -> list[str]:
        return self.raw["owners"]

    @property
    def sql_path(self) -> Path:
        return self.path.parent / self.raw["source"]["sql"]

    @property
    def endpoints(self) -> list[str]:
        return [level.endpoint for level in self.levels]


_VALIDATOR = None


def validator():
    global _VALIDATOR
    if _VALIDATOR is None:
        from jsonschema import Draft202012Validator

        schema = json.loads(SCHEMA_PATH.read_text())
        Draft202012Validator.check_schema(schema)
        _VALIDATOR = Draft202012Validator(schema)
    return _VALIDATOR


def _where(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the file"


def _subschema(schema: dict, path) -> dict:
    for part in path:
        schema = schema.get("items", {}) if isinstance(part, int) else schema.get("properties", {}).get(part, {})
    return schema


def _explain(error, schema: dict) -> tuple[str, str]:
    """(field, what is wrong and what to give) of one jsonschema error, in the spec's own words."""
    where = _where(error.absolute_path)
    here = _subschema(schema, error.absolute_path)
    give = here.get("description")
    if error.validator == "additionalProperties":
        known = sorted(here.get("properties", {}))
        unknown = sorted(set(error.instance) - set(known))
        return where, f"unknown key(s) {unknown}; the keys here are {known}"
    if error.validator == "required":
        missing = error.message.split("'")[1]
        what = here.get("properties", {}).get(missing, {}).get("description", "")
        return _where([*error.absolute_path, missing]), f"missing; give {what}" if what else "missing"
    if error.validator == "enum":
        return where, f"{error.instance!r} is not one of {error.validator_value}"
    if error.validator == "type":
        wanted = error.validator_value if isinstance(error.validator_value, str) else " or ".join(error.validator_value)
        wanted = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
                  "array": "a list", "object": "a mapping"}.get(wanted, wanted)
        return where, f"must be {wanted}, got {type(error.instance).__name__} {error.instance!r}" + (
            f"; give {give}" if give else "")
    return where, f"{error.message}" + (f"; give {give}" if give else "")


def _filled(raw: dict) -> dict:
    out = json.loads(json.dumps(raw))
    for key, default in DEFAULTS.items():
        if isinstance(default, dict):
            section = out.setdefault(key, {})
            for k, v in default.items():
                if isinstance(v, dict):
                    section[k] = {**v, **section.get(k, {})}
                else:
                    section.setdefault(k, v)
        else:
            out.setdefault(key, default)
    return out


def parse_spec(path: Path, text: str | None = None, allowed_classes: list[str] | None = None) -> ModelSpec:
    """One spec from its file, or a SpecError naming the first thing wrong."""
    import yaml

    try:
        raw = yaml.load(path.read_text() if text is None else text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "the file"
        raise SpecError(path, where, f"not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(path, "the file", f"must be a mapping of keys (name, owners, source, model, levels, ...), "
                                          f"got {type(raw).__name__}")
    check = validator()
    errors = sorted(check.iter_errors(raw), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise SpecError(path, *_explain(errors[0], check.schema))
    if raw["name"] != path.stem:
        raise SpecError(path, "name", f"{raw['name']!r} differs from the file's name: call the file "
                                      f"{raw['name']}{path.suffix}, or the model {path.stem!r}")
    spec = _filled(raw)
    sql = path.parent / spec["source"]["sql"]
    if not sql.is_file():
        raise SpecError(path, "source.sql", f"no SQL file {_shown(sql)}: give a path relative to {_shown(path.parent)}")
    if (scoring := spec.get("batch_scoring", {}).get("sql")) and not (path.parent / scoring).is_file():
        raise SpecError(path, "batch_scoring.sql", f"no SQL file {_shown(path.parent / scoring)}: give a path "
                                                   f"relative to {_shown(path.parent)}")
    if (labels := spec.get("monitoring", {}).get("feedback", {}).get("sql")) and not (path.parent / labels).is_file():
        raise SpecError(path, "monitoring.feedback.sql", f"no SQL file {_shown(path.parent / labels)}: give a path "
                                                         f"relative to {_shown(path.parent)}")
    if allowed_classes is None:
        from ml.models.classes import choices

        allowed_classes = choices()
    if spec["model"]["class"] not in allowed_classes:
        raise SpecError(path, "model.class", f"{spec['model']['class']!r} is not a model class this deployment "
                                             f"allows; give one of {allowed_classes} (more are allowed with "
                                             f"ML_MODEL_CLASSES, docs/custom-models.md)")
    if spec["model"].get("estimator"):
        from ml.training_config import ESTIMATORS

        if spec["model"]["class"] != "sklearn":
            raise SpecError(path, "model.estimator", f"only the sklearn model takes an estimator; "
                                                     f"{spec['model']['class']!r} takes its parameters in model.params")
        if spec["model"]["estimator"] not in ESTIMATORS:
            raise SpecError(path, "model.estimator", f"{spec['model']['estimator']!r} is not one of {sorted(ESTIMATORS)}")
    levels, seen = [], {}
    for i, level in enumerate(spec["levels"]):
        for key in ("name", "endpoint"):
            if level[key] in seen.setdefault(key, {}):
                raise SpecError(path, f"levels[{i}].{key}", f"{level[key]!r} is also levels[{seen[key][level[key]]}]"
                                                            f".{key}: each level has its own")
            seen[key][level[key]] = i
        if i == 0 and level.get("promotion"):
            raise SpecError(path, "levels[0].promotion", "the first level takes a version that passed the gate; "
                                                         "promotion evidence belongs on the levels after it")
        levels.append(Level(level["name"], level["endpoint"],
                            level.get("conn_id") or "ml_endpoint_" + level["endpoint"].replace("-", "_"),
                            level.get("target"), level.get("canary_percent"), level.get("promotion", {}),
                            level.get("smoke_protocol")))
    return ModelSpec(path, spec, levels)


def load_specs(folder: Path = SPEC_FOLDER, allowed_classes: list[str] | None = None
               ) -> tuple[dict[str, ModelSpec], dict[Path, SpecError]]:
    """The good specs by model name, and each broken file's error. Files are read in name order;
    a spec that repeats an earlier one's name or endpoint is the broken one."""
    specs: dict[str, ModelSpec] = {}
    errors: dict[Path, SpecError] = {}
    owner_of_endpoint: dict[str, ModelSpec] = {}
    for path in sorted([*Path(folder).glob("*.yaml"), *Path(folder).glob("*.yml")]):
        try:
            spec = parse_spec(path, allowed_classes=allowed_classes)
            if spec.name in specs:
                raise SpecError(path, "name", f"{spec.name!r} is also the name in {_shown(specs[spec.name].path)}: "
                                              f"each model has one spec")
            for i, endpoint in enumerate(spec.endpoints):
                if (other := owner_of_endpoint.get(endpoint)) is not None:
                    raise SpecError(path, f"levels[{i}].endpoint", f"endpoint {endpoint!r} already serves model "
                                                                   f"{other.name!r} ({_shown(other.path)}): give this "
                                                                   f"model an endpoint of its own")
        except SpecError as exc:
            errors[path] = exc
            continue
        specs[spec.name] = spec
        owner_of_endpoint.update({endpoint: spec for endpoint in spec.endpoints})
    return specs, errors


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0]) if args else SPEC_FOLDER
    specs, errors = load_specs(folder)
    for name, spec in sorted(specs.items()):
        print(f"ok     {_shown(spec.path)}: model {name}, levels {' -> '.join(l.name for l in spec.levels)}")
    for error in errors.values():
        print(f"error  {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
