"""Who a customer is: guest aliases linked to accounts, and pseudonymising redaction.

* A guest order belongs to a guest id (``guest:<hash of e-mail>``).  When an account with
  that e-mail appears, a link (guest id → account id) makes the account's fold include the
  guest's events; the guest's own awards are reversed as merged.
* Redaction (Shopify ``customers/redact``, ``shop/redact``) pseudonymises: personal fields
  are erased from the ledger and the customer's events, awards and deliveries move to a
  random id, so shop totals and other customers are unaffected; a VIP's personal manager
  assignment is deleted (the pseudonym is nobody to serve).
"""
from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from . import store
from .clock import utcnow

if TYPE_CHECKING:
    from .events import Event

#: fields of an event's ``customer`` object that identify a person
PERSONAL_FIELDS = ("email", "birthday", "locale", "tags", "first_name", "last_name", "phone")


def guest_id(email: str | None, order_id: str | None = None) -> str:
    """The customer id of a guest sale: by e-mail when known, else by order."""
    if email:
        return "guest:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:16]
    return f"guest-order:{order_id}"


def canonical(conn: sa.Connection, shop_id: str, customer_id: str) -> str:
    """The account a (guest) customer id is linked to, or the id itself."""
    t = store.customer_links
    row = conn.execute(sa.select(t.c.customer_id).where(t.c.shop_id == shop_id, t.c.alias_id == customer_id)).first()
    return row.customer_id if row is not None else customer_id


def aliases(conn: sa.Connection, shop_id: str, customer_id: str) -> list[str]:
    t = store.customer_links
    return [r.alias_id for r in conn.execute(
        sa.select(t.c.alias_id).where(t.c.shop_id == shop_id, t.c.customer_id == customer_id).order_by(t.c.alias_id))]


def link(conn: sa.Connection, shop_id: str, alias_id: str, customer_id: str, now: datetime) -> bool:
    """Record alias → account (idempotent; an alias is linked once, to its first account)."""
    if alias_id == customer_id:
        return False
    t = store.customer_links
    if conn.execute(sa.select(t.c.alias_id).where(t.c.shop_id == shop_id, t.c.alias_id == alias_id)).first():
        return False
    conn.execute(t.insert().values(shop_id=shop_id, alias_id=alias_id, customer_id=customer_id, created_at=now))
    return True


def ids_of(conn: sa.Connection, shop_id: str, customer_id: str) -> list[str]:
    """The account's id and the ids of the guests linked to it: whose events its fold reads."""
    return [customer_id, *aliases(conn, shop_id, customer_id)]


def link_all(db: sa.Engine, shop_id: str, pairs: Iterable[tuple[str, str]], now: datetime | None = None) -> list[str]:
    """Record (alias → account) links in one transaction; the ids whose fold changed."""
    pairs = sorted(set(pairs))
    if not pairs:
        return []
    now = now or utcnow()
    touched: list[str] = []
    with store.begin_write(db) as conn:
        for alias, account in pairs:
            if link(conn, shop_id, alias, account, now):
                touched += [alias, account]
    return touched


def is_account(customer_id: str) -> bool:
    """A shop account's id, not one of ours (a guest, a guest order, a pseudonym)."""
    return not customer_id.startswith(("guest:", "guest-order:", "redacted:"))


def is_pseudonym(customer_id: str) -> bool:
    """The random id a redacted customer's records moved to (:func:`pseudonymise`): nobody."""
    return customer_id.startswith("redacted:")


def link_guests(db: sa.Engine, shop_id: str, parsed: Sequence[Event], now: datetime | None = None) -> list[str]:
    """An account event carrying an e-mail claims the guest sales made with that e-mail."""
    pairs = {(guest_id(e.customer.email), e.customer_id) for e in parsed
             if e.type in ("customer_created", "customer_updated") and e.customer is not None
             and e.customer.email and is_account(e.customer_id)}
    return link_all(db, shop_id, pairs, now)


def redact_customer(db: sa.Engine, shop_id: str, customer_id: str) -> str | None:
    """Pseudonymise one customer (and their guest aliases): personal fields erased, the ledger
    kept under a random id, raw webhooks naming them erased. Returns the new id (to process
    again), or None if the customer is unknown."""
    now = utcnow()
    with store.begin_write(db) as conn:
        account = canonical(conn, shop_id, customer_id)
        ids = ids_of(conn, shop_id, account)
        emails = [r.email for r in conn.execute(sa.select(store.customers.c.email).where(
            store.customers.c.shop_id == shop_id, store.customers.c.customer_id.in_(ids)))]
        known = conn.execute(sa.select(sa.func.count()).select_from(store.events).where(
            store.events.c.shop_id == shop_id, store.events.c.customer_id.in_(ids))).scalar()
        if not known:
            return None
        new_id = pseudonymise(conn, shop_id, ids, now)
        scrub_inbox(conn, shop_id, [*ids, *emails])
    return new_id


def redact_shop(db: sa.Engine, shop_id: str) -> list[str]:
    """Shopify shop/redact: pseudonymise every customer of the shop and erase raw bodies.
    Returns the new ids (to process again)."""
    with db.connect() as conn:
        customers = [r.customer_id for r in conn.execute(
            sa.select(store.events.c.customer_id).distinct().where(
                store.events.c.shop_id == shop_id, ~store.events.c.customer_id.like("redacted:%")))]
    new_ids = [new for customer_id in customers if (new := redact_customer(db, shop_id, customer_id))]
    with store.begin_write(db) as conn:
        conn.execute(store.inbox.update().where(store.inbox.c.shop_id == shop_id)
                     .values(body="{}", error="redacted"))
    return new_ids


def _scrub(body: dict[str, Any], new_id: str) -> dict[str, Any]:
    out = dict(body)
    out["customer_id"] = new_id
    customer = out.get("customer")
    if isinstance(customer, dict):
        kept = {k: v for k, v in customer.items() if k not in PERSONAL_FIELDS}
        if kept:
            out["customer"] = kept
        else:
            out.pop("customer")
    if "referred_customer_id" in out:
        out["referred_customer_id"] = "redacted"
    return out


def pseudonymise(conn: sa.Connection, shop_id: str, customer_ids: Iterable[str], now: datetime) -> str:
    """Move the ledger, awards and deliveries of these ids (an account and its aliases) to a
    random id, erasing personal fields.  Returns the new id."""
    ids = sorted(set(customer_ids))
    new_id = f"redacted:{uuid.uuid4().hex}"
    ev = store.events
    for row in conn.execute(sa.select(ev.c.pk, ev.c.body).where(ev.c.shop_id == shop_id,
                                                                ev.c.customer_id.in_(ids))).all():
        body = _scrub(row.body, new_id)
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        conn.execute(ev.update().where(ev.c.pk == row.pk).values(customer_id=new_id, body=body, body_hash=digest,
                                                                  applied_at=None))
    aw, log, dl = store.awards, store.award_log, store.deliveries
    for row in conn.execute(sa.select(aw).where(aw.c.shop_id == shop_id, aw.c.customer_id.in_(ids))).all():
        old = dict(row._mapping)
        # keys encode their parts (awards.award_key): the new id must be encoded the same way,
        # or the next fold would find every moved award "no longer implied" and reverse it
        new_key = old["key"].replace(f"/{_key_part(old['customer_id'])}/", f"/{_key_part(new_id)}/", 1)
        values = {k: v for k, v in old.items() if k != "pk"}
        values.update(key=new_key, customer_id=new_id, updated_at=now)
        # children point at the key: insert the new award, repoint them, drop the old row
        conn.execute(aw.insert().values(**values))
        conn.execute(log.update().where(log.c.award_key == old["key"]).values(award_key=new_key))
        conn.execute(dl.update().where(dl.c.award_key == old["key"]).values(award_key=new_key, customer_id=new_id))
        conn.execute(aw.delete().where(aw.c.pk == old["pk"]))
    cu, links, vip = store.customers, store.customer_links, store.vip_assignments
    conn.execute(cu.delete().where(cu.c.shop_id == shop_id, cu.c.customer_id.in_(ids)))
    # a personal manager serves a person: the pseudonym gets none (vip.ensure skips it)
    conn.execute(vip.delete().where(vip.c.shop_id == shop_id, vip.c.customer_id.in_(ids)))
    conn.execute(links.delete().where(links.c.shop_id == shop_id,
                                      sa.or_(links.c.alias_id.in_(ids), links.c.customer_id.in_(ids))))
    return new_id


def _key_part(customer_id: str) -> str:
    from .awards import _component

    return _component(customer_id)


#: keys whose value names a customer in the platforms' payloads
_CUSTOMER_KEYS = ("email", "contact_email", "customer_id")


def _mentions(value: Any, needles: set[str], in_customer: bool = False) -> bool:
    """Whether a parsed payload names one of ``needles`` as a customer id or e-mail.

    Exact values only, and only where a payload names a customer — never a substring
    ("25" must not match an amount of "25.00" or an order numbered 25)."""
    if isinstance(value, dict):
        for key, item in value.items():
            names_customer = key in _CUSTOMER_KEYS or (in_customer and key == "id")
            if names_customer and not isinstance(item, (dict, list)) and str(item).strip().lower() in needles:
                return True
            if _mentions(item, needles, in_customer=key in ("customer", "billing")):
                return True
        return False
    if isinstance(value, list):
        return any(_mentions(item, needles, in_customer) for item in value)
    return False


def scrub_inbox(conn: sa.Connection, shop_id: str, needles: Iterable[str]) -> int:
    """Erase the raw webhook bodies of a shop that name one of ``needles`` (ids, e-mails)
    as a customer; a customer webhook's own top-level id counts too."""
    t = store.inbox
    wanted = {str(n).strip().lower() for n in needles if n}
    if not wanted:
        return 0
    count = 0
    for row in conn.execute(sa.select(t.c.pk, t.c.topic, t.c.body).where(t.c.shop_id == shop_id)).all():
        try:
            payload = json.loads(row.body)
        except ValueError:
            continue
        about_customer = (row.topic or "").startswith(("customers/", "customer."))
        if _mentions(payload, wanted, in_customer=about_customer):
            conn.execute(t.update().where(t.c.pk == row.pk).values(body="{}", error="redacted"))
            count += 1
    return count
