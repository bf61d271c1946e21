"""The admin bearer token check shared by the admin blueprints."""
from __future__ import annotations

import hmac

from flask import request

from ..errors import Unauthorized


def require_admin() -> None:
    """Raise Unauthorized unless the request carries ``Authorization: Bearer <admin token>``."""
    from ..app import ladder

    expected = ladder().settings.admin_token or ""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    # bytes: compare_digest refuses non-ASCII str, and a header may carry anything
    given = token.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not given or not expected or not hmac.compare_digest(given, expected.encode()):
        raise Unauthorized("missing or wrong admin token",
                           {"Authorization": ["send 'Authorization: Bearer <LADDER_ADMIN_TOKEN>'"]})
