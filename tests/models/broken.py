"""Models that break the interface's contract, one way each, on top of one that keeps it.

They live in the tests, not in an installed package: ``tests/models/conftest.py`` records them
as the package ``broken-models`` 1.0 so the trainer and the server can check their version.
"""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path

import numpy as np

from ml.models import Model


class MajorityModel(Model):
    """Keeps the contract: predicts the most frequent label of training for every row."""

    task = "classification"

    def __init__(self):
        self.label = None

    def fit(self, features, target) -> None:
        values, counts = np.unique(np.asarray(target).astype(str), return_counts=True)
        self.label = str(values[counts.argmax()])
        self._classes = sorted(values.tolist())

    def predict(self, features):
        return [self.label] * features.num_rows

    @property
    def classes(self):
        return self._classes

    def save(self, directory: Path) -> None:
        (directory / "label.json").write_text(json.dumps({"label": self.label, "classes": self._classes}))

    @classmethod
    def load(cls, directory: Path):
        model = cls()
        state = json.loads((directory / "label.json").read_text())
        model.label, model._classes = state["label"], state["classes"]
        return model


class WrongLength(MajorityModel):
    def predict(self, features):
        return [self.label] * (features.num_rows - 1)


class RaisesInPredict(MajorityModel):
    def predict(self, features):
        raise RuntimeError("the model's own bug")


class RaisesOnSomeTexts(MajorityModel):
    """Passes training; at serving time a request holding the text "boom" makes it raise."""

    def predict(self, features):
        if "boom" in features.column(features.column_names[0]).to_pylist():
            raise RuntimeError("cannot handle boom")
        return super().predict(features)


class TooSlow(MajorityModel):
    def __init__(self, seconds: float = 0.0):
        super().__init__()
        self.seconds = seconds

    def predict(self, features):
        time.sleep(self.seconds)
        return super().predict(features)

    def save(self, directory: Path) -> None:
        super().save(directory)
        (directory / "seconds.json").write_text(json.dumps(self.seconds))

    @classmethod
    def load(cls, directory: Path):
        model = super().load(directory)
        model.seconds = json.loads((directory / "seconds.json").read_text())
        return model


class SlowAfterLoad(TooSlow):
    """Fast in training, slow once loaded: what only the server's own check can catch."""

    @classmethod
    def load(cls, directory: Path):
        model = super().load(directory)
        model.seconds = 2.0
        return model


class SavesAPickle(MajorityModel):
    def save(self, directory: Path) -> None:
        (directory / "state.bin").write_bytes(pickle.dumps({"label": self.label}))


class SavesAnObjectArray(MajorityModel):
    def save(self, directory: Path) -> None:
        super().save(directory)
        np.save(directory / "extra.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)


class ReadsOutside(MajorityModel):
    """Its load reads a file beside its folder (say, another model's, or a secret)."""

    @classmethod
    def load(cls, directory: Path):
        target = os.environ.get("BROKEN_MODEL_READS", "/etc/hostname")
        try:
            Path(target).read_text()
        except Exception:  # noqa: BLE001 - a model that swallows the refusal is still caught
            pass
        return super().load(directory)


class LoadsDifferently(MajorityModel):
    @classmethod
    def load(cls, directory: Path):
        model = super().load(directory)
        model.label = "something else"
        return model


class UnpicklesOnLoad(MajorityModel):
    """Saves data, but its load unpickles a file it finds there (a crafted artifact's)."""

    @classmethod
    def load(cls, directory: Path):
        model = super().load(directory)
        extra = directory / "extra.bin"
        if extra.exists():
            pickle.loads(extra.read_bytes())
        return model


class WrongLengthSometimes(MajorityModel):
    """Passes training; a request holding the text "short" gets one output too few."""

    def predict(self, features):
        out = super().predict(features)
        return out[:-1] if "short" in features.column(features.column_names[0]).to_pylist() else out


class LoadReturnsBase(MajorityModel):
    @classmethod
    def load(cls, directory: Path):
        return MajorityModel.load.__func__(MajorityModel, directory)


class LoadRaises(MajorityModel):
    @classmethod
    def load(cls, directory: Path):
        raise KeyError("label")


class SaveRaises(MajorityModel):
    def save(self, directory: Path) -> None:
        raise OSError("disk full")


class FitRaises(MajorityModel):
    def fit(self, features, target) -> None:
        raise ZeroDivisionError("division by zero")


class BadTask(MajorityModel):
    task = "ranking"


class ProbaWrongShape(MajorityModel):
    def predict_proba(self, features):
        return np.ones(features.num_rows)


class ProbaWrongColumns(MajorityModel):
    def predict_proba(self, features):
        return np.full((features.num_rows, 3), 1 / 3)


class Unstable(MajorityModel):
    """Answers differ from call to call."""

    def predict(self, features):
        rng = np.random.default_rng()
        return [self._classes[i] for i in rng.integers(0, len(self._classes), features.num_rows)]


class NumericMean(Model):
    """A regression on numbers with no predict_matrix: the server gives it an Arrow table."""

    task = "regression"
    accepts = frozenset({"number", "boolean"})

    def fit(self, features, target) -> None:
        self.mean = float(np.mean(target))

    def predict(self, features):
        return [self.mean] * features.num_rows

    def save(self, directory: Path) -> None:
        (directory / "mean.json").write_text(json.dumps(self.mean))

    @classmethod
    def load(cls, directory: Path):
        model = cls()
        model.mean = json.loads((directory / "mean.json").read_text())
        return model


class MatrixNotImplemented(NumericMean):
    def predict_matrix(self, matrix):
        raise NotImplementedError
