"""The built-in ``text`` model: a moderation-style text classifier.

Each text column gives word n-grams and character n-grams (``char_wb``: text without spaces,
Japanese say, still gives n-grams), hashed into fixed-width count vectors (``HashingVectorizer``:
no vocabulary to store or grow), weighted by TF-IDF over all of them, beside any numeric columns
(standardised), into a logistic regression. A list-of-strings column is one text of its items.
What it learns is three arrays and a JSON file: the IDF weights, the coefficients and intercepts,
the columns' settings; loading rebuilds the same scikit-learn objects from them, so predictions
are scikit-learn's own.

Hashing a text is pure Python (scikit-learn's analyzers), so a large table's texts are hashed in
chunks by one process per core the process may use (``n_jobs``): the rows are independent, the
chunks' counts stacked in order are the same bits as one process's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ml.models.interface import Model, ModelContractError

PARALLEL_ROWS = 100_000  # below this, starting the workers costs about what they save
CHUNK_ROWS = 50_000  # rows a worker hashes per task: small enough to balance, large enough to amortise


def _hash_chunk(settings: dict, texts: list[str]):
    """One chunk's counts under every analyzer, side by side (a worker process's task)."""
    import scipy.sparse as sp

    return sp.hstack([v.transform(texts) for v in _vectorizers(settings)], format="csr")


def _vectorizers(settings: dict):
    from sklearn.feature_extraction.text import HashingVectorizer

    s = settings
    common = {"n_features": 1 << s["hash_bits"], "alternate_sign": False, "norm": None, "lowercase": s["lowercase"]}
    return [HashingVectorizer(analyzer="word", ngram_range=tuple(s["word_ngrams"]), token_pattern=r"(?u)\b\w+\b",
                              **common),
            HashingVectorizer(analyzer="char_wb", ngram_range=tuple(s["char_ngrams"]), **common)]


def _pair(value, name: str) -> tuple[int, int]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2 or not all(isinstance(v, int) for v in value)
            or not 1 <= value[0] <= value[1]):
        raise ValueError(f"{name} must be [low, high] with 1 <= low <= high, got {value!r}")
    return int(value[0]), int(value[1])


class TextClassifier(Model):
    accepts = frozenset({"string", "strings", "number", "boolean"})
    task = "classification"
    CONFIG, IDF, COEF, INTERCEPT = "text_model.json", "idf.npy", "coef.npy", "intercept.npy"

    def __init__(self, text_columns: list[str] | None = None, word_ngrams=(1, 2), char_ngrams=(2, 4),
                 hash_bits: int = 18, lowercase: bool = True, C: float = 10.0, max_iter: int = 200,
                 class_weight: str | None = None, seed: int = 42, n_jobs: int | None = None):
        if text_columns is not None and (not isinstance(text_columns, list) or not text_columns
                                         or not all(isinstance(c, str) for c in text_columns)):
            raise ValueError(f"text_columns must be a non-empty list of column names, or null for every string "
                             f"column; got {text_columns!r}")
        if not isinstance(hash_bits, int) or not 10 <= hash_bits <= 24:
            raise ValueError(f"hash_bits must be an integer from 10 to 24, got {hash_bits!r}")
        if class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be null or 'balanced', got {class_weight!r}")
        if isinstance(C, bool) or not isinstance(C, (int, float)) or C <= 0:
            raise ValueError(f"C must be a positive number, got {C!r}")
        if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1):
            raise ValueError(f"n_jobs must be a positive integer, or null for every usable core; got {n_jobs!r}")
        self.n_jobs = n_jobs  # how it runs here, not what it learns: not saved
        self.settings: dict[str, Any] = {
            "text_columns": text_columns, "word_ngrams": list(_pair(word_ngrams, "word_ngrams")),
            "char_ngrams": list(_pair(char_ngrams, "char_ngrams")), "hash_bits": hash_bits,
            "lowercase": bool(lowercase), "C": float(C), "max_iter": int(max_iter), "class_weight": class_weight,
            "seed": int(seed),
        }
        self.columns: dict[str, list[str]] = {}
        self.scaling: dict[str, list[float]] = {}
        self.tfidf = self.classifier = None

    def declare_features(self, schema):
        schema = super().declare_features(schema)
        named = self.settings["text_columns"]
        texts = [f.name for f in schema.features if f.kind in ("string", "strings")]
        if named is not None:
            wrong = [n for n in named if n not in texts]
            if wrong:
                raise ModelContractError(f"text_columns {wrong} are not string columns of the snapshot; its string "
                                         f"columns are {texts}")
            texts = list(named)
        if not texts:
            raise ModelContractError("the text model needs at least one string column; the features are "
                                     f"{[f'{f.name} ({f.kind})' for f in schema.features]}")
        self.columns = {"text": texts, "numeric": [f.name for f in schema.features if f.name not in texts
                                                   and f.kind in ("number", "boolean")]}
        unused = [f.name for f in schema.features if f.name not in texts and f.name not in self.columns["numeric"]]
        if unused:
            raise ModelContractError(f"string columns {unused} are not among text_columns: list them there, "
                                     f"or exclude them")
        return schema

    # -- the features ---------------------------------------------------------------------------
    def _vectorizers(self):
        return _vectorizers(self.settings)

    @staticmethod
    def _texts(column) -> list[str]:
        import pyarrow as pa

        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            return [" ".join(v for v in items if v) if items else "" for items in column.to_pylist()]
        return [v if v is not None else "" for v in column.to_pylist()]

    def _counts(self, table):
        """The texts' hashed counts, each column's analyzers side by side: a large table's (the
        trainer's, a scoring chunk's) in worker processes, a request's here, with the analyzers
        built once."""
        import scipy.sparse as sp

        workers = 1
        if table.num_rows >= PARALLEL_ROWS:
            from joblib import cpu_count  # affinity and a container's CPU quota both count

            workers = min(self.n_jobs or cpu_count(), -(-table.num_rows // CHUNK_ROWS))
        blocks = []
        for name in self.columns["text"]:
            texts = self._texts(table.column(name))  # once per column, for every analyzer
            if workers > 1:
                blocks.append(self._counts_in_parallel(texts, workers))
            else:
                blocks += [hasher.transform(analyzer(doc) for doc in texts) for analyzer, hasher in self._prepared()]
        return blocks[0] if len(blocks) == 1 else sp.hstack(blocks, format="csr")  # no copy of one block

    def _counts_in_parallel(self, texts: list[str], workers: int):
        """``_hash_chunk`` of every CHUNK_ROWS texts in ``workers`` processes (joblib's loky, as
        scikit-learn's own ``n_jobs``: spawned, not forked, reused between calls, and no
        ``__main__`` guard asked of the caller), stacked in row order."""
        import scipy.sparse as sp
        from joblib import Parallel, delayed

        chunks = [texts[i:i + CHUNK_ROWS] for i in range(0, len(texts), CHUNK_ROWS)]
        parts = Parallel(n_jobs=workers)(delayed(_hash_chunk)(self.settings, chunk) for chunk in chunks)
        return sp.vstack(parts, format="csr")

    def _numeric(self, table):
        import numpy as np

        from ml.snapshots import float_values

        names = self.columns["numeric"]
        values = np.column_stack([float_values(table.column(n)) for n in names])
        scaled = (values - np.asarray(self.scaling["mean"])) / np.asarray(self.scaling["scale"])
        return np.nan_to_num(scaled, nan=0.0)  # missing: the training mean

    def _prepared(self):
        """(analyzer, hasher) of each vectorizer, built once: HashingVectorizer.transform builds
        both on every call (a third of a single text's predict)."""
        if getattr(self, "_hashers", None) is None:
            self._hashers = [(v.build_analyzer(), v._get_hasher()) for v in self._vectorizers()]
        return self._hashers

    def _serving_matrix(self, table):
        """The same matrix as ``_matrix`` (the same operations in the same order, so the same
        bits), without scikit-learn's input validation on each call: the texts' hashed counts,
        then TfidfTransformer.transform's own steps (sublinear tf, idf, l2 rows)."""
        import numpy as np
        import scipy.sparse as sp
        from sklearn.utils.sparsefuncs_fast import inplace_csr_row_normalize_l2

        last = getattr(self, "_last", None)
        if last is not None and last[0] is table:  # predict_proba right after predict on the same rows
            return last[1]
        matrix = self._counts(table)
        np.log(matrix.data, matrix.data)
        matrix.data += 1.0
        matrix.data *= self.tfidf.idf_[matrix.indices]
        inplace_csr_row_normalize_l2(matrix)
        if self.columns["numeric"]:
            matrix = sp.hstack([matrix, sp.csr_matrix(self._numeric(table))], format="csr")
        if table.num_rows > 1000:  # the trainer's held-out rows: vectorised once for both calls
            self._last = (table, matrix)
        return matrix

    def _matrix(self, table, counts=None):
        import scipy.sparse as sp

        matrix = self.tfidf.transform(self._counts(table) if counts is None else counts)
        if self.columns["numeric"]:
            matrix = sp.hstack([matrix, sp.csr_matrix(self._numeric(table))], format="csr")
        return matrix

    # -- the interface --------------------------------------------------------------------------
    def fit(self, features, target) -> None:
        import numpy as np
        from sklearn.feature_extraction.text import TfidfTransformer
        from sklearn.linear_model import LogisticRegression

        if not self.columns:
            from ml.models.interface import FeatureSchema

            self.declare_features(FeatureSchema.from_table(features))
        if self.columns["numeric"]:
            from ml.snapshots import float_values

            raw = np.column_stack([float_values(features.column(n)) for n in self.columns["numeric"]])
            mean, scale = np.nanmean(raw, axis=0), np.nanstd(raw, axis=0)
            self.scaling = {"mean": np.nan_to_num(mean).tolist(),
                            "scale": np.where(np.nan_to_num(scale) > 0, np.nan_to_num(scale), 1.0).tolist()}
        self.tfidf = TfidfTransformer(sublinear_tf=True)
        counts = self._counts(features)  # the texts are vectorised once
        self.tfidf.fit(counts)
        matrix = self._matrix(features, counts)
        del counts
        s = self.settings
        self.classifier = LogisticRegression(C=s["C"], max_iter=s["max_iter"], class_weight=s["class_weight"],
                                             random_state=s["seed"])
        self.classifier.fit(matrix, target)

    def predict(self, features):
        # LogisticRegression.predict's own arithmetic: decision_function, then the class index
        classifier = self.classifier
        scores = self._serving_matrix(features) @ classifier.coef_.T + classifier.intercept_
        indices = (scores[:, 0] > 0).astype(int) if scores.shape[1] == 1 else scores.argmax(axis=1)
        return classifier.classes_.take(indices)

    def predict_proba(self, features):
        proba = self.classifier.predict_proba(self._serving_matrix(features))
        self._last = None
        return proba

    @property
    def classes(self):
        return [c.item() if hasattr(c, "item") else c for c in self.classifier.classes_]

    def save(self, directory: Path) -> None:
        import numpy as np

        config = {"settings": self.settings, "columns": self.columns, "scaling": self.scaling,
                  "classes": self.classes, "n_features_in": int(self.classifier.n_features_in_)}
        (directory / self.CONFIG).write_text(json.dumps(config, indent=1, sort_keys=True, ensure_ascii=False))
        np.save(directory / self.IDF, self.tfidf.idf_, allow_pickle=False)
        np.save(directory / self.COEF, self.classifier.coef_, allow_pickle=False)
        np.save(directory / self.INTERCEPT, self.classifier.intercept_, allow_pickle=False)

    @classmethod
    def load(cls, directory: Path) -> TextClassifier:
        import numpy as np
        from sklearn.feature_extraction.text import TfidfTransformer
        from sklearn.linear_model import LogisticRegression

        config = json.loads((directory / cls.CONFIG).read_text())
        model = cls(**config["settings"])
        model.columns, model.scaling = config["columns"], config["scaling"]
        model.tfidf = TfidfTransformer(sublinear_tf=True)
        model.tfidf.idf_ = np.load(directory / cls.IDF, allow_pickle=False)
        classifier = LogisticRegression()
        classifier.coef_ = np.load(directory / cls.COEF, allow_pickle=False)
        classifier.intercept_ = np.load(directory / cls.INTERCEPT, allow_pickle=False)
        classifier.classes_ = np.asarray(config["classes"])
        classifier.n_features_in_ = config["n_features_in"]
        model.classifier = classifier
        return model
