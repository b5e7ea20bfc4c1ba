"""A vectorised tree walk for HistGradientBoosting models on the few rows a request carries.

scikit-learn predicts a HistGradientBoosting model tree by tree: one Python-level call into
its Cython predictor per tree, so a 100-tree model spends ~0.6 ms of a ~0.85 ms single-row
predict in that loop (benchmarks/serving_profile.py). Here every tree of the model is one set
of flat node arrays, and all trees step down together, a few NumPy gathers per depth level. Only the
loop is replaced: input validation and turning raw scores into classes or values stay
scikit-learn's. The leaf values are added in scikit-learn's order (``np.add.accumulate`` is
sequential), so predictions are bit-for-bit the same; tests/serving/test_fast_trees.py checks
it. Models with categorical splits, and batches above ``MAX_ROWS`` (where scikit-learn's
multi-threaded Cython walk wins), keep scikit-learn's own path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# above this many rows scikit-learn's walk is faster (the benchmark's 100-tree model, one
# thread: 32 rows 0.32 ms against 0.43, 64 rows 0.54 ms against 0.46)
MAX_ROWS = 32


class _Forest:
    """The trees of one output (class) in iteration order, as flat node arrays in which a leaf
    is its own child: every row takes ``depth`` steps and stays on its leaf once there, so a
    step is a few gathers with no test for leaves."""

    def __init__(self, predictors: list) -> None:
        nodes = [p.nodes for p in predictors]
        offsets = np.cumsum([0] + [len(n) for n in nodes[:-1]])
        flat = np.concatenate(nodes)
        shift = np.repeat(offsets, [len(n) for n in nodes])
        leaf = flat["is_leaf"].astype(bool)
        itself = np.arange(len(flat))
        self.roots = offsets.astype(np.intp)
        self.feature = np.where(leaf, 0, flat["feature_idx"]).astype(np.intp)
        # a leaf's comparison is x <= +inf: true for numbers, false for NaN; both children are itself
        self.threshold = np.where(leaf, np.inf, flat["num_threshold"]).astype(np.float64)
        self.missing_left = flat["missing_go_to_left"].astype(bool)
        # children[1, node] when the row goes left, children[0, node] when it goes right
        self.children = np.stack([np.where(leaf, itself, flat["right"] + shift),
                                  np.where(leaf, itself, flat["left"] + shift)]).astype(np.intp)
        self.value = flat["value"].astype(np.float64)
        self.depth = int(flat["depth"].max())

    def leaf_values(self, X: np.ndarray) -> np.ndarray:
        """(rows, trees): the value of the leaf each row reaches in each tree."""
        rows, width = X.shape
        trees = len(self.roots)
        flat_x = np.ascontiguousarray(X).ravel()
        node = np.tile(self.roots, rows)
        row_start = np.repeat(np.arange(rows, dtype=np.intp) * width, trees)
        has_missing = bool(np.isnan(flat_x).any())
        for _ in range(self.depth):
            x = flat_x[row_start + self.feature[node]]
            go_left = x <= self.threshold[node]
            if has_missing:  # NaN compares false: it goes where training sent missing values
                go_left |= np.isnan(x) & self.missing_left[node]
            node = self.children[go_left.view(np.int8), node]
        return self.value[node].reshape(rows, trees)


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
