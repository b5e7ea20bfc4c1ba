-- Run once by the PostgreSQL image at first start (/docker-entrypoint-initdb.d): the registry's
-- and the demo source's databases beside Airflow's own.
CREATE DATABASE mlflow;
CREATE DATABASE source;
