"""Liveness: answers without touching the rule engine; checks the database."""
from __future__ import annotations

import sqlalchemy as sa
from flask_smorest import Blueprint

from .. import __version__
from ..documents import HealthSchema
from ..globals import ladder

URL_PREFIX = ""
blp = Blueprint("health", __name__, description="Liveness")


@blp.route("/healthz")
@blp.doc(security=[], responses={"503": {"description": "the database does not answer", "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}}})
@blp.response(200, HealthSchema)
def healthz():
    """Liveness and database reachability."""
    state = ladder()
    try:
        with state.service.db.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        database = "ok"
    except sa.exc.SQLAlchemyError as exc:  # report, don't crash: this endpoint exists to tell
        degraded = {"status": "degraded", "database": f"error: {exc.__class__.__name__}", "version": __version__}
        return HealthSchema().dump(degraded), 503
    return {"status": "ok", "database": database, "version": __version__}
