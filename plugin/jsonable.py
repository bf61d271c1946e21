"""Python values → JSON values: Decimal → string, datetime → ISO 8601 ``Z``, sets → sorted lists.

For the JSON columns we store (award parameters, the customer's state snapshot).  Documents
we *serve* are dumped by their marshmallow schemas instead (``api/schemas.py``).
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from .clock import iso


def to_jsonable(value: Any) -> Any:
    """Decimal → str, datetime → ISO 8601, sets → sorted lists, mappings and sequences recursively."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, (set, frozenset)):
        return sorted(to_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value
