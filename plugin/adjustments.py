"""Manual inputs by staff, stored as ledger events: adjustments of one customer, the shop's admin
turns and exclusions.  This module creates and validates them; :func:`loyalty_ladder.ladder.fold`
applies them at their instant, so live processing, replay and backtests all see them and a later
reconcile never undoes them.

**Per customer** (``ladder adjust``, ``POST …/customers/<id>/adjustments``): an event in the
customer's own ledger (``store.events``, source ``admin``) in the generic event format, with
``adjustment: {author, reason, …}``:

* ``stage_set`` ``{stage, force}`` — the customer is in ``stage`` from the instant on; a stage
  below the current one only with ``force``;
* ``turn_started`` — the customer starts a new turn;
* ``reward_granted`` ``{reward}`` — a reward of the active programme, granted by hand (its award
  key is ``…/<reward>/manual/<event id>``);
* ``reward_revoked`` ``{award_key}`` — one of the customer's recorded awards, reversed with the
  reason.

**Per shop** (``store.shop_events``): ``turn_started`` (every customer on the ladder starts a new
turn) and ``exclusions_set`` (the full list of tags and e-mail patterns whose customers are never
evaluated, from the instant on; an empty list ends the exclusions).  After storing one, every
customer it concerns is due for a wake-up at its instant (``customers.next_wake_at``), so the
bulk lane's sweep re-decides them.

**Time and ids.**  A manual input happens *now* (it is never retroactive, nor scheduled).  Its id
is deterministic — ``admin-``/``turn-``/``exclusions-`` + 24 hex digits of the sha256 of its
canonical content — so the same request is the same event.  Since "now" differs between two tries
of one request, a caller that retries (an HTTP client after a timeout) names the request with an
idempotency key: the id is then derived from the key (and the customer), a second request with
the same key and the same content is a duplicate that returns the stored input, and one with
other content is a Conflict.

Every action writes its audit row (:func:`.audit.record`) in the transaction that stores it.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from marshmallow import ValidationError

from . import audit, identity, ledger, store
from . import events as events_mod
from .clock import iso, utcnow
from .errors import BadRequest, Conflict, NotFound
from .programme import Programme
from .statuses import AwardStatus
from .timeline import Exclusions, ShopInputs

#: the actions of ``POST …/adjustments`` and the event type each stores
ACTIONS = {"set_stage": "stage_set", "start_turn": "turn_started", "grant": "reward_granted",
           "revoke": "reward_revoked"}
#: the audit action of each per-customer event type (a shop's turn is ``turn_started``)
AUDIT_ACTIONS = {"stage_set": "stage_set", "turn_started": "customer_turn_started",
                 "reward_granted": "reward_granted", "reward_revoked": "reward_revoked"}
#: the shop-wide input types (``store.shop_events.type``)
SHOP_TURN = "turn_started"
SHOP_EXCLUSIONS = "exclusions_set"
#: the source of the ledger rows this module stores
SOURCE = "admin"
#: the longest reason, author, idempotency key, tag and e-mail pattern kept
MAX_REASON = 1000
MAX_AUTHOR = 255
MAX_KEY = 200
MAX_TAG = 255
MAX_PATTERN = 320
#: tags and patterns one exclusion list may hold (each)
MAX_EXCLUSIONS = 500
#: award keys named when a revocation names none of the customer's
_KEYS_LISTED = 20


# ------------------------------------------------------------------ results
@dataclass(frozen=True)
class StoredAdjustment:
    """A customer's manual adjustment: the event as stored, and whether it was already there."""

    shop_id: str
    customer_id: str
    event: Mapping[str, Any]
    duplicate: bool


@dataclass(frozen=True)
class StoredShopEvent:
    """A shop-wide input as stored (``store.shop_events``), and whether it was already there
    (``duplicate``) or, for exclusions, equal to the list in force (``unchanged``: nothing stored)."""

    shop_id: str
    event_id: str | None
    type: str
    occurred_at: datetime | None
    body: Mapping[str, Any]
    duplicate: bool = False
    unchanged: bool = False
    customers_due: int = 0


# ------------------------------------------------------------------ ids and checks
def _digest(material: Mapping[str, Any]) -> str:
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def input_id(prefix: str, *, shop_id: str, customer_id: str | None, kind: str, data: Mapping[str, Any],
             occurred_at: datetime, idempotency_key: str | None = None) -> str:
    """The deterministic id of a manual input: ``<prefix>-<sha256 hex[:24]>`` of the canonical JSON
    of (shop, customer, type, data with author and reason, instant) — or, with an idempotency key,
    of (shop, customer, prefix, key): every try of one request gets the same id."""
    if idempotency_key is not None:
        material: dict[str, Any] = {"shop": shop_id, "customer": customer_id, "input": prefix,
                                    "idempotency_key": idempotency_key}
    else:
        material = {"shop": shop_id, "customer": customer_id, "type": kind, "data": dict(data),
                    "occurred_at": iso(occurred_at)}
    return f"{prefix}-{_digest(material)}"


def _text(value: Any, name: str, limit: int, *, required: bool = True) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise BadRequest(f"{name} is required", {name: ["Missing data for required field."]})
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string", {name: ["Not a valid string."]})
    text = value.strip()
    if len(text) > limit:
        raise BadRequest(f"{name} is longer than {limit} characters", {name: [f"Longer than maximum length {limit}."]})
    if "\x00" in text:
        raise BadRequest(f"{name} must not contain NUL characters", {name: ["Must not contain NUL characters."]})
    return text


def check_author_reason(author: Any, reason: Any) -> tuple[str, str]:
    """The author and reason of an admin action, stripped; BadRequest when either is missing."""
    return _text(author, "author", MAX_AUTHOR), _text(reason, "reason", MAX_REASON)  # type: ignore[return-value]


def check_idempotency_key(key: Any) -> str | None:
    """An idempotency key (printable, at most MAX_KEY characters) or None."""
    text = _text(key, "idempotency_key", MAX_KEY, required=False)
    if text is not None and any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise BadRequest("the idempotency key must not contain control characters",
                         {"idempotency_key": ["Must not contain control characters."]})
    return text


def _ids(label: str, values: Iterable[str]) -> str:
    return f"the {label} are: " + ", ".join(values)


def resolve_customer(conn: sa.Connection, shop_id: str, customer_id: str) -> str:
    """The account a (guest) customer id belongs to; NotFound for a customer with no accepted event."""
    account = identity.canonical(conn, shop_id, customer_id)
    ev = store.events
    known = conn.execute(sa.select(ev.c.pk).where(ev.c.shop_id == shop_id,
                                                  ev.c.customer_id.in_(identity.ids_of(conn, shop_id, account)))
                         .limit(1)).first()
    if known is None:
        raise NotFound(f"no customer '{customer_id}' in shop '{shop_id}'",
                       {"customer_id": ["no accepted event for this customer"]})
    return account


def _check_stage(programme: Programme, current: str | None, lapsed: bool, stage: str, force: bool) -> None:
    ids = [s.id for s in programme.stages]
    if stage not in ids:
        raise BadRequest(f"unknown stage '{stage}'; {_ids('stages of the active programme', ids)}",
                         {"stage": [f"unknown stage '{stage}'; {_ids('stages', ids)}"]})
    if current is None or current not in ids:
        return
    if stage == current:
        raise Conflict(f"the customer is already in stage '{current}'" + (" (lapsed)" if lapsed else ""),
                       {"stage": [f"already in stage '{current}'"]})
    if ids.index(stage) < ids.index(current) and not force:
        raise Conflict(f"stage '{stage}' is below the customer's current stage '{current}': "
                       "moving a customer down needs force (--force, or \"force\": true)",
                       {"force": [f"'{stage}' is below the current stage '{current}'; set force to move down"]})


def _check_reward(programme: Programme, reward: str) -> None:
    ids = [r.id for r in programme.rewards]
    if reward not in ids:
        raise BadRequest(f"unknown reward '{reward}'; {_ids('rewards of the active programme', ids)}",
                         {"reward": [f"unknown reward '{reward}'; {_ids('rewards', ids)}"]})


def _check_award(conn: sa.Connection, shop_id: str, customer_id: str, award_key: str) -> None:
    aw = store.awards
    row = conn.execute(sa.select(aw.c.status).where(aw.c.shop_id == shop_id, aw.c.customer_id == customer_id,
                                                    aw.c.key == award_key)).first()
    if row is None:
        keys = [r.key for r in conn.execute(
            sa.select(aw.c.key).where(aw.c.shop_id == shop_id, aw.c.customer_id == customer_id,
                                      aw.c.status != AwardStatus.REVERSED).order_by(aw.c.pk.desc())
            .limit(_KEYS_LISTED))]
        listed = _ids("customer's awards not reversed", keys) if keys else "the customer has no award to revoke"
        raise BadRequest(f"no award '{award_key}' of customer '{customer_id}'; {listed}",
                         {"award_key": [f"not an award of customer '{customer_id}'"]})
    if row.status == AwardStatus.REVERSED:
        raise Conflict(f"award '{award_key}' is already reversed", {"award_key": ["already reversed"]})


def _same_content(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Two tries of one request: equal but for the instant each was made."""
    def strip(doc: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in doc.items() if k not in ("id", "occurred_at")}

    return strip(stored) == strip(wanted)


# ------------------------------------------------------------------ per customer
def adjust(db: sa.Engine, programme: Programme, shop_id: str, customer_id: str, action: str, *,
           author: str, reason: str, stage: str | None = None, force: bool = False, reward: str | None = None,
           award_key: str | None = None, idempotency_key: str | None = None,
           now: datetime | None = None) -> StoredAdjustment:
    """Validate and store one manual adjustment of a customer (``action`` one of :data:`ACTIONS`)
    with its audit row, in one transaction; see the module docstring.

    ``programme`` is the shop's active programme (stage and reward ids are checked against it).
    Raises NotFound (no such customer), BadRequest (an unknown stage, reward or award; a missing
    reason) or Conflict (a stage below the current one without ``force``, the current stage, an
    award already reversed, a turn for a customer not on the ladder, an idempotency key reused
    with other content).  The caller has the customer processed afterwards.
    """
    if action not in ACTIONS:
        raise BadRequest(f"unknown action '{action}'; {_ids('actions', ACTIONS)}",
                         {"action": [f"one of: {', '.join(ACTIONS)}"]})
    kind = ACTIONS[action]
    author, reason = check_author_reason(author, reason)
    idempotency_key = check_idempotency_key(idempotency_key)
    data: dict[str, Any] = {"author": author, "reason": reason}
    if kind == "stage_set":
        data.update(stage=_text(stage, "stage", 64), force=bool(force))
    elif kind == "reward_granted":
        data["reward"] = _text(reward, "reward", 64)
    elif kind == "reward_revoked":
        data["award_key"] = _text(award_key, "award_key", store.AWARD_KEY)
    at = now or utcnow()
    with store.begin_write(db) as conn:
        account = resolve_customer(conn, shop_id, customer_id)
        event_id = input_id("admin", shop_id=shop_id, customer_id=account, kind=kind, data=data, occurred_at=at,
                            idempotency_key=idempotency_key)
        body = {"id": event_id, "type": kind, "customer_id": account, "occurred_at": iso(at), "adjustment": data}
        try:
            event = events_mod.parse_event(body)
        except ValidationError as exc:  # our own limits are checked above; this names anything left
            raise BadRequest("invalid adjustment; nothing was stored", exc.normalized_messages()) from None
        # under the customer's lock: the current stage, and a concurrent try of the same request
        # (on PostgreSQL the lock waits for it to commit, so it is seen here as a duplicate)
        row = store.lock_customer(conn, shop_id, account)
        known = conn.execute(sa.select(store.events.c.body).where(store.events.c.shop_id == shop_id,
                                                                  store.events.c.event_id == event_id)).first()
        if known is not None:
            if not _same_content(known.body, event.raw):
                raise Conflict(f"the idempotency key was used for another adjustment ({known.body.get('type')}); "
                               "nothing was stored", {"idempotency_key": ["reused with other content"]})
            return StoredAdjustment(shop_id, account, dict(known.body), duplicate=True)
        detail: dict[str, Any] = {"event_id": event_id, "stage_before": row["stage"], "lapsed": bool(row["lapsed"])}
        if kind == "stage_set":
            _check_stage(programme, row["stage"], bool(row["lapsed"]), data["stage"], data["force"])
            detail.update(stage=data["stage"], force=data["force"])
        elif kind == "turn_started":
            if row["stage"] is None:
                raise Conflict(f"customer '{account}' is not on the ladder yet: a new turn means nothing",
                               {"action": ["the customer has no stage"]})
            detail["turn_before"] = row["turn"]
        elif kind == "reward_granted":
            _check_reward(programme, data["reward"])
            detail["reward"] = data["reward"]
        else:
            _check_award(conn, shop_id, account, data["award_key"])
            detail["award_key"] = data["award_key"]
        result = ledger.insert_events(conn, shop_id, [event], SOURCE)
        if not result.accepted:  # another try of the same request won the race a moment ago
            return StoredAdjustment(shop_id, account, dict(event.raw), duplicate=True)
        audit.record(conn, author=author, action=AUDIT_ACTIONS[kind], shop_id=shop_id, target=account,
                     reason=reason, detail=detail, at=at)
    return StoredAdjustment(shop_id, account, dict(event.raw), duplicate=False)


# ------------------------------------------------------------------ per shop
def _store_shop_event(conn: sa.Connection, shop_id: str, event_id: str, kind: str, at: datetime,
                      body: Mapping[str, Any]) -> StoredShopEvent | None:
    """Insert a shop event (ON CONFLICT DO NOTHING); the stored one when the id is known (a
    duplicate, or Conflict when its content differs), None when inserted."""
    se = store.shop_events
    pk = store.insert_new(conn, se, {"shop_id": shop_id, "event_id": event_id, "type": kind, "occurred_at": at,
                                     "body": dict(body), "created_at": utcnow()}, ["shop_id", "event_id"])
    if pk is not None:
        return None
    known = conn.execute(sa.select(se).where(se.c.shop_id == shop_id, se.c.event_id == event_id)).one()
    if known.type != kind or dict(known.body or {}) != dict(body):
        raise Conflict(f"the idempotency key was used for another {known.type}; nothing was stored",
                       {"idempotency_key": ["reused with other content"]})
    return StoredShopEvent(shop_id, known.event_id, known.type, known.occurred_at, dict(known.body or {}),
                           duplicate=True)


def start_shop_turn(db: sa.Engine, shop_id: str, *, author: str, reason: str, idempotency_key: str | None = None,
                    now: datetime | None = None) -> StoredShopEvent:
    """An admin turn: every customer of the shop on the ladder starts a new turn now (stage kept,
    lapse cleared).  Stored with its audit row; the customers on the ladder are due at once."""
    author, reason = check_author_reason(author, reason)
    idempotency_key = check_idempotency_key(idempotency_key)
    at = now or utcnow()
    body = {"author": author, "reason": reason}
    event_id = input_id("turn", shop_id=shop_id, customer_id=None, kind=SHOP_TURN, data=body, occurred_at=at,
                        idempotency_key=idempotency_key)
    with store.begin_write(db) as conn:
        known = _store_shop_event(conn, shop_id, event_id, SHOP_TURN, at, body)
        if known is not None:
            return known
        due = store.wake_customers(conn, shop_id, at, on_ladder_only=True)
        audit.record(conn, author=author, action="turn_started", shop_id=shop_id, target=shop_id, reason=reason,
                     detail={"event_id": event_id, "customers_due": due}, at=at)
    return StoredShopEvent(shop_id, event_id, SHOP_TURN, at, body, customers_due=due)


def _clean_list(values: Iterable[Any] | None, name: str, limit: int) -> list[str]:
    if isinstance(values, (str, bytes)):
        raise BadRequest(f"{name} must be a list of strings", {name: ["Not a valid list."]})
    out: list[str] = []
    for i, value in enumerate(values or ()):
        if not isinstance(value, str) or not value.strip():
            raise BadRequest(f"{name}: item {i} is blank or not a string", {name: {str(i): ["Must be a non-blank string."]}})
        text = value.strip()
        if len(text) > limit or any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
            raise BadRequest(f"{name}: '{text[:40]}' is longer than {limit} characters or has control characters",
                             {name: {str(i): [f"At most {limit} printable characters."]}})
        if text not in out:
            out.append(text)
    if len(out) > MAX_EXCLUSIONS:
        raise BadRequest(f"{name}: at most {MAX_EXCLUSIONS} entries", {name: [f"At most {MAX_EXCLUSIONS} entries."]})
    return out


def current_exclusions(conn: sa.Connection, shop_id: str) -> StoredShopEvent | None:
    """The exclusions in force (the latest ``exclusions_set``), or None when there never were any."""
    se = store.shop_events
    row = conn.execute(sa.select(se).where(se.c.shop_id == shop_id, se.c.type == SHOP_EXCLUSIONS)
                       .order_by(se.c.occurred_at.desc(), se.c.pk.desc()).limit(1)).first()
    if row is None:
        return None
    return StoredShopEvent(shop_id, row.event_id, row.type, row.occurred_at, dict(row.body or {}))


def exclusions_view(stored: StoredShopEvent | None) -> dict[str, Any]:
    """The exclusions document (``documents.ExclusionsSchema``) of a stored list, or of none."""
    body = stored.body if stored is not None else {}
    return {"event_id": stored.event_id if stored else None, "since": stored.occurred_at if stored else None,
            "tags": list(body.get("tags") or []), "emails": list(body.get("emails") or []),
            "author": body.get("author"), "reason": body.get("reason")}


def set_exclusions(db: sa.Engine, shop_id: str, *, author: str, reason: str, tags: Sequence[str] = (),
                   emails: Sequence[str] = (), idempotency_key: str | None = None,
                   now: datetime | None = None) -> StoredShopEvent:
    """Replace the shop's exclusions from now on: customers with one of ``tags``, or an e-mail
    matching one of the shell patterns ``emails`` (``*@myshop.example``, case-insensitive), are
    never evaluated.  The full list (empty: exclusions end).  A list equal to the one in force
    stores nothing (``unchanged``).  Stored with its audit row; every customer of the shop is due
    at once."""
    author, reason = check_author_reason(author, reason)
    idempotency_key = check_idempotency_key(idempotency_key)
    clean_tags = _clean_list(tags, "tags", MAX_TAG)
    clean_emails = _clean_list(emails, "emails", MAX_PATTERN)
    at = now or utcnow()
    body = {"author": author, "reason": reason, "tags": clean_tags, "emails": clean_emails}
    event_id = input_id("exclusions", shop_id=shop_id, customer_id=None, kind=SHOP_EXCLUSIONS, data=body,
                        occurred_at=at, idempotency_key=idempotency_key)
    with store.begin_write(db) as conn:
        if idempotency_key is None or conn.execute(sa.select(store.shop_events.c.pk).where(
                store.shop_events.c.shop_id == shop_id, store.shop_events.c.event_id == event_id)).first() is None:
            current = current_exclusions(conn, shop_id)
            now_in_force = (current.body.get("tags") or [], current.body.get("emails") or []) if current else ([], [])
            if (sorted(now_in_force[0]), sorted(now_in_force[1])) == (sorted(clean_tags), sorted(clean_emails)):
                if current is None:
                    return StoredShopEvent(shop_id, None, SHOP_EXCLUSIONS, None, {"tags": [], "emails": []},
                                           unchanged=True)
                return StoredShopEvent(shop_id, current.event_id, current.type, current.occurred_at, current.body,
                                       unchanged=True)
        known = _store_shop_event(conn, shop_id, event_id, SHOP_EXCLUSIONS, at, body)
        if known is not None:
            return known
        due = store.wake_customers(conn, shop_id, at, on_ladder_only=False)
        audit.record(conn, author=author, action="exclusions_set", shop_id=shop_id, target=shop_id, reason=reason,
                     detail={"event_id": event_id, "tags": clean_tags, "emails": clean_emails, "customers_due": due},
                     at=at)
    return StoredShopEvent(shop_id, event_id, SHOP_EXCLUSIONS, at, body, customers_due=due)


def shop_inputs(conn: sa.Connection, shop_id: str) -> ShopInputs:
    """The shop-wide inputs of every customer's fold (pure read of ``store.shop_events``): the
    instants of the admin turns, and each exclusion list with the instant it holds from, in time
    order (ties in the order they were stored; the later one holds).  Other types are not fold
    inputs and are skipped."""
    se = store.shop_events
    turns: list[datetime] = []
    exclusions: list[tuple[datetime, Exclusions]] = []
    for row in conn.execute(sa.select(se.c.type, se.c.occurred_at, se.c.body).where(se.c.shop_id == shop_id)
                            .order_by(se.c.occurred_at, se.c.pk)):
        if row.type == SHOP_TURN:
            turns.append(row.occurred_at)
        elif row.type == SHOP_EXCLUSIONS:
            body = row.body or {}
            exclusions.append((row.occurred_at, Exclusions(tuple(body.get("tags") or ()),
                                                            tuple(body.get("emails") or ()))))
    return ShopInputs.of(turns, exclusions)


def shop_inputs_key(conn: sa.Connection, shop_id: str) -> tuple[Any, ...]:
    """Cheap identity of :func:`shop_inputs` (the table is append-only: count and last pk), for a
    fold's fingerprint."""
    se = store.shop_events
    return tuple(conn.execute(sa.select(sa.func.count(), sa.func.max(se.c.pk)).where(se.c.shop_id == shop_id)).one())
