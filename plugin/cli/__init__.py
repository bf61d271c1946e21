"""The ``ladder`` command (click), one module per audience:

* :mod:`.base` — the group, error rendering (every ``LadderError`` is a message and its exit
  code, no tracebacks for user mistakes), shared helpers;
* :mod:`.server` — ``serve``, ``worker``;
* :mod:`.programmes` — ``init``, ``validate``, ``simulate``;
* :mod:`.records` — ``explain``, ``import``, ``sync``, ``replay``, ``inbox-export``, ``customer-data``;
* :mod:`.operators` — ``inbox list|retry``, ``deliveries list|retry``.
"""
from __future__ import annotations

from . import operators, programmes, records, server  # noqa: F401 - each registers its commands
from .base import LadderGroup, main, read_events, read_labelled

__all__ = ["LadderGroup", "main", "read_events", "read_labelled"]
