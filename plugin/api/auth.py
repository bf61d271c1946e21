"""The admin bearer token, checked once per admin blueprint (``before_request``)."""
from __future__ import annotations

import hmac

from flask import request

from ..errors import Unauthorized
from ..globals import ladder

#: the OpenAPI security requirement of every admin operation
ADMIN_SECURITY = [{"bearer": []}]


def require_admin() -> None:
    """Raise Unauthorized unless the request carries ``Authorization: Bearer <admin token>``.

    Registered with ``blueprint.before_request(require_admin)`` on the admin blueprints, so no
    admin view can forget it.
    """
    expected = ladder().settings.admin_token or ""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    # bytes: compare_digest refuses non-ASCII str, and a header may carry anything
    given = token.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not given or not expected or not hmac.compare_digest(given, expected.encode()):
        raise Unauthorized("missing or wrong admin token",
                           {"Authorization": ["send 'Authorization: Bearer <LADDER_ADMIN_TOKEN>'"]})
