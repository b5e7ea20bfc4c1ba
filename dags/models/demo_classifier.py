"""Airflow DAGs of model demo_classifier, built from models/demo_classifier.yaml (docs/model-specs.md).

Written by `make model-dags`; a broken spec is this file's import error alone."""

from operators.specs.dag_factory import model_dags

globals().update(model_dags("demo_classifier"))
