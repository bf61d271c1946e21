"""The outbox: one delivery job per (award, action, channel), planned inside the reconcile
transaction, run by queue jobs, retried with backoff, and marked done only on the shop's success.

Planning (:mod:`.planning`, :func:`plan`) happens in the same transaction that records the
awards, so an award and the jobs that carry it commit together or not at all.  Running
(:mod:`.running`, :func:`run`: claim, call, finish) happens outside any transaction for the slow
part; its docstring tells how a late answer and a concurrent reconcile meet.

Statuses of a row: ``pending`` (due when ``next_attempt_at`` has come; ``NULL`` means it waits
for something else — a notice waits for its grant), ``delivered``, ``failed``,
``needs_manual_action``, ``shadow`` (the shop watches; never run) and ``cancelled``.  The award's
status follows its grant: ``due`` → ``delivered`` | ``failed`` | ``needs_manual_action``; a revoke
leaves it ``reversed``.

A platform without a shop API (``generic``: its adapter's ``has_shop_api`` is false) has
nothing to deliver to: its integrator reads the ``due`` awards from the customer endpoint, so
it gets no grant or revoke jobs, only notices (sent at once).

Notices (``notify``) are sent only after the grant is delivered (a customer must never receive a
code that does not exist yet), except for rewards that *are* a notice (a type whose
``notice_only`` is true, a greeting), which need no grant at all when the shop has a notification channel.  E-mail tells
the customer of what they got; the signed webhook also reports reversals (``award.reversed``) to
the shop's marketing tool, which heard of the grant.
"""
from __future__ import annotations

from .documents import EVENT_GRANTED, EVENT_REVERSED, award_document, customer_profile, first_stage
from .planning import arm_row, plan, set_award_status
from .running import (
    BACKOFF_BASE_SECONDS,
    BACKOFF_MAX,
    CLAIM_LEASE,
    DEFAULT_RATE_LIMIT_WAIT,
    MAX_ATTEMPTS,
    AdapterFactory,
    RunOutcome,
    backoff,
    due,
    event_id,
    run,
)

__all__ = [
    "BACKOFF_BASE_SECONDS", "BACKOFF_MAX", "CLAIM_LEASE", "DEFAULT_RATE_LIMIT_WAIT", "EVENT_GRANTED",
    "EVENT_REVERSED", "MAX_ATTEMPTS", "AdapterFactory", "RunOutcome", "arm_row", "award_document", "backoff",
    "customer_profile", "due", "event_id", "first_stage", "plan", "run", "set_award_status",
]
