"""Asset events on the asset a run really wrote, named at run time.

A DAG declares an ``AssetAlias`` as the outlet; the task adds an event on
``Asset(name, uri)`` built from the same rendered values its paths came from. So a run for
another model (Param ``model_name``) records its events on that model's asset, never on the
one the DAG file was parsed with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context


def emit_asset_event(context: Context, outlets, name: str | None, uri: str, extra: dict[str, Any]) -> None:
    """An event on ``Asset(name, uri)`` through every ``AssetAlias`` outlet; plain ``Asset``
    outlets get ``extra`` on their own event."""
    from airflow.sdk import Asset, AssetAlias

    for outlet in outlets:
        if isinstance(outlet, AssetAlias):
            context["outlet_events"][outlet].add(Asset(name=name or uri, uri=uri), extra=extra)
        elif isinstance(outlet, Asset):
            context["outlet_events"][outlet].extra = extra
