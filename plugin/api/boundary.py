"""What the HTTP boundary refuses before a view runs: ids in the URL that could never have been
stored (:func:`check_path_ids`, the id rules of :mod:`..events`), and JSON objects that repeat
a key (:func:`json_body`): ``{"id": "a", "id": "b"}`` means whatever the parser keeps, so it is
refused rather than guessed.
"""
from __future__ import annotations

import json
from typing import Any

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from ..errors import BadRequest
from ..events import id_problem

#: the URL parameters that carry ids (the shop's, the customer's)
PATH_IDS = ("shop", "customer_id")
#: our blueprints whose URLs carry them (an embedding app's own routes are left alone)
CHECKED_BLUEPRINTS = ("events", "customers", "operator", "admin", "programme")


def check_path_ids(endpoint: str | None, values: dict[str, Any] | None) -> None:
    """``app.url_value_preprocessor``: 400 for a shop or customer id in the URL that breaks the
    id rules (control characters, blank) — no event could carry it, so nothing can be found."""
    if not values or not endpoint or endpoint.partition(".")[0] not in CHECKED_BLUEPRINTS:
        return
    errors = {name: [problem] for name in PATH_IDS
              if isinstance(values.get(name), str) and (problem := id_problem(values[name]))}
    if errors:
        raise BadRequest("invalid id in the URL", errors)


class DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(key)
        out[key] = value
    return out


def body_bytes(cache: bool = False) -> bytes:
    """The raw request body, at most ``MAX_CONTENT_LENGTH`` bytes.

    Werkzeug refuses a larger ``Content-Length`` with 413 before reading; a chunked body (no
    length) it only cuts at the limit.  A cut body would be judged as malformed (or, worse, a
    signature mismatch), so a chunked body that reaches the limit is refused with 413 too."""
    data = request.get_data(cache=cache)
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit is not None and request.content_length is None and len(data) >= limit:
        raise RequestEntityTooLarge(f"the body is larger than the limit of {limit} bytes")
    return data


def json_body() -> Any:
    """The request's JSON body, or None when it is not valid JSON; BadRequest (400) when an
    object repeats a key."""
    try:
        return json.loads(body_bytes(cache=True), object_pairs_hook=_refuse_duplicates)
    except DuplicateKey as exc:
        raise BadRequest(f"the JSON body repeats the key {exc.key!r}",
                         {"_schema": [f"duplicate key {exc.key!r}: send each key once"]}) from None
    except (ValueError, UnicodeDecodeError):
        return None


#: the header that names who performs an admin action (required on every changing admin call)
AUTHOR_HEADER = "X-Ladder-Author"


def require_author() -> str:
    """The author of an admin action from the ``X-Ladder-Author`` header; BadRequest (400) when
    it is missing, blank or longer than 255 characters (the audit log keeps who did what)."""
    value = (request.headers.get(AUTHOR_HEADER) or "").strip()
    if not value:
        raise BadRequest(f"the {AUTHOR_HEADER} header is required: who performs this action",
                         {AUTHOR_HEADER: ["Missing data for required field."]})
    if len(value) > 255:
        raise BadRequest(f"the {AUTHOR_HEADER} header is longer than 255 characters",
                         {AUTHOR_HEADER: ["Longer than maximum length 255."]})
    return value
