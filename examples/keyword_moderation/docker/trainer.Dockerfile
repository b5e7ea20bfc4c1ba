# The team's trainer image: the project's trainer image plus this package, and the class allowed.
# Build from the repository root, after docker/trainer/Dockerfile:
#   docker build -f examples/keyword_moderation/docker/trainer.Dockerfile -t keyword-moderation-trainer:1.0.0 .
ARG BASE=ml-trainer:0.1.0
FROM ${BASE}
USER root
COPY examples/keyword_moderation /opt/keyword_moderation
# no network needed: setuptools comes with the base image's Python
RUN pip install --no-cache-dir --no-deps --no-build-isolation /opt/keyword_moderation && rm -rf /opt/keyword_moderation
ENV ML_MODEL_CLASSES=keywords=keyword_moderation.model:KeywordModel \
    ML_IMAGE=keyword-moderation-trainer:1.0.0
USER trainer
