"""Routes of the models-and-endpoints page (mounted at ``/ml-models``).

    GET  /                                  models x service levels (filters ?owner= &tag=), versions (paginated), ledgers
    GET  /runs/{dag_id}/{run_id}            the DAG-run tab: the version a run registered and its deploys
    GET  /versions/{model}/{v}/evaluation.svg   a version's evaluation picture (verified artifact)
    POST /endpoints/{endpoint}/rollback     triggers the endpoint's deploy DAG (action rollback) through the REST API as the user
    POST /endpoints/{endpoint}/deploy       the same with a version: deploy any registered version there
    POST /endpoints/{endpoint}/promote      the version it serves, to the spec's next level (its alias moved)
    POST /approvals/{dag_id}/{run}/{task}   approve or reject a promotion waiting for a person
    GET  /api/summary                       the same facts as JSON
"""

from __future__ import annotations

import logging
from html import escape
from urllib.parse import quote

from fastapi import Depends, FastAPI, Form, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from ml_models_ui import data, render
from ml_models_ui.auth import _allowed, deployer, may_deploy, reader, user_token

log = logging.getLogger(__name__)
PREFIX = "/ml-models"


def create_app() -> FastAPI:
    app = FastAPI(title="ML models and endpoints", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/icon.svg")
    def icon() -> Response:  # the nav icon: public, it shows nothing
        return Response(render.ICON, media_type="image/svg+xml")

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request, user=Depends(reader)) -> str:
        query = dict(request.query_params)
        owner, tag = query.get("owner") or None, query.get("tag") or None
        registered, problem = data.registry_models()
        versions = {m.name: [v.version for v in m.versions] for m in registered}
        note = ""
        for kind in ("rollback", "deploy", "promote"):
            if run_id := query.get(f"{kind}_run"):
                dag_id = query.get("dag", "ml_deploy")
                note = (f"<p class='note'>{kind.capitalize()} asked: {render.run_link(dag_id, run_id)} "
                        f"(<span class='{kind}-run'>{escape(run_id)}</span>)</p>")
        if answered := query.get("answered"):
            note = f"<p class='note'>Answered <span class='answered'>{escape(answered)}</span>.</p>"
        endpoint_list = data.endpoints()
        by_name = {e.name: e for e in endpoint_list}
        all_rows = data.model_rows(endpoint_list)
        rows = [r for r in all_rows if r.matches(owner, tag)]
        approvals, cells = data.pending_approvals(), {}
        for row in rows:
            may = not row.problem and _allowed(user, "POST", row.deploy_dag)
            for level in row.levels:
                approval = approvals.get((row.train_dag, level.name))
                above = by_name.get(level.next.endpoint) if level.next else None
                cells[(row.name, level.endpoint)] = render.level_cell(
                    row, level, by_name.get(level.endpoint), PREFIX, may, versions.get(row.name, []), approval,
                    bool(approval) and _allowed(user, "PUT", row.train_dag, "HITL_DETAIL"),
                    str(above.serving["version"]) if above and above.serving else None)
        table = (render.filters(sorted({o for r in all_rows for o in r.owners}),
                                sorted({t for r in all_rows for t in r.tags}), owner, tag)
                 + render.levels_table(rows, cells))
        shown = {r.name for r in rows}
        models = (render.problem(problem) if problem else
                  "".join(render.model_section(m, PREFIX, _int(query.get(f"page.{m.name}")), query)
                          for m in registered if m.name in shown or not (owner or tag))
                  or "<p>No registered model yet.</p>")
        dags = data.deploy_dags(all_rows)
        listed = {level.endpoint for row in rows for level in row.levels}
        ledgers = "".join(render.endpoint_section(e, PREFIX, False, data.deploy_dag_of(e.name, dags))
                          for e in endpoint_list if e.name in listed)
        return render.page("Models & endpoints",
                           f"{note}<h2>Models by service level</h2>{table}<h2>Registered versions</h2>{models}"
                           f"<h2>Endpoint ledgers</h2>{ledgers or '<p>No endpoint has a deploy yet.</p>'}")

    @app.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse)
    def run_tab(dag_id: str, run_id: str, user=Depends(reader)) -> str:
        found, problem = data.registry_models()
        registered = [(m, v) for m in found for v in m.versions if v.trained_by == (dag_id, run_id)]
        deploys = [(e.name, entry) for e in data.endpoints() for entry in e.ledger if entry.get("run_id") == run_id]
        body = [render.problem(problem)] if problem else []
        for model, v in registered:
            metrics = ", ".join(f"{k} {val:.4f}" for k, val in sorted(v.metrics.items()))
            body.append(f"<p class='registered'>Registered {escape(model.name)} version <b>{escape(v.version)}</b> "
                        f"{''.join(f'@{escape(a)} ' for a in v.aliases)}({escape(metrics)}); snapshot "
                        f"<code>{escape(v.snapshot_digest[:12])}</code></p>"
                        f"<img class='evaluation' src='{PREFIX}/versions/{quote(model.name, safe='')}/"
                        f"{quote(v.version)}/evaluation.svg' alt='evaluation'>")
        for endpoint, entry in deploys:
            body.append(f"<p class='deploy'>Endpoint {escape(endpoint)}: {escape(str(entry.get('outcome')))} "
                        f"version {escape(str(entry.get('failed_version') or entry.get('version')))} "
                        f"({escape(str(entry.get('reason')))})</p>")
        if not registered and not deploys:
            body.append(f"<p>Run {escape(run_id)} of {escape(dag_id)} registered no model version and deployed nothing.</p>")
        body.append(f"<p><a href='{PREFIX}/'>All models and endpoints</a></p>")
        return render.page(f"{dag_id} / {run_id}", "".join(body))

    @app.get("/versions/{model}/{version}/evaluation.svg")
    def picture(model: str, version: str, user=Depends(reader)) -> Response:
        from airflow.exceptions import AirflowException
        from ml.artifacts import ArtifactError

        try:
            svg = data.evaluation_picture(data.registry_client(), model, version)
        except AirflowException as exc:  # no registry configured
            raise HTTPException(503, str(exc)) from None
        except (FileNotFoundError, KeyError) as exc:
            raise HTTPException(404, str(exc)) from None
        except ArtifactError as exc:
            raise HTTPException(409, f"the artifact of {model} version {version} is not usable: {exc}") from None
        except Exception as exc:  # the registry refused or timed out: said as such, not as a 500
            if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":  # MLflow: no such version
                raise HTTPException(404, f"{model} has no version {version}") from None
            raise HTTPException(503, f"the model registry could not be read ({type(exc).__name__}: "
                                     f"{data.redacted(str(exc))[:300]})") from None
        return Response(svg, media_type="image/svg+xml", headers={"Content-Security-Policy": "script-src 'none'"})

    async def as_user(request: Request, method: str, path: str, body: dict):
        """A call of Airflow's REST API with the user's own token, so Airflow records who asked and
        applies its own checks again."""
        import httpx

        from airflow.configuration import conf as airflow_conf

        token = user_token(request)
        if not token:
            raise HTTPException(401, "the request carries no Airflow token to act as the user with: sign in again")
        base = airflow_conf.get("api", "base_url", fallback=str(request.base_url)).rstrip("/")
        async with httpx.AsyncClient(timeout=30) as http:
            return await http.request(method, f"{base}{path}", json=body, headers={"Authorization": f"Bearer {token}"})

    async def trigger(request: Request, user, dag_id: str, conf: dict, kind: str) -> Response:
        """One run of a deploy DAG, created through the REST API as the user."""
        what = {"rollback": "roll back", "promote": "promote"}.get(kind, "deploy")
        may_deploy(user, dag_id, what)
        body = {"logical_date": None, "conf": conf, "note": f"{kind} asked from the models page by {user.get_name()}"}
        answer = await as_user(request, "POST", f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns", body)
        if answer.status_code >= 300:
            raise HTTPException(answer.status_code, f"Airflow refused the {dag_id} run: {answer.text[:500]}")
        run_id = answer.json()["dag_run_id"]
        log.info("%s (%s) asked by %s: %s run %s", kind, conf, user.get_name(), dag_id, run_id)
        if "text/html" in request.headers.get("accept", ""):
            return RedirectResponse(f"{PREFIX}/?{kind}_run={quote(run_id, safe='')}&dag={quote(dag_id, safe='')}",
                                    status_code=303)
        return JSONResponse({"dag_id": dag_id, "dag_run_id": run_id})

    @app.post("/endpoints/{endpoint}/rollback")
    async def rollback(endpoint: str, request: Request, model: str = Form(...), user=Depends(deployer)) -> Response:
        return await trigger(request, user, data.deploy_dag_of(endpoint),
                             {"model": model, "action": "rollback", "endpoint": endpoint}, "rollback")

    @app.post("/endpoints/{endpoint}/deploy")
    async def deploy(endpoint: str, request: Request, model: str = Form(...), version: str = Form(...),
                     user=Depends(deployer)) -> Response:
        """Any registered version of the model, to this endpoint (the deploy DAG's smoke test and
        automatic rollback apply as for every deploy)."""
        return await trigger(request, user, data.deploy_dag_of(endpoint),
                             {"model": model, "version": version, "action": "deploy", "endpoint": endpoint}, "deploy")

    @app.post("/endpoints/{endpoint}/promote")
    async def promote(endpoint: str, request: Request, model: str = Form(...), user=Depends(deployer)) -> Response:
        """The version this level serves, to the next level of the model's spec: deployed there by
        ``<model>__deploy`` (smoke test, automatic rollback), the next level's alias moved once it
        serves."""
        found = data.level_of(endpoint)
        if found is None or found[0].name != model or found[1].next is None:
            raise HTTPException(400, f"endpoint {endpoint} is not a level of model {model}'s spec with a level "
                                     f"after it: nothing to promote to")
        row, level = found
        serving = next((e.serving for e in data.endpoints() if e.name == endpoint), None)
        if not serving or str(serving.get("model")) != model:
            raise HTTPException(409, f"endpoint {endpoint} serves no version of {model} to promote")
        conf = {"model": model, "version": str(serving["version"]), "action": "deploy",
                "endpoint": level.next.endpoint, "move_alias": level.next.name}
        return await trigger(request, user, row.deploy_dag, conf, "promote")

    @app.post("/approvals/{dag_id}/{run_id}/{task_id}")
    async def answer_approval(dag_id: str, run_id: str, task_id: str, request: Request, choice: str = Form(...),
                              user=Depends(deployer)) -> Response:
        """Approve or reject a promotion waiting in a training run (Airflow's required action),
        through the REST API as the user."""
        if choice not in ("Approve", "Reject"):
            raise HTTPException(400, f"choice must be Approve or Reject, not {choice!r}")
        if not _allowed(user, "PUT", dag_id, "HITL_DETAIL"):
            raise HTTPException(403, f"user {user.get_name()!r} may not answer the required actions of {dag_id}")
        path = (f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}/taskInstances/"
                f"{quote(task_id, safe='')}/-1/hitlDetails")
        answer = await as_user(request, "PATCH", path, {"chosen_options": [choice], "params_input": {}})
        if answer.status_code >= 300:
            raise HTTPException(answer.status_code, f"Airflow refused the answer: {answer.text[:500]}")
        log.info("%s of %s %s %s by %s", choice, dag_id, run_id, task_id, user.get_name())
        if "text/html" in request.headers.get("accept", ""):
            return RedirectResponse(f"{PREFIX}/?answered={quote(f'{choice} {task_id} of {run_id}', safe='')}",
                                    status_code=303)
        return JSONResponse({"dag_id": dag_id, "dag_run_id": run_id, "task_id": task_id, "chosen": choice})

    @app.get("/api/summary")
    def summary(user=Depends(reader)) -> dict:
        registered, problem = data.registry_models()
        dags = data.deploy_dags()
        return {
            "registry_problem": problem,
            "models": [{"name": m.name, "aliases": m.aliases,
                        "versions": [{"version": v.version, "aliases": v.aliases, "metrics": v.metrics,
                                      "snapshot_digest": v.snapshot_digest, "trained_by": v.trained_by,
                                      "source": v.source} for v in m.versions]} for m in registered],
            "endpoints": [{"name": e.name, "deploy_dag": data.deploy_dag_of(e.name, dags), "serving": e.serving,
                           "ledger": e.ledger} for e in data.endpoints()],
        }

    return app


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0
