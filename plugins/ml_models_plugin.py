"""The models-and-endpoints page in the Airflow UI: a FastAPI app (``/ml-models``), a link in
the navigation, and a tab on every DAG run.

Every Airflow component loads plugins, so this module stays light: the app is built on its
first request (``_LazyApp``), in the api-server only, from ``ml_models_ui`` (kept out of the
plugin scan by ``.airflowignore``).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/ml-models"


class _LazyApp:
    """An ASGI app that builds the real one on first use (Starlette mounts any ASGI callable)."""

    def __init__(self) -> None:
        self._app = None

    async def __call__(self, scope, receive, send) -> None:
        if self._app is None:
            from ml_models_ui.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class MlModelsPlugin(AirflowPlugin):
    name = "ml_models"
    fastapi_apps = [{"app": _LazyApp(), "url_prefix": URL_PREFIX, "name": "ML models and endpoints"}]
    external_views = [
        {"name": "Models & endpoints", "href": f"{URL_PREFIX}/", "destination": "nav", "url_route": "ml-models",
         "icon": f"{URL_PREFIX}/icon.svg"},
        {"name": "Model & deploys", "href": f"{URL_PREFIX}/runs/{{DAG_ID}}/{{RUN_ID}}", "destination": "dag_run",
         "url_route": "ml-models-run"},
    ]
