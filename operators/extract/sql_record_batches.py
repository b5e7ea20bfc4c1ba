"""Stream a SQL query's result as Arrow record batches, with flat memory.

PostgreSQL: ADBC's driver runs ``COPY (query) TO STDOUT (FORMAT binary)`` and decodes
straight into Arrow, keeping types exact (NaN and NULL stay distinct, so do '' and NULL).
MySQL and MariaDB: a server-side cursor, each column cast in Arrow from the server's text to
the type its metadata names (mysql_batches.py).
Any other common-sql connection: DB-API ``fetchmany`` batches converted with pyarrow.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa


class SchemaDriftError(ValueError):
    """A later batch's types cannot be cast to the types the first batches settled on."""


@contextmanager
def postgres_batches(hook: Any, sql: str) -> Iterator[tuple[pa.Schema, Iterator[pa.RecordBatch]]]:
    """(schema, batches) of ``sql`` over ADBC, using the hook's connection settings."""
    import adbc_driver_postgresql.dbapi as adbc
    import pyarrow as pa

    uri = hook.sqlalchemy_url.set(drivername="postgresql").render_as_string(hide_password=False)
    with adbc.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(sql)
        reader = cur.fetch_record_batch()
        # Drop ADBC's per-field "POSTGRESQL:type" metadata: the snapshot schema is plain Arrow.
        schema = pa.schema([pa.field(f.name, f.type, f.nullable) for f in reader.schema])
        yield schema, (pa.RecordBatch.from_arrays(b.columns, schema=schema) for b in reader)


@contextmanager
def dbapi_batches(
    hook: Any, sql: str, batch_rows: int
) -> Iterator[tuple[pa.Schema, Iterator[pa.RecordBatch]]]:
    """(schema, batches) through the hook's DB-API connection.

    Types are inferred by pyarrow. While a column is all-NULL so far its type is unknown,
    batches are held back (bounded by ``max_pending`` rows) until every column has shown a
    value; what is still unknown then becomes string.
    """
    import pyarrow as pa

    conn = hook.get_conn()
    try:
        cur = conn.cursor()
        cur.execute(sql)
        names = [d[0] for d in cur.description]

        def fetch() -> Iterator[pa.RecordBatch]:
            while rows := cur.fetchmany(batch_rows):
                columns = list(zip(*rows))
                yield pa.RecordBatch.from_arrays([pa.array(c) for c in columns], names=names)

        batches = fetch()
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        max_pending = 10 * batch_rows
        for batch in batches:
            pending.append(batch)
            pending_rows += batch.num_rows
            schema = pa.unify_schemas([b.schema for b in pending], promote_options="permissive")
            if not any(pa.types.is_null(f.type) for f in schema) or pending_rows >= max_pending:
                break
        if pending:
            schema = pa.unify_schemas([b.schema for b in pending], promote_options="permissive")
            schema = pa.schema([pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in schema])
        else:
            schema = pa.schema([pa.field(n, pa.string()) for n in names])

        def conformed() -> Iterator[pa.RecordBatch]:
            for batch in _chain(pending, batches):
                try:
                    yield batch.cast(schema)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise SchemaDriftError(
                        f"a later batch does not fit the column types of the first rows {schema}: {exc}. "
                        f"CAST the column to one type in the query"
                    ) from None

        yield schema, conformed()
    finally:
        conn.close()


def _is_mysql(hook: Any) -> bool:
    """A MySqlHook, checked without importing the mysql provider where it is not installed."""
    try:
        from airflow.providers.mysql.hooks.mysql import MySqlHook
    except ImportError:
        return False
    return isinstance(hook, MySqlHook)


def _chain(first: list, rest: Iterator) -> Iterator:
    yield from first
    yield from rest


@contextmanager
def record_batches(hook: Any, sql: str, batch_rows: int = 100_000):
    """Pick the fast path for PostgreSQL hooks and for MySQL/MariaDB hooks on mysqlclient (the
    provider's default client), the generic DB-API path otherwise."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    from operators.extract.mysql_batches import mysql_batches, uses_mysqlclient

    if isinstance(hook, PostgresHook):
        with postgres_batches(hook, sql) as result:
            yield result
    elif _is_mysql(hook) and uses_mysqlclient(hook):
        with mysql_batches(hook, sql, batch_rows) as result:
            yield result
    else:
        with dbapi_batches(hook, sql, batch_rows) as result:
            yield result
