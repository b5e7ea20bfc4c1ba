"""Text trainer benchmark: `python -m ml.train` with the built-in ``text`` model against a plain
scikit-learn script doing the same fit, on the same snapshot of short generated posts.

The plain script is what a user would otherwise write: read the Parquet file into pandas, hold
out 20 %, fit the same pipeline (hashed word 1-2 and char_wb 2-4 grams, TF-IDF, logistic
regression), score the held-out rows. Ours does that and all it does besides (verify the
snapshot's digests, the evaluation picture, save, reload and re-predict, the held-out rows, the
manifest). Each runs as its own process, in turn; wall time and peak resident memory
(``wait4``'s ru_maxrss) are printed side by side.

    python benchmarks/text_training.py [--rows 1000000] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PLAIN = textwrap.dedent("""
    import sys
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline

    frame = pd.read_parquet(sys.argv[1])
    X_train, X_test, y_train, y_test = train_test_split(frame[["text"]], frame["label"].to_numpy(), test_size=0.2,
                                                        random_state=42, stratify=frame["label"].to_numpy())
    common = dict(n_features=1 << 18, alternate_sign=False, norm=None, lowercase=True)
    pipeline = Pipeline([
        ("features", ColumnTransformer([
            ("word", HashingVectorizer(analyzer="word", ngram_range=(1, 2), token_pattern=r"(?u)\\b\\w+\\b", **common),
             "text"),
            ("char", HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), **common), "text")])),
        ("tfidf", TfidfTransformer(sublinear_tf=True)),
        ("model", LogisticRegression(C=10.0, max_iter=200, random_state=42)),
    ])
    pipeline.fit(X_train, y_train)
    print("accuracy", (pipeline.predict(X_test) == y_test).mean())
""")


def tree_rss_mib(root: int) -> float:
    """Resident memory of ``root`` and all its descendants, from /proc."""
    parents, rss = {}, {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry.name}/statm") as f:
                rss[int(entry.name)] = int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(rss.get(pid, 0) for pid in tree) / 2**20


def timed(command: list[str], env: dict) -> tuple[float, float, float, str]:
    """(seconds, peak resident MiB of the process, of its process tree, output) of one process."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    peak, done = [0.0], threading.Event()

    def sample():
        while not done.wait(0.1):
            peak[0] = max(peak[0], tree_rss_mib(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.stdout.read()
    done.set()
    sampler.join()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[:3]} failed:\n{output[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, max(peak[0], usage.ru_maxrss / 1024), output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    import pyarrow.parquet as pq

    from demo.moderation_posts import table as posts_table
    from ml import artifacts
    from ml.snapshots import arrow_schema_fields

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory(prefix="bench-text-") as tmp:
        work = Path(tmp)
        print(f"generating {args.rows:,} posts ...", flush=True)
        table = posts_table(args.rows, seed=21, odd_share=0.0).select(["text", "label"])  # short texts only
        writer = artifacts.ArtifactWriter(str(work / "snapshot"), "snapshot")
        with writer.open("part-00000.parquet") as f:
            pq.write_table(table, f)
        manifest = writer.commit(schema=arrow_schema_fields(table.schema), row_count=table.num_rows, lineage={})
        parquet = str(work / "snapshot" / manifest.files[0].path)
        (work / "plain.py").write_text(PLAIN)
        print(f"mean text length {sum(len(t) for t in table.column('text').to_pylist()) / args.rows:.0f} characters")
        del table
        results: dict[str, list[tuple[float, float, float]]] = {"ml.train (text model)": [], "plain scikit-learn script": []}
        for run in range(args.runs):
            config = json.dumps({"model": "text", "target": "label"})
            seconds, mib, tree, _ = timed([sys.executable, "-m", "ml.train", "--data", str(work / "snapshot"),
                                           "--output", str(work / f"model-{run}"), "--config", config], env)
            results["ml.train (text model)"].append((seconds, mib, tree))
            seconds, mib, tree, out = timed([sys.executable, str(work / "plain.py"), parquet], env)
            results["plain scikit-learn script"].append((seconds, mib, tree))
            ours = artifacts.read_manifest(str(work / f"model-{run}")).extra["metrics"]["accuracy"]
            print(f"  run {run + 1}: ours accuracy {ours:.4f}, plain {out.split()[-1]}", flush=True)
    print(f"\n{args.rows:,} short texts, {args.runs} run(s)")
    print(f"{'trainer':<30}{'seconds':>10}{'rows/s':>10}{'peak MiB':>10}{'tree MiB':>10}")
    for name, runs in results.items():
        for seconds, mib, tree in runs:
            print(f"{name:<30}{seconds:>10.1f}{args.rows / seconds:>10.0f}{mib:>10.0f}{tree:>10.0f}")
    ours, plain = results["ml.train (text model)"], results["plain scikit-learn script"]
    checks = []
    for (s_ours, _, m_ours), (s_plain, _, m_plain) in zip(ours, plain):  # memory: the whole process tree's
        checks += [(f"time {s_ours / s_plain:.2f}x the plain script's (target <= 1.2x)", s_ours <= 1.2 * s_plain),
                   (f"peak memory (process tree) {m_ours / m_plain:.2f}x the plain script's (target <= 1.5x)",
                    m_ours <= 1.5 * m_plain)]
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'MISS'}] {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
