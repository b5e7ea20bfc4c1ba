"""Code that runs inside the trainer and serving containers. Never imports Airflow."""

__version__ = "0.1.0"
