"""DeployModelOperator's own decisions, on a scripted target (the real targets have their own
tests): bad arguments fail the task naming the fix, an endpoint already serving the version is
left alone, and every way a smoke test or a rollback can go wrong ends in the ledger with the
reason, the previous version put back where there is one."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from operators.deploy.deploy_model import DeployModelOperator
from operators.deploy.targets import DeployStatus, Served
from operators.deploy.endpoint_client import EndpointError
from tests.helpers import FakeTaskInstance, two_versions


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    return two_versions(tmp_path_factory.mktemp("deploy-operator"))


class ScriptedTarget:
    """A deploy target whose answers each test sets: what serves now, the status, the smoke
    answer, whether a rollback works. Records what the operator asked of it."""

    kind = "scripted"
    wait_in_task = 0.0
    protocols = ("invocations",)

    def __init__(self, serving: Served | None = None, status: DeployStatus | Exception | None = None):
        self.serving, self.next_status = serving, status
        self.calls: list[tuple] = []
        self.answer = None  # None: the asked version predicts the truth; a dict or an exception otherwise
        self.rollback_error: Exception | None = None
        self.in_flight = None

    def current(self):
        return self.serving

    def deploy(self, served):
        self.calls.append(("deploy", served.version))
        return {"kind": self.kind, "endpoint": "e", "version": served.version, "uri": served.uri}

    def invoke(self, rows):
        self.calls.append(("invoke", len(rows)))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def rollback(self, previous):
        self.calls.append(("rollback", previous.version))
        if self.rollback_error:
            raise self.rollback_error
        return {"action": "re-applied", "version": previous.version}

    def confirm(self, served, **facts):
        self.calls.append(("confirm", served.version))


def run(target, version: Served, make_context, **kwargs):
    """execute() with ``target`` behind get_target and the registry resolving to ``version``."""
    op = DeployModelOperator(task_id="deploy", model_name="m", version=version.version, endpoint="e",
                             target_conn_id=None, wait_timeout=5, **kwargs)
    context = make_context(run_id="r")
    context["ti"] = FakeTaskInstance()

    async def status(handle):
        if isinstance(target.next_status, Exception):
            raise target.next_status
        return target.next_status

    with mock.patch.object(DeployModelOperator, "_resolve",
                           return_value=SimpleNamespace(version=version.version, source=version.uri)), \
            mock.patch("operators.deploy.targets.get_target", return_value=target), \
            mock.patch("operators.deploy.targets.target_class", return_value=SimpleNamespace(status=status)):
        try:
            return op.execute(context), context["ti"]
        except (AirflowException, TaskDeferred) as exc:
            exc.ti = context["ti"]
            raise


def smoke_answer(version: Served, rows: int = 32, wrong: bool = False) -> dict:
    from ml import artifacts
    from ml.model_io import read_holdout

    manifest = artifacts.read_manifest(version.uri, kind="model")
    truth = read_holdout(manifest, rows=rows).column(manifest.extra["target"]).to_pylist()
    return {"model_version": version.version, "predictions": [1 - t for t in truth] if wrong else truth}


def test_a_canary_share_that_is_not_a_number_fails_the_task_naming_it(versions, make_context):
    with pytest.raises(AirflowFailException, match=r"canary_percent must be a whole number, got 'ten'"):
        run(ScriptedTarget(), versions["v2"], make_context, canary_percent="ten")


def test_bad_target_settings_fail_the_task_naming_the_endpoint(versions, make_context):
    op = DeployModelOperator(task_id="deploy", model_name="m", version="2", endpoint="e", target_conn_id=None,
                             target_settings={"replicas": 3})  # not a local server setting
    with mock.patch.object(DeployModelOperator, "_resolve",
                           return_value=SimpleNamespace(version="2", source=versions["v2"].uri)):
        with pytest.raises(AirflowFailException, match=r"endpoint e: unknown local endpoint settings \['replicas'\]: a local server takes state_dir"):
            op.execute(make_context())


def test_neither_version_nor_alias_is_refused_and_an_alias_is_asked_of_the_registry(make_context):
    op = DeployModelOperator(task_id="deploy", model_name="m", endpoint="e")
    with pytest.raises(AirflowFailException, match="give a version or an alias"):
        with mock.patch("operators.registry.mlflow_tracking.mlflow_target"):
            op._resolve()
    by_alias = DeployModelOperator(task_id="deploy", model_name="m", endpoint="e", alias="champion")
    with mock.patch("operators.registry.mlflow_tracking.mlflow_target") as mlflow_target:
        client = mlflow_target.return_value.client.return_value
        client.get_model_version_by_alias.return_value = "the version"
        assert by_alias._resolve() == "the version"
    client.get_model_version_by_alias.assert_called_once_with("m", "champion")


def test_an_endpoint_already_serving_the_version_is_left_alone(versions, make_context):
    target = ScriptedTarget(serving=Served(versions["v2"].version, versions["v2"].uri))
    result, _ = run(target, versions["v2"], make_context)
    assert result == {"target": "scripted", "version": "2", "previous_version": "2", "seconds_to_serve": 0.0}
    assert target.calls == []  # no deploy, no smoke test


def test_a_status_that_cannot_be_read_yet_is_left_to_the_trigger(versions, make_context):
    target = ScriptedTarget(status=ConnectionError("endpoint not up"))
    with pytest.raises(TaskDeferred) as deferred:
        run(target, versions["v2"], make_context)
    assert deferred.value.ti.xcom_pull(key="in_flight")["handle"]["version"] == "2"


def test_a_deploy_that_serves_and_answers_right_is_confirmed(versions, make_context):
    target = ScriptedTarget(serving=Served("1", versions["v1"].uri), status=DeployStatus("serving", version="2"))
    target.answer = smoke_answer(versions["v2"])
    result, ti = run(target, versions["v2"], make_context, min_smoke_accuracy=0.99)
    assert result["version"] == "2" and result["previous_version"] == "1"
    assert target.calls == [("deploy", "2"), ("invoke", 32), ("confirm", "2")]
    assert ti.xcom_pull(key="ledger")["outcome"] == "serving"


@pytest.mark.parametrize("answer,reason", [
    (EndpointError("/invocations answered 503: overloaded", 503), "smoke test failed: /invocations answered 503"),
    ("wrong version", "smoke test failed: answered by version 1, not 2"),
    ("too few", "smoke test failed: 3 predictions for 32 rows"),
    ("inaccurate", r"smoke test failed: accuracy 0\.000 on 32 held-out rows is below 0\.9"),
])
def test_every_smoke_test_failure_rolls_back_with_its_reason(versions, make_context, answer, reason):
    target = ScriptedTarget(serving=Served("1", versions["v1"].uri), status=DeployStatus("serving", version="2"))
    good = smoke_answer(versions["v2"])
    target.answer = {"wrong version": {**good, "model_version": "1"},
                     "too few": {**good, "predictions": good["predictions"][:3]},
                     "inaccurate": smoke_answer(versions["v2"], wrong=True)}.get(answer, answer)
    with pytest.raises(AirflowException, match="rolled back to 1: " + reason) as failed:
        run(target, versions["v2"], make_context, min_smoke_accuracy=0.9)
    assert ("rollback", "1") in target.calls and ("confirm", "2") not in target.calls
    ledger = failed.value.ti.xcom_pull(key="ledger")
    assert ledger["outcome"] == "rolled_back" and ledger["version"] == "1" and ledger["failed_version"] == "2"


def test_a_rollback_that_fails_too_is_reported_with_both_reasons(versions, make_context):
    target = ScriptedTarget(serving=Served("1", versions["v1"].uri),
                            status=DeployStatus("failed", "CrashLoopBackOff"))
    target.rollback_error = RuntimeError("API server unreachable")
    with pytest.raises(AirflowException, match="CrashLoopBackOff; rollback to 1 failed too: API server unreachable") \
            as failed:
        run(target, versions["v2"], make_context)
    assert failed.value.ti.xcom_pull(key="ledger")["outcome"] == "rollback_failed"
    assert ("invoke", 32) not in target.calls  # a version that does not serve is not smoke-tested


def test_a_first_deploy_that_fails_has_nothing_to_roll_back_to(versions, make_context):
    target = ScriptedTarget(status=DeployStatus("failed", "exited with code 2"))
    with pytest.raises(AirflowException, match=r"deploy of version 2 failed and was rolled back: .*exited with code 2"
                       ) as failed:
        run(target, versions["v2"], make_context)
    ledger = failed.value.ti.xcom_pull(key="ledger")
    assert ledger["outcome"] == "failed_no_previous" and ledger["version"] is None
    assert not [c for c in target.calls if c[0] == "rollback"]


@pytest.mark.parametrize("protocol,says", [
    ("grpc", r"the scripted target's endpoint e cannot be smoke-tested over grpc: it speaks invocations; nothing "
             r"was deployed"),
    ("soap", r"smoke_protocol 'soap' is not one of invocations, v2, grpc"),
])
def test_a_smoke_protocol_the_target_cannot_speak_is_refused_before_anything_is_deployed(versions, make_context,
                                                                                         protocol, says):
    target = ScriptedTarget(serving=versions["v1"])
    target.protocols = ("invocations",)
    with pytest.raises(AirflowFailException, match=says):
        run(target, versions["v2"], make_context, smoke_protocol=protocol)
    assert target.calls == []


def test_the_smoke_protocol_defaults_to_the_environment_then_invocations(versions, make_context, monkeypatch):
    target = ScriptedTarget(serving=versions["v1"], status=DeployStatus("serving", version="2"))
    target.protocols = ("invocations", "v2")
    target.answer = smoke_answer(versions["v2"])
    asked = []
    target.infer = lambda request, protocol: asked.append((protocol, request.version, request.rows)) or target.answer
    monkeypatch.setenv("ML_DEPLOY_SMOKE_PROTOCOL", "V2")
    run(target, versions["v2"], make_context)
    assert asked == [("v2", "2", 32)] and ("invoke", 32) not in target.calls
    monkeypatch.delenv("ML_DEPLOY_SMOKE_PROTOCOL")
    run(target, versions["v2"], make_context, smoke_protocol="")  # an empty Param: the default
    assert ("invoke", 32) in target.calls and len(asked) == 1
