"""The ``ladder`` command (click), one module per audience:

* :mod:`.base` — the group, error rendering (every ``LadderError`` is a message and its exit
  code, no tracebacks for user mistakes), shared helpers;
* :mod:`.server` — ``serve``, ``worker``;
* :mod:`.programmes` — ``init``, ``validate``, ``simulate``;
* :mod:`.records` — ``explain``, ``import``, ``sync``, ``replay``, ``inbox-export``, ``customer-data``;
* :mod:`.operators` — ``inbox list|retry``, ``deliveries list|retry``, ``awards list|done`` (the staff worklist).
* :mod:`.lists` — ``customers``, ``stats``.
* :mod:`.admin` — ``turn start``, ``adjust``, ``exclusions set|show``, ``audit``.
* :mod:`.rules` — ``rules activate|list|show``: programme versions in the database.
* :mod:`.forecast` — ``backtest``: a programme replayed over history before it goes live.
* :mod:`.demo` — ``demo-data``: a realistic shop history to try everything on.
* :mod:`.points` — ``points redeem|adjust``: a customer's points spent, added or removed.
"""
from __future__ import annotations

from . import admin, demo, forecast, lists, operators, points, programmes, records, rules, server  # noqa: F401 - each registers its commands
from .base import LadderGroup, main, read_events, read_labelled

__all__ = ["LadderGroup", "main", "read_events", "read_labelled"]
