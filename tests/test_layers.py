"""The layer rule, checked on the source: ``dags -> operators -> ml``, never the reverse.

``ml/`` runs in containers that hold only ``ml/`` and ``ml/requirements.lock``: it imports no
Airflow and nothing of this repository outside ``ml/``, and every third-party module it imports
belongs to a package that lock installs. ``operators/`` never imports ``dags/`` or ``plugins/``.
Imports inside functions count: a lazy import still fails in a container that lacks the module.
"""

from __future__ import annotations

import ast
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "ml": ("airflow", "operators", "dags", "plugins", "demo", "tests"),
    "operators": ("dags", "plugins", "tests"),
}


def imported_modules(source: str, package: str) -> set[str]:
    """Top-level names of every module ``source`` imports, relative imports resolved against
    ``package`` (they stay inside it)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(package if node.level else (node.module or "").split(".")[0])
    return found


def violations(layer: str) -> list[str]:
    return [f"{path.relative_to(REPO)} imports {name}"
            for path in sorted((REPO / layer).rglob("*.py"))
            for name in sorted(imported_modules(path.read_text(), layer)) if name in FORBIDDEN[layer]]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_downward(layer):
    assert violations(layer) == []


def test_the_check_sees_lazy_relative_and_dotted_imports():
    source = "def f():\n    import airflow.sdk\n    from operators.x import y\nfrom . import z\n"
    assert imported_modules(source, "ml") == {"airflow", "operators", "ml"}


def test_ml_imports_only_what_its_container_installs():
    locked = {line.split("==")[0].strip().lower().replace("_", "-")
              for line in (REPO / "ml" / "requirements.lock").read_text().splitlines()
              if "==" in line and not line.lstrip().startswith("#")}
    owners = packages_distributions()
    outside = []
    for path in sorted((REPO / "ml").rglob("*.py")):
        for name in imported_modules(path.read_text(), "ml"):
            if name in sys.stdlib_module_names or name in ("ml", "__future__"):
                continue
            dists = {d.lower().replace("_", "-") for d in owners.get(name, [])}
            if not dists & locked:
                outside.append(f"{path.relative_to(REPO)} imports {name} ({sorted(dists) or 'no package'})")
    assert outside == [], "ml/requirements.txt must list what ml/ imports"
