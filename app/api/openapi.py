"""The OpenAPI schema as clients should read it: security schemes, and our error bodies.

FastAPI documents every 422 as its own `HTTPValidationError` shape, and errors of a plain-text
route as text; the service answers every error with an `ErrorBody` in JSON, so the schema says so.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.api.auth import required_scope

ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}
FASTAPI_VALIDATION_ERROR = {"$ref": "#/components/schemas/HTTPValidationError"}


def customize_openapi(app: FastAPI, metrics_public: bool) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <key>`",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    if required_scope(path, metrics_public) is not None:
                        operation["security"] = [{"bearer": []}, {"apiKey": []}]
                    _errors_as_error_body(operation.get("responses", {}))
            schema["components"].get("schemas", {}).pop("HTTPValidationError", None)
            schema["components"].get("schemas", {}).pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _errors_as_error_body(responses: dict[str, Any]) -> None:
    for status, response in responses.items():
        if not status.isdigit() or int(status) < 400:
            continue
        content: dict[str, dict[str, Any]] = response.get("content", {})
        schema = next(iter(content.values())).get("schema") if content else None
        if schema in (ERROR_BODY, FASTAPI_VALIDATION_ERROR):
            response["content"] = {"application/json": {"schema": ERROR_BODY}}
