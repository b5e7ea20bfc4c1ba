"""The deploy's smoke test over each protocol, against a real ml.serve started and hot-swapped by
the local target: /invocations, the Open Inference Protocol over REST (v2) and over gRPC, for
the numeric model (missing values as NaN / null) and the text model (BYTES, a list of strings as
a JSON array). A request names the version it expects, so a server serving another version is
NOT_FOUND, not a pass; and the server's own metrics show which route the smoke test took."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowException

from operators.deploy.deploy_model import DeployModelOperator
from operators.deploy.endpoint_client import EndpointError
from tests.helpers import FakeTaskInstance


def deploy(make_context, state_dir: str, uri: str, version: str, protocol: str, name: str = "smoke_model",
           **kwargs):
    """DeployModelOperator.execute on the real local target, the registry answering ``version`` at ``uri``."""
    op = DeployModelOperator(task_id="deploy", model_name=name, version=version, endpoint="smoke", target="local",
                             target_conn_id=None, target_settings={"state_dir": state_dir}, wait_timeout=90,
                             smoke_protocol=protocol, **kwargs)
    context = make_context(run_id=f"deploy-{version}-{protocol}")
    context["ti"] = ti = FakeTaskInstance()
    with mock.patch.object(DeployModelOperator, "_resolve", return_value=SimpleNamespace(version=version, source=uri)):
        try:
            return op.execute(context), ti
        except AirflowException as exc:
            exc.ti = ti
            raise


def served_by_route(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    counts: dict[str, float] = {}
    for code, path, value in re.findall(r'ml_serve_requests_total\{code="(\d+)",path="([^"]+)"\} ([\d.e+]+)', text):
        counts[f"{path} {code}"] = counts.get(f"{path} {code}", 0) + float(value)
    return counts


@pytest.fixture
def local_endpoint(tmp_path, monkeypatch):
    from operators.deploy.targets.local import LocalServerTarget

    state = str(tmp_path / "endpoint")
    yield state
    LocalServerTarget("smoke", state_dir=state).stop()


@pytest.mark.timeout(300)
def test_each_protocol_smoke_tests_the_version_it_deployed(trained_models, local_endpoint, make_context, monkeypatch):
    from operators.deploy.targets.local import LocalServerTarget

    monkeypatch.setenv("ML_ARTIFACT_ROOT", trained_models["root"])
    # the worker's environment turns capture on for the servers it starts, under the artifact root
    monkeypatch.setenv("ML_SERVE_CAPTURE_RATE", "1")
    monkeypatch.setenv("ML_SERVE_CAPTURE_FLUSH_SECONDS", "0.2")
    result, ti = deploy(make_context, local_endpoint, trained_models["1"], "1", "grpc", min_smoke_accuracy=0.8)
    assert result["version"] == "1" and ti.xcom_pull(key="ledger")["outcome"] == "serving"
    import pyarrow.parquet as pq

    captures, deadline = Path(trained_models["root"]) / "captures", time.monotonic() + 10
    while not list(captures.rglob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.2)
    (written, *_) = captures.rglob("*.parquet")  # the smoke test's gRPC request, captured
    assert set(pq.read_table(written).column("model_version").to_pylist()) == {"1"}
    target = LocalServerTarget("smoke", state_dir=local_endpoint)
    host, port = target.grpc_address().rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) != target.port  # the managed server serves gRPC on its own port
    counts = served_by_route(target.url)
    assert counts.get("grpc/ModelInfer 200") == 1 and "/invocations 200" not in counts

    result, ti = deploy(make_context, local_endpoint, trained_models["2"], "2", "v2", min_smoke_accuracy=0.8)
    assert result["previous_version"] == "1" and ti.xcom_pull(key="ledger")["outcome"] == "serving"
    assert served_by_route(target.url).get("/v2/infer 200") == 1

    result, _ = deploy(make_context, local_endpoint, trained_models["3"], "3", "invocations")
    assert result["version"] == "3" and served_by_route(target.url).get("/invocations 200") == 1
    assert target.current().version == "3"


@pytest.mark.timeout(300)
def test_a_smoke_test_that_fails_over_grpc_rolls_back_and_the_previous_version_serves(
        trained_models, local_endpoint, make_context, monkeypatch):
    from operators.deploy.targets.local import LocalServerTarget

    monkeypatch.setenv("ML_ARTIFACT_ROOT", trained_models["root"])
    deploy(make_context, local_endpoint, trained_models["1"], "1", "grpc")
    with pytest.raises(AirflowException, match=r"rolled back to 1: smoke test failed: accuracy .* below 1.01") as raised:
        deploy(make_context, local_endpoint, trained_models["2"], "2", "grpc", min_smoke_accuracy=1.01)
    assert raised.value.ti.xcom_pull(key="ledger")["outcome"] == "rolled_back"
    assert LocalServerTarget("smoke", state_dir=local_endpoint).current().version == "1"


@pytest.mark.timeout(300)
def test_the_protocol_clients_name_the_version_and_a_server_serving_another_is_not_found(trained_models,
                                                                                        local_endpoint, make_context,
                                                                                        monkeypatch):
    from ml import artifacts
    from ml.model_io import read_holdout
    from operators.deploy import open_inference_client as oip
    from operators.deploy.targets.local import LocalServerTarget

    monkeypatch.setenv("ML_ARTIFACT_ROOT", trained_models["root"])
    deploy(make_context, local_endpoint, trained_models["1"], "1", "invocations")
    target = LocalServerTarget("smoke", state_dir=local_endpoint)
    manifest = artifacts.read_manifest(trained_models["1"], kind="model")
    records = read_holdout(manifest, rows=8).select([c["name"] for c in manifest.schema]).to_pylist()
    expected = target.invoke(records)["predictions"]
    for protocol in ("v2", "grpc"):
        answer = target.infer(oip.infer_request("smoke_model", "1", records, manifest.schema), protocol)
        assert answer == {"predictions": expected, "model_version": "1"}
        with pytest.raises(EndpointError, match="version '7' is not served") as refused:
            target.infer(oip.infer_request("smoke_model", "7", records, manifest.schema), protocol)
        assert refused.value.status == 404
        with pytest.raises(EndpointError, match="unknown model 'other'"):
            target.infer(oip.infer_request("other", "1", records, manifest.schema), protocol)


@pytest.mark.timeout(300)
def test_the_text_model_is_smoke_tested_over_both_protocols(text_model, local_endpoint, make_context, monkeypatch):
    from pathlib import Path

    from operators.deploy.targets.local import LocalServerTarget

    monkeypatch.setenv("ML_ARTIFACT_ROOT", str(Path(text_model).parent))
    result, _ = deploy(make_context, local_endpoint, text_model, "1", "v2", name="moderation", min_smoke_accuracy=0.6)
    assert result["version"] == "1"
    target = LocalServerTarget("smoke", state_dir=local_endpoint)
    op = DeployModelOperator(task_id="again", model_name="moderation", version="1", endpoint="smoke",
                             smoke_protocol="grpc", min_smoke_accuracy=0.6)
    from operators.deploy.targets import Served

    op._smoke_test(target, Served("1", text_model, name="moderation"))  # raises SmokeTestFailed on a failure
    counts = served_by_route(target.url)
    assert counts.get("/v2/infer 200") == 1 and counts.get("grpc/ModelInfer 200") == 1


def test_a_url_endpoint_without_a_grpc_port_says_where_to_set_it():
    from operators.deploy.targets.local import LocalServerTarget

    target = LocalServerTarget("stack", url="http://serving:8080", admin_token="t", conn_id="ml_endpoint")
    with pytest.raises(EndpointError, match="set the extra grpc_port on connection 'ml_endpoint'"):
        target.grpc_address()
    assert LocalServerTarget("stack", url="http://serving:8080", admin_token="t", grpc_port=8081).grpc_address() \
        == "serving:8081"
