"""Training on SageMaker and Vertex AI: the same ``python -m ml.train`` command as every other
compute, in each cloud's job request, asserted field by field; the job run by a stand-in
(tests/cloud_standins.py) so the model it leaves is read back as the task's result."""

from __future__ import annotations

import json

import pytest
from airflow.sdk.exceptions import AirflowFailException

from ml import artifacts
from operators.training.train_model import training_operator
from tests.cloud_standins import SageMakerStandIn
from tests.helpers import breast_cancer_table, write_snapshot

ROLE = "arn:aws:iam::123456789012:role/ml-training"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ml-trainer:0.1.0"
CONFIG = {"estimator": "HistGradientBoostingClassifier", "params": {"max_iter": 20}, "target": "target", "seed": 3}


@pytest.fixture
def sagemaker_jobs(s3_bucket, monkeypatch, tmp_path):
    stand_in = SageMakerStandIn(monkeypatch, tmp_path)
    yield stand_in
    stand_in.close()


def sagemaker_train(bucket: str, config=CONFIG, **settings):
    return training_operator("sagemaker", sagemaker={"image": IMAGE, "role_arn": ROLE, "region_name": "us-east-1",
                                                     "instance_type": "ml.m5.2xlarge", **settings},
                             task_id="train", data_uri=f"s3://{bucket}/snapshots/interval=1",
                             output_root=f"s3://{bucket}/models", config=config)


def test_sagemaker_runs_the_trainer_command_as_a_training_job_and_returns_its_model(sagemaker_jobs, s3_bucket,
                                                                                    make_context):
    write_snapshot(f"s3://{s3_bucket}/snapshots/interval=1", breast_cancer_table())
    op = sagemaker_train(s3_bucket)
    assert op.deferrable and op.multiple_outputs
    context = make_context(run_id="scheduled__1")
    result = op.execute(context)
    (job,) = sagemaker_jobs.training_jobs
    spec = job["AlgorithmSpecification"]
    assert spec["TrainingImage"] == IMAGE and spec["TrainingInputMode"] == "File"
    assert spec["ContainerEntrypoint"] == ["python", "-m", "ml.train"]
    args = spec["ContainerArguments"]
    assert args[args.index("--data") + 1] == f"s3://{s3_bucket}/snapshots/interval=1"
    assert args[args.index("--output") + 1] == f"s3://{s3_bucket}/models/interval=1"
    assert json.loads(args[args.index("--config") + 1]) == CONFIG
    assert json.loads(args[args.index("--lineage") + 1])["run_id"] == "scheduled__1"
    assert job["RoleArn"] == ROLE and job["ResourceConfig"] == {"InstanceType": "ml.m5.2xlarge", "InstanceCount": 1,
                                                                "VolumeSizeInGB": 30}
    assert job["OutputDataConfig"] == {"S3OutputPath": f"s3://{s3_bucket}/models/interval=1-job"}
    assert job["Environment"]["ML_TRAIN_FAILURE_FILE"] == "/opt/ml/output/failure"
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}
    manifest = artifacts.open_verified(f"s3://{s3_bucket}/models/interval=1", kind="model")
    assert result == {"model_uri": f"s3://{s3_bucket}/models/interval=1", "digest": manifest.digest,
                      "metrics": manifest.extra["metrics"]}


def test_sagemaker_bad_config_fails_without_retry_with_the_trainers_reason(sagemaker_jobs, s3_bucket, make_context):
    write_snapshot(f"s3://{s3_bucket}/snapshots/interval=1", breast_cancer_table())
    op = sagemaker_train(s3_bucket, config={**CONFIG, "target": "no_such_column"})
    with pytest.raises(AirflowFailException, match="not retried.*no_such_column"):
        op.execute(make_context())


def test_sagemaker_refuses_local_paths_before_starting_a_job(sagemaker_jobs, make_context):
    op = training_operator("sagemaker", sagemaker={"image": IMAGE, "role_arn": ROLE}, task_id="train",
                           data_uri="/data/snap", output_root="/data/models", config=CONFIG)
    with pytest.raises(AirflowFailException, match="not an s3:// URI"):
        op.execute(make_context())
    assert sagemaker_jobs.training_jobs == []


def test_a_model_left_by_another_run_is_not_taken_for_this_runs(sagemaker_jobs, s3_bucket, make_context):
    from airflow.sdk.exceptions import AirflowException

    from operators.training.trainer_command import trained_result

    write_snapshot(f"s3://{s3_bucket}/snapshots/interval=1", breast_cancer_table())
    sagemaker_train(s3_bucket).execute(make_context(run_id="first"))
    with pytest.raises(AirflowException, match="trained by run 'first', not 'second'"):
        trained_result(f"s3://{s3_bucket}/models/interval=1", make_context(run_id="second"))


# ---------------------------------------------------------------------------------------- Vertex AI
@pytest.fixture
def vertex_jobs(gcs_fs, monkeypatch, tmp_path):
    from tests.cloud_standins import VertexStandIn

    stand_in = VertexStandIn(monkeypatch, tmp_path)
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps({
        "conn_type": "google_cloud_platform", "extra": {"project": VertexStandIn.PROJECT}}))
    yield stand_in
    stand_in.close()


def vertex_train(bucket: str, config=CONFIG, **settings):
    from tests.cloud_standins import VertexStandIn

    return training_operator("vertex", vertex={"image": "europe-docker.pkg.dev/p/ml/ml-trainer:0.1.0",
                                               "project_id": VertexStandIn.PROJECT, "region": VertexStandIn.REGION,
                                               "machine_type": "n1-highmem-4", "poll_interval": 1, **settings},
                             task_id="train", data_uri=f"gs://{bucket}/snapshots/interval=2",
                             output_root=f"gs://{bucket}/models", config=config)


def run_deferred(op, context):
    """execute -> the provider's CustomJobTrigger (rebuilt from its serialized kwargs) -> execute_complete."""
    import asyncio
    import importlib

    from airflow.sdk.exceptions import TaskDeferred

    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    path, kwargs = deferred.value.trigger.serialize()
    module, _, name = path.rpartition(".")
    trigger = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))

    async def first():
        async for event in trigger.run():
            return event.payload

    return getattr(op, deferred.value.method_name)(context, asyncio.run(first()))


def test_vertex_runs_the_trainer_command_as_a_custom_job_and_returns_its_model(vertex_jobs, gcs_emulator,
                                                                              make_context):
    bucket = gcs_emulator.bucket
    write_snapshot(f"gs://{bucket}/snapshots/interval=2", breast_cancer_table())
    op = vertex_train(bucket)
    result = run_deferred(op, make_context(run_id="scheduled__2"))
    ((_, request),) = [r for r in vertex_jobs.requests if r[0] == "CreateCustomJob"]
    assert request.parent == f"projects/{vertex_jobs.PROJECT}/locations/{vertex_jobs.REGION}"
    (pool,) = request.custom_job.job_spec.worker_pool_specs
    assert pool.replica_count == 1 and pool.machine_spec.machine_type == "n1-highmem-4"
    assert pool.container_spec.image_uri == "europe-docker.pkg.dev/p/ml/ml-trainer:0.1.0"
    assert list(pool.container_spec.command) == ["python", "-m", "ml.train"]
    args = list(pool.container_spec.args)
    assert args[args.index("--output") + 1] == f"gs://{bucket}/models/interval=2"
    assert json.loads(args[args.index("--config") + 1]) == CONFIG
    manifest = artifacts.open_verified(f"gs://{bucket}/models/interval=2", kind="model")
    assert result == {"model_uri": f"gs://{bucket}/models/interval=2", "digest": manifest.digest,
                      "metrics": manifest.extra["metrics"]}
    assert manifest.lineage["run_id"] == "scheduled__2"


def test_vertex_bad_config_fails_without_retry(vertex_jobs, gcs_emulator, make_context):
    bucket = gcs_emulator.bucket
    write_snapshot(f"gs://{bucket}/snapshots/interval=2", breast_cancer_table())
    op = vertex_train(bucket, config={**CONFIG, "estimator": "os.system"})
    with pytest.raises(AirflowFailException, match="not retried.*non-zero status of 2"):
        run_deferred(op, make_context())


def test_vertex_waits_on_the_worker_when_not_deferrable(vertex_jobs, gcs_emulator, make_context):
    bucket = gcs_emulator.bucket
    write_snapshot(f"gs://{bucket}/snapshots/interval=2", breast_cancer_table())
    result = vertex_train(bucket, deferrable=False).execute(make_context(run_id="sync"))
    assert result["digest"] == artifacts.read_manifest(f"gs://{bucket}/models/interval=2").digest
    bad = vertex_train(bucket, config={**CONFIG, "estimator": "os.system"}, deferrable=False)
    with pytest.raises(AirflowFailException, match="non-zero status of 2"):
        bad.execute(make_context(run_id="sync-bad"))


def test_sagemaker_waits_on_the_worker_when_not_deferrable(sagemaker_jobs, s3_bucket, make_context):
    write_snapshot(f"s3://{s3_bucket}/snapshots/interval=1", breast_cancer_table())
    op = sagemaker_train(s3_bucket, deferrable=False, check_interval=1)
    assert op.print_log  # on the worker the provider streams the job's CloudWatch log
    result = op.execute(make_context(run_id="sync"))
    assert result["digest"] == artifacts.read_manifest(f"s3://{s3_bucket}/models/interval=1").digest
    bad = sagemaker_train(s3_bucket, config={**CONFIG, "target": "nope"}, deferrable=False, check_interval=1)
    with pytest.raises(AirflowFailException, match="not retried"):
        bad.execute(make_context(run_id="sync-bad"))


def test_the_custom_job_carries_accelerators_and_the_service_account_and_refuses_local_paths(make_context):
    from airflow.sdk.exceptions import AirflowFailException

    from operators.training.train_vertex import VertexTrainOperator

    settings = dict(task_id="train", config=CONFIG, image="europe-docker.pkg.dev/p/ml/ml-trainer:0.1.0",
                    project_id="p", output_root="gs://b/models")
    op = VertexTrainOperator(data_uri="gs://b/snapshots/interval=2", accelerator_type="NVIDIA_TESLA_T4",
                             accelerator_count=1, service_account="trainer@p.iam.gserviceaccount.com", **settings)
    job = op.custom_job(make_context())
    (pool,) = job["job_spec"]["worker_pool_specs"]
    assert pool["machine_spec"] == {"machine_type": "n1-standard-4", "accelerator_type": "NVIDIA_TESLA_T4",
                                    "accelerator_count": 1}
    assert job["job_spec"]["service_account"] == "trainer@p.iam.gserviceaccount.com"
    local = VertexTrainOperator(data_uri="/data/snapshots/interval=2", **settings)
    with pytest.raises(AirflowFailException, match="/data/snapshots/interval=2 is not a gs:// URI"):
        local.custom_job(make_context())


def test_a_cloud_trainer_without_its_image_says_which_setting_is_missing():
    from operators.training.train_sagemaker import SageMakerTrainOperator
    from operators.training.train_vertex import VertexTrainOperator

    with pytest.raises(ValueError, match="VertexTrainOperator needs image= .*ML_TRAINER_IMAGE"):
        VertexTrainOperator(task_id="t", data_uri="gs://b/s", config=CONFIG, image="", project_id="p")
    with pytest.raises(ValueError, match="SageMakerTrainOperator needs image= .*role_arn="):
        SageMakerTrainOperator(task_id="t", data_uri="s3://b/s", config=CONFIG, image="i", role_arn="")
