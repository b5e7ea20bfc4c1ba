"""KeywordModel: a moderation classifier that is not a scikit-learn estimator.

Pre-processing: Unicode NFKC, lower case, words plus character bigrams (so text without spaces,
Japanese say, still has features), hashed into a fixed number of buckets. Model: multinomial
naive Bayes in NumPy. Post-processing: a text holding one of ``blocked_terms`` is the
``flag_label`` class whatever the model says. Saved as one ``.npz`` (read back with
``allow_pickle=False``) and one JSON file: data only.
"""

from __future__ import annotations

import json
import re
import unicodedata
import zlib
from pathlib import Path

import numpy as np

from ml.models import Model

WORD = re.compile(r"\w+")


class KeywordModel(Model):
    task = "classification"
    accepts = frozenset({"string"})

    def __init__(self, text_column: str = "text", blocked_terms: list[str] = (), flag_label: str = "flagged",
                 buckets: int = 1 << 16, smoothing: float = 0.5):
        self.settings = {"text_column": text_column, "blocked_terms": sorted(self.normalise(t) for t in blocked_terms),
                         "flag_label": flag_label, "buckets": int(buckets), "smoothing": float(smoothing)}

    @staticmethod
    def normalise(text: str) -> str:
        return unicodedata.normalize("NFKC", text or "").lower()

    def tokens(self, text: str) -> np.ndarray:
        text = self.normalise(text)
        grams = WORD.findall(text) + [text[i:i + 2] for i in range(len(text) - 1) if not text[i:i + 2].isspace()]
        return np.array([zlib.crc32(g.encode()) % self.settings["buckets"] for g in grams], dtype=np.int64)

    def texts(self, features) -> list[str]:
        return features.column(self.settings["text_column"]).to_pylist()

    def fit(self, features, target) -> None:
        target = np.asarray(target).astype(str)
        self._classes = sorted(set(target.tolist()))
        per_class = np.full((len(self._classes), self.settings["buckets"]), self.settings["smoothing"])
        for text, label in zip(self.texts(features), target):
            np.add.at(per_class[self._classes.index(label)], self.tokens(text), 1.0)
        self.log_prob = np.log(per_class / per_class.sum(axis=1, keepdims=True))
        self.log_prior = np.log(np.array([(target == c).mean() for c in self._classes]))

    def predict_proba(self, features):
        scores = np.stack([self.log_prob[:, self.tokens(t)].sum(axis=1) for t in self.texts(features)])
        scores = np.exp(scores + self.log_prior - (scores + self.log_prior).max(axis=1, keepdims=True))
        return scores / scores.sum(axis=1, keepdims=True)

    def predict(self, features):
        labels = np.array(self._classes, dtype=object)[self.predict_proba(features).argmax(axis=1)]
        for row, text in enumerate(self.texts(features)):  # the rule wins over the model
            if any(term in self.normalise(text) for term in self.settings["blocked_terms"]):
                labels[row] = self.settings["flag_label"]
        return labels

    @property
    def classes(self):
        return self._classes

    def save(self, directory: Path) -> None:
        np.savez(directory / "weights.npz", log_prob=self.log_prob, log_prior=self.log_prior)
        (directory / "settings.json").write_text(json.dumps({**self.settings, "classes": self._classes}))

    @classmethod
    def load(cls, directory: Path) -> KeywordModel:
        settings = json.loads((directory / "settings.json").read_text())
        classes = settings.pop("classes")
        model = cls(**settings)
        model._classes = classes
        with np.load(directory / "weights.npz", allow_pickle=False) as weights:
            model.log_prob, model.log_prior = weights["log_prob"], weights["log_prior"]
        return model
