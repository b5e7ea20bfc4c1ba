"""The rest of the contract's edges: more broken models in the trainer and at load, the allow-list's
and the config's refusals, the built-ins' parameter checks, and artifacts from before the model
interface, which still load and serve."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pyarrow as pa
import pytest

from demo.moderation_posts import table as posts_table
from ml import artifacts, model_io, train
from ml.models import ModelContractError
from ml.models.classes import ModelClassError, allowed, import_class, package_of
from ml.serving.model import ModelFailure, load_model
from ml.training_config import ConfigError, parse_config
from tests.helpers import breast_cancer_table, diabetes_table, write_snapshot
from tests.models.test_model_contract import recorded_as, run_trainer
from tests.serving.test_server_failures import call
from tests.serving_helpers import in_process


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("posts-edges") / "snap")
    write_snapshot(uri, posts_table(200, seed=4).select(["text", "label"]))
    return uri


@pytest.mark.parametrize("model,message", [
    ("SaveRaises", "SaveRaises.save raised OSError: disk full"),
    ("LoadRaises", "LoadRaises.load of what it saved raised KeyError: 'label'"),
    ("FitRaises", "FitRaises.fit raised ZeroDivisionError: division by zero"),
    ("BadTask", "BadTask.task is 'ranking'; it must be one of ('classification', 'regression')"),
    ("ProbaWrongShape", "ProbaWrongShape.predict_proba returned shape (40,) for 40 rows: it must return rows x classes"),
    ("ProbaWrongColumns", "ProbaWrongColumns.predict_proba gives 3 columns for 2 classes ['flagged', 'ok']"),
    ("Unstable", "Unstable predicts differently after save and load"),
])
def test_more_broken_models_are_refused_by_the_trainer(snapshot, tmp_path, capsys, model, message):
    code, error = run_trainer(snapshot, tmp_path / "m", model, capsys)
    assert code == 2 and message in error, error
    assert not (tmp_path / "m").exists()


@pytest.fixture(scope="module")
def good(snapshot, tmp_path_factory):
    from tests.models.conftest import allow_broken

    with pytest.MonkeyPatch.context() as mp:
        allow_broken(mp)
        out = str(tmp_path_factory.mktemp("good-edges") / "m")
        train.train(snapshot, out, train.parse_config({"model": "MajorityModel", "target": "label"}))
    return out


@pytest.mark.parametrize("model_class,message", [
    ("tests.models.broken:LoadReturnsBase", "LoadReturnsBase.load returned MajorityModel, not a LoadReturnsBase"),
    ("tests.models.broken:LoadRaises", "LoadRaises.load failed: KeyError: 'label'"),
])
def test_a_load_that_raises_or_returns_another_class_is_refused(good, tmp_path, model_class, message):
    with pytest.raises(ModelContractError, match=message):
        model_io.load_verified_model(recorded_as(good, tmp_path, model_class=model_class))


def test_a_model_answering_differently_each_time_is_refused_at_load(good, tmp_path):
    with pytest.raises(ModelFailure, match="gives different predictions for the same rows twice"):
        load_model(recorded_as(good, tmp_path, model_class="tests.models.broken:Unstable"))


@pytest.mark.parametrize("model", ["NumericMean", "MatrixNotImplemented"])
def test_a_numeric_model_without_a_matrix_path_gets_arrow_tables(tmp_path, model):
    write_snapshot(str(tmp_path / "s"), diabetes_table())
    train.train(str(tmp_path / "s"), str(tmp_path / "m"), parse_config({"model": model, "target": "target"}))
    loaded = load_model(str(tmp_path / "m"))
    assert not loaded.uses_matrix
    assert len(loaded.predict(np.zeros((3, loaded.schema.width)))) == 3


def test_an_artifact_from_before_the_model_interface_still_loads_and_serves(tmp_path):
    """model.skops beside the manifest, no model class, numeric features named by the schema."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    table = breast_cancer_table()
    names = [n for n in table.column_names if n != "target"]
    X = np.column_stack([table.column(n).to_numpy() for n in names])
    estimator = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(X, table.column("target").to_numpy())
    writer = artifacts.ArtifactWriter(str(tmp_path / "old"), "model")
    writer.write_bytes("model.skops", model_io.dumps(estimator))
    writer.commit(schema=[{"name": n, "type": "double"} for n in names], row_count=None, lineage={},
                  extra={"task": "classification", "features_with_missing": []})

    async def scenario(server):
        return await call(server, "POST", "/invocations", orjson.dumps({"instances": X[:3].tolist()}))

    status, answer = in_process(scenario, model_uri=str(tmp_path / "old"), model_version="old")
    assert status == 200 and answer["predictions"] == estimator.predict(X[:3]).tolist()


@pytest.mark.parametrize("environ,message", [
    ({"ML_MODEL_CLASSES": "not a path"}, "is not package.module:Class or name=package.module:Class"),
    ({"ML_MODEL_CLASSES": "text=pkg.mod:Other"}, "the name 'text' is already ml.models.text:TextClassifier"),
    ({"ML_MODEL_CLASSES": "9bad=pkg.mod:Cls"}, "is not package.module:Class"),
])
def test_the_allow_list_refuses_malformed_entries(environ, message):
    with pytest.raises(ModelClassError, match=message):
        allowed(environ)
    assert allowed({"ML_MODEL_CLASSES": " , pkg.mod:Cls"})["pkg.mod:Cls"] == "pkg.mod:Cls"


def test_a_class_that_is_not_a_model_or_not_from_a_package_is_refused():
    from tests.models.broken import MajorityModel
    from tests.models.conftest import REAL_PACKAGE_OF

    with pytest.raises(ModelClassError, match="json:JSONDecoder is not a subclass of ml.models.Model"):
        import_class("json:JSONDecoder")
    with pytest.raises(ModelClassError, match="is not from an installed package: make it one"):
        REAL_PACKAGE_OF(MajorityModel)
    assert package_of(import_class("keyword_moderation.model:KeywordModel")) == ("keyword-moderation", "1.0.0")


@pytest.mark.parametrize("config,message", [
    ({"model": 3}, "config 'model' must be a model name, got 3"),
    ({"model": "text", "model_class": "ml.models.sklearn_tabular:SklearnModel"}, "is not the class of model 'text'"),
    ({"model": "text", "estimator": "Ridge"}, "config 'estimator' applies to the sklearn model only"),
    ({"predict_timeout_seconds": 0}, "'predict_timeout_seconds' must be a positive number"),
    ({"model": "text", "params": {"hash_bits": 40}}, "hash_bits must be an integer from 10 to 24"),
    ({"model": "text", "params": {"word_ngrams": [2, 1]}}, "word_ngrams must be [low, high]"),
    ({"model": "text", "params": {"class_weight": "heavy"}}, "class_weight must be null or 'balanced'"),
    ({"model": "text", "params": {"C": -1}}, "C must be a positive number"),
    ({"model": "text", "params": {"text_columns": []}}, "text_columns must be a non-empty list"),
    ({"model": "text", "params": {"ngrams": 3}}, "model 'text': "),
    ({"params": {"max_categories": 0}}, "max_categories must be a positive integer"),
])
def test_bad_model_configs_are_refused_before_any_data_is_read(config, message):
    with pytest.raises(ConfigError) as raised:
        parse_config({"target": "label", **config})
    assert message in str(raised.value)


def test_the_text_model_refuses_text_columns_it_does_not_have_and_tables_without_text(tmp_path, capsys):
    write_snapshot(str(tmp_path / "s"), posts_table(100).select(["text", "length", "label"]))
    for params, message in (({"text_columns": ["body"]}, "text_columns ['body'] are not string columns"),
                            ({}, None)):
        code = train.main(["--data", str(tmp_path / "s"), "--output", str(tmp_path / "m"), "--config",
                           json.dumps({"model": "text", "target": "label", "params": params,
                                       **({"exclude": ["text"]} if message is None else {})})])
        err = capsys.readouterr().err
        assert code == 2
        assert (message or "the text model needs at least one string column") in err


def test_the_sklearn_model_refuses_an_estimator_outside_its_list():
    from ml.models.sklearn_tabular import SklearnModel

    with pytest.raises(ValueError, match="estimator 'SVC' is not allowed"):
        SklearnModel("SVC")
    table = pa.table({"x": [1.0, 2.0]})
    model = SklearnModel("Ridge")
    model.fit(table, np.array([1.0, 2.0]))
    model.encoding.identity = False
    with pytest.raises(NotImplementedError):
        model.predict_matrix(np.zeros((1, 1)))
