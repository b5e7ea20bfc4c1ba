"""A vectorised tree walk for HistGradientBoosting models on the few rows a request carries.

scikit-learn predicts a HistGradientBoosting model tree by tree: one Python-level call into
its Cython predictor per tree, so a 100-tree model spends ~0.6 ms of a ~0.85 ms single-row
predict in that loop (benchmarks/serving_profile.py). Here every tree of the model is one set
of flat node arrays, and all trees step down together, one NumPy pass per depth level. Only the
loop is replaced: input validation and turning raw scores into classes or values stay
scikit-learn's. The leaf values are added in scikit-learn's order (``np.add.accumulate`` is
sequential), so predictions are bit-for-bit the same; tests/serving/test_fast_trees.py checks
it. Models with categorical splits, and batches above ``MAX_ROWS`` (where scikit-learn's
multi-threaded Cython walk wins), keep scikit-learn's own path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# above this many rows scikit-learn's walk is faster (a 100-tree model here: 32 rows 0.59 ms
# against 0.92, 64 rows 1.5 ms against 1.2)
MAX_ROWS = 32


class _Forest:
    """The trees of one output (class) in iteration order, as flat node arrays."""

    def __init__(self, predictors: list) -> None:
        nodes = [p.nodes for p in predictors]
        offsets = np.cumsum([0] + [len(n) for n in nodes[:-1]])
        flat = np.concatenate(nodes)
        self.roots = offsets.astype(np.intp)
        shift = np.repeat(offsets, [len(n) for n in nodes])
        self.feature = flat["feature_idx"].astype(np.intp)
        self.threshold = flat["num_threshold"].astype(np.float64)
        self.missing_left = flat["missing_go_to_left"].astype(bool)
        self.is_leaf = flat["is_leaf"].astype(bool)
        self.left = (flat["left"] + shift).astype(np.intp)
        self.right = (flat["right"] + shift).astype(np.intp)
        self.value = flat["value"].astype(np.float64)
        self.depth = int(flat["depth"].max()) + 1

    def leaf_values(self, X: np.ndarray) -> np.ndarray:
        """(rows, trees): the value of the leaf each row reaches in each tree."""
        node = np.broadcast_to(self.roots, (X.shape[0], len(self.roots))).copy()
        rows = np.arange(X.shape[0])[:, None]
        for _ in range(self.depth):
            leaf = self.is_leaf[node]
            if leaf.all():
                break
            x = X[rows, self.feature[node]]
            go_left = np.where(np.isnan(x), self.missing_left[node], x <= self.threshold[node])
            node = np.where(leaf, node, np.where(go_left, self.left[node], self.right[node]))
        return self.value[node]


def accelerate(model: Any) -> Any | None:
    """Give a fitted HistGradientBoosting estimator (alone or the last step of a Pipeline) the
    vectorised walk for small batches; returns the estimator changed, or None (nothing changed)
    for any other model or one with categorical splits. ``del estimator._predict_iterations``
    undoes it."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline

    estimator = model.steps[-1][1] if isinstance(model, Pipeline) else model
    if not isinstance(estimator, (HistGradientBoostingClassifier, HistGradientBoostingRegressor)):
        return None
    predictors = getattr(estimator, "_predictors", None)
    if not predictors or any(p.nodes["is_categorical"].any() for it in predictors for p in it):
        return None
    forests = [_Forest([it[k] for it in predictors]) for k in range(len(predictors[0]))]
    original = estimator._predict_iterations  # the bound method of scikit-learn's class

    def predict_iterations(X, predictors_now, raw_predictions, is_binned, n_threads):
        if is_binned or predictors_now is not predictors or X.shape[0] > MAX_ROWS:
            return original(X, predictors_now, raw_predictions, is_binned, n_threads)
        for k, forest in enumerate(forests):
            leaves = forest.leaf_values(X)
            start = raw_predictions[:, k][:, None]
            raw_predictions[:, k] = np.add.accumulate(np.hstack([start, leaves]), axis=1)[:, -1]
        return None

    estimator._predict_iterations = predict_iterations  # this instance only
    return estimator
