"""Routes of the models-and-endpoints page (mounted at ``/ml-models``).

    GET  /                                  models (versions, aliases, metrics, lineage, chart) and endpoints
    GET  /runs/{dag_id}/{run_id}            the DAG-run tab: the version a run registered and its deploys
    GET  /versions/{model}/{v}/evaluation.svg   a version's evaluation picture (verified artifact)
    POST /endpoints/{endpoint}/rollback     triggers the endpoint's deploy DAG (action rollback) through the REST API as the user
    POST /endpoints/{endpoint}/deploy       the same with a version: deploy any registered version there
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
        registered, problem = data.registry_models()
        versions = {m.name: [v.version for v in m.versions] for m in registered}
        note = ""
        for kind in ("rollback", "deploy"):
            if run_id := request.query_params.get(f"{kind}_run"):
                dag_id = request.query_params.get("dag", "ml_deploy")
                note = (f"<p class='note'>{kind.capitalize()} asked: {render.run_link(dag_id, run_id)} "
                        f"(<span class='{kind}-run'>{escape(run_id)}</span>)</p>")
        models = (render.problem(problem) if problem else
                  "".join(render.model_section(m, PREFIX) for m in registered) or "<p>No registered model yet.</p>")
        sections, dags = [], data.deploy_dags()
        for e in data.endpoints():
            dag_id = data.deploy_dag_of(e.name, dags)
            sections.append(render.endpoint_section(e, PREFIX, _allowed(user, "POST", dag_id), dag_id,
                                                    versions.get(str((e.serving or {}).get("model")), [])))
        endpoints = "".join(sections) or "<p>No endpoint has a deploy yet.</p>"
        return render.page("Models & endpoints", f"{note}<h2>Endpoints</h2>{endpoints}<h2>Registered models</h2>{models}")

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

    async def trigger(request: Request, user, endpoint: str, conf: dict, kind: str) -> Response:
        """One run of the endpoint's deploy DAG, created through the REST API with the user's token,
        so Airflow records who asked and applies its own checks again."""
        import httpx

        from airflow.configuration import conf as airflow_conf

        dag_id = data.deploy_dag_of(endpoint)
        may_deploy(user, dag_id, "roll back" if kind == "rollback" else "deploy")
        base = airflow_conf.get("api", "base_url", fallback=str(request.base_url)).rstrip("/")
        body = {"logical_date": None, "conf": {**conf, "endpoint": endpoint},
                "note": f"{kind} asked from the models page by {user.get_name()}"}
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.post(f"{base}/api/v2/dags/{dag_id}/dagRuns", json=body,
                                     headers={"Authorization": f"Bearer {user_token(request)}"})
        if answer.status_code >= 300:
            raise HTTPException(answer.status_code, f"Airflow refused the {dag_id} run: {answer.text[:500]}")
        run_id = answer.json()["dag_run_id"]
        log.info("%s of %s (%s) asked by %s: %s run %s", kind, endpoint, conf, user.get_name(), dag_id, run_id)
        if "text/html" in request.headers.get("accept", ""):
            return RedirectResponse(f"{PREFIX}/?{kind}_run={quote(run_id, safe='')}&dag={quote(dag_id, safe='')}",
                                    status_code=303)
        return JSONResponse({"dag_id": dag_id, "dag_run_id": run_id})

    @app.post("/endpoints/{endpoint}/rollback")
    async def rollback(endpoint: str, request: Request, model: str = Form(...), user=Depends(deployer)) -> Response:
        return await trigger(request, user, endpoint, {"model": model, "action": "rollback"}, "rollback")

    @app.post("/endpoints/{endpoint}/deploy")
    async def deploy(endpoint: str, request: Request, model: str = Form(...), version: str = Form(...),
                     user=Depends(deployer)) -> Response:
        """Any registered version of the model, to this endpoint (the deploy DAG's smoke test and
        automatic rollback apply as for every deploy)."""
        return await trigger(request, user, endpoint, {"model": model, "version": version, "action": "deploy"},
                             "deploy")

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
