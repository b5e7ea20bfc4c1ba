"""The Airflow side: operators, sensors and triggers. Imports Airflow and providers; uses ml/ for the contract.

Modules here keep heavy imports (pyarrow, sklearn, mlflow, kubernetes) inside methods, so
that DAG files importing them stay cheap to parse.
"""
