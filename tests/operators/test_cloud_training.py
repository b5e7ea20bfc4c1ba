"""Training on SageMaker and Vertex AI: the same ``python -m ml.train`` command as every other
compute, in each cloud's job request, asserted field by field; the job run by a stand-in
(tests/cloud_standins.py) so the model it leaves is read back as the task's result."""

from __future__ import annotations

import json

import pytest
from airflow.sdk.exceptions import AirflowFailException

from ml import artifacts
from operators.train_model import training_operator
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

    from operators.trainer_command import trained_result

    write_snapshot(f"s3://{s3_bucket}/snapshots/interval=1", breast_cancer_table())
    sagemaker_train(s3_bucket).execute(make_context(run_id="first"))
    with pytest.raises(AirflowException, match="trained by run 'first', not 'second'"):
        trained_result(f"s3://{s3_bucket}/models/interval=1", make_context(run_id="second"))
