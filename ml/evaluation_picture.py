"""The evaluation picture saved beside a model: one self-contained SVG.

Classifiers: the held-out confusion matrix, and the ROC curve when the task is binary and the
model gives probabilities. Regressors: residuals against predictions. SVG written by hand
(no plotting library in the trainer image, nothing to import at start): a browser shows it
as it is, and its bytes are deterministic for the same model, so the digest is too.
"""

from __future__ import annotations

from html import escape

PICTURE_NAME = "evaluation.svg"
_W, _H, _PAD = 320, 300, 44
_MAX_POINTS = 400


def _svg(panels: list[str], title: str) -> str:
    width = _W * len(panels)
    body = "".join(f'<g transform="translate({i * _W},24)">{p}</g>' for i, p in enumerate(panels))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{_H + 24}" '
            f'viewBox="0 0 {width} {_H + 24}" font-family="sans-serif" font-size="11">'
            f'<title>{escape(title)}</title><text x="8" y="16" font-size="13">{escape(title)}</text>{body}</svg>')


def _axes(x_label: str, y_label: str) -> str:
    x0, y0, x1, y1 = _PAD, _H - _PAD, _W - 12, 12
    return (f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#333"/>'
            f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#333"/>'
            f'<text x="{(x0 + x1) / 2}" y="{_H - 10}" text-anchor="middle">{escape(x_label)}</text>'
            f'<text x="12" y="{(y0 + y1) / 2}" text-anchor="middle" '
            f'transform="rotate(-90 12 {(y0 + y1) / 2})">{escape(y_label)}</text>')


def _scale(values, lo: float, hi: float, out_lo: float, out_hi: float) -> list[float]:
    span = (hi - lo) or 1.0
    return [out_lo + (float(v) - lo) / span * (out_hi - out_lo) for v in values]


def confusion_panel(y_true, y_pred, classes) -> str:
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(y_true, y_pred, labels=list(classes))
    n = len(classes)
    size = min(_W - _PAD - 12, _H - _PAD - 12) / max(n, 1)
    top = matrix.max() or 1
    cells = []
    for i in range(n):
        for j in range(n):
            shade = int(235 - 180 * matrix[i, j] / top)
            x, y = _PAD + j * size, 12 + i * size
            cells.append(f'<rect class="cell" x="{x:.1f}" y="{y:.1f}" width="{size:.1f}" height="{size:.1f}" '
                         f'fill="rgb({shade},{shade},255)" stroke="#fff"/>'
                         f'<text x="{x + size / 2:.1f}" y="{y + size / 2 + 4:.1f}" text-anchor="middle">'
                         f'{int(matrix[i, j])}</text>')
    labels = "".join(
        f'<text x="{_PAD + (k + 0.5) * size:.1f}" y="{12 + n * size + 14:.1f}" text-anchor="middle">'
        f'{escape(str(c))}</text>' for k, c in enumerate(classes))
    return (f'<g class="confusion-matrix">{"".join(cells)}{labels}'
            f'<text x="{_W / 2}" y="{_H - 10}" text-anchor="middle">predicted (rows: true class)</text></g>')


def roc_panel(y_true, scores, positive) -> str:
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y_true, scores, pos_label=positive)
    auc = roc_auc_score(y_true == positive, scores)
    xs = _scale(fpr, 0, 1, _PAD, _W - 12)
    ys = _scale(tpr, 0, 1, _H - _PAD, 12)
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    return (f'<g class="roc">{_axes("false positive rate", "true positive rate")}'
            f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - 12}" y2="12" stroke="#bbb" stroke-dasharray="4"/>'
            f'<polyline points="{points}" fill="none" stroke="#d9480f" stroke-width="2"/>'
            f'<text x="{_W - 16}" y="{_H - _PAD - 8}" text-anchor="end">ROC AUC {auc:.3f}</text></g>')


def residuals_panel(y_true, y_pred) -> str:
    import numpy as np

    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    step = max(1, len(y_pred) // _MAX_POINTS)
    pred, resid = y_pred[::step], (y_true - y_pred)[::step]
    bound = float(np.abs(resid).max()) or 1.0
    xs = _scale(pred, float(pred.min()), float(pred.max()), _PAD, _W - 12)
    ys = _scale(resid, -bound, bound, _H - _PAD, 12)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="#1c7ed6" fill-opacity="0.6"/>'
                   for x, y in zip(xs, ys))
    zero = (_H - _PAD + 12) / 2
    return (f'<g class="residuals">{_axes("predicted", "true - predicted")}'
            f'<line x1="{_PAD}" y1="{zero}" x2="{_W - 12}" y2="{zero}" stroke="#bbb"/>{dots}</g>')


def evaluation_svg(y, pred, proba, classes, task: str, title: str) -> str:
    """The picture of a model's held-out predictions ``pred`` (and class probabilities ``proba``,
    columns in ``classes`` order, or None) against the true ``y``: any model, built-in or not."""
    if task == "regression":
        return _svg([residuals_panel(y, pred)], title)
    classes = list(classes)
    panels = [confusion_panel(y, pred, classes)]
    if len(classes) == 2 and proba is not None and len(set(y.tolist())) == 2:
        panels.append(roc_panel(y, proba[:, 1], classes[1]))
    return _svg(panels, title)
