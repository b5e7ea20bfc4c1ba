# Stands in for the KubernetesPodOperator XCom sidecar image (alpine) where no registry can be
# reached; the container tests tag it with the provider's XCOM_SIDECAR_IMAGE name.
# The sidecar only runs `sh`. /airflow/xcom is world-writable (sticky) like the Kubernetes
# emptyDir it stands for: podman initialises the pod's emptyDir from whichever container mounts it
# first, so without this the unprivileged trainer could find a root-owned 0755 folder.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
RUN mkdir -p /airflow/xcom && chmod 1777 /airflow/xcom
