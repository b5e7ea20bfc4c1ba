from __future__ import annotations

import pytest

from ml.models.classes import package_of as REAL_PACKAGE_OF  # noqa: N812 - before the fixture patches it

BROKEN = "tests.models.broken"
NAMES = ["MajorityModel", "WrongLength", "RaisesInPredict", "RaisesOnSomeTexts", "TooSlow", "SlowAfterLoad",
         "SavesAPickle", "SavesAnObjectArray", "ReadsOutside", "LoadsDifferently", "UnpicklesOnLoad",
         "WrongLengthSometimes", "LoadReturnsBase", "LoadRaises", "SaveRaises", "FitRaises", "BadTask",
         "ProbaWrongShape", "ProbaWrongColumns", "Unstable", "NumericMean", "MatrixNotImplemented"]


def allow_broken(monkeypatch) -> None:
    """Every class of tests/models/broken.py allowed, and recorded as package broken-models 1.0
    (they are not an installed package); the example team model and a class no image has too."""
    from ml.models import classes

    monkeypatch.setenv(classes.ENVIRONMENT, ",".join(f"{n}={BROKEN}:{n}" for n in NAMES)
                       + ",missing=not_installed_package.models:Model,keywords=keyword_moderation.model:KeywordModel")
    real = classes.package_of
    monkeypatch.setattr(classes, "package_of",
                        lambda cls: ("broken-models", "1.0") if cls.__module__ == BROKEN else real(cls))


@pytest.fixture(autouse=True)
def broken_models_allowed(monkeypatch):
    allow_broken(monkeypatch)
