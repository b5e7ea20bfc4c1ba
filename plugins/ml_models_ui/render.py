"""HTML for the page: server-rendered, no script (the UI's tab iframes run none), the chart as
inline SVG, the rollback as a plain form."""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from urllib.parse import quote

from ml_models_ui.data import Endpoint, Model

STYLE = """body{font-family:system-ui,sans-serif;margin:16px;color:#1a1a1a}table{border-collapse:collapse;margin:8px 0 20px}
td,th{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left;font-size:13px;vertical-align:top}
th{background:#f4f4f6}.alias{background:#e7f5ff;border-radius:4px;padding:1px 6px;margin-right:4px}
.ok{color:#2b8a3e}.bad{color:#c92a2a}.note{padding:8px 12px;border-radius:6px;background:#fff3bf}
.problem{padding:8px 12px;border-radius:6px;background:#ffe3e3}
code{font-size:12px}details{margin:4px 0}button{padding:4px 12px}"""


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h2>{escape(title)}</h2>{body}</body></html>")


def _when(ms_or_iso) -> str:
    if isinstance(ms_or_iso, (int, float)):
        return datetime.fromtimestamp(ms_or_iso / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return str(ms_or_iso or "")[:19].replace("T", " ")


def run_link(dag_id: str | None, run_id: str | None) -> str:
    """A link to the DAG run in the Airflow UI (the page runs inside its iframe: target the top)."""
    if not dag_id or not run_id:
        return ""
    return (f"<a target='_top' href='/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}'>"
            f"{escape(dag_id)} / {escape(run_id)}</a>")


def primary_metric(model: Model) -> str | None:
    names = {m for v in model.versions for m in v.metrics}
    for candidate in ("accuracy", "roc_auc", "f1", "r2", "rmse", "mae"):
        if candidate in names:
            return candidate
    return min(names) if names else None


# the values a metric can take: the chart's axis never leaves them (accuracy is not drawn to 1.002)
METRIC_RANGE = {"accuracy": (0.0, 1.0), "f1": (0.0, 1.0), "roc_auc": (0.0, 1.0), "r2": (None, 1.0),
                "rmse": (0.0, None), "mae": (0.0, None)}


def axis_range(metric: str, values: list[float]) -> tuple[float, float]:
    """The chart's lowest and highest value: the values with a tenth of their spread around them,
    kept inside the metric's possible range."""
    lo, hi = min(values), max(values)
    span = (hi - lo) or max(abs(hi), 1e-9) * 0.1
    lo, hi = lo - span * 0.1, hi + span * 0.1
    floor, ceiling = METRIC_RANGE.get(metric, (None, None))
    if floor is not None:
        lo = max(lo, floor)
    if ceiling is not None:
        hi = min(hi, ceiling)
    if hi <= lo:  # every value at the edge of the range (a perfect score, say)
        lo, hi = (hi - span, hi) if ceiling is not None and hi == ceiling else (lo, lo + span)
    return lo, hi


def metric_chart(model: Model, metric: str) -> str:
    """The metric of each version, oldest to newest, as an SVG line with one point per version."""
    points = [(v.version, v.metrics[metric]) for v in reversed(model.versions) if metric in v.metrics]
    if not points:
        return ""
    w, h, pad = 520, 200, 40
    lo, hi = axis_range(metric, [p[1] for p in points])
    step = (w - 2 * pad) / max(len(points) - 1, 1)
    xy = [(pad + i * step, h - pad - (value - lo) / (hi - lo) * (h - 2 * pad)) for i, (_, value) in enumerate(points)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    dots = "".join(
        f"<circle class='point' data-version='{escape(v)}' cx='{x:.1f}' cy='{y:.1f}' r='4' fill='#1c7ed6'>"
        f"<title>version {escape(v)}: {metric} {value:.4f}</title></circle>"
        f"<text x='{x:.1f}' y='{h - pad + 16}' text-anchor='middle' font-size='11'>v{escape(v)}</text>"
        for (x, y), (v, value) in zip(xy, points))
    return (f"<svg class='metric-chart' data-metric='{metric}' width='{w}' height='{h}' viewBox='0 0 {w} {h}' "
            f"xmlns='http://www.w3.org/2000/svg' font-family='sans-serif'>"
            f"<text x='{pad}' y='16' font-size='12'>{escape(model.name)}: held-out {metric} by version</text>"
            f"<text x='4' y='{pad}' font-size='10'>{hi:.3f}</text><text x='4' y='{h - pad}' font-size='10'>{lo:.3f}</text>"
            f"<line x1='{pad}' y1='{h - pad}' x2='{w - pad}' y2='{h - pad}' stroke='#999'/>"
            f"<polyline points='{line}' fill='none' stroke='#1c7ed6' stroke-width='2'/>{dots}</svg>")


def model_section(model: Model, prefix: str) -> str:
    metric = primary_metric(model)
    metric_names = sorted({m for v in model.versions for m in v.metrics})
    rows = []
    for v in model.versions:
        aliases = "".join(f"<span class='alias'>@{escape(a)}</span>" for a in v.aliases)
        metrics = " ".join(f"{m}&nbsp;{v.metrics[m]:.4f}" for m in metric_names if m in v.metrics)
        trained = run_link(*v.trained_by) if v.trained_by else ""
        picture = (f"<details><summary>evaluation</summary><img class='evaluation' alt='evaluation of version "
                   f"{escape(v.version)}' src='{prefix}/versions/{quote(model.name, safe='')}/{quote(v.version)}"
                   f"/evaluation.svg'></details>")
        rows.append(f"<tr class='version' data-version='{escape(v.version)}'><td>{escape(v.version)}</td><td>{aliases}</td>"
                    f"<td>{escape(v.estimator)}</td><td>{metrics}</td>"
                    f"<td><code title='{escape(v.snapshot_digest)}'>{escape(v.snapshot_digest[:12])}</code></td>"
                    f"<td>{trained}</td><td>{_when(v.created_ms)}</td><td>{picture}</td></tr>")
    aliases = ", ".join(f"@{escape(a)} → v{escape(str(v))}" for a, v in sorted(model.aliases.items())) or "none"
    return (f"<section class='model' data-model='{escape(model.name)}'><h3>Model {escape(model.name)}</h3>"
            f"<p>Aliases: {aliases}</p>{metric_chart(model, metric) if metric else ''}"
            "<table><tr><th>version</th><th>aliases</th><th>estimator</th><th>held-out metrics</th>"
            "<th>snapshot digest</th><th>trained by</th><th>registered</th><th>picture</th></tr>"
            f"{''.join(rows)}</table></section>")


def problem(text: str) -> str:
    """What stops the page showing something, and what to do about it."""
    return f"<p class='problem' role='alert'>{escape(text)}</p>"


def endpoint_section(endpoint: Endpoint, prefix: str, can_deploy: bool, deploy_dag: str = "ml_deploy",
                     versions: list[str] | None = None) -> str:
    """One endpoint: what it serves since when, its ledger, and (for a user who may trigger
    ``deploy_dag``) a rollback and a deploy of any registered version of its model."""
    serving = endpoint.serving
    rows = []
    for e in endpoint.ledger:
        good = e.get("outcome") == "serving"
        version = e.get("failed_version") or e.get("version")
        rows.append(f"<tr class='ledger'><td>{_when(e.get('at') or e.get('event_time'))}</td><td>{escape(str(e.get('model')))}</td>"
                    f"<td>{escape(str(version))}</td><td>{escape(str(e.get('previous_version')))}</td>"
                    f"<td class='{'ok' if good else 'bad'}'>{escape(str(e.get('outcome')))}</td>"
                    f"<td>{escape(str(e.get('reason') or ''))}</td><td>{e.get('seconds_to_serve', '')}</td>"
                    f"<td>{run_link(e.get('source_dag_id'), e.get('run_id') or e.get('source_run_id'))}</td></tr>")
    now = (f"serves <b>{escape(str(serving.get('model')))} version <span class='serving-version'>"
           f"{escape(str(serving['version']))}</span></b> since {_when(serving.get('at'))}" if serving else "serves nothing yet")
    form = ""
    if serving and can_deploy:
        action = f"{prefix}/endpoints/{quote(endpoint.name, safe='')}"
        model = f"<input type='hidden' name='model' value='{escape(str(serving.get('model')))}'>"
        form = (f"<form method='post' action='{action}/rollback'>{model}"
                f"<button class='rollback' type='submit'>Roll back {escape(endpoint.name)} to the version before</button>"
                f"</form>")
        if versions:
            options = "".join(f"<option value='{escape(v)}'>{escape(v)}</option>" for v in versions)
            form += (f"<form method='post' action='{action}/deploy'>{model}<label>Deploy version "
                     f"<select name='version' class='deploy-version'>{options}</select></label> "
                     f"<button class='deploy' type='submit'>to {escape(endpoint.name)}</button></form>")
    return (f"<section class='endpoint' data-endpoint='{escape(endpoint.name)}' data-deploy-dag='{escape(deploy_dag)}'>"
            f"<h3>Endpoint {escape(endpoint.name)}</h3>"
            f"<p>{now}</p>{form}<table><tr><th>at</th><th>model</th><th>version</th><th>before</th><th>outcome</th>"
            f"<th>reason</th><th>seconds to serve</th><th>run</th></tr>{''.join(rows)}</table></section>")


ICON = ("<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24' fill='none' stroke='currentColor' "
        "stroke-width='2'><path d='M3 3v18h18'/><path d='M7 14l4-4 4 4 5-6'/></svg>")
