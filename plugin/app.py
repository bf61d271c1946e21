"""The Flask side: ``create_app()`` for the standalone server and the
``LoyaltyLadder`` extension for embedding the engine in a shop's own Flask app.

Nothing happens at import time; the extension keeps its state in
``app.extensions["loyalty_ladder"]``.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from flask import Flask, jsonify
from flask_smorest import Api
from werkzeug.exceptions import HTTPException

from . import __version__, redact
from .api import admin, customers, events, health, operator, points, programme, unsubscribe, webhooks
from .api.boundary import check_path_ids
from .config import SETTING_NAMES, Settings, load_settings
from .documents import ErrorSchema
from .errors import ConfigError, LadderError
from .events import EventSchema
from .globals import EXTENSION, LadderState, ladder
from .queue import make_huey
from .service import LadderService
from .shops import require_secrets
from .tasks import register_tasks

__all__ = ["EXTENSION", "LadderState", "LoyaltyLadder", "create_app", "ladder"]

log = logging.getLogger(__name__)

#: the blueprints, in the order their routes are registered
BLUEPRINTS = (health, events, customers, points, operator, admin, programme, webhooks, unsubscribe)


class LadderApi(Api):
    """flask-smorest's Api with our one JSON error shape ``{code, message, errors}``, which is
    also the ``Error`` component of ``/openapi.json`` (with a string ``code``)."""

    ERROR_SCHEMA = ErrorSchema
    # no catch-all "default" response: each operation declares the statuses it answers with,
    # so the document can be checked against the server (tests/test_openapi_conformance.py)
    DEFAULT_ERROR_RESPONSE_NAME = None

    def handle_http_exception(self, error: HTTPException):  # type: ignore[override]
        data = getattr(error, "data", None) or {}
        errors = data.get("messages") or data.get("errors") or {}
        if isinstance(errors, Mapping) and set(errors) <= {"json", "query", "view_args", "headers", "form", "files"}:
            # webargs nests errors by location; a caller wants the fields
            flat: dict[str, Any] = {}
            for part in errors.values():
                if isinstance(part, Mapping):
                    flat.update(part)
            errors = flat
        code = (error.name or "error").lower().replace(" ", "_")
        message = data.get("message") or error.description or error.name
        response = jsonify({"code": code, "message": message, "errors": errors})
        response.status_code = error.code or 500
        for name, value in (data.get("headers") or {}).items():
            response.headers[name] = value
        if getattr(error, "valid_methods", None):  # 405: say which methods the resource has
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response


def _handle_ladder_error(error: LadderError):
    response = jsonify(error.to_dict())
    response.status_code = error.http_status
    return response


#: how long a client should wait before retrying when the store is briefly unavailable
RETRY_AFTER_SECONDS = 2


def _handle_store_unavailable(error: sa.exc.OperationalError):
    # A locked SQLite file past its busy timeout, a PostgreSQL that restarts: load, not bad
    # input and not a bug.  A shop retries a 503 webhook; nothing was stored.
    log.warning("store unavailable, answered 503: %s", getattr(error, "orig", error))
    response = jsonify({"code": "unavailable", "message": "the store is busy or unavailable; retry shortly",
                        "errors": {}})
    response.status_code = 503
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _handle_unexpected(error: Exception):
    # A bug, not bad input: log it with its traceback, answer without one.
    log.exception("unhandled error")
    response = jsonify({"code": "internal_error", "message": "internal error; the details are in the server log",
                        "errors": {}})
    response.status_code = 500
    return response


class LoyaltyLadder:
    """Flask extension: ``LoyaltyLadder(app)`` or ``ext = LoyaltyLadder(); ext.init_app(app)``.

    Options: ``settings`` (a Settings; default: ``load_settings()`` with the host app's
    ``app.config["LADDER_…"]`` values on top, see :func:`settings_from_app`), ``service`` (an existing
    LadderService), ``url_prefix`` for every route (e.g. ``"/loyalty"`` when embedded),
    ``immediate_queue`` (process events synchronously instead of through the queue; for tests),
    ``require_token`` (refuse to start without an admin token; default True).
    """

    def __init__(self, app: Flask | None = None, **options: Any):
        self.options = options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, **options: Any) -> None:
        opts = {**self.options, **options}
        settings: Settings = opts.get("settings") or settings_from_app(app)
        if not settings.admin_token and opts.get("require_token", True):
            raise ConfigError(
                "LADDER_ADMIN_TOKEN is not set: the admin API needs a bearer token (environment, settings file, "
                "or app.config[\"LADDER_ADMIN_TOKEN\"] when embedded; "
                "(`ladder serve` generates one; other processes must be given one)")
        service: LadderService = opts.get("service") or LadderService(settings)
        redact.install(settings, service.shops)  # no secret of these in any log line
        require_secrets(service.shops)  # a server serves every shop: all their secrets, now
        huey = make_huey(settings, immediate=bool(opts.get("immediate_queue", False)))
        tasks = register_tasks(huey, service)
        state = LadderState(settings=settings, service=service, huey=huey, tasks=tasks)
        app.extensions[EXTENSION] = state

        app.config.setdefault("API_TITLE", "loyalty-ladder")
        app.config.setdefault("API_VERSION", __version__)
        app.config.setdefault("OPENAPI_VERSION", "3.0.3")
        app.config.setdefault("OPENAPI_URL_PREFIX", opts.get("url_prefix") or "/")
        app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
        # Flask's defaults hold MAX_CONTENT_LENGTH = None, so setdefault would keep "unlimited":
        # set it unless the host app chose a limit itself.  Werkzeug refuses a larger
        # Content-Length with 413 before reading the body, and stops a chunked body at the limit.
        if app.config.get("MAX_CONTENT_LENGTH") is None:
            app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
        api = LadderApi(app, spec_kwargs={"components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"}}}})
        api.spec.components.schema("Event", schema=EventSchema)

        prefix = (opts.get("url_prefix") or "").rstrip("/")
        for module in BLUEPRINTS:
            api.register_blueprint(module.blp, url_prefix=prefix + module.URL_PREFIX)
        app.register_error_handler(LadderError, _handle_ladder_error)
        app.url_value_preprocessor(check_path_ids)  # ids in the URL follow the events' id rules
        app.register_error_handler(sa.exc.OperationalError, _handle_store_unavailable)
        if not app.debug and not app.testing:
            app.register_error_handler(Exception, _handle_unexpected)
        state.api = api


def settings_from_app(app: Flask) -> Settings:
    """Settings for an embedded extension: defaults ← settings file ← ``LADDER_*`` environment ←
    the host app's ``app.config["LADDER_…"]`` (e.g. ``app.config["LADDER_ADMIN_TOKEN"]``), so a
    shop's own Flask app configures us the way it configures itself."""
    overrides = {name: app.config[key] for name in SETTING_NAMES
                 if (key := f"LADDER_{name.upper()}") in app.config and app.config[key] is not None}
    return load_settings(overrides=overrides)


def create_app(settings: Settings | Mapping[str, Any] | None = None, **options: Any) -> Flask:
    """The standalone server's app (``gunicorn 'loyalty_ladder.app:create_app()'``).

    ``settings`` may be a Settings or a mapping of overrides on top of ``load_settings()``.
    """
    if settings is None or isinstance(settings, Mapping):
        settings = load_settings(overrides=dict(settings or {}))
    logging.basicConfig(level=getattr(logging, str(settings.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Migrations and the per-task queue chatter are noise at INFO; their warnings still show.
    for noisy in ("alembic", "huey"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    app = Flask("loyalty_ladder")
    app.json.sort_keys = False  # keep documents in their documented order
    LoyaltyLadder(app, settings=settings, **options)
    return app
