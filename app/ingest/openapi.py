"""The ingest gateway's OpenAPI document (``GET /openapi.json``), for the v2 routes
(:mod:`app.ingest.api`) and the v3 ones (:mod:`app.ingest.api_v3`) alike: the error model, the
documented error responses, the security schemes, and what the gateway's settings add to the
document FastAPI builds (the request bodies, the record limit, the topics and cluster id a path
may name).

A 405 (a method the path does not answer, with an ``Allow`` header) cannot be described here:
OpenAPI describes the methods a path has. Its shape is the same as the path's other errors.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI
from pydantic import BaseModel, Field

from app.config import Settings
from app.ingest.gateway import WWW_AUTHENTICATE

SECURITY: list[dict[str, list[str]]] = [{"deviceToken": []}, {"deviceCertificate": []}]
SECURITY_SCHEMES = {
    "deviceToken": {"type": "http", "scheme": "bearer", "description": "a device token (`greenhouse devices add`)"},
    "deviceCertificate": {"type": "mutualTLS", "description": "a client certificate whose subject names the device, verified by the TLS edge"},
}


class ErrorResponse(BaseModel):
    """A request-level error (REST Proxy v2: ``error_code`` is the HTTP status * 100 + n)."""

    error_code: int
    message: str = Field(description="the reason")


def ref(model: type[BaseModel]) -> dict[str, str]:
    """A JSON reference to ``model``'s schema in the document's components."""
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def error_response(status: int, description: str, model: type[BaseModel]) -> tuple[int, dict[str, Any]]:
    """A ``responses`` entry of a route: ``status`` answers ``model``; a 401 also names its
    ``WWW-Authenticate`` header."""
    response: dict[str, Any] = {"model": model, "description": description}
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"description": WWW_AUTHENTICATE, "schema": {"type": "string"}}}
    return status, response


def _path_parameters(settings: Settings) -> dict[str, dict[str, Any]]:
    """The schema of each path parameter the settings bound (a route's parameter of that name)."""
    limits = settings.ingest
    return {
        "topic": {"type": "string", "enum": list(limits.topics), "title": "Topic", "description": "an ingest topic (any other: 404; error_code 40401 on v2)"},
        "cluster_id": {"type": "string", "enum": [limits.cluster_id], "title": "Cluster Id", "description": "the gateway's one cluster, ingest.cluster_id (any other: 404)"},
    }


def _complete_operations(doc: dict[str, Any], settings: Settings) -> None:
    """Bound the path parameters; drop the 422 FastAPI adds to routes with path parameters (a
    ``str`` path parameter never fails its validation, and the routes read their bodies themselves)."""
    parameters = _path_parameters(settings)
    for path in doc["paths"].values():
        for operation in path.values():
            if "HTTPValidationError" in orjson.dumps(operation["responses"].get("422", {})).decode():
                del operation["responses"]["422"]
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in parameters:
                    parameter["schema"] = parameters[parameter["name"]]


def _add_request_schemas(schemas: dict[str, Any], request_models: tuple[type[BaseModel], ...], max_records: int) -> None:
    """The request bodies routes name by reference (FastAPI does not know them), with the record
    limit on those that carry a ``records`` list."""
    for model in request_models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        if "records" in schema["properties"]:
            schema["properties"]["records"]["maxItems"] = max_records
        schemas[model.__name__] = schema


def install_openapi(api: FastAPI, settings: Settings, request_models: tuple[type[BaseModel], ...]) -> None:
    """Complete FastAPI's document of ``api`` with what ``settings`` say (see the module
    docstring); ``request_models``: the request bodies the routes name by :func:`ref`."""
    default = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            doc = default()
            _complete_operations(doc, settings)
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
            _add_request_schemas(schemas, request_models, settings.ingest.max_records_per_request)
            doc["components"]["securitySchemes"] = SECURITY_SCHEMES
            api.openapi_schema = doc
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
