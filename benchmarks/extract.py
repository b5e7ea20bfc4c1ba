"""Extraction benchmark: SqlToParquetOperator vs pandas.read_sql + to_parquet vs raw COPY.

Generates a table (default 2,000,000 rows x 12 columns, NaN and NULL sprinkled in) in a
scratch database on the local PostgreSQL (``--source mariadb``: on the local MariaDB, with a
DECIMAL and a DATETIME(6) column, against pandas.read_sql over SQLAlchemy + mysqlclient and
the mariadb client's own tab-separated dump), then runs each method in a fresh process. Each
imports its libraries first (a worker has them loaded); the timed region is connect +
query + write. Peak RSS is the whole process, imports included. The operator also runs at
twice the rows to show memory stays flat.

    python benchmarks/extract.py [--rows 2000000] [--dsn postgresql://user@127.0.0.1:5432/postgres]
    python benchmarks/extract.py --source mariadb [--rows 2000000]
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

GENERATE = """
CREATE UNLOGGED TABLE {table} AS
SELECT g::bigint AS id,
  random() AS f1, random() * 10 AS f2,
  CASE WHEN g % 97 = 0 THEN 'NaN'::float8 ELSE random() END AS f3,
  CASE WHEN g % 89 = 0 THEN NULL ELSE random() END AS f4,
  random() AS f5, random() AS f6, random() AS f7,
  (random() * 1000)::int AS n1, (g % 5)::int AS label,
  CASE WHEN g % 7 = 0 THEN '' WHEN g % 11 = 0 THEN NULL ELSE 'cat_' || (g % 13) END AS category,
  timestamptz '2026-01-01' + (g || ' seconds')::interval AS event_time
FROM generate_series(1, {rows}) g;
ANALYZE {table};
"""

GENERATE_MARIADB = """
CREATE TABLE {table} (id BIGINT PRIMARY KEY, f1 DOUBLE, f2 DOUBLE, f3 DOUBLE, f4 DOUBLE, f5 DOUBLE, f6 DOUBLE,
  amount DECIMAL(12, 4), n1 INT, label TINYINT, category VARCHAR(16), event_time DATETIME(6));
INSERT INTO {table} SELECT seq, RAND(), RAND() * 10, IF(seq % 97 = 0, NULL, RAND()), IF(seq % 89 = 0, NULL, RAND()),
  RAND(), RAND(), ROUND(RAND() * 100000, 4), FLOOR(RAND() * 1000), seq % 5,
  CASE WHEN seq % 7 = 0 THEN '' WHEN seq % 11 = 0 THEN NULL ELSE CONCAT('cat_', seq % 13) END,
  TIMESTAMP '2026-01-01 00:00:00' + INTERVAL seq SECOND + INTERVAL seq % 1000000 MICROSECOND
FROM seq_1_to_{rows};
"""

# Each method is a small program run in its own interpreter; it prints one JSON line.
RUNNER = r"""
import json, resource, sys, time, os
process_start = time.perf_counter()
method, dsn, table, out = sys.argv[1:5]
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if dsn.startswith("mysql://"):  # mysql://root@host:port/database
    from urllib.parse import urlsplit
    mysql = urlsplit(dsn)
    mysql_cli = ["mariadb", "-uroot", "-h", mysql.hostname, "-P", str(mysql.port), "--batch", "--skip-column-names",
                 mysql.path.lstrip("/"), "-e"]
# 1. imports each method needs (a worker has them loaded already), outside the timed region
if method in ("operator", "operator_text"):
    if dsn.startswith("mysql://"):
        os.environ["AIRFLOW_CONN_BENCH_SOURCE"] = json.dumps({"conn_type": "mysql", "login": "root",
            "host": mysql.hostname, "port": mysql.port, "schema": mysql.path.lstrip("/")})
        import MySQLdb
        from airflow.providers.mysql.hooks.mysql import MySqlHook
    else:
        os.environ["AIRFLOW_CONN_BENCH_SOURCE"] = dsn.replace("postgresql://", "postgres://")
    import pendulum
    from types import SimpleNamespace
    import adbc_driver_postgresql.dbapi, pyarrow.parquet
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    from operators.extract.sql_to_parquet import SqlToParquetOperator
elif method == "pandas":
    import pandas as pd
    import pyarrow.parquet
    import sqlalchemy
    if dsn.startswith("mysql://"):
        import MySQLdb
elif method == "mariadb_dump":
    pass
else:
    import psycopg2
imported_rss, t0 = rss(), time.perf_counter()
# 2. the timed extraction: connect, query, write
if method == "operator_text":  # MySQL/MariaDB: the text-protocol path, which other column types take
    import operators.extract.mysql_batches as mysql_batches
    mysql_batches.binary_uri = lambda hook: None
if method in ("operator", "operator_text"):
    op = SqlToParquetOperator(task_id="extract", conn_id="bench_source", sql=f"SELECT * FROM {table}",
                              snapshot_root=out)
    class Outlets(dict):
        def __missing__(self, k): return SimpleNamespace(extra={})
    ctx = {"dag": SimpleNamespace(dag_id="bench"), "run_id": "bench", "logical_date": None,
           "data_interval_start": pendulum.datetime(2026, 1, 1), "data_interval_end": pendulum.datetime(2026, 1, 2),
           "outlet_events": Outlets()}
    rows = op.execute(ctx)["row_count"]
elif method == "pandas":
    engine = sqlalchemy.create_engine(dsn.replace("postgresql://", "postgresql+psycopg2://")
                                      .replace("mysql://", "mysql+mysqldb://"))
    frame = pd.read_sql(f"SELECT * FROM {table}", engine)
    frame.to_parquet(f"{out}/pandas.parquet")
    rows = len(frame)
elif method == "mariadb_dump":  # the server's rows as text, no types: the floor of any client
    import subprocess
    with open(os.devnull, "wb") as sink:
        subprocess.run(["mariadb", "--quick", *mysql_cli[1:], f"SELECT * FROM {table}"], stdout=sink, check=True)
    rows = int(subprocess.run([*mysql_cli, f"SELECT COUNT(*) FROM {table}"], capture_output=True, text=True,
                              check=True).stdout)
elif method in ("copy_text", "copy_binary"):
    fmt = "" if method == "copy_text" else " (FORMAT binary)"
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur, open(os.devnull, "wb") as sink:
        cur.copy_expert(f"COPY (SELECT * FROM {table}) TO STDOUT{fmt}", sink)
        rows = cur.rowcount
end = time.perf_counter()
print(json.dumps({"method": method, "rows": rows, "seconds": end - t0, "process_seconds": end - process_start,
                  "peak_mib": rss(), "growth_mib": rss() - imported_rss}))
"""


def run(method: str, dsn: str, table: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as out:
        proc = subprocess.run([sys.executable, "-c", RUNNER, method, dsn, table, out], cwd=REPO,
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        if proc.returncode != 0:
            raise SystemExit(f"{method} failed:\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


def run_methods(args, dsn: str, methods: tuple[str, ...]) -> dict:
    """Each method on the table of ``args.rows`` rows (the best of ``args.repeat`` runs; pandas
    once), and the operator on twice the rows."""
    results = {}
    for method in methods:
        runs = [run(method, dsn, f"rows_{args.rows}") for _ in range(args.repeat if method != "pandas" else 1)]
        results[method] = min(runs, key=lambda r: r["seconds"])
        print(f"  {method:<12} {results[method]['seconds']:6.2f} s  {results[method]['peak_mib']:7.0f} MiB peak",
              flush=True)
    results["operator_2x"] = run("operator", dsn, f"rows_{2 * args.rows}")
    return results


def mariadb_main(args) -> dict:
    """The MariaDB tables, the methods' results (the operator's mysqlclient path, pandas, the dump)."""
    import MySQLdb

    db = f"bench_extract_{uuid.uuid4().hex[:8]}"
    admin = MySQLdb.connect(host="127.0.0.1", port=3306, user="root", passwd="")
    admin.cursor().execute(f"CREATE DATABASE {db}")
    dsn = f"mysql://root@127.0.0.1:3306/{db}"
    try:
        conn = MySQLdb.connect(host="127.0.0.1", port=3306, user="root", passwd="", db=db)
        for rows in (args.rows, 2 * args.rows):
            for statement in GENERATE_MARIADB.format(table=f"rows_{rows}", rows=rows).split(";")[:-1]:
                conn.cursor().execute(statement)
        conn.commit()
        conn.close()
        print(f"MariaDB table: {args.rows:,} rows x 12 columns (and {2 * args.rows:,} for the flatness check)",
              flush=True)
        results = run_methods(args, dsn, ("mariadb_dump", "operator", "operator_text", "pandas"))
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {db}")
        admin.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dsn", default=os.environ.get("ML_BENCH_POSTGRES_DSN",
                                                        f"postgresql://{getpass.getuser()}@127.0.0.1:5432/postgres"))
    parser.add_argument("--repeat", type=int, default=2, help="runs per method; the best is reported")
    parser.add_argument("--source", choices=("postgres", "mariadb"), default="postgres")
    args = parser.parse_args()
    if args.source == "mariadb":
        report(args, mariadb_main(args), "mariadb_dump")
        return

    import psycopg2

    db = f"bench_extract_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(args.dsn)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{db}"')
    dsn = args.dsn.rsplit("/", 1)[0] + f"/{db}"
    try:
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            for rows in (args.rows, 2 * args.rows):
                cur.execute(GENERATE.format(table=f"rows_{rows}", rows=rows))
        print(f"table: {args.rows:,} rows x 12 columns (and {2 * args.rows:,} for the flatness check)", flush=True)
        results = run_methods(args, dsn, ("copy_text", "copy_binary", "operator", "pandas"))
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.close()
    report(args, results, "copy_text")


def report(args, results: dict, floor: str) -> None:
    op, pandas, copy = results["operator"], results["pandas"], results[floor]
    for r in results.values():
        assert r["rows"] in (args.rows, 2 * args.rows), r
    print()
    print("wall s: connect + query + write, libraries already imported (as in a worker); process s: the")
    print("whole fresh interpreter. peak MiB: the process's peak RSS, imports included; +MiB: growth while extracting.")
    print(f"{'method':<44}{'rows':>11}{'wall s':>9}{'process s':>11}{'peak MiB':>10}{'+MiB':>7}")
    mariadb = floor == "mariadb_dump"
    labels = {
        "operator": "SqlToParquetOperator (" + ("binary protocol" if mariadb else "ADBC COPY") + " -> Parquet)",
        "operator_text": "SqlToParquetOperator, text-protocol path",
        "mariadb_dump": "mariadb --quick --batch -> /dev/null",
        "operator_2x": "SqlToParquetOperator, twice the rows",
        "pandas": "pandas.read_sql + to_parquet",
        "copy_text": "raw COPY ... TO STDOUT -> /dev/null",
        "copy_binary": "raw COPY ... (FORMAT binary) -> /dev/null",
    }
    for key in ("operator", "operator_2x") + (("operator_text", "pandas", floor) if mariadb else
                                              ("pandas", "copy_text", "copy_binary")):
        r = results[key]
        print(f"{labels[key]:<44}{r['rows']:>11,}{r['seconds']:>9.2f}{r['process_seconds']:>11.2f}"
              f"{r['peak_mib']:>10.0f}{r['growth_mib']:>7.0f}")
    speedup = pandas["seconds"] / op["seconds"]
    vs_copy = op["seconds"] / copy["seconds"]
    growth = results["operator_2x"]["growth_mib"] / max(op["growth_mib"], 1)
    print()
    checks = [
        (f"{speedup:.1f}x faster than pandas (target >= 5x)", speedup >= 5),
        *([] if mariadb else [(f"{vs_copy:.2f}x the time of raw text COPY (target <= 1.5x)", vs_copy <= 1.5)]),
        (f"peak {op['peak_mib']:.0f} MiB (target < 300 MiB)", op["peak_mib"] < 300) if not mariadb else
        (f"peak {op['peak_mib']:.0f} MiB, {op['peak_mib'] / pandas['peak_mib']:.2f}x pandas' (target < 0.25x; "
         f"connectorx and mysqlclient imported: ~220 MiB)", op["peak_mib"] < pandas["peak_mib"] / 4),
        (f"memory used while extracting grows {growth:.2f}x when rows double (target: flat, <= 1.25x)",
         growth <= 1.25),
    ]
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'MISS'}] {text}")
    out = REPO / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / f"extract{'-mariadb' if mariadb else ''}.json").write_text(
        json.dumps({"rows": args.rows, "results": results}, indent=2))
    sys.exit(0 if all(ok for _, ok in checks) else 1)


if __name__ == "__main__":
    main()
