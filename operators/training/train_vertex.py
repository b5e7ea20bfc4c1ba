"""VertexTrainOperator: training as a Vertex AI CustomJob (``compute="vertex"``).

One worker pool runs the trainer image with the same ``python -m ml.train`` command as every
other compute; the google provider's ``CustomJobHook`` creates the job and its
``CustomJobTrigger`` waits for it in the triggerer. The result is read from the model's manifest,
and the trainer's bad-input exit (code 2) fails the task without retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from operators.training.trainer_command import BAD_INPUT_MARK, TrainerCommand, trained_result

if TYPE_CHECKING:
    from airflow.sdk import Context

VERTEX_EXIT_2 = "non-zero status of 2"  # how Vertex reports the replica's exit code in the job error


class VertexTrainOperator(TrainerCommand, BaseOperator):
    """Train in a Vertex AI CustomJob running the trainer image.

    See ``TrainerCommand`` for ``data_uri``, ``output_uri``/``output_root`` and ``config``; both
    URIs must be ``gs://`` (the job's service account reads and writes them).

    :param image: the trainer image in Artifact Registry (docker/trainer/Dockerfile).
    :param project_id, region: where the job runs.
    :param machine_type, accelerator_type, accelerator_count: the worker's machine.
    :param service_account: the job's service account (no keys in the job: it runs as this).
    :param environment: extra environment of the trainer container (no secrets).
    :param gcp_conn_id: the connection the provider's hooks use.
    :param deferrable: wait in the triggerer (default) or poll on the worker.
    :returns: ``{"model_uri", "digest", "metrics"}``, one XCom per key, as every train operator.
    """

    template_fields: Sequence[str] = (*TrainerCommand.trainer_fields, "image", "project_id", "region",
                                      "machine_type")
    ui_color = "#fde9c8"

    def __init__(self, *, data_uri: str, config: dict[str, Any] | str, image: str, project_id: str,
                 region: str = "us-central1", output_uri: str | None = None, output_root: str | None = None,
                 machine_type: str = "n1-standard-4", accelerator_type: str | None = None,
                 accelerator_count: int = 0, service_account: str | None = None,
                 environment: dict[str, str] | None = None, gcp_conn_id: str = "google_cloud_default",
                 deferrable: bool = True, poll_interval: int = 30, **kwargs) -> None:
        if not image or not project_id:
            raise ValueError("VertexTrainOperator needs image= (the trainer image, ML_TRAINER_IMAGE) and project_id= "
                             "(ML_GCP_PROJECT)")
        kwargs.setdefault("multiple_outputs", True)
        super().__init__(**kwargs)
        self._set_training(data_uri, config, output_uri, output_root)
        self.image, self.project_id, self.region, self.machine_type = image, project_id, region, machine_type
        self.accelerator_type, self.accelerator_count = accelerator_type, accelerator_count
        self.service_account, self.environment = service_account, dict(environment or {})
        self.gcp_conn_id, self.deferrable, self.poll_interval = gcp_conn_id, deferrable, poll_interval

    def custom_job(self, context: Context) -> dict[str, Any]:
        """The CustomJob of this run."""
        from operators.deploy.targets.model_package import cloud_name

        for uri in (self.data_uri, self.model_uri()):
            if not uri.startswith("gs://"):
                raise AirflowFailException(f"{uri} is not a gs:// URI: a Vertex AI job reads and writes GCS only "
                                           f"(set ML_ARTIFACT_ROOT to a gs:// folder)")
        command = self.command(context, "/tmp/ml-train-result.json")
        machine: dict[str, Any] = {"machine_type": self.machine_type}
        if self.accelerator_type and int(self.accelerator_count or 0):
            machine.update(accelerator_type=self.accelerator_type, accelerator_count=int(self.accelerator_count))
        job: dict[str, Any] = {
            "display_name": cloud_name(context["dag"].dag_id, self.task_id, context["run_id"], limit=128),
            "labels": {"ml-pipelines-dag": cloud_name(context["dag"].dag_id).lower()},
            "job_spec": {"worker_pool_specs": [{
                "machine_spec": machine, "replica_count": 1,
                "container_spec": {"image_uri": self.image, "command": command[:3], "args": command[3:],
                                   "env": [{"name": k, "value": v} for k, v in sorted(self.environment.items())]}}]},
        }
        if self.service_account:
            job["job_spec"]["service_account"] = self.service_account
        return job

    def _hook(self):
        from airflow.providers.google.cloud.hooks.vertex_ai.custom_job import CustomJobHook

        return CustomJobHook(gcp_conn_id=self.gcp_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.providers.google.cloud.triggers.vertex_ai import CustomJobTrigger
        from google.cloud.aiplatform_v1.types import CustomJob

        hook = self._hook()
        created = hook.create_custom_job(project_id=self.project_id, region=self.region,
                                         custom_job=self.custom_job(context))
        job_id = created.name.rsplit("/", 1)[-1]
        self.log.info("Vertex AI CustomJob %s runs %s; console: https://console.cloud.google.com/vertex-ai/locations/"
                      "%s/training/%s?project=%s", created.name, "python -m ml.train", self.region, job_id,
                      self.project_id)
        if self.deferrable:
            self.defer(trigger=CustomJobTrigger(project_id=self.project_id, location=self.region,
                                                custom_job_id=job_id, gcp_conn_id=self.gcp_conn_id,
                                                poll_interval=self.poll_interval),
                       method_name="execute_complete")
        try:  # on the worker: the same outcome handling as after the trigger
            job = hook.wait_for_custom_job(project_id=self.project_id, region=self.region, custom_job_id=job_id,
                                           poll_interval=self.poll_interval)
        except RuntimeError as exc:  # the provider's way of saying the job failed
            return self.execute_complete(context, {"status": "error", "message": str(exc)})
        return self.execute_complete(context, {"status": "success", "custom_job": CustomJob.to_dict(job)})

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        job = event.get("custom_job") or {}
        state = job.get("state")
        if event.get("status") != "success" or state not in ("JOB_STATE_SUCCEEDED", 4):
            reason = (job.get("error") or {}).get("message") or event.get("message") or f"state {state}"
            if VERTEX_EXIT_2 in reason or BAD_INPUT_MARK in reason:
                raise AirflowFailException(f"the Vertex AI training job failed on bad config or data (not retried): "
                                           f"{reason}")
            raise AirflowException(f"the Vertex AI training job failed: {reason}")
        return trained_result(self.model_uri(), context)
