"""Batch scoring benchmark: ml.batch_scoring (the ml_batch_scoring DAG's shards) vs a pandas +
joblib loop, the same model, the same rows, the same machine, in one run.

Generates a snapshot artifact (default 5,000,000 rows: the breast-cancer features re-sampled
with noise, a file per million rows as the extract writes, row groups of 250,000) and trains
the demo's model on the bundled data. Then, each in fresh processes:

* ``ml.batch_scoring``: ``plan_shards`` into one shard per core (``rows_per_shard`` = rows / 2
  on this 2-core machine) and one process per shard, both at once (the DAG's
  ``max_active_tis_per_dagrun``); each predicts with the compiled tree engine
  (ml/tree_engine.py) and writes its shard;
* ``pandas + joblib``: ``pd.read_parquet`` of the snapshot, ``joblib.Parallel(n_jobs=2)`` of
  ``model.predict`` over chunks, then ``to_parquet`` of the frame with its predictions;
* ``ml.batch_scoring`` once more with one shard of all the rows on both cores (the DAG with
  ``rows_per_shard`` at least the interval's rows and ``parallel`` 1): one process, two threads.

The model (HistGradientBoosting, 100 trees) is trained by ``ml.train``, so its artifact holds ``trees.json``: the shards
predict with the compiled tree engine and never import scikit-learn; the loop uses the fitted
scikit-learn pipeline.

The predictions of both are compared row by row (they must be equal). Rows per second count
rows scored and written; peak memory is the largest resident set of any
one process (scoring processes or joblib workers and their parent). ml.batch_scoring runs at
twice the rows as well, to show its memory does not grow with rows.

    python benchmarks/batch_scoring.py [--rows 5000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARD = r"""
import json, resource, sys, time
from ml.batch_scoring import score_shard
model, snapshot, shard, out, parallel = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], sys.argv[5]
result = score_shard(model, "1", snapshot, shard, out, concurrent_shards=int(parallel))
print(json.dumps({**result, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
PANDAS = r"""
import json, resource, sys
import numpy as np, pandas as pd
from joblib import Parallel, delayed
from ml import artifacts
from ml.model_io import load_verified_model
model_uri, snapshot, out = sys.argv[1:4]
manifest, model = load_verified_model(model_uri)
features = [c["name"] for c in manifest.schema]
snap = artifacts.open_verified(snapshot, kind="snapshot")
frame = pd.read_parquet([artifacts.file_uri(snap, e).removeprefix("file://") for e in snap.files])
chunks = np.array_split(np.arange(len(frame)), 16)
pipeline = model.pipeline  # the fitted scikit-learn pipeline, as a user of scikit-learn holds it
parts = Parallel(n_jobs=2)(delayed(pipeline.predict)(frame.iloc[idx][features].to_numpy()) for idx in chunks)
frame = frame.drop(columns=features)
frame["prediction"] = np.concatenate(parts)
frame["model_version"] = "1"
frame.to_parquet(out)
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"rows": len(frame), "rss_mb": max(own, children)}))
"""


def make_snapshot(uri: str, rows: int, group_rows: int = 250_000, file_rows: int = 1_000_000) -> None:
    """The breast-cancer features re-sampled with noise, laid out as the extract writes them:
    a Parquet file per ``file_rows`` rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_breast_cancer

    from ml import artifacts
    from ml.snapshots import arrow_schema_fields

    data = load_breast_cancer()
    names = [n.replace(" ", "_") for n in data.feature_names]
    rng = np.random.default_rng(0)
    writer = artifacts.ArtifactWriter(uri, "snapshot")
    schema = None
    for part, first in enumerate(range(0, rows, file_rows)):
        with writer.open(f"part-{part:05d}.parquet") as f:
            pw = None
            for start in range(first, min(rows, first + file_rows), group_rows):
                n = min(group_rows, rows - start, first + file_rows - start)
                idx = rng.integers(0, len(data.target), n)
                X = data.data[idx] * (1 + rng.normal(0, 0.02, size=(n, len(names))))
                table = pa.table({"id": pa.array(np.arange(start, start + n)),
                                  **{c: X[:, i] for i, c in enumerate(names)}, "target": data.target[idx]})
                if pw is None:
                    schema = table.schema
                    # as the extract writes numbers (operators/extract/sql_to_parquet.py): no dictionary pages
                    pw = pq.ParquetWriter(f, schema, use_dictionary=False)
                pw.write_table(table, row_group_size=group_rows)
            pw.close()
    writer.commit(schema=arrow_schema_fields(schema), row_count=rows, lineage={"benchmark": True})


def train_model(root: Path) -> str:
    from ml import train
    from tests.helpers import breast_cancer_table, write_snapshot

    write_snapshot(str(root / "train"), breast_cancer_table())
    train.train(str(root / "train"), str(root / "model"), train.parse_config(
        {"estimator": "HistGradientBoostingClassifier", "target": "target", "params": {"max_iter": 100}}))
    return str(root / "model")


def ours(model: str, snapshot: str, out: Path, parallel: int = 2) -> dict:
    from ml import artifacts
    from ml.batch_scoring import plan_shards

    started = time.perf_counter()
    total = artifacts.read_manifest(snapshot, kind="snapshot").row_count
    shards = plan_shards(snapshot, rows_per_shard=-(-total // parallel))
    results, running = [], []
    for shard in shards:
        running.append(subprocess.Popen([sys.executable, "-c", SHARD, model, snapshot, json.dumps(shard), str(out),
                                         str(parallel)],
                                        stdout=subprocess.PIPE, text=True, cwd=REPO))
        while len(running) >= parallel or (shard is shards[-1] and running):
            proc = running.pop(0)
            stdout, _ = proc.communicate()
            assert proc.returncode == 0, stdout
            results.append(json.loads(stdout.strip().splitlines()[-1]))
    seconds = time.perf_counter() - started
    return {"rows": sum(r["rows"] for r in results), "seconds": seconds, "rss_mb": max(r["rss_mb"] for r in results)}


def pandas_joblib(model: str, snapshot: str, out: Path) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PANDAS, model, snapshot, str(out)], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "seconds": time.perf_counter() - started}


def same_predictions(ours_dir: Path, theirs: Path) -> bool:
    """Both methods' predictions, matched by id."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    mine = pa.concat_tables(pq.read_table(p, columns=["id", "prediction"]) for p in sorted(ours_dir.glob("*.parquet")))
    other = pq.read_table(theirs, columns=["id", "prediction"])
    a = mine.sort_by("id").column("prediction").to_numpy()
    b = other.sort_by("id").column("prediction").to_numpy()
    return len(a) == len(b) and bool(np.array_equal(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        root = Path(tmp)
        model = train_model(root)
        rows = {}
        for n in (args.rows, 2 * args.rows):
            make_snapshot(str(root / f"snap-{n}"), n)
            rows[n] = str(root / f"snap-{n}")
        os.sync()  # the snapshots' gigabytes on disk first: their write-back slowed whichever method ran next
        a = ours(model, rows[args.rows], root / "ours-1")
        b = pandas_joblib(model, rows[args.rows], root / "pandas.parquet")
        c = ours(model, rows[2 * args.rows], root / "ours-2")
        d = ours(model, rows[args.rows], root / "ours-one", parallel=1)
        same = same_predictions(root / "ours-1", root / "pandas.parquet")
        same_one = same_predictions(root / "ours-one", root / "pandas.parquet")
    print(f"{'method':<42}{'rows':>12}{'seconds':>10}{'rows/s':>12}{'peak MB':>10}")
    for name, r in (("ml.batch_scoring (2 shards at once)", a), ("pandas + joblib (n_jobs=2)", b),
                    ("ml.batch_scoring, twice the rows", c), ("ml.batch_scoring (1 shard on 2 threads)", d)):
        print(f"{name:<42}{r['rows']:>12,}{r['seconds']:>10.1f}{r['rows'] / r['seconds']:>12,.0f}{r['rss_mb']:>10.0f}")
    rate = b["rows"] / b["seconds"]
    print(f"speed: {a['rows'] / a['seconds'] / rate:.2f}x pandas + joblib (2 shards), "
          f"{d['rows'] / d['seconds'] / rate:.2f}x (1 shard on 2 threads); "
          f"peak memory: {a['rss_mb'] / b['rss_mb']:.2f}x; at twice the rows: {c['rss_mb'] / a['rss_mb']:.2f}x its own; "
          f"predictions equal to scikit-learn's row by row: {same and same_one}")


if __name__ == "__main__":
    main()
