"""The model interface's contract, tested on deliberately broken models (tests/models/broken.py).

Each breaks it one way. The trainer refuses what it can see (exit 2, one line naming the model
and what it did, nothing written: so nothing is registered); the server refuses at load what
only it can see, keeping the served version; a failure on one request's rows is a 5xx naming the
model for that batch alone, counted in /metrics, and the server goes on serving.
"""

from __future__ import annotations

import json
import pickle

import orjson
import pytest

from demo.moderation_posts import table as posts_table
from ml import artifacts, train
from tests.helpers import write_snapshot
from tests.serving.test_server_failures import call
from tests.serving_helpers import in_process


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("posts") / "snap")
    write_snapshot(uri, posts_table(300, seed=3).select(["text", "label"]))
    return uri


def run_trainer(snapshot, out, model, capsys, **config) -> tuple[int, str]:
    code = train.main(["--data", snapshot, "--output", str(out), "--config",
                       json.dumps({"model": model, "target": "label", **config})])
    errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("ml.train: error:")]
    return code, errors[0] if errors else ""


REFUSED_BY_THE_TRAINER = [
    ("WrongLength", {}, "WrongLength.predict returned 59 outputs (shape (59,)) for 60 rows: it must return one per row"),
    ("RaisesInPredict", {}, "RaisesInPredict.predict raised RuntimeError: the model's own bug"),
    ("TooSlow", {"params": {"seconds": 0.3}, "predict_timeout_seconds": 0.1},
     "over the 0.1 s predict timeout (config 'predict_timeout_seconds')"),
    ("SavesAPickle", {}, "SavesAPickle.save wrote 'state.bin' is not data-only: it is a pickle (protocol"),
    ("SavesAnObjectArray", {}, "'extra.npy' is not data-only: it is a .npy array of Python objects"),
    ("ReadsOutside", {}, "ReadsOutside.load opened /etc/hostname, outside its directory"),
    ("LoadsDifferently", {}, "LoadsDifferently predicts differently after save and load"),
    ("missing", {}, "model class not_installed_package.models:Model cannot be imported in this image"),
    ("tests.models.broken:NotListed", {}, "model 'tests.models.broken:NotListed' is not allowed in this "
                                          "deployment; choose one of"),
]


@pytest.mark.parametrize("model,config,message", REFUSED_BY_THE_TRAINER, ids=[m for m, _, _ in REFUSED_BY_THE_TRAINER])
def test_the_trainer_refuses_a_broken_model_and_writes_nothing(snapshot, tmp_path, capsys, model, config, message):
    code, error = run_trainer(snapshot, tmp_path / "m", model, capsys, **config)
    assert code == 2
    assert message in error, error
    assert not (tmp_path / "m").exists()  # no artifact, so nothing can be registered


def test_the_working_model_trains(snapshot, tmp_path, capsys):
    code, error = run_trainer(snapshot, tmp_path / "m", "MajorityModel", capsys)
    assert code == 0, error
    manifest = artifacts.open_verified(str(tmp_path / "m"))
    assert manifest.extra["model_class"] == "tests.models.broken:MajorityModel"
    assert (manifest.extra["model_package"], manifest.extra["model_package_version"]) == ("broken-models", "1.0")
    assert manifest.extra["trainer_image"].startswith("none")


# --------------------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def artifacts_dir(tmp_path_factory, snapshot):
    """Artifacts the trainer accepts, to serve or to make into what the trainer would refuse."""
    root = tmp_path_factory.mktemp("served")
    made = {}
    with pytest.MonkeyPatch.context() as mp:
        from tests.models.conftest import allow_broken

        allow_broken(mp)
        for name, model, params in (("good", "MajorityModel", {}), ("boom", "RaisesOnSomeTexts", {}),
                                    ("short", "WrongLengthSometimes", {}), ("slow", "SlowAfterLoad", {}),
                                    ("keywords", "keywords", {})):
            train.train(snapshot, str(root / name), train.parse_config({"model": model, "target": "label",
                                                                        "params": params}))
            made[name] = str(root / name)
    return made


def recorded_as(uri: str, tmp_path, **extra) -> str:
    """A copy of the artifact at ``uri`` whose manifest records other ``extra`` (its files, and so
    its digests, unchanged): an artifact as another trainer, image or package version wrote it."""
    import shutil
    from pathlib import Path

    copy = tmp_path / f"copy-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(uri, copy)
    manifest = json.loads((Path(copy) / "manifest.json").read_text())
    manifest["extra"].update(extra)
    (Path(copy) / "manifest.json").write_text(json.dumps(manifest))
    return str(copy)


def serving(artifacts_dir, tmp_path, scenario, **config):
    return in_process(scenario, model_uri=artifacts_dir["good"], model_version="1", admin_token="t",
                      artifact_roots=(str(tmp_path), *artifacts_dir.values()), **config)


async def swap(server, uri: str, version: str):
    return await call(server, "POST", "/admin/model", orjson.dumps({"uri": uri, "version": version}),
                      {"authorization": "Bearer t"})


def refused_at_load(artifacts_dir, tmp_path, uri: str, **config):
    async def scenario(server):
        answer = await swap(server, uri, "2")
        served = await call(server, "POST", "/invocations", orjson.dumps({"instances": [{"text": "hello"}]}))
        return answer, served
    (status, body), (served_status, served) = serving(artifacts_dir, tmp_path, scenario, **config)
    assert status == 422 and body["model_version"] == "1"  # refused, and v1 still serves
    assert served_status == 200 and served["model_version"] == "1" and served["predictions"] == ["ok"]
    return body["error"]


def test_the_server_refuses_a_class_it_cannot_import(artifacts_dir, tmp_path):
    uri = recorded_as(artifacts_dir["good"], tmp_path, model_class="not_installed_package.models:Model")
    assert "model class not_installed_package.models:Model cannot be imported in this image" in \
        refused_at_load(artifacts_dir, tmp_path, uri)


def test_the_server_refuses_a_class_this_deployment_does_not_allow(artifacts_dir, tmp_path):
    uri = recorded_as(artifacts_dir["good"], tmp_path, model_class="tests.models.broken:NotListed")
    assert "the artifact's model class tests.models.broken:NotListed is not allowed here" in \
        refused_at_load(artifacts_dir, tmp_path, uri)


def test_the_server_refuses_another_version_of_the_models_package(artifacts_dir, tmp_path):
    uri = recorded_as(artifacts_dir["keywords"], tmp_path, model_package_version="0.9.0")
    assert ("the artifact was trained with keyword-moderation==0.9.0, this image has keyword-moderation==1.0.0"
            in refused_at_load(artifacts_dir, tmp_path, uri))


def test_the_server_confines_load_to_the_models_files(artifacts_dir, tmp_path, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("not the model's")
    monkeypatch.setenv("BROKEN_MODEL_READS", str(secret))
    uri = recorded_as(artifacts_dir["good"], tmp_path, model_class="tests.models.broken:ReadsOutside")
    assert f"ReadsOutside.load opened {secret}, outside its directory" in refused_at_load(artifacts_dir, tmp_path, uri)


def test_the_server_never_unpickles_what_an_artifact_holds(artifacts_dir, tmp_path):
    class Planted:
        def __reduce__(self):
            return (open, (str(tmp_path / "unpickled"), "w"))

    writer = artifacts.ArtifactWriter(str(tmp_path / "crafted"), "model")
    source = artifacts.open_verified(artifacts_dir["good"])
    with artifacts.open_file(source, source.file("model/label.json")) as f:
        writer.write_bytes("model/label.json", f.read())
    writer.write_bytes("model/extra.bin", pickle.dumps(Planted()))  # digests match: only the content lies
    writer.commit(schema=list(source.schema), row_count=None, lineage={},
                  extra={**source.extra, "model_class": "tests.models.broken:UnpicklesOnLoad"})
    error = refused_at_load(artifacts_dir, tmp_path, str(tmp_path / "crafted"))
    assert "UnpicklesOnLoad.load unpickled builtins.open" in error or "unpickled io.open" in error
    assert not (tmp_path / "unpickled").exists()


def test_the_server_refuses_a_model_too_slow_for_its_timeout(artifacts_dir, tmp_path):
    error = refused_at_load(artifacts_dir, tmp_path, artifacts_dir["slow"], predict_timeout_s=0.5)
    assert "took" in error and "over the 0.5 s predict timeout" in error


def test_the_server_refuses_a_model_that_gives_too_few_outputs_at_load(artifacts_dir, tmp_path):
    uri = recorded_as(artifacts_dir["good"], tmp_path, model_class="tests.models.broken:WrongLength")
    assert "returned 15 outputs for 16 rows; a model must return one per row" in \
        refused_at_load(artifacts_dir, tmp_path, uri)


def test_a_model_failing_on_one_request_fails_that_batch_only_and_is_counted(artifacts_dir, tmp_path):
    async def scenario(server):
        answers = {}
        for name, version in (("boom", "3"), ("short", "4")):
            assert (await swap(server, artifacts_dir[name], version))[0] == 200
            answers[name] = await call(server, "POST", "/invocations", orjson.dumps({"instances": [{"text": name}]}))
            answers[f"{name} after"] = await call(server, "POST", "/invocations",
                                                  orjson.dumps({"instances": [{"text": "fine"}]}))
        metrics = (await call(server, "GET", "/metrics"))[1].decode()
        return answers, metrics

    answers, metrics = serving(artifacts_dir, tmp_path, scenario, max_wait_ms=0.0)
    status, body = answers["boom"]
    assert status == 500 and body == {"error": "model 'RaisesOnSomeTexts' version 3 failed to predict 1 rows: "
                                               "RuntimeError: cannot handle boom", "model_version": "3"}
    status, body = answers["short"]
    assert status == 500 and "model 'WrongLengthSometimes' version 4 returned 0 outputs for 1 rows" in body["error"]
    for name in ("boom", "short"):
        assert answers[f"{name} after"][0] == 200 and answers[f"{name} after"][1]["predictions"] == ["ok"]
    assert 'ml_serve_model_failures_total{reason="raised"} 1.0' in metrics
    assert 'ml_serve_model_failures_total{reason="wrong_output_count"} 1.0' in metrics
