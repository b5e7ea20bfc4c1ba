"""A compiled QuickScorer for HistGradientBoosting forests: scikit-learn's raw scores bit for bit,
several times faster, for batch scoring and for the server alike.

scikit-learn predicts such a model tree by tree, one Cython call per tree, each row walking the
tree node by node: ~55 ns per tree per row, a chain of dependent loads and branches the CPU
cannot overlap. QuickScorer (Lucchese et al., SIGIR 2015) turns the walk inside out: a tree's
leaves are the bits of a word; a split whose test is false for a row (the row goes right) clears
the bits of the leaves on its left, and the row's leaf is the lowest bit left. The false splits
on a feature are a prefix of its splits sorted by threshold, so a row costs one short scan per
feature and a run of independent AND operations, over tables that stay in the CPU's cache
(16 bytes a split). Each row adds its trees' leaf values in the trees' order, starting
from scikit-learn's baseline, as scikit-learn does, so the sums are the same bits.

Compiled with numba (``nogil``; cached beside this file, or in ``NUMBA_CACHE_DIR``, where
writable); rows are split over threads. Models this does not cover (categorical splits, a tree
of more than 64 leaves) or a machine without numba keep scikit-learn's own path: ``accelerate``
returns None and changes nothing.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

log = logging.getLogger("ml.tree_engine")

MAX_LEAVES = 64  # a tree's leaves are the bits of one uint64
ROWS_PER_THREAD = 8_192  # a batch is split over threads only where each gets this many rows
_DEBRUIJN = 0x03F79D71B4CB0A89
_DEBRUIJN_INDEX = np.zeros(64, np.int64)
for _bit in range(64):
    _DEBRUIJN_INDEX[((1 << _bit) * _DEBRUIJN & 0xFFFFFFFFFFFFFFFF) >> 58] = _bit

_lock = threading.Lock()
_kernel: Any = None


class Unsupported(ValueError):
    """The estimator is outside what the engine evaluates exactly; scikit-learn's path stays."""


def _score(X, thresholds, tree, mask, start, nan_tree, nan_mask, nan_start, leaf_values, debruijn, full, out):
    """out[r] += the values of row r's leaves, tree by tree in order (numba-compiled)."""
    rows, width = X.shape
    trees = leaf_values.shape[0]
    words = np.empty(trees, mask.dtype)
    for r in range(rows):
        words[:] = full
        for f in range(width):
            x = X[r, f]
            if x != x:  # NaN: the splits that send missing values right
                for j in range(nan_start[f], nan_start[f + 1]):
                    words[nan_tree[j]] &= nan_mask[j]
            else:  # the splits whose threshold is below x; each feature's list ends with +inf
                i = start[f]
                while thresholds[i] < x:
                    words[tree[i]] &= mask[i]
                    i += 1
        acc = out[r]
        for t in range(trees):
            w = np.uint64(words[t])
            low = w & (~w + np.uint64(1))  # the lowest bit still set: the row's leaf
            acc += leaf_values[t, debruijn[(low * np.uint64(_DEBRUIJN)) >> np.uint64(58)]]
        out[r] = acc


def _compiled():
    global _kernel
    with _lock:
        if _kernel is None:
            import numba

            try:
                _kernel = numba.njit(nogil=True, cache=True, boundscheck=False)(_score)
            except RuntimeError:  # no writable cache location: compile in each process
                _kernel = numba.njit(nogil=True, boundscheck=False)(_score)
        return _kernel


class _Forest:
    """QuickScorer tables of one output's trees (all trees of a regressor or binary classifier,
    one class's trees of a multiclass one)."""

    def __init__(self, predictors: list, width: int):
        splits = []  # (feature, threshold, tree, mask, missing goes left)
        self.leaf_values = np.zeros((len(predictors), MAX_LEAVES))
        self.leaves = 0  # the most leaves of any tree
        for t, predictor in enumerate(predictors):
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                raise Unsupported("a categorical split")
            leaves: list[int] = []

            def visit(i: int) -> tuple[int, int]:
                """Number the leaves left to right; returns the first and last leaf under node i."""
                if nodes["is_leaf"][i]:
                    leaves.append(i)
                    return len(leaves) - 1, len(leaves) - 1
                first, middle = visit(int(nodes["left"][i]))
                _, last = visit(int(nodes["right"][i]))
                if len(leaves) <= MAX_LEAVES:
                    cut = ((1 << (middle + 1)) - 1) ^ ((1 << first) - 1)  # the leaves on its left
                    splits.append((int(nodes["feature_idx"][i]), float(nodes["num_threshold"][i]), t,
                                   ~cut & 0xFFFFFFFFFFFFFFFF, bool(nodes["missing_go_to_left"][i])))
                return first, last

            visit(0)
            if len(leaves) > MAX_LEAVES:
                raise Unsupported(f"a tree of {len(leaves)} leaves (at most {MAX_LEAVES})")
            self.leaf_values[t, :len(leaves)] = nodes["value"][leaves]
            self.leaves = max(self.leaves, len(leaves))
        if any(f >= width for f, *_ in splits):
            raise Unsupported("a split on a feature beyond the input's width")
        # per feature: its splits by threshold, then a +inf sentinel that clears nothing
        thresholds, tree, mask, start = [], [], [], [0]
        nan_tree, nan_mask, nan_start = [], [], [0]
        by_feature: dict[int, list] = {}
        for split in splits:
            by_feature.setdefault(split[0], []).append(split)
        for f in range(width):
            mine = sorted(by_feature.get(f, []), key=lambda s: (s[1], s[2]))
            thresholds += [s[1] for s in mine] + [np.inf]
            tree += [s[2] for s in mine] + [0]
            mask += [s[3] for s in mine] + [0xFFFFFFFFFFFFFFFF]
            start.append(len(thresholds))
            right = [s for s in mine if not s[4]]  # where a missing value goes right
            nan_tree += [s[2] for s in right]
            nan_mask += [s[3] for s in right]
            nan_start.append(len(nan_tree))
        # 32-bit words where every tree has at most 32 leaves (HistGradientBoosting's default is 31)
        word = np.uint32 if self.leaves <= 32 else np.uint64
        index = np.uint16 if len(predictors) < 2 ** 16 else np.int32
        self.full = word(np.iinfo(word).max)
        self.thresholds = np.array(thresholds, np.float64)
        self.tree = np.array(tree, index)
        self.mask = np.array(mask, np.uint64).astype(word)
        self.start = np.array(start, np.int64)
        self.nan_tree = np.array(nan_tree, index)
        self.nan_mask = np.array(nan_mask, np.uint64).astype(word)
        self.nan_start = np.array(nan_start, np.int64)

    def add_to(self, X: np.ndarray, out: np.ndarray) -> None:
        _compiled()(X, self.thresholds, self.tree, self.mask, self.start, self.nan_tree, self.nan_mask,
                    self.nan_start, self.leaf_values, _DEBRUIJN_INDEX, self.full, out)


class CompiledForests:
    """Every output's forest of one fitted estimator; ``add_raw`` does what scikit-learn's
    ``_predict_iterations`` does for rows of numbers."""

    def __init__(self, estimator):
        predictors = getattr(estimator, "_predictors", None)
        if not predictors:
            raise Unsupported("not a fitted HistGradientBoosting model")
        width = int(estimator.n_features_in_)
        self.forests = [_Forest([it[k] for it in predictors], width)
                        for k in range(len(predictors[0]))]
        self.predictors = predictors

    def add_raw(self, X: np.ndarray, raw: np.ndarray, n_threads: int = 1) -> None:
        X = np.asarray(X, dtype=np.float64)
        if not (X.flags.c_contiguous or X.flags.f_contiguous):
            X = np.ascontiguousarray(X)
        parts = max(1, min(n_threads, len(X) // ROWS_PER_THREAD))
        for k, forest in enumerate(self.forests):
            column = np.ascontiguousarray(raw[:, k])
            if parts == 1:
                forest.add_to(X, column)
            else:
                bounds = np.linspace(0, len(X), parts + 1).astype(int)
                with ThreadPoolExecutor(parts) as pool:
                    list(pool.map(lambda ab: forest.add_to(X[ab[0]:ab[1]], column[ab[0]:ab[1]]),
                                  zip(bounds[:-1], bounds[1:])))
            raw[:, k] = column


def accelerate(model: Any) -> Any | None:
    """Give a fitted HistGradientBoosting estimator (alone or the last step of a Pipeline) the
    compiled engine for every batch of numbers; returns the estimator changed, or None (nothing
    changed) for any other model, one the engine does not cover, or no numba.
    ``del estimator._predict_iterations`` undoes it."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline

    estimator = model.steps[-1][1] if isinstance(model, Pipeline) else model
    if not isinstance(estimator, (HistGradientBoostingClassifier, HistGradientBoostingRegressor)):
        return None
    if "_predict_iterations" in vars(estimator):  # accelerated already
        return estimator
    try:
        engine = CompiledForests(estimator)
        _compiled()
    except Unsupported as exc:
        log.info("scikit-learn's own walk for this model: %s", exc)
        return None
    except ImportError:
        log.warning("numba is not installed: scikit-learn's own walk for this model")
        return None
    original = estimator._predict_iterations  # the bound method of scikit-learn's class

    def predict_iterations(X, predictors_now, raw_predictions, is_binned, n_threads):
        if is_binned or predictors_now is not engine.predictors:
            return original(X, predictors_now, raw_predictions, is_binned, n_threads)
        engine.add_raw(X, raw_predictions, n_threads)
        return None

    estimator._predict_iterations = predict_iterations  # this instance only
    return estimator


def warm() -> None:
    """Compile the kernel for both word sizes now (into numba's on-disk cache where writable), so
    the first batch or request after an install does not pay for it (``make venv`` calls this)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    for leaves in (4, 40):
        model = HistGradientBoostingRegressor(max_iter=2, max_leaf_nodes=leaves, min_samples_leaf=2)
        forests = CompiledForests(model.fit(X, X[:, 0]))
        for order in ("C", "F"):  # row-major requests, column-major batches
            forests.add_raw(np.asarray(X[:2], order=order), np.zeros((2, 1), order="F"))


if __name__ == "__main__":
    warm()
