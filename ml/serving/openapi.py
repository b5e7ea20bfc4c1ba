"""The server's OpenAPI document (used by clients and by the schemathesis run in the tests)."""

from __future__ import annotations

from typing import Any

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}


def openapi_document(feature_names: list[str], missing_ok: list[bool] | None = None) -> dict[str, Any]:
    """Rows as positional arrays or records; ``null`` only where the model accepts a missing value."""
    missing_ok = missing_ok or [False] * len(feature_names)
    values = [{"type": ["number", "null"] if ok else "number"} for ok in missing_ok]
    row = {"type": "array", "prefixItems": values, "items": False,
           "minItems": len(feature_names), "maxItems": len(feature_names)}
    record = {"type": "object", "properties": dict(zip(feature_names, values)),
              "required": feature_names, "additionalProperties": False}
    rows = {"type": "array", "items": {"oneOf": [row, record]}, "minItems": 1}
    err = lambda text: {"description": text, "content": {"application/json": {"schema": _ERROR}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "ml.serve model server", "version": "1"},
        "paths": {
            "/ping": {"get": {"summary": "200 once a model is loaded", "responses": {
                "200": {"description": "serving", "content": {"application/json": {"schema": {"type": "object"}}}},
                "503": err("no model loaded yet")}}},
            "/invocations": {"post": {
                "summary": "Predict",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"oneOf": [
                        {"type": "object", "properties": {"instances": rows}, "required": ["instances"],
                         "additionalProperties": False},
                        {"type": "object", "properties": {"inputs": rows}, "required": ["inputs"],
                         "additionalProperties": False},
                        rows,
                    ]}},
                    "text/csv": {"schema": {"type": "string"}},
                }},
                "responses": {
                    "200": {"description": "predictions", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["predictions", "model_version"],
                        "properties": {"predictions": {"type": "array"}, "model_version": {"type": "string"}}}}}},
                    "400": err("malformed input"), "413": err("body or row count too large"),
                    "415": err("unsupported content type"), "503": err("no model loaded yet"),
                }}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        },
    }
