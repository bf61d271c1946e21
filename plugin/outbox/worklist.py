"""The staff worklist: awards by status, and marking one done by hand.

Some rewards no shop API can carry (a gift to send, a free service to book, payment terms to set
on a platform without them): their awards wait as ``needs_manual_action``.  Staff list them
(``GET /api/v1/shops/<shop>/awards?status=needs_manual_action``, ``ladder awards list``), carry
them out, and mark each done with their name and a note (``POST …/awards/<pk>/done``,
``ladder awards done``): the award is then ``delivered`` with ``done_by``, ``done_at`` and
``done_note``, its waiting grant row too, and the customer is told as after any delivery.  A grant
that ``failed`` (the shop refused it) may be handed over by hand the same way.  Marking an award
done twice with the same note changes nothing; anything else that is not waiting for staff is a
409.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .. import audit, store
from ..clock import utcnow
from ..errors import BadRequest, Conflict, NotFound
from ..shop import ShopConfig
from ..statuses import AwardStatus
from .planning import handed_over, set_award_status

#: the statuses of awards that wait for staff
WAITING = (AwardStatus.NEEDS_MANUAL_ACTION, AwardStatus.FAILED)
#: the longest note kept
MAX_NOTE = 1000
#: the largest row id (a BIGINT); a larger one names no award
MAX_PK = 2**63 - 1

_COLUMNS = ("pk", "shop_id", "customer_id", "key", "reward_id", "type", "stage", "status", "reason", "params",
            "value", "rule_version", "granted_at", "updated_at", "done_by", "done_at", "done_note")


def list_awards(db: sa.Engine, shop_id: str, *, status: str | None = None, before: int | None = None,
                limit: int = store.PAGE_DEFAULT) -> list[dict[str, Any]]:
    """The shop's awards with ``status`` (any when None), newest first, pk below ``before``."""
    t = store.awards
    return store.newest_rows(db, t, [t.c[name] for name in _COLUMNS], shop_id=shop_id, status=status, before=before,
                             limit=limit)


@dataclass(frozen=True)
class Done:
    """The award after :func:`mark_done`, whether this call changed it, and the deliveries to run now."""

    award: dict[str, Any]
    changed: bool
    deliveries: tuple[int, ...] = ()


def check_note(note: Any) -> str:
    if not isinstance(note, str) or not note.strip():
        raise BadRequest("say what was done: a note is required", {"note": ["Missing data for required field."]})
    if len(note) > MAX_NOTE:
        raise BadRequest(f"the note is at most {MAX_NOTE} characters", {"note": [f"Longer than {MAX_NOTE}."]})
    return note.strip()


def mark_done(db: sa.Engine, shop: ShopConfig, pk: int, *, author: str, note: str, smtp_configured: bool = False,
              now: datetime | None = None) -> Done:
    """Staff carried out award ``pk`` of ``shop`` by hand: delivered, with who, when and the note,
    in one transaction with its grant row, its notices and the audit row (``award_done``)."""
    note = check_note(note)
    now = now or utcnow()
    t = store.awards
    if not 1 <= pk <= MAX_PK:
        raise NotFound(f"no award {pk} in shop '{shop.id}'", {"award": [f"unknown award {pk}"]})
    with store.begin_write(db) as conn:
        found = conn.execute(sa.select(t.c.customer_id).where(t.c.pk == pk, t.c.shop_id == shop.id)).first()
        if found is None:
            raise NotFound(f"no award {pk} in shop '{shop.id}'", {"award": [f"unknown award {pk}"]})
        store.lock_customer(conn, shop.id, found.customer_id)  # the reconcile of this customer waits
        award = dict(conn.execute(sa.select(t).where(t.c.pk == pk)).mappings().one())
        if award["status"] == AwardStatus.DELIVERED and award["done_by"] is not None and award["done_note"] == note:
            return Done(_row(award), changed=False)
        if award["status"] not in WAITING:
            raise Conflict(f"award {pk} is {award['status']}: only awards waiting for staff "
                           f"({', '.join(WAITING)}) are marked done",
                           {"status": [f"is {award['status']}, not {' or '.join(WAITING)}"]})
        # only while it still waits: a retry of its failed grant may have made it due meanwhile
        if not conn.execute(t.update().where(t.c.pk == pk, t.c.status.in_(WAITING))
                            .values(done_by=author, done_at=now, done_note=note)).rowcount:
            raise Conflict(f"award {pk} changed meanwhile (a retry?): look again", {"status": ["changed"]})
        set_award_status(conn, award, AwardStatus.DELIVERED, f"carried out by {author}: {note}", now)
        award.update(done_by=author, done_at=now, done_note=note, status=AwardStatus.DELIVERED)
        deliveries = handed_over(conn, shop, award, smtp_configured=smtp_configured, now=now)
        audit.record(conn, author=author, action="award_done", shop_id=shop.id, target=award["key"], reason=note,
                     detail={"pk": pk, "customer_id": award["customer_id"], "reward_id": award["reward_id"]}, at=now)
        award = dict(conn.execute(sa.select(t).where(t.c.pk == pk)).mappings().one())
    return Done(_row(award), changed=True, deliveries=tuple(deliveries))


def _row(award: dict[str, Any]) -> dict[str, Any]:
    return {name: award[name] for name in _COLUMNS}
