"""OpenAPI descriptions of error answers: every one is the ``Error`` document ``{code, message, errors}``."""
from __future__ import annotations

from typing import Any

#: the component name of :class:`~loyalty_ladder.documents.ErrorSchema` in ``/openapi.json``
ERROR_COMPONENT = "Error"


def error_responses(**by_status: str) -> dict[str, Any]:
    """``error_responses(_401="missing token")`` → the ``responses`` of ``blp.doc``, each with the
    Error schema (keyword names are the status with a leading underscore)."""
    return {status.lstrip("_"): {"description": description, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}}}
        for status, description in by_status.items()}
