"""Optional Airflow connections: a setting that may live in a connection, or not at all."""

from __future__ import annotations


def optional_connection(conn_id: str | None):
    """The connection ``conn_id``, or None when no id is given or it does not exist."""
    if not conn_id:
        return None
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def http_url(conn) -> str | None:
    """``schema://host[:port]`` of a connection (schema defaults to http), or None without a host."""
    if not conn.host:
        return None
    return f"{conn.schema or 'http'}://{conn.host}" + (f":{conn.port}" if conn.port else "")
