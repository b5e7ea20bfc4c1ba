"""Every built-in and the example team model through the unchanged pipeline under `airflow dags
test`: extract (PostgreSQL) -> train -> register -> gate -> deploy (a local ml.serve per model)
-> predict, on the moderation posts table (text, a categorical language, a length, a label)."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ml import artifacts
from tests.integration.test_training_pipeline import REPO, dags_test, pipeline_env  # noqa: F401 - the fixture

LOGICAL_DATE = "2026-01-02T03:00:00+00:00"  # the first day of posts
MODELS = {
    # name: (the trigger form's conf, a record to predict, the label it must get)
    "it_text": ({"model": "text", "target": "label", "exclude_columns": ["event_time"],
                 "hyperparameters": {"C": 5.0}},
                {"text": "free crypto giveaway, send 1 coin get 10 back", "lang": "en", "length": 46}, "flagged"),
    "it_categorical": ({"model": "sklearn", "estimator": "HistGradientBoostingClassifier", "target": "label",
                        "exclude_columns": ["event_time", "text"], "hyperparameters": {"max_iter": 20}},
                       {"lang": "ja", "length": 12}, None),
    "it_keywords": ({"model": "keywords", "target": "label", "exclude_columns": ["event_time", "lang", "length"],
                     "hyperparameters": {"blocked_terms": ["giveaway"]}},
                    {"text": "a friendly giveaway of garden tomatoes"}, "flagged"),
}


@pytest.fixture(scope="module")
def posts_env(pipeline_env):  # noqa: F811 - the imported fixture
    import subprocess

    env = {**pipeline_env["env"], "ML_MODEL_CLASSES": "keywords=keyword_moderation.model:KeywordModel"}
    subprocess.run([sys.executable, "-m", "demo.moderation_posts", "--postgres", pipeline_env["source"]], cwd=REPO,
                   env=env, check=True, capture_output=True)
    return {**pipeline_env, "env": env}


def served(home: Path, endpoint: str) -> str:
    from operators.deploy.targets.local import LocalServerTarget

    return LocalServerTarget(endpoint, state_dir=str(home / "endpoints" / endpoint)).url


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_model_is_trained_registered_promoted_deployed_and_predicts(posts_env, name):
    conf, record, expected = MODELS[name]
    env = {**posts_env["env"], "ML_MODEL_NAME": name, "ML_ENDPOINT": name.replace("_", "-")}
    conf = {**conf, "model_name": name, "source_table": "demo_moderation_posts", "metric": "accuracy"}
    home = posts_env["home"]
    try:
        log = dags_test(env, home, logical_date=LOGICAL_DATE, conf=json.dumps(conf))
        assert f"Registered {name} version 1" in log and f"Alias {name}@production: None -> 1" in log
        client = MlflowClient(tracking_uri=posts_env["registry"])
        version = client.get_model_version_by_alias(name, "production")
        manifest = artifacts.open_verified(version.source, kind="model")
        assert version.tags["model_class"] == manifest.extra["model_class"]
        assert version.tags["model_package"] == manifest.extra["model_package"]
        assert manifest.extra["metrics"]["accuracy"] > (0.6 if name == "it_categorical" else 0.85)
        url = served(home, env["ML_ENDPOINT"])
        request = urllib.request.Request(f"{url}/invocations", data=json.dumps({"instances": [record]}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            answer = json.loads(resp.read())
        assert answer["model_version"] == "1" and len(answer["predictions"]) == 1
        assert answer["predictions"][0] in ("ok", "flagged")
        if expected:
            assert answer["predictions"] == [expected]
    finally:
        from operators.deploy.targets.local import LocalServerTarget

        endpoint = env["ML_ENDPOINT"]
        LocalServerTarget(endpoint, state_dir=str(home / "endpoints" / endpoint)).stop()
