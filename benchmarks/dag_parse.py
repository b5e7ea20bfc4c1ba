"""DAG parse cost, two ways.

1. Each DAG file of dags/ in a fresh interpreter vs `import airflow.sdk` alone: the DAG
   processor re-parses every file every 30 s, so what a file adds on top of the SDK import is
   what it costs the scheduler. Target: under 0.5 s more per file.
2. A folder of 50 model specs (models/*.yaml, half tabular, half text, each with its DAG file
   dags/models/<name>.py) parsed whole by one DagBag, beside what a user would otherwise write:
   50 copies of the hand-written DAG files (training, deploy, scoring) with their own ids.
   Target: under 2 s for the spec folder, and no heavy library imported.

    python benchmarks/dag_parse.py [--repeat 7] [--specs 50]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 0.5
FOLDER_TARGET_S = 2.0
HEAVY = ["sklearn", "pandas", "mlflow", "pyarrow", "boto3", "botocore", "kubernetes", "adbc_driver_postgresql",
         "skops", "scipy"]
BAG = """
import json, sys, time
started = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
imported = time.perf_counter()
bag = DagBag(dag_folder={folder!r})
done = time.perf_counter()
new = set(sys.modules) - before  # what parsing the folder imported, beyond the DagBag itself
heavy = sorted({{m.split(".")[0] for m in new}} & set({heavy!r}) | {{m for m in new if m.startswith("google.cloud")}})
print(json.dumps({{"bag_s": done - imported, "dags": len(bag.dags), "errors": len(bag.import_errors), "heavy": heavy}}))
"""


def wall(code: str, repeat: int, env=None) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def per_file(repeat: int) -> bool:
    wall("import airflow.sdk", 1)  # warm the OS file cache before measuring
    baseline = wall("import airflow.sdk", repeat)
    print(f"{'file':<36}{'median s':>10}{'added s':>10}")
    print(f"{'import airflow.sdk (baseline)':<36}{baseline:>10.2f}{'':>10}")
    ok = True
    for dag in sorted((REPO / "dags").rglob("*.py")):
        t = wall(f"import runpy; runpy.run_path({str(dag)!r})", repeat)
        added = t - baseline
        ok &= added < TARGET_S
        name = str(dag.relative_to(REPO / "dags"))
        print(f"{name:<36}{t:>10.2f}{added:>10.2f}  [{'ok' if added < TARGET_S else 'MISS'}] target < {TARGET_S} s")
    return ok


def spec_folder(root: Path, count: int) -> Path:
    """count specs (alternately the two demo specs, renamed), their SQL and their DAG files."""
    from operators.specs.dag_factory import write_dag_files

    specs = root / "models"
    (specs / "sql").mkdir(parents=True)
    for sql in (REPO / "models" / "sql").glob("*.sql"):
        (specs / "sql" / sql.name).write_text(sql.read_text())
    for i in range(count):
        demo = ("demo_classifier", "demo_moderation")[i % 2]
        text = (REPO / "models" / f"{demo}.yaml").read_text().replace(f"name: {demo}", f"name: model_{i:03d}")
        for endpoint in ("demo-local", "demo-production", "demo-text-production", "demo-text"):
            text = text.replace(f"endpoint: {endpoint}\n", f"endpoint: m{i:03d}-{endpoint}\n")
        (specs / f"model_{i:03d}.yaml").write_text(text)
    write_dag_files(specs, root / "dags")
    return specs


def hand_written(root: Path, count: int) -> Path:
    """count copies of dags/*.py, each copy's DAG ids made its own (what copying a model by hand gives)."""
    folder = root / "hand"
    (folder / "sql").mkdir(parents=True)
    for sql in (REPO / "dags" / "sql").glob("*.sql"):
        (folder / "sql" / sql.name).write_text(sql.read_text())
    for i in range(count):
        for dag in (REPO / "dags").glob("*.py"):
            text = dag.read_text()
            for dag_id in ("ml_training_pipeline", "ml_deploy", "ml_batch_scoring"):
                text = text.replace(f'dag_id="{dag_id}"', f'dag_id="{dag_id}_{i:03d}"')
            (folder / f"{dag.stem}_{i:03d}.py").write_text(text)
    return folder


def whole_folder(folder: Path, repeat: int, env: dict) -> dict:
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", BAG.format(folder=str(folder), heavy=HEAVY)], cwd=REPO,
                             check=True, capture_output=True, text=True, env=env)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    times = sorted(r["bag_s"] for r in runs)
    return {**runs[-1], "median": statistics.median(times), "min": times[0], "max": times[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--specs", type=int, default=50)
    args = parser.parse_args()
    ok = per_file(args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        specs = spec_folder(root, args.specs)
        env = {**os.environ, "ML_MODEL_SPECS": str(specs)}
        hand = hand_written(root, args.specs)
        results = {f"{args.specs} specs (dags/models/ + models/*.yaml)": whole_folder(root / "dags", args.repeat, env),
                   f"{args.specs} hand-written copies of dags/*.py": whole_folder(hand, args.repeat, env)}
    print(f"\n{'whole folder, one DagBag':<46}{'DAGs':>6}{'errors':>8}{'median s':>10}{'min s':>8}{'max s':>8}  heavy")
    for label, r in results.items():
        print(f"{label:<46}{r['dags']:>6}{r['errors']:>8}{r['median']:>10.2f}{r['min']:>8.2f}{r['max']:>8.2f}  "
              f"{r['heavy'] or 'none'}")
    spec = next(iter(results.values()))
    folder_ok = spec["median"] < FOLDER_TARGET_S and not spec["heavy"] and not spec["errors"]
    print(f"[{'ok' if folder_ok else 'MISS'}] spec folder under {FOLDER_TARGET_S} s, no heavy import, no import error")
    sys.exit(0 if ok and folder_ok else 1)


if __name__ == "__main__":
    main()
