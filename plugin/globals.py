"""The extension state of the current Flask app, reachable from any view (like ``flask.globals``).

Views and blueprints import :func:`ladder` from here, never from ``app.py``: the application
factory imports the blueprints, so the blueprints must not import the factory back.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import current_app

if TYPE_CHECKING:
    from .service import LadderService

#: the key of ``app.extensions`` under which :class:`~loyalty_ladder.app.LoyaltyLadder` keeps its state
EXTENSION = "loyalty_ladder"


class LadderState:
    """What the extension keeps per app: settings, the service facade, the queue and its tasks."""

    def __init__(self, settings: Any, service: LadderService, huey: Any, tasks: Any):
        self.settings = settings
        self.service = service
        self.huey = huey
        self.tasks = tasks
        self.api: Any = None


def ladder() -> LadderState:
    """The extension state of the current app (inside a request or an app context)."""
    return current_app.extensions[EXTENSION]
