"""HTML for the page: server-rendered, no script (the UI's tab iframes run none), the chart as
inline SVG, the rollback as a plain form."""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from urllib.parse import quote

from ml_models_ui.data import Approval, Endpoint, Level, Model, ModelRow

STYLE = """:root{color-scheme:light dark;--bg:#fff;--fg:#1a202c;--muted:#4a5568;--line:#e2e8f0;--head:#f7fafc;
--alias:#e6f2ff;--note:#fefcbf;--problem:#fed7d7;--ok:#2f855a;--bad:#c53030;--accent:#0369a1;--button:#edf2f7}
@media (prefers-color-scheme: dark){:root{--bg:#111827;--fg:#e5e7eb;--muted:#9ca3af;--line:#374151;--head:#1f2937;
--alias:#1e3a5f;--note:#4a3f00;--problem:#5b1d1d;--ok:#68d391;--bad:#fc8181;--accent:#38bdf8;--button:#374151}}
body{font-family:Inter,system-ui,-apple-system,"Segoe UI",sans-serif;margin:16px;background:var(--bg);color:var(--fg)}
table{border-collapse:collapse;margin:8px 0 20px}a{color:var(--accent)}
td,th{border-bottom:1px solid var(--line);padding:6px 10px;text-align:left;font-size:13px;vertical-align:top}
th{background:var(--head)}.alias{background:var(--alias);border-radius:4px;padding:1px 6px;margin-right:4px}
.ok{color:var(--ok)}.bad{color:var(--bad)}.muted{color:var(--muted)}.note{padding:8px 12px;border-radius:6px;background:var(--note)}
.problem{padding:8px 12px;border-radius:6px;background:var(--problem)}.level form{margin:4px 0}
code{font-size:12px}details{margin:4px 0}button,select{padding:3px 10px;border:1px solid var(--line);border-radius:4px;
background:var(--button);color:var(--fg)}.pages a{margin-right:12px}"""


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
        f"<text x='{x:.1f}' y='{h - pad + 16}' text-anchor='middle' font-size='11' fill='currentColor'>v{escape(v)}</text>"
        for (x, y), (v, value) in zip(xy, points))
    return (f"<svg class='metric-chart' data-metric='{metric}' width='{w}' height='{h}' viewBox='0 0 {w} {h}' "
            f"xmlns='http://www.w3.org/2000/svg' font-family='sans-serif'>"
            f"<text x='{pad}' y='16' font-size='12' fill='currentColor'>{escape(model.name)}: held-out {metric} by version</text>"
            f"<text x='4' y='{pad}' font-size='10' fill='currentColor'>{hi:.3f}</text>"
            f"<text x='4' y='{h - pad}' font-size='10' fill='currentColor'>{lo:.3f}</text>"
            f"<line x1='{pad}' y1='{h - pad}' x2='{w - pad}' y2='{h - pad}' stroke='#999'/>"
            f"<polyline points='{line}' fill='none' stroke='#1c7ed6' stroke-width='2'/>{dots}</svg>")


VERSIONS_PER_PAGE = 10


def pages(model: Model, page: int, query: dict[str, str]) -> str:
    """Links to the newer and older pages of a model's versions (the other query values kept)."""
    from urllib.parse import urlencode

    last = max((len(model.versions) - 1) // VERSIONS_PER_PAGE, 0)
    if not last:
        return ""
    key = f"page.{model.name}"
    link = lambda n, text: f"<a class='page-link' href='?{escape(urlencode({**query, key: n}))}'>{text}</a>"  # noqa: E731
    return (f"<p class='pages'>{link(page - 1, '&larr; newer') if page > 0 else ''}"
            f"<span class='muted'>page {page + 1} of {last + 1}</span> "
            f"{link(page + 1, 'older &rarr;') if page < last else ''}</p>")


def model_section(model: Model, prefix: str, page: int = 0, query: dict[str, str] | None = None) -> str:
    """A model's versions (newest first, ``VERSIONS_PER_PAGE`` at a time), aliases and chart."""
    metric = primary_metric(model)
    metric_names = sorted({m for v in model.versions for m in v.metrics})
    page = min(max(page, 0), max((len(model.versions) - 1) // VERSIONS_PER_PAGE, 0))
    rows = []
    for v in model.versions[page * VERSIONS_PER_PAGE:(page + 1) * VERSIONS_PER_PAGE]:
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
            f"{''.join(rows)}</table>{pages(model, page, query or {})}</section>")


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


def filters(owners: list[str], tags: list[str], owner: str | None, tag: str | None) -> str:
    """The owner and tag filters (a plain GET form: the page runs no script)."""
    def select(name: str, values: list[str], chosen: str | None) -> str:
        options = "".join(f"<option value='{escape(v)}'{' selected' if v == chosen else ''}>{escape(v)}</option>"
                          for v in values)
        return (f"<label>{name.capitalize()} <select name='{name}' class='filter-{name}'><option value=''>all</option>"
                f"{options}</select></label> ")
    return (f"<form class='filters' method='get'>{select('owner', owners, owner)}{select('tag', tags, tag)}"
            f"<button type='submit' class='filter'>Filter</button></form>")


def level_cell(row: ModelRow, level: Level, endpoint: Endpoint | None, prefix: str, can_deploy: bool,
               versions: list[str], approval: Approval | None, can_answer: bool, next_serves: str | None = None) -> str:
    """One level of one model: its endpoint, the version it serves and since when, its last
    deploy's outcome; for a user Airflow lets deploy there, deploy-any-version, rollback and
    promote to the next level (unless it serves that version already); a promotion into it waiting for approval, with its answers."""
    serving = endpoint.serving if endpoint else None
    last = endpoint.ledger[0] if endpoint and endpoint.ledger else None
    parts = [f"<div><b>{escape(level.endpoint)}</b></div>"]
    if serving:
        parts.append(f"<div>serves <b class='serving-version'>v{escape(str(serving['version']))}</b> "
                     f"<span class='muted'>since {_when(serving.get('at') or serving.get('event_time'))}</span></div>")
    else:
        parts.append("<div class='muted'>serves nothing yet</div>")
    if last:
        good = last.get("outcome") == "serving"
        parts.append(f"<div class='last-deploy {'ok' if good else 'bad'}'>last deploy: {escape(str(last.get('outcome')))}"
                     f" v{escape(str(last.get('failed_version') or last.get('version')))} "
                     f"<span class='muted'>({escape(str(last.get('reason') or ''))})</span></div>")
    action = f"{prefix}/endpoints/{quote(level.endpoint, safe='')}"
    model = f"<input type='hidden' name='model' value='{escape(row.name)}'>"
    if can_deploy and versions:
        options = "".join(f"<option value='{escape(v)}'>v{escape(v)}</option>" for v in versions)
        parts.append(f"<form method='post' action='{action}/deploy'>{model}<select name='version' "
                     f"class='deploy-version' aria-label='version to deploy to {escape(level.endpoint)}'>{options}"
                     f"</select> <button class='deploy' type='submit'>Deploy</button></form>")
    if can_deploy and serving:
        parts.append(f"<form method='post' action='{action}/rollback'>{model}"
                     f"<button class='rollback' type='submit'>Roll back</button></form>")
    if can_deploy and serving and level.next and str(serving["version"]) != next_serves:
        parts.append(f"<form method='post' action='{action}/promote'>{model}<button class='promote' type='submit'>"
                     f"Promote v{escape(str(serving['version']))} to {escape(level.next.name)}</button></form>")
    if approval:
        parts.append(f"<div class='approval'>waiting for approval: {escape(approval.subject)} "
                     f"{run_link(approval.dag_id, approval.run_id)}</div>")
        if can_answer:
            target = (f"{prefix}/approvals/{quote(approval.dag_id, safe='')}/{quote(approval.run_id, safe='')}/"
                      f"{quote(approval.task_id, safe='')}")
            parts.append(f"<form method='post' action='{target}'>"
                         f"<button class='approve' type='submit' name='choice' value='Approve'>Approve</button> "
                         f"<button class='reject' type='submit' name='choice' value='Reject'>Reject</button></form>")
    return (f"<td class='level' data-level='{escape(level.name)}' data-endpoint='{escape(level.endpoint)}'>"
            f"{''.join(parts)}</td>")


def _one_td(cells: list[str]) -> str:
    """Several endpoints of one model under one level (the deployment's own endpoints): one cell."""
    if len(cells) == 1:
        return cells[0]
    return "<td>" + "".join(c.replace("<td ", "<div ", 1)[:-len("</td>")] + "</div>" for c in cells) + "</td>"


def levels_table(rows: list[ModelRow], cells: dict[tuple[str, str], str]) -> str:
    """Models x service levels: one row per model, one column per level name (first seen first)."""
    columns = list(dict.fromkeys(level.name for row in rows for level in row.levels))
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        by_level: dict[str, list[str]] = {}
        for level in row.levels:
            by_level.setdefault(level.name, []).append(cells[(row.name, level.endpoint)])
        tds = "".join(_one_td(by_level[c]) if c in by_level else "<td class='muted'>&mdash;</td>" for c in columns)
        owners = ", ".join(escape(o) for o in row.owners) or "<span class='muted'>&mdash;</span>"
        broken = f"<div class='problem spec-problem'>{escape(row.problem)}</div>" if row.problem else ""
        body.append(f"<tr class='model-row' data-model='{escape(row.name)}'><th>{escape(row.name)}"
                    f"<div class='muted'>{owners}</div>{broken}</th>{tds}</tr>")
    if not body:
        return "<p>No model matches.</p>"
    return f"<table class='levels'><tr><th>model</th>{head}</tr>{''.join(body)}</table>"


ICON = ("<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24' fill='none' stroke='currentColor' "
        "stroke-width='2'><path d='M3 3v18h18'/><path d='M7 14l4-4 4 4 5-6'/></svg>")
