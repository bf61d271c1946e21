"""Loading a shop's history (``ladder import``, ``ladder sync``): no rewards paid for the past.

The first import sets the shop's ``live_from`` (default: now); awards implied by the state before
it are recorded as ``historical``, never delivered.  Everything is validated before anything is
stored, then events are stored in batches and every customer of the shop with unapplied events
is processed — so an interrupted earlier run is finished too.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from . import identity, ledger, store
from .clock import iso, utcnow
from .errors import NotFound
from .programme import Programme

Progress = Callable[[str], None]


def set_live_from(db: sa.Engine, shop_id: str, live_from: datetime | None, progress: Progress | None) -> None:
    """Set the shop's go-live time once; a later import keeps the first one (and says so)."""
    wanted = live_from or utcnow()
    with store.begin_write(db) as conn:
        row = conn.execute(sa.select(store.shops).where(store.shops.c.shop_id == shop_id)).first()
        if row.live_from is None:
            conn.execute(store.shops.update().where(store.shops.c.shop_id == shop_id).values(live_from=wanted))
        elif live_from is not None and row.live_from != live_from and progress:
            progress(f"note: shop '{shop_id}' went live at {iso(row.live_from)} (an earlier import "
                     f"or sync); --live-from {iso(live_from)} is ignored")


def import_events(db: sa.Engine, programme: Programme, shop_id: str, events: Iterable[Mapping[str, Any]],
                  process: Callable[[str], Any], *, live_from: datetime | None = None,
                  progress: Progress | None = None, source: str = "import",
                  labels: Sequence[str] | None = None) -> dict[str, int]:
    """Validate all, set ``live_from``, store in batches, then ``process(customer_id)`` every
    customer with unapplied events.  The shop's programme must already be recorded.

    Returns ``{"accepted", "duplicates", "customers"}``.  An invalid item (named by ``labels``,
    e.g. file lines) rejects the whole import and nothing is stored.
    """
    parsed, names = ledger.parse_labelled(list(events), labels, "invalid events in the import; nothing was stored")
    ledger.check_acceptable(programme, parsed, utcnow(), names)
    set_live_from(db, shop_id, live_from, progress)
    totals = {"accepted": 0, "duplicates": 0, "customers": 0}
    counted: set[str] = set()
    for chunk in ledger.chunks(parsed, ledger.MAX_EVENTS_PER_REQUEST):
        # a shop sync re-derives vendor events: the same id is the same event (keep-first)
        res = ledger.store_events(db, shop_id, chunk, source, keep_first=source != "import")
        totals["accepted"] += res.accepted
        totals["duplicates"] += res.duplicates
        counted.update(res.customers)
        if source != "import":
            identity.link_guests(db, shop_id, chunk)  # guests merged into an account
        if progress:
            progress(f"stored {totals['accepted']} events ({totals['duplicates']} already known)")
    customers = [c for _, c in ledger.customers_with_unapplied(db, shop_id)]
    for i, customer_id in enumerate(customers, 1):
        try:
            process(customer_id)
        except NotFound:
            pass  # a guest alias whose events now belong to its account
        if progress and (i % 100 == 0 or i == len(customers)):
            progress(f"evaluated {i}/{len(customers)} customers")
    totals["customers"] = len(counted)
    return totals
