"""Who is whose personal manager: a VIP customer's manager, from the shop's ``vip_managers``.

A customer is a VIP while they hold a ``vip_service`` award: recorded, with a status that
means held (:data:`HELD`: not ended, reversed, withheld or historical) and not past its
``expires_at``.  Of several such awards the one with the highest priority (1 = highest; then the
earliest granted, then the key) gives their ``level`` and ``priority``.

While a VIP, a customer of a shop that lists managers has one (table ``vip_assignments``):

* **sticky**: the manager stays as long as the customer is a VIP and the manager is still in
  the shop's list;
* **balanced**: a new VIP, or one whose manager left the list, gets the listed manager with the
  fewest VIP customers in the shop, ties going to the earlier one in the list.  The count is one
  SQL ``GROUP BY`` inside the customer's processing transaction; on PostgreSQL a transaction-scoped
  advisory lock per shop, taken after the customer lock and only to choose, makes two customers
  choosing at once count one after the other (SQLite's write lock already does);
* **released** when the customer stops being a VIP (or is redacted: a pseudonym is nobody to
  serve); a shop without managers gives none (``manager`` null).  While the VIP service is
  ``suspended`` (the customer lapsed) they are no VIP (:func:`current` is null) but keep the
  assignment: the same manager serves them again when it is restored.

:func:`ensure` does all that for one customer; processing calls it after the awards are recorded
and before their deliveries are planned, so it sees the awards of the same reconcile.  It is
idempotent: processing again changes nothing.  It answers the keys of the held award whose shop
copy is stale (the manager changed while the customer stayed a VIP), which the outbox delivers
again.  The assignment records processing, not history (who was free when), so it is not a
function of the customer's events.

The customer document, the GDPR export and every delivery's customer document show
:func:`current`: ``{level, priority, manager: {id, name, email} | null}``, or null for a customer
who is not a VIP.  A manager's name and e-mail come from the shops file when read, never stored.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from . import identity, store
from .rewards.base import params_of
from .rewards.vip_service import DEFAULT_PRIORITY, VipService
from .shop import ShopConfig, VipManager
from .statuses import AwardStatus

#: the key of the customer documents (and of the shop's customer field) that carries VIP service
FIELD = VipService.customer_field
#: award statuses of a privilege the customer holds (delivered or on its way, or waiting for staff)
HELD = (AwardStatus.DUE, AwardStatus.DELIVERED, AwardStatus.NEEDS_MANUAL_ACTION, AwardStatus.FAILED,
        AwardStatus.SHADOW)
#: rows per statement when customers are woken
_CHUNK = 500


def priority_of(award: Any) -> int:
    """An award's ``priority`` param (1 = highest), :data:`DEFAULT_PRIORITY` when it names none."""
    value = params_of(award).get("priority")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else DEFAULT_PRIORITY


def _expired(award: Mapping[str, Any], now: datetime) -> bool:
    expires = params_of(award).get("expires_at")
    if not expires:
        return False
    try:
        return datetime.fromisoformat(str(expires)) <= now
    except ValueError:
        return False


def best(awards: Iterable[Mapping[str, Any]], now: datetime) -> Mapping[str, Any] | None:
    """Of a customer's award rows (or documents), the held VIP award that decides their level and
    priority: the highest priority, then the earliest granted, then the key.  None: not a VIP."""
    held = [a for a in awards if a.get("type") == VipService.name and a.get("status") in HELD
            and not _expired(a, now)]
    if not held:
        return None
    return min(held, key=lambda a: (priority_of(a), a.get("granted_at") or now, str(a.get("key"))))


def held(conn: sa.Connection, shop_id: str, customer_id: str, now: datetime) -> dict[str, Any] | None:
    """The customer's deciding VIP award row (:func:`best`), or None."""
    t = store.awards
    rows = conn.execute(sa.select(t).where(t.c.shop_id == shop_id, t.c.customer_id == customer_id,
                                           t.c.type == VipService.name, t.c.status.in_(HELD))).mappings()
    found = best((dict(r) for r in rows), now)
    return dict(found) if found is not None else None


def assignment(conn: sa.Connection, shop_id: str, customer_id: str) -> dict[str, Any] | None:
    """The customer's stored assignment ``{manager_id, assigned_at}``, or None."""
    t = store.vip_assignments
    row = conn.execute(sa.select(t.c.manager_id, t.c.assigned_at)
                       .where(t.c.shop_id == shop_id, t.c.customer_id == customer_id)).mappings().first()
    return dict(row) if row is not None else None


def manager_document(manager: VipManager | None) -> dict[str, Any] | None:
    return None if manager is None else {"id": manager.id, "name": manager.name, "email": manager.email}


def document(award: Mapping[str, Any] | None, manager: VipManager | None) -> dict[str, Any] | None:
    """``{level, priority, manager}`` of a deciding VIP award, or None without one."""
    if award is None:
        return None
    return {"level": params_of(award).get("level"), "priority": priority_of(award),
            "manager": manager_document(manager)}


def _listed(managers: Sequence[VipManager], manager_id: str | None) -> VipManager | None:
    return next((m for m in managers if m.id == manager_id), None)


def current(conn: sa.Connection, shop_id: str, customer_id: str, managers: Sequence[VipManager],
            now: datetime) -> dict[str, Any] | None:
    """The customer's VIP document now: their deciding award's level and priority, and their
    manager as the shop's list names them (null without one, or when they left the list)."""
    award = held(conn, shop_id, customer_id, now)
    if award is None:
        return None
    row = assignment(conn, shop_id, customer_id)
    return document(award, _listed(managers, row["manager_id"]) if row is not None else None)


def loads(conn: sa.Connection, shop_id: str) -> dict[str, int]:
    """VIP customers per manager id in the shop (ids no longer listed included)."""
    t = store.vip_assignments
    return {r.manager_id: int(r.n) for r in conn.execute(
        sa.select(t.c.manager_id, sa.func.count().label("n")).where(t.c.shop_id == shop_id)
        .group_by(t.c.manager_id))}


def _lock_key(shop_id: str) -> int:
    digest = hashlib.sha256(f"loyalty-ladder vip\x1f{shop_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _least_loaded(conn: sa.Connection, shop: ShopConfig) -> VipManager:
    """The listed manager with the fewest VIP customers, ties by list order; on PostgreSQL under
    the shop's advisory lock (held to the end of the transaction), so the next chooser counts
    this choice."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(shop.id)})
    counts = loads(conn, shop.id)
    return min(enumerate(shop.vip_managers), key=lambda im: (counts.get(im[1].id, 0), im[0]))[1]


def ensure(conn: sa.Connection, shop: ShopConfig, customer_id: str, now: datetime) -> tuple[str, ...]:
    """Make the customer's assignment match whether they hold VIP service (module docstring).

    Call in the customer's processing transaction, under their lock, after the awards are
    recorded.  Returns the key of the deciding VIP award when the manager changed while the
    customer stays a VIP (the shop's copy is stale: deliver it again); else ``()``.  Becoming a VIP
    needs nothing more (the award's grant carries the manager), nor does ending (its revoke).
    """
    t = store.vip_assignments
    where = (t.c.shop_id == shop.id, t.c.customer_id == customer_id)
    award = None if identity.is_pseudonym(customer_id) else held(conn, shop.id, customer_id, now)
    row = assignment(conn, shop.id, customer_id)
    if award is None:
        if row is not None and not _paused(conn, shop.id, customer_id):
            conn.execute(t.delete().where(*where))
        return ()
    if row is not None and _listed(shop.vip_managers, row["manager_id"]) is not None:
        return ()  # sticky
    if not shop.vip_managers:
        if row is None:
            return ()
        conn.execute(t.delete().where(*where))  # their manager left and nobody replaces them
        return (award["key"],)
    manager = _least_loaded(conn, shop)
    if row is None:
        conn.execute(t.insert().values(shop_id=shop.id, customer_id=customer_id, manager_id=manager.id,
                                       assigned_at=now))
    else:
        conn.execute(t.update().where(*where).values(manager_id=manager.id, assigned_at=now))
    return (award["key"],)


def _paused(conn: sa.Connection, shop_id: str, customer_id: str) -> bool:
    """Whether the customer's VIP service is suspended (a lapse): their manager waits for them."""
    t = store.awards
    return conn.execute(sa.select(t.c.key).where(t.c.shop_id == shop_id, t.c.customer_id == customer_id,
                                                 t.c.type == VipService.name,
                                                 t.c.status == AwardStatus.SUSPENDED).limit(1)).first() is not None


def wake_reassigned(db: sa.Engine, managers_by_shop: Mapping[str, Sequence[VipManager]], now: datetime) -> int:
    """Make due now every customer whose manager is no longer in their shop's list (the shops
    file changed), so processing gives them another one and tells the shop.  One ``SELECT`` per
    shop when nothing changed; returns how many customers were made due."""
    t, cu = store.vip_assignments, store.customers
    woken = 0
    for shop_id, managers in managers_by_shop.items():
        with db.connect() as conn:
            orphans = [r.customer_id for r in conn.execute(
                sa.select(t.c.customer_id).where(t.c.shop_id == shop_id,
                                                 t.c.manager_id.not_in([m.id for m in managers])))]
        if not orphans:
            continue
        with store.begin_write(db) as conn:
            for i in range(0, len(orphans), _CHUNK):
                woken += conn.execute(cu.update().where(
                    cu.c.shop_id == shop_id, cu.c.customer_id.in_(orphans[i:i + _CHUNK]),
                    sa.or_(cu.c.next_wake_at.is_(None), cu.c.next_wake_at > now))
                    .values(next_wake_at=now, updated_at=cu.c.updated_at)).rowcount
    return woken
