"""Seeing customers: a shop's customers page by page (filtered by stage, subgroup, lapse or
e-mail) and its counts (customers per stage × subgroup × lapsed, awards per status).

Read-only, and never more rows than a page: the list is a keyset page on the ``customers``
primary key ``(shop_id, customer_id)`` (``customer_id > cursor ORDER BY customer_id LIMIT n+1``),
and the counts are ``GROUP BY`` aggregates computed by the database.  A guest linked to an
account (``customer_links``) is not a customer of its own: its events are the account's, so it
is neither listed nor counted, and a search by e-mail that finds the guest shows the account.

The cursor is opaque to callers: URL-safe base64 of ``{"after": <last customer id>}``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from . import store
from .identity import guest_id
from .statuses import AwardStatus

#: customers per page unless told otherwise, and at most (the operator listings' bounds)
PAGE_DEFAULT = store.PAGE_DEFAULT
PAGE_MAX = store.PAGE_MAX

#: the columns of a customer's summary, in the order a table shows them
SUMMARY_COLUMNS = ("customer_id", "email", "stage", "subgroup", "lapsed", "turn", "since", "rule_version",
                   "next_wake_at", "updated_at")


class BadCursor(ValueError):
    """A cursor this module did not write (or one damaged on the way)."""


def encode_cursor(after: str) -> str:
    """The opaque cursor of the page that starts after customer ``after``."""
    return store.encode_cursor(after=after)


def decode_cursor(cursor: str) -> str:
    """The customer id a cursor continues after; :class:`BadCursor` for anything else."""
    try:
        after = store.decode_cursor(cursor, "after")["after"]
    except ValueError:
        after = None
    if not isinstance(after, str) or not after:
        raise BadCursor("not a cursor of this listing (pass next_cursor of the previous page unchanged)")
    return after


@dataclass(frozen=True)
class CustomerPage:
    """One page of customer summaries (dicts with :data:`SUMMARY_COLUMNS`) in ``customer_id``
    order; ``next_cursor`` fetches the next page, None when this one is the last."""

    items: tuple[dict[str, Any], ...]
    limit: int
    next_cursor: str | None


def _not_linked_alias(shop_id: str) -> sa.ColumnElement[bool]:
    """The customer row is not a guest linked to an account (a primary-key probe per row)."""
    cu, links = store.customers, store.customer_links
    return ~sa.exists().where(links.c.shop_id == shop_id, links.c.alias_id == cu.c.customer_id)


def ids_by_email(conn: sa.Connection, shop_id: str, email: str) -> list[str]:
    """The customers an e-mail address finds, as accounts: the guest whose id is the address's
    hash (``identity.guest_id``) and every customer whose stored address is the same, compared
    case-insensitively; a guest linked to an account is replaced by the account."""
    cu, links = store.customers, store.customer_links
    wanted = email.strip()
    if not wanted:
        return []
    found = {guest_id(wanted)}
    # lower() on both sides: the database's own case folding, the very expression the index
    # ix_customers_shop_id_lower_email holds (migration 0005)
    found.update(r.customer_id for r in conn.execute(
        sa.select(cu.c.customer_id).where(cu.c.shop_id == shop_id,
                                          sa.func.lower(cu.c.email) == sa.func.lower(sa.literal(wanted)))))
    accounts = {r.alias_id: r.customer_id for r in conn.execute(
        sa.select(links.c.alias_id, links.c.customer_id).where(links.c.shop_id == shop_id,
                                                               links.c.alias_id.in_(sorted(found))))}
    return sorted({accounts.get(customer_id, customer_id) for customer_id in found})


def page_query(shop_id: str, *, stage: str | None = None, subgroup: str | None = None, lapsed: bool | None = None,
               ids: Sequence[str] | None = None, after: str | None = None, limit: int = PAGE_DEFAULT) -> sa.Select[Any]:
    """The statement of one page: the shop's customers (linked guests left out) matching the
    filters, ``customer_id`` above ``after``, in ``customer_id`` order, ``limit + 1`` rows (the
    one more says whether a next page exists).  A range scan of the primary key."""
    cu = store.customers
    where: list[sa.ColumnElement[bool]] = [cu.c.shop_id == shop_id, _not_linked_alias(shop_id)]
    if stage is not None:
        where.append(cu.c.stage == stage)
    if subgroup is not None:
        where.append(cu.c.subgroup == subgroup)
    if lapsed is not None:
        where.append(cu.c.lapsed == bool(lapsed))
    if ids is not None:
        where.append(cu.c.customer_id.in_(list(ids)))
    if after is not None:
        where.append(cu.c.customer_id > after)
    return (sa.select(*(cu.c[name] for name in SUMMARY_COLUMNS)).where(*where)
            .order_by(cu.c.customer_id).limit(limit + 1))


def list_customers(db: sa.Engine, shop_id: str, *, stage: str | None = None, subgroup: str | None = None,
                   lapsed: bool | None = None, email: str | None = None, limit: int = PAGE_DEFAULT,
                   cursor: str | None = None) -> CustomerPage:
    """A page of the shop's customers (see the module docstring); the filters combine with AND.

    ``stage`` / ``subgroup``: exact ids (one the programme does not have finds nobody);
    ``lapsed``: True / False; ``email``: see :func:`ids_by_email`; ``limit``: clamped to
    1…:data:`PAGE_MAX`; ``cursor``: ``next_cursor`` of the previous page (:class:`BadCursor`).
    """
    limit = max(1, min(int(limit), PAGE_MAX))
    after = decode_cursor(cursor) if cursor is not None else None
    with db.connect() as conn:
        ids = None
        if email is not None:
            ids = ids_by_email(conn, shop_id, email)
            if not ids:
                return CustomerPage((), limit, None)
        rows = conn.execute(page_query(shop_id, stage=stage, subgroup=subgroup, lapsed=lapsed, ids=ids, after=after,
                                       limit=limit)).mappings().all()
    items = tuple(dict(r) for r in rows[:limit])
    more = len(rows) > limit
    return CustomerPage(items, limit, encode_cursor(items[-1]["customer_id"]) if more else None)


def customer_counts_query(shop_id: str) -> sa.Select[Any]:
    """Customers per stage × subgroup × lapsed (linked guests left out), grouped by the database."""
    cu = store.customers
    return (sa.select(cu.c.stage, cu.c.subgroup, cu.c.lapsed, sa.func.count().label("count"))
            .where(cu.c.shop_id == shop_id, _not_linked_alias(shop_id))
            .group_by(cu.c.stage, cu.c.subgroup, cu.c.lapsed))


def award_counts_query(shop_id: str) -> sa.Select[Any]:
    """Awards per reward id × status, grouped by the database."""
    aw = store.awards
    return (sa.select(aw.c.reward_id, aw.c.status, sa.func.count().label("count"))
            .where(aw.c.shop_id == shop_id).group_by(aw.c.reward_id, aw.c.status))


def _stage_rank(order: Sequence[str]) -> Any:
    """Sort key: not on the ladder first, then the programme's stage order, then stages the
    programme no longer has (by id)."""
    index = {stage: i for i, stage in enumerate(order)}

    def key(stage: str | None) -> tuple[int, int, str]:
        if stage is None:
            return (0, 0, "")
        if stage in index:
            return (1, index[stage], stage)
        return (2, 0, stage)

    return key


def stats(db: sa.Engine, shop_id: str, *, programme_version: str | None = None, stage_order: Iterable[str] = (),
          subgroup_order: Iterable[str] = (), as_of: datetime | None = None) -> dict[str, Any]:
    """The shop's counts, computed by the database (no row is loaded):

    * ``customers``: ``total``, ``on_ladder`` (a stage), ``lapsed``, and ``by_stage`` — one entry
      ``{stage, subgroup, lapsed, count}`` per combination present (``stage`` None: not on the
      ladder yet), in the programme's stage order (``stage_order``), then subgroup order;
    * ``awards``: ``total``, ``by_status`` (every status, 0 included) and ``by_reward`` — one entry
      ``{reward, status, count}`` per combination present, by reward id then status;
    * ``programme_version``: as given (the version active now), and ``as_of``.
    """
    with db.connect() as conn:
        groups = conn.execute(customer_counts_query(shop_id)).all()
        awarded = conn.execute(award_counts_query(shop_id)).all()
    stage_key = _stage_rank(list(stage_order))
    subgroup_key = _stage_rank(list(subgroup_order))
    by_stage = sorted(({"stage": r.stage, "subgroup": r.subgroup, "lapsed": bool(r.lapsed), "count": int(r.count)}
                       for r in groups),
                      key=lambda g: (stage_key(g["stage"]), subgroup_key(g["subgroup"]), g["lapsed"]))
    statuses = [str(s) for s in AwardStatus]
    by_status = dict.fromkeys(statuses, 0)
    for r in awarded:
        by_status[r.status] = by_status.get(r.status, 0) + int(r.count)
    rank = {status: i for i, status in enumerate(statuses)}
    by_reward = sorted(({"reward": r.reward_id, "status": r.status, "count": int(r.count)} for r in awarded),
                       key=lambda a: (a["reward"], rank.get(a["status"], len(rank)), a["status"]))
    return {
        "shop": shop_id,
        "as_of": as_of,
        "programme_version": programme_version,
        "customers": {
            "total": sum(g["count"] for g in by_stage),
            "on_ladder": sum(g["count"] for g in by_stage if g["stage"] is not None),
            "lapsed": sum(g["count"] for g in by_stage if g["lapsed"]),
            "by_stage": by_stage,
        },
        "awards": {"total": sum(by_status.values()), "by_status": by_status, "by_reward": by_reward},
    }
