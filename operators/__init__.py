"""The Airflow side, a package per step: extract/, sensors/, training/, registry/, deploy/ (its
targets/), scoring/, specs/; what several share (alerts, connections, the artifact root) here.
Imports Airflow and providers; uses ml/ for the contract.

Modules here keep heavy imports (pyarrow, sklearn, mlflow, kubernetes) inside methods, so
that DAG files importing them stay cheap to parse.
"""
