"""Scripts behind `make demo`: seed a source table, run the DAG, report the registry."""
