"""One MLflow schema creation at a time on a database-backed registry.

MLflow creates its tables the first time a process opens an empty database, without a lock,
so two task processes starting at once on a new registry both run ``CREATE TABLE`` and one
fails (``UniqueViolation`` on ``pg_type``): found by two pipeline runs registering at the same
moment (tests/integration/test_registry_drills.py). Here the first use of each database URI
in a process opens both stores under a lock every process and host shares: a PostgreSQL
advisory lock, or a lock file beside a SQLite database. Other databases keep MLflow's behaviour.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

_READY: set[str] = set()
_LOCK = threading.Lock()
# pg_advisory_lock's key: any constant shared by every process of this project
_ADVISORY_KEY = 0x6D6C_7069_7065_6C6E  # "mlpipeln"


def client_with_schema(make_client: Callable[[], Any], uri: str):
    """``make_client()``; on the first use of database ``uri`` in this process, under the schema
    lock, with both stores opened (MlflowClient opens its tracking store as it is built)."""
    scheme = urlsplit(uri).scheme.split("+")[0]
    if scheme not in ("postgresql", "sqlite") or uri in _READY:
        return make_client()
    with _LOCK:
        if uri in _READY:
            return make_client()
        with (_advisory_lock(uri) if scheme == "postgresql" else _file_lock(uri)):
            client = make_client()  # creates the tables when the database is empty
            client.search_registered_models(max_results=1)  # the registry store, if it is another
        _READY.add(uri)
        return client


@contextmanager
def _advisory_lock(uri: str):
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _ADVISORY_KEY})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": _ADVISORY_KEY})
    finally:
        engine.dispose()


@contextmanager
def _file_lock(uri: str):
    import os

    path = uri.split("://", 1)[1][1:]  # sqlite:///relative.db, sqlite:////absolute.db
    if not path or path == ":memory:" or not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        yield  # nothing to share, or MLflow will say what is wrong with the path
        return
    with open(path + ".schema-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
