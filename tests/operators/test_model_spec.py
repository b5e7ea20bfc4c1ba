"""Model specs: the two that ship load; each kind of mistake is that file's error alone, naming
the file, the field and what to give, while the other specs in the folder still load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from operators.specs import model_spec
from operators.specs.model_spec import REPO, load_specs, main

GOOD = """\
name: {name}
owners: [team-a]
source: {{sql: sql/rows.sql}}
model: {{class: sklearn, target: target}}
levels:
  - {{name: development, endpoint: {name}-dev}}
  - {{name: production, endpoint: {name}-prod, promotion: {{min_requests: 10}}}}
"""


@pytest.fixture
def folder(tmp_path) -> Path:
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "rows.sql").write_text("SELECT * FROM t")
    (tmp_path / "good.yaml").write_text(GOOD.format(name="good"))
    return tmp_path


def test_the_shipped_specs_load_with_their_defaults_filled_in():
    specs, errors = load_specs()
    assert errors == {}
    assert sorted(specs) == ["demo_classifier", "demo_moderation"]
    text = specs["demo_moderation"]
    assert [(level.name, level.endpoint, level.conn_id) for level in text.levels] == [
        ("development", "demo-text", "ml_endpoint_demo_text"),
        ("production", "demo-text-production", "ml_endpoint_demo_text_production")]
    assert text.owners == ["trust-and-safety", "ml-platform"]
    assert text.raw["source"]["conn_id"] == "ml_source" and text.raw["training"]["compute"] == "local"
    assert text.raw["training"]["resources"] == {"cpu": "1", "memory": "2Gi", "gpu": 0}
    assert text.sql_path.read_text().count("demo_moderation_posts") == 1
    assert specs["demo_classifier"].raw["gate"]["metric"] == "accuracy"


BROKEN = {
    "unknown key": (GOOD.format(name="bad") + "retries: 3\n", "the file",
                    "unknown key(s) ['retries']; the keys here are ['alerts', 'batch_scoring'"),
    "unknown nested key": (GOOD.format(name="bad").replace("target: target", "target: target, lr: 1"), "model",
                           "unknown key(s) ['lr']"),
    "wrong type": (GOOD.format(name="bad").replace("owners: [team-a]", "owners: team-a"), "owners",
                   "must be a list, got str 'team-a'; give who answers for it"),
    "missing field": (GOOD.format(name="bad").replace("owners: [team-a]\n", ""), "owners",
                      "missing; give who answers for it"),
    "bad enum": (GOOD.format(name="bad") + "training: {compute: lambda}\n", "training.compute",
                 "'lambda' is not one of ['local', 'kubernetes', 'sagemaker', 'vertex']"),
    "missing SQL file": (GOOD.format(name="bad").replace("sql/rows.sql", "sql/nowhere.sql"), "source.sql",
                         "nowhere.sql: give a path relative to"),
    "class not allowed": (GOOD.format(name="bad").replace("class: sklearn", "class: os.path:join"), "model.class",
                          "'os.path:join' is not a model class this deployment allows; give one of ['sklearn', 'text']"),
    "estimator for another class": (GOOD.format(name="bad").replace("class: sklearn", "class: text, estimator: SVC"),
                                    "model.estimator", "only the sklearn model takes an estimator"),
    "name differs from the file": (GOOD.format(name="other"), "name", "differs from the file's name"),
    "not YAML": ("name: [bad\n", "line 2, column 1", "not valid YAML"),
    "not a mapping": ("- a\n- b\n", "the file", "must be a mapping of keys"),
    "two levels, one endpoint": (GOOD.format(name="bad").replace("bad-prod", "bad-dev"), "levels[1].endpoint",
                                 "'bad-dev' is also levels[0].endpoint"),
    "evidence on the first level": (GOOD.format(name="bad").replace(
        "endpoint: bad-dev}", "endpoint: bad-dev, promotion: {min_requests: 5}}"), "levels[0].promotion",
        "promotion evidence belongs on the levels after it"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_spec_is_its_own_error_naming_the_file_the_field_and_what_to_give(folder, case):
    text, where, problem = BROKEN[case]
    (folder / "bad.yaml").write_text(text)
    specs, errors = load_specs(folder, allowed_classes=["sklearn", "text"])
    assert list(specs) == ["good"]  # the other model still loads
    assert list(errors) == [folder / "bad.yaml"]
    error = errors[folder / "bad.yaml"]
    assert str(error).startswith(f"{folder / 'bad.yaml'}: {where}: ")
    assert problem in str(error)


def test_two_specs_with_one_name_break_the_later_file_only(folder):
    (folder / "good.yml").write_text(GOOD.format(name="good").replace("good-", "copy-"))
    specs, errors = load_specs(folder, allowed_classes=["sklearn"])
    assert list(specs) == ["good"] and specs["good"].path == folder / "good.yaml"
    assert list(errors) == [folder / "good.yml"]
    assert f"name: 'good' is also the name in {folder / 'good.yaml'}: each model has one spec" in str(
        errors[folder / "good.yml"])
    (folder / "other.yaml").write_text(GOOD.format(name="good").replace("good-", "other-"))
    assert "differs from the file's name" in str(load_specs(folder, allowed_classes=["sklearn"])[1][folder / "other.yaml"])


def test_an_endpoint_shared_by_two_models_breaks_the_later_one(folder):
    (folder / "other.yaml").write_text(GOOD.format(name="other").replace("other-prod", "good-prod"))
    specs, errors = load_specs(folder, allowed_classes=["sklearn"])
    assert list(specs) == ["good"]
    assert ("levels[1].endpoint: endpoint 'good-prod' already serves model 'good'"
            in str(errors[folder / "other.yaml"]))


def test_the_check_command_lists_each_spec_and_fails_on_any_error(folder, capsys):
    assert main([str(folder)]) == 0
    assert "ok     " in capsys.readouterr().out
    (folder / "bad.yaml").write_text("name: bad\n")
    assert main([str(folder)]) == 1
    out = capsys.readouterr().out
    assert "ok     " in out and "bad.yaml: owners: missing" in out


def test_the_shipped_schema_is_a_valid_json_schema_and_documents_every_field():
    import json

    schema = json.loads((REPO / "models" / "model-spec.schema.json").read_text())
    missing = []

    def walk(node, where):
        for key, sub in node.get("properties", {}).items():
            if "description" not in sub:
                missing.append(f"{where}.{key}")
            walk(sub.get("items", sub), f"{where}.{key}")

    walk(schema, "spec")
    assert missing == []
    model_spec.validator()  # check_schema raises on an invalid schema


def test_the_docs_show_the_shipped_specs_as_they_are_and_every_field():
    import json

    doc = (REPO / "docs" / "model-specs.md").read_text()
    for name in ("demo_classifier", "demo_moderation"):
        lines = (REPO / "models" / f"{name}.yaml").read_text().splitlines(keepends=True)
        body = "".join(line for line in lines if not line.startswith("#"))
        assert f"```yaml\n{body}```" in doc, f"docs/model-specs.md shows an old copy of models/{name}.yaml"
    schema = json.loads((REPO / "models" / "model-spec.schema.json").read_text())
    undocumented = []

    def walk(node, prefix):
        for key, sub in node.get("properties", {}).items():
            section = "properties" in sub  # a mapping: its fields are the rows
            if not section and not any(f"`{p}{key}`" in doc or f"{p}{key}`" in doc for p in (prefix, "")):
                undocumented.append(prefix + key)
            sub = sub.get("items", sub)
            walk(sub, f"{key}." if key != "levels" else "levels[].")

    walk(schema, "")
    assert undocumented == []
