"""OpenAPI: every operation documents the one error shape and the statuses it can answer with,
so a client generated from the schema knows `{"errors": [...]}` as well as the happy path."""

from __future__ import annotations

ERRORS = {
    "type": "object",
    "properties": {"errors": {"type": "array", "items": {"type": "string"}}},
    "required": ["errors"],
}
WHY = {
    "400": "Invalid input: every problem is listed.",
    "401": "The username or secureKey header is missing or wrong.",
    "404": "No such object in your account.",
    "409": "Still in use: it cannot be deleted.",
    "413": "The request body is over the size limit.",
    "415": "The request body is not JSON.",
    "429": "Too many failed authentications for this username or from this address: retry "
    "after Retry-After seconds.",
    "503": "The service cannot reach its database: retry after Retry-After seconds.",
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 1},
    }
}
WITH_BODY = {"post", "put", "patch"}


def statuses_for(path: str, method: str) -> list[str]:
    statuses = ["401", "429", "503"]
    if method != "delete":
        statuses.append("400")
    if "{" in path:
        statuses.append("404")
    if method == "delete":
        statuses.append("409")
    if method in WITH_BODY:
        statuses += ["413", "415"]
    return statuses


def add_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook."""
    result.setdefault("components", {}).setdefault("schemas", {})["Errors"] = ERRORS
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}}
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/rest/v1/") or path == "/rest/v1/schema":
            continue
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for status in statuses_for(path, method):
                response = responses.setdefault(status, {"description": WHY[status]})
                response.setdefault("content", ref)
                if status in ("429", "503"):
                    response.setdefault("headers", RETRY_AFTER)
    return result
