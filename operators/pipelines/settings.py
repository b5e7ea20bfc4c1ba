"""Deployment-wide settings read from the environment at parse time (cheap): where training
runs on each compute, the warehouses' settings, retry delays. A model spec chooses among them
(``training.compute``, ``source.export``); it does not repeat them."""

from __future__ import annotations

import json
import os
from datetime import timedelta


def kubernetes() -> dict:
    return {
        "image": os.environ.get("ML_TRAINER_IMAGE", "ml-trainer:0.1.0"),
        "namespace": os.environ.get("ML_K8S_NAMESPACE", "ml"),
        "kubernetes_conn_id": os.environ.get("ML_K8S_CONN_ID", "kubernetes_default"),
        "compute_resources": {"cpu": "{{ params.cpu }}", "memory": "{{ params.memory }}", "gpu": "{{ params.gpu }}"},
        "service_account_name": os.environ.get("ML_K8S_SERVICE_ACCOUNT") or None,
        "env_from_secrets": [s for s in os.environ.get("ML_K8S_ENV_SECRETS", "").split(",") if s],
        # Kubernetes-shaped JSON lists, e.g. a PVC or hostPath holding a file:// artifact store
        "volumes": json.loads(os.environ.get("ML_K8S_VOLUMES") or "[]"),
        "volume_mounts": json.loads(os.environ.get("ML_K8S_VOLUME_MOUNTS") or "[]"),
    }


def sagemaker() -> dict:
    return {
        "image": os.environ.get("ML_TRAINER_IMAGE", ""),
        "role_arn": os.environ.get("ML_SAGEMAKER_ROLE_ARN", ""),
        "instance_type": os.environ.get("ML_SAGEMAKER_TRAIN_INSTANCE", "ml.m5.xlarge"),
        "aws_conn_id": os.environ.get("ML_AWS_CONN_ID", "aws_default"),
        "region_name": os.environ.get("ML_AWS_REGION") or None,
    }


def vertex() -> dict:
    return {
        "image": os.environ.get("ML_TRAINER_IMAGE", ""),
        "project_id": os.environ.get("ML_GCP_PROJECT", ""),
        "region": os.environ.get("ML_VERTEX_REGION", "us-central1"),
        "machine_type": os.environ.get("ML_VERTEX_MACHINE_TYPE", "n1-standard-4"),
        "service_account": os.environ.get("ML_VERTEX_SERVICE_ACCOUNT") or None,
        "gcp_conn_id": os.environ.get("ML_GCP_CONN_ID", "google_cloud_default"),
    }


def redshift() -> dict:
    return {
        "iam_role": os.environ.get("ML_REDSHIFT_IAM_ROLE", ""),
        "database": os.environ.get("ML_REDSHIFT_DATABASE", "dev"),
        "cluster_identifier": os.environ.get("ML_REDSHIFT_CLUSTER") or None,
        "workgroup_name": os.environ.get("ML_REDSHIFT_WORKGROUP") or None,
        "db_user": os.environ.get("ML_REDSHIFT_DB_USER") or None,
        "secret_arn": os.environ.get("ML_REDSHIFT_SECRET_ARN") or None,
        "aws_conn_id": os.environ.get("ML_AWS_CONN_ID", "aws_default"),
        "region_name": os.environ.get("ML_AWS_REGION") or None,
    }


def bigquery() -> dict:
    return {
        "project_id": os.environ.get("ML_GCP_PROJECT", ""),
        "scratch_dataset": os.environ.get("ML_BIGQUERY_SCRATCH_DATASET", "ml_scratch"),
        "location": os.environ.get("ML_BIGQUERY_LOCATION") or None,
        "gcp_conn_id": os.environ.get("ML_GCP_CONN_ID", "google_cloud_default"),
    }


def retry_delay() -> timedelta:
    return timedelta(seconds=float(os.environ.get("ML_RETRY_DELAY_SECONDS", "30")))
