"""The embedded defaults `make demo` and `make airflow` share: one place, so both see the same
source table, registry, artifacts and endpoint.

    eval "$(python -m demo.environment --shell DEMO_DIR)"    # what demo/run_demo.sh does
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def demo_environment(demo_dir: str | os.PathLike, metadata_uri: str | None = None) -> dict[str, str]:
    """Airflow and pipeline settings for a demo kept entirely under ``demo_dir``.

    ``metadata_uri``: Airflow's metadata database (default: SQLite in ``demo_dir/airflow``).
    """
    demo = Path(demo_dir).resolve()
    home = demo / "airflow"
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_uri or f"sqlite:///{home}/airflow.db",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW_CONN_ML_SOURCE": json.dumps({"conn_type": "sqlite", "host": str(demo / "source.db")}),
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "generic", "extra": {
            "tracking_uri": f"sqlite:///{demo}/mlflow.db", "artifact_location": str(demo / "mlartifacts")}}),
        "ML_ARTIFACT_ROOT": f"file://{demo}/artifacts",
        "ML_MODEL_NAME": os.environ.get("ML_MODEL_NAME", "demo_classifier"),
        "ML_ENDPOINT": os.environ.get("ML_ENDPOINT", "demo-local"),
        "ML_ENDPOINTS_DIR": str(demo / "endpoints"),  # the local endpoint's state, token and server log
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shell", metavar="DEMO_DIR", required=True, help="print `export` lines for this demo dir")
    args = parser.parse_args()
    for key, value in demo_environment(args.shell).items():
        print(f"export {key}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
