"""The DAGs of a model's life, built by functions: the training pipeline, deploy and rollback,
batch scoring. The legacy DAG files call them with the environment's settings; the DAG factory
(``operators.specs.dag_factory``) calls them with a model spec's."""
