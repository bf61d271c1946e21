"""The state machines' states, as types: award, delivery and inbox statuses, delivery actions
and notification channels.

Each is a ``StrEnum``, so a member *is* its string (``AwardStatus.DUE == "due"``, JSON and the
database see the plain value), and each column that holds one has a CHECK constraint listing
exactly these values (``store.py``, migration 0003): a typo is a failed write, not a silent
new state.
"""
from __future__ import annotations

from enum import StrEnum


class AwardStatus(StrEnum):
    """Where an award stands (the ``status`` of the customer document's rewards)."""

    DUE = "due"  # decided, not delivered yet (or, on a generic shop, for the integrator to fetch)
    DELIVERED = "delivered"  # the shop (or the notice that is the reward) confirmed it
    NEEDS_MANUAL_ACTION = "needs_manual_action"  # the shop cannot carry it: staff do it by hand
    FAILED = "failed"  # the shop refused it, or every retry failed
    WITHHELD = "withheld"  # decided but not given
    REVERSED = "reversed"  # never earned: the history that earned it was undone
    HISTORICAL = "historical"  # implied before the shop went live: recorded, never delivered
    ENDED = "ended"  # a privilege held, then left (its stage, its version, its condition): taken back
    SHADOW = "shadow"  # decided in a shadow-mode shop: recorded, never delivered
    SUSPENDED = "suspended"  # a privilege held but paused (the customer lapsed); restored when that ends
    EXPIRED = "expired"  # a grant whose validity passed before it was used or delivered


class DeliveryAction(StrEnum):
    """What an outbox row does."""

    GRANT = "grant"  # carry the award to the shop
    REVOKE = "revoke"  # undo a delivered grant
    NOTIFY = "notify"  # tell the customer (e-mail) or the shop's marketing tool (webhook)


class DeliveryStatus(StrEnum):
    """Where an outbox row stands."""

    PENDING = "pending"  # due at next_attempt_at (NULL: waiting for something else)
    DELIVERED = "delivered"
    FAILED = "failed"
    NEEDS_MANUAL_ACTION = "needs_manual_action"
    SHADOW = "shadow"  # a shadow-mode shop: computed, never run
    CANCELLED = "cancelled"


class NotifyChannel(StrEnum):
    """How a notice travels."""

    EMAIL = "email"
    WEBHOOK = "webhook"


class InboxStatus(StrEnum):
    """Where a received webhook stands."""

    RECEIVED = "received"  # stored, not processed yet (the live lane picks it up)
    PROCESSED = "processed"
    IGNORED = "ignored"  # nothing for us; the adapter's note is kept
    FAILED = "failed"  # cannot be understood; the reason is kept; never retried


def check_in(column: str, values: type[StrEnum]) -> str:
    """The SQL of a CHECK constraint: ``column`` holds one of the enum's values."""
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"
