"""Liveness: answers without touching the rule engine; checks the database.

``status`` is ``degraded`` (still 200: the process is alive and a restart fixes nothing) when
more than :data:`FAILURE_THRESHOLD` inbox rows or deliveries failed in the last 24 hours —
``failures`` gives the counts, ``ladder inbox list --status failed`` / ``ladder deliveries list
--status failed`` the rows.  A database that does not answer is 503.
"""
from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from flask import current_app
from flask_smorest import Blueprint

from .. import __version__, inbox_failures
from ..clock import utcnow
from ..documents import HealthSchema
from ..globals import ladder
from ..outbox import failures

#: more failures than this (inbox rows or deliveries, in the last 24 h) → ``degraded``;
#: ``app.config["LADDER_HEALTH_FAILURE_THRESHOLD"]`` changes it
FAILURE_THRESHOLD = 10
FAILURE_WINDOW = timedelta(hours=24)

URL_PREFIX = ""
blp = Blueprint("health", __name__, description="Liveness")


@blp.route("/healthz")
@blp.doc(security=[], responses={"503": {"description": "the database does not answer", "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}}})
@blp.response(200, HealthSchema, description="alive; ``degraded`` when failures pile up (see ``failures``)")
def healthz():
    """Liveness, database reachability, and failures of the last 24 hours."""
    state = ladder()
    try:
        with state.service.db.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        database = "ok"
    except sa.exc.SQLAlchemyError as exc:  # report, don't crash: this endpoint exists to tell
        degraded = {"status": "degraded", "database": f"error: {exc.__class__.__name__}", "version": __version__}
        return HealthSchema().dump(degraded), 503
    threshold = int(current_app.config.get("LADDER_HEALTH_FAILURE_THRESHOLD", FAILURE_THRESHOLD))
    since = utcnow() - FAILURE_WINDOW
    counts = {"inbox_failed_24h": inbox_failures.failures_since(state.service.db, since),
              "deliveries_failed_24h": failures.failures_since(state.service.db, since), "threshold": threshold}
    degraded = counts["inbox_failed_24h"] > threshold or counts["deliveries_failed_24h"] > threshold
    return {"status": "degraded" if degraded else "ok", "database": database, "version": __version__,
            "failures": counts}
