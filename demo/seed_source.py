"""Append one "day" of labelled rows to the demo source table; print the logical date to run.

The printed date is the end of the interval holding the new rows: `airflow dags test`
and manual triggers infer the interval that ends at the logical date.

Data ships with scikit-learn (the breast-cancer set, no download). Day 0 holds the 569
original rows; every later day adds 80 rows re-sampled from them with a little noise
(seeded by the day number, so the table's history is reproducible). Rows of day k carry
event times inside the DAG's data interval that starts at day k 03:00 UTC, so the run for
that logical date trains on days 0..k, and re-running it later extracts the same rows.

    python -m demo.seed_source --sqlite PATH         # the embedded demo source
    python -m demo.seed_source --postgres URI        # e.g. postgresql://root@127.0.0.1/ml
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime, timedelta, timezone

TABLE = "demo_training_rows"
EPOCH = datetime(2026, 1, 1, 3, 0, tzinfo=timezone.utc)  # matches the DAG's "0 3 * * *"
ROWS_PER_DAY = 80


def column_names() -> list[str]:
    from sklearn.datasets import load_breast_cancer

    names = load_breast_cancer().feature_names
    return [re.sub(r"\W+", "_", n).strip("_") for n in names]


def day_rows(day: int) -> list[tuple]:
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    if day > 0:
        rng = np.random.default_rng(day)
        idx = rng.integers(0, len(y), ROWS_PER_DAY)
        X = X[idx] * (1 + rng.normal(0, 0.02, size=(ROWS_PER_DAY, X.shape[1])))
        y = y[idx]
    start = EPOCH + timedelta(days=day)
    step = timedelta(days=1) / (len(y) + 1)
    return [
        (*map(float, x), int(label), (start + step * (i + 1)).isoformat())
        for i, (x, label) in enumerate(zip(X, y))
    ]


def append_day(conn, table: str, columns_sql: str, rows_of_day, placeholder: str, noun: str = "rows") -> datetime:
    """Append the day after the last one in ``table`` (created with ``columns_sql``; its last column
    is ``event_time``), its rows from ``rows_of_day(day)``; returns the logical date to run."""
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns_sql})")
    cur.execute(f"SELECT MAX(event_time) FROM {table}")
    last = cur.fetchone()[0]
    if last is None:
        day = 0
    else:
        last = datetime.fromisoformat(last) if isinstance(last, str) else last
        day = (last - EPOCH).days + 1
    rows = rows_of_day(day)
    cur.executemany(f"INSERT INTO {table} VALUES ({', '.join([placeholder] * len(rows[0]))})", rows)
    conn.commit()
    print(f"seeded day {day}: {len(rows)} {noun} into {table}", flush=True)
    return EPOCH + timedelta(days=day + 1)  # a manual run's interval ends at its logical date


def seed(conn, placeholder: str, ts_type: str) -> datetime:
    columns = ", ".join(f"{c} DOUBLE PRECISION" for c in column_names())
    return append_day(conn, TABLE, f"{columns}, target INTEGER NOT NULL, event_time {ts_type} NOT NULL", day_rows,
                      placeholder)


def seed_sqlite(path, days_at_least: int = 1) -> str:
    """Make sure the embedded source holds at least ``days_at_least`` days (for `make airflow`)."""
    import sqlite3

    with sqlite3.connect(path) as conn:
        cur = conn.cursor()
        cur.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,))
        days = 0
        if cur.fetchone():
            cur.execute(f"SELECT MAX(event_time) FROM {TABLE}")
            last = cur.fetchone()[0]
            days = (datetime.fromisoformat(last) - EPOCH).days + 1 if last else 0
        while days < days_at_least:
            seed(conn, "?", "TEXT")
            days += 1
    return f"demo source {path}: {days} days of rows in {TABLE}"


def seed_cli(seed_function, description: str) -> None:
    """``--sqlite PATH`` or ``--postgres URI``, then ``seed_function(conn, placeholder, ts_type)``."""
    parser = argparse.ArgumentParser(description=description)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--sqlite", help="path of the SQLite database file")
    where.add_argument("--postgres", help="libpq URI of the PostgreSQL database")
    parser.add_argument("--print-logical-date", action="store_true")
    args = parser.parse_args()
    if args.sqlite:
        import sqlite3

        with sqlite3.connect(args.sqlite) as conn:
            logical = seed_function(conn, "?", "TEXT")
    else:
        import psycopg2

        with psycopg2.connect(args.postgres) as conn:
            logical = seed_function(conn, "%s", "TIMESTAMPTZ")
    if args.print_logical_date:
        print(logical.isoformat())


def main() -> None:
    seed_cli(seed, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
