# The team's serving image: the project's model server plus this package, and the class allowed.
# Build from the repository root, after docker/serving/Dockerfile:
#   docker build -f examples/keyword_moderation/docker/serving.Dockerfile -t keyword-moderation-serving:1.0.0 .
ARG BASE=ml-serving:0.1.0
FROM ${BASE}
USER root
COPY examples/keyword_moderation /opt/keyword_moderation
RUN pip install --no-cache-dir --no-deps --no-build-isolation /opt/keyword_moderation && rm -rf /opt/keyword_moderation
ENV ML_MODEL_CLASSES=keywords=keyword_moderation.model:KeywordModel \
    ML_IMAGE=keyword-moderation-serving:1.0.0
USER serving
