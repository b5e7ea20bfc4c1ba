"""The server's OpenAPI document (used by clients and by the schemathesis run in the tests).

The request schemas are built from ``ml.serving.inputs.JSON_FORMATS``, the table the parser
dispatches on, and from the loaded model's feature schema (each feature's kind and whether it may be missing), so the document describes exactly what
``/invocations`` accepts (the row limit included)."""

from __future__ import annotations

from typing import Any

from ml.models.interface import FeatureSchema
from ml.serving.inputs import JSON_FORMATS, MAX_TEXT_CHARS

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}


def value_schema(kind: str, nullable: bool, max_text_chars: int) -> dict[str, Any]:
    """The JSON Schema of one feature's value, from its kind (``ml.models.KINDS``)."""
    text = {"type": "string", "maxLength": max_text_chars}
    schema = {"number": {"type": "number"}, "boolean": {"type": "boolean"}, "string": text,
              "strings": {"type": "array", "items": text},
              "timestamp": {"oneOf": [{"type": "string", "format": "date-time"},
                                      {"type": "number", "description": "seconds since 1970-01-01T00:00:00Z"}]},
              }[kind]
    if not nullable:
        return schema
    if "type" in schema:
        return {**schema, "type": [schema["type"], "null"]}
    return {"oneOf": [*schema["oneOf"], {"type": "null"}]}


def _shapes(schema: FeatureSchema | None, max_rows: int) -> dict[str, dict]:
    """JSON schemas of each value shape a format may take."""
    features = schema.features if schema else ()
    names = [f.name for f in features]
    limit = getattr(schema, "max_text_chars", MAX_TEXT_CHARS)
    values = [value_schema(f.kind, f.nullable, limit) for f in features]
    row = {"type": "array", "prefixItems": values, "items": False, "minItems": len(names), "maxItems": len(names)}
    record = {"type": "object", "properties": dict(zip(names, values)), "required": names,
              "additionalProperties": False}
    bounded = {"minItems": 1, "maxItems": max_rows}
    return {
        "rows": {"type": "array", "items": {"oneOf": [row, record]}, **bounded},
        "records": {"type": "array", "items": record, **bounded},
        "rows only": {"type": "array", "items": row, **bounded},
        "columns": {"type": "object", "additionalProperties": False, "required": names,
                    "description": "every list equally long (checked by the server: JSON Schema cannot say it)",
                    "properties": {n: {"type": "array", "items": v, **bounded} for n, v in zip(names, values)}},
    }


def request_schema(schema: FeatureSchema | None, max_rows: int = 10_000) -> dict[str, Any]:
    """The application/json body of /invocations: one alternative per entry of JSON_FORMATS."""
    shapes = _shapes(schema, max_rows)
    shapes["split"] = {"type": "object", "required": ["columns", "data"], "additionalProperties": False,
                       "properties": {"columns": {"const": schema.names if schema else []},
                                      "data": shapes["rows only"], "index": {"type": "array"}}}
    alternatives = []
    for fmt in JSON_FORMATS:
        value = shapes[fmt.shapes[0]] if len(fmt.shapes) == 1 else {"oneOf": [shapes[s] for s in fmt.shapes]}
        if fmt.key is None:
            alternatives.append({**value, "description": fmt.summary})
        else:
            alternatives.append({"type": "object", "description": fmt.summary, "required": [fmt.key],
                                 "properties": {fmt.key: value}, "additionalProperties": False})
    return {"oneOf": alternatives}


ADMIN_REQUEST = {"oneOf": [
    {"type": "object", "required": ["uri"], "additionalProperties": False, "description":
        "load the model artifact at uri (inside the server's artifact roots), labelled version",
     "properties": {"uri": {"type": "string"}, "version": {"type": "string"}}},
    {"type": "object", "required": ["version"], "additionalProperties": False, "description":
        "load this version of the registered model the server follows",
     "properties": {"version": {"type": "string"}}},
]}


def openapi_document(schema: FeatureSchema | None, max_rows: int = 10_000) -> dict[str, Any]:
    err = lambda text: {"description": text, "content": {"application/json": {"schema": _ERROR}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "ml.serve model server", "version": "1"},
        "components": {"securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/ping": {"get": {"summary": "200 once a model is loaded", "responses": {
                "200": {"description": "serving", "content": {"application/json": {"schema": {"type": "object"}}}},
                "503": err("no model loaded yet")}}},
            "/invocations": {"post": {
                "summary": "Predict",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": request_schema(schema, max_rows)},
                    "text/csv": {"schema": {"type": "string"}},
                }},
                "responses": {
                    "200": {"description": "predictions", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["predictions", "model_version"],
                        "properties": {"predictions": {"type": "array"}, "model_version": {"type": "string"}}}}}},
                    "400": err("malformed input"), "413": err("body or row count too large"),
                    "415": err("unsupported content type"), "503": err("no model loaded yet"),
                    "500": err("the model failed this batch (raised, or not one output per row); named"),
                    "504": err("the model took longer than the predict timeout for this batch"),
                }}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "this document", "responses": {
                "200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/admin/model": {"post": {
                "summary": "Hot-swap the served model (bearer token ML_SERVE_ADMIN_TOKEN)",
                "security": [{"adminToken": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": ADMIN_REQUEST}}},
                "responses": {
                    "200": {"description": "now serving", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["model_version"],
                        "properties": {"model_version": {"type": "string"}, "previous_version": {
                            "type": ["string", "null"]}, "load_seconds": {"type": "number"},
                            "digest": {"type": "string"}}}}}},
                    "400": err("malformed request"), "401": err("missing or wrong bearer token"),
                    "403": err("the model is outside the server's artifact roots"),
                    "404": err("admin endpoint disabled (no token configured)"),
                    "413": err("body too large"),
                    "422": err("the model was refused (digest, type or smoke check); the current one serves"),
                }}},
        },
    }
