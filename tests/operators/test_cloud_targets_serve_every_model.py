"""The SageMaker and Vertex AI targets serve the text model and a team's own model as they serve
the built-in tabular one: the same artifact packed or staged, the same serving entry point
(started as each platform starts the container, through the stand-ins of tests/cloud_standins.py),
texts in and labels out."""

from __future__ import annotations

import pytest

from demo.moderation_posts import table as posts_table
from ml import train
from operators.deploy.targets import Served, get_target, target_from_handle
from tests.helpers import write_snapshot
from tests.operators.test_sagemaker_target import aws  # noqa: F401 - fixture
from tests.operators.test_vertex_target import vertex  # noqa: F401 - fixture

TEAM_CLASS = "keywords=keyword_moderation.model:KeywordModel"
POSTS = [{"text": "free crypto giveaway, send 1 coin get 10 back"}, {"text": "週末は家族と公園に行きました"}]


@pytest.fixture(scope="module")
def text_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("text-models")
    write_snapshot(str(root / "snap"), posts_table(1500, seed=6).select(["text", "label"]))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ML_MODEL_CLASSES", TEAM_CLASS)
        for name, config in (("text", {"model": "text", "target": "label"}),
                             ("keywords", {"model": "keywords", "target": "label",
                                           "params": {"blocked_terms": ["giveaway"]}})):
            train.train(str(root / "snap"), str(root / name), train.parse_config(config))
    return {"text": Served("1", str(root / "text")), "keywords": Served("2", str(root / "keywords"))}


@pytest.mark.parametrize("model", ["text", "keywords"])
def test_sagemaker_serves_text_and_team_models(text_models, aws, monkeypatch, model):  # noqa: F811
    monkeypatch.setenv("ML_MODEL_CLASSES", TEAM_CLASS)  # the team's serving image sets it
    target = get_target("sagemaker", "moderation", "ml_endpoint_sm")
    handle = target.deploy(text_models[model])
    answer = target_from_handle(handle).invoke(POSTS)
    assert answer["model_version"] == text_models[model].version
    assert answer["predictions"] == ["flagged", "ok"]


@pytest.mark.parametrize("model", ["text", "keywords"])
def test_vertex_serves_text_and_team_models(text_models, vertex, monkeypatch, model):  # noqa: F811
    monkeypatch.setenv("ML_MODEL_CLASSES", TEAM_CLASS)
    target = get_target(None, "moderation", "ml_endpoint_vertex")
    handle = target.deploy(text_models[model])
    answer = target_from_handle(handle).invoke(POSTS)
    assert answer["model_version"] == text_models[model].version
    assert answer["predictions"] == ["flagged", "ok"]
