"""DAG parse cost: each DAG file in a fresh interpreter vs `import airflow.sdk` alone.

The DAG processor re-parses every file every 30 s, so what a DAG file adds on top of the
SDK import is what it costs the scheduler. Target: under 0.5 s more per file.

    python benchmarks/dag_parse.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 0.5


def wall(code: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    wall("import airflow.sdk", 1)  # warm the OS file cache before measuring
    baseline = wall("import airflow.sdk", args.repeat)
    print(f"{'file':<36}{'median s':>10}{'added s':>10}")
    print(f"{'import airflow.sdk (baseline)':<36}{baseline:>10.2f}{'':>10}")
    ok = True
    for dag in sorted((REPO / "dags").glob("*.py")):
        t = wall(f"import runpy; runpy.run_path({str(dag)!r})", args.repeat)
        added = t - baseline
        ok &= added < TARGET_S
        print(f"{dag.name:<36}{t:>10.2f}{added:>10.2f}  [{'ok' if added < TARGET_S else 'MISS'}] target < {TARGET_S} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
