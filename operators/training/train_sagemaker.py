"""SageMakerTrainOperator: training as a SageMaker training job (``compute="sagemaker"``).

The amazon provider's ``SageMakerTrainingOperator`` *is* the task (create the job, wait in the
triggerer, CloudWatch logs in the task log, a timestamped name when a retry finds the old job).
What is added: the job runs the trainer image with the same ``python -m ml.train`` command as
every other compute (``ContainerEntrypoint`` + ``ContainerArguments``), the result is read from
the model's manifest, and the trainer's bad-input exit (code 2, written to SageMaker's
``/opt/ml/output/failure``) fails the task without retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTrainingOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from operators.training.trainer_command import BAD_INPUT_MARK, TrainerCommand, trained_result

if TYPE_CHECKING:
    from airflow.sdk import Context

FAILURE_FILE = "/opt/ml/output/failure"  # SageMaker shows its content as the job's FailureReason
RESULT_FILE = "/opt/ml/output/data/result.json"  # uploaded with the job's output; the worker reads the manifest


class SageMakerTrainOperator(TrainerCommand, SageMakerTrainingOperator):
    """Train in a SageMaker training job running the trainer image.

    See ``TrainerCommand`` for ``data_uri``, ``output_uri``/``output_root`` and ``config``; both
    URIs must be ``s3://`` (the job reads and writes them with its execution role).

    :param image: the trainer image in ECR (docker/trainer/Dockerfile).
    :param role_arn: the job's execution role (reads the snapshot, writes the model).
    :param instance_type, instance_count, volume_size_gb, max_runtime_seconds: the job's resources.
    :param s3_output_path: where SageMaker puts the job's own output; default ``<model URI>-job``.
    :param environment: extra environment of the training container (no secrets: use the role).
    Every other SageMakerTrainingOperator argument is accepted (aws_conn_id, region_name,
    print_log, check_interval, ...). Deferrable by default.
    :returns: ``{"model_uri", "digest", "metrics"}``, one XCom per key, as every train operator.
    """

    template_fields: Sequence[str] = (*TrainerCommand.trainer_fields, "image", "role_arn", "instance_type")
    ui_color = "#fde9c8"

    def __init__(self, *, data_uri: str, config: dict[str, Any] | str, image: str, role_arn: str,
                 output_uri: str | None = None, output_root: str | None = None,
                 instance_type: str = "ml.m5.xlarge", instance_count: int = 1, volume_size_gb: int = 30,
                 max_runtime_seconds: int = 24 * 3600, s3_output_path: str | None = None,
                 environment: dict[str, str] | None = None, **kwargs) -> None:
        if not image or not role_arn:
            raise ValueError("SageMakerTrainOperator needs image= (the trainer image in ECR, ML_TRAINER_IMAGE) and "
                             "role_arn= (the job's execution role, ML_SAGEMAKER_ROLE_ARN)")
        kwargs.setdefault("multiple_outputs", True)
        kwargs.setdefault("deferrable", True)
        # Deferred, the provider's trigger streams no logs, and print_log=True would only make
        # create_training_job sleep one check_interval on the worker: the log location is logged instead.
        kwargs.setdefault("print_log", not kwargs["deferrable"])
        super().__init__(config={}, **kwargs)  # the job request is built per run: see job_request
        self._set_training(data_uri, config, output_uri, output_root)
        self.image, self.role_arn, self.instance_type = image, role_arn, instance_type
        self.instance_count, self.volume_size_gb = instance_count, volume_size_gb
        self.max_runtime_seconds, self.s3_output_path = max_runtime_seconds, s3_output_path
        self.environment = dict(environment or {})

    def job_request(self, context: Context) -> dict[str, Any]:
        """CreateTrainingJob's request for this run."""
        from operators.deploy.targets.model_package import cloud_name

        for uri in (self.data_uri, self.model_uri()):
            if not uri.startswith("s3://"):
                raise AirflowFailException(f"{uri} is not an s3:// URI: a SageMaker training job reads and writes S3 "
                                           f"only (set ML_ARTIFACT_ROOT to an s3:// folder)")
        command = self.command(context, RESULT_FILE)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
        return {
            "TrainingJobName": cloud_name(context["dag"].dag_id, self.task_id, stamp),
            "AlgorithmSpecification": {"TrainingImage": self.image, "TrainingInputMode": "File",
                                       "ContainerEntrypoint": command[:3], "ContainerArguments": command[3:]},
            "RoleArn": self.role_arn,
            "OutputDataConfig": {"S3OutputPath": self.s3_output_path or f"{self.model_uri().rstrip('/')}-job"},
            "ResourceConfig": {"InstanceType": self.instance_type, "InstanceCount": int(self.instance_count),
                               "VolumeSizeInGB": int(self.volume_size_gb)},
            "StoppingCondition": {"MaxRuntimeInSeconds": int(self.max_runtime_seconds)},
            "Environment": {**self.environment, "ML_TRAIN_FAILURE_FILE": FAILURE_FILE},
            "Tags": [{"Key": "ml-pipelines:dag", "Value": context["dag"].dag_id},
                     {"Key": "ml-pipelines:run", "Value": context["run_id"][:256]}],
        }

    def execute(self, context: Context) -> dict[str, Any]:
        self.config = self.job_request(context)
        self.log.info("SageMaker training job %s runs %s; its log: CloudWatch group /aws/sagemaker/TrainingJobs, "
                      "streams %s/*", self.config["TrainingJobName"],
                      " ".join(self.config["AlgorithmSpecification"]["ContainerEntrypoint"]),
                      self.config["TrainingJobName"])
        with _bad_input_fails():
            super().execute(context)  # defers when deferrable; execute_complete continues
        return trained_result(self.model_uri(), context)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        with _bad_input_fails():
            super().execute_complete(context, event)
        return trained_result(self.model_uri(), context)


class _bad_input_fails:
    """A job that failed on the trainer's bad-input exit fails the task with no retry."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, AirflowException) and not issubclass(
                exc_type, AirflowFailException) and BAD_INPUT_MARK in str(exc):
            raise AirflowFailException(f"bad config or data (not retried): {exc}") from exc
        return False
