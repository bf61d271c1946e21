"""Implied awards, their keys, and reconciliation with what was recorded (pure, no database).

The ladder says which awards a customer's history *implies*; the service compares
that set with the awards already recorded and acts on the difference
(``reconcile``).  Award keys are deterministic and do not contain the rule version,
so re-folding the same history — after a duplicate, a late event, a restart or a
comment-only rule edit — implies the same keys:

``{shop}/{customer}/{reward}/stage/{stage}/{turn}``, ``…/privilege/{stage}/{turn}`` (from fold
semantics 4, a privilege's holding: from the stage and turn it started in to its end; a holding
started again in a stage and turn that already had one — after an end: re-entering the stage in the
same turn, an activation that changed it — is keyed by its instant, ``…/privilege/{YYYYMMDDTHHMMSSZ}``),
``…/order/{order_id}``,
``…/event/{event_id}``, ``…/period/{YYYY-MM | YYYY-Qn | YYYY}``,
``…/lapse/{stage}/{turn}``, ``…/manual/{event_id}`` (a grant by hand: the id of its
``reward_granted`` event), ``{shop}/{customer}/points/redemption/{redemption id}`` (points spent:
the redemption's id is the caller's idempotency key), ``{shop}/{customer}/points/reminder/{reward}/{scope}/{ref}``
(a batch of points about to expire: the batch's reward, scope and reference; a batch added by hand:
the adjustment's event id), and ``…/stage/{stage}/{turn}/{version}`` for a privilege an
activation changed, started again under that version (the one place a version is in a key).

Each component is percent-encoded (``quote(…, safe="")``) so an id containing ``/``
cannot make two different awards share a key; ordinary ids are unchanged.  A component whose
encoding is longer than :data:`MAX_COMPONENT` characters (a 200-character id of accented
letters encodes to 1 200) is replaced by ``~`` + the first 40 hex digits of the sha256 of the
id, so every key fits the ``awards.key`` column (``store.AWARD_KEY``) on every backend; shorter
components, and so every key that fitted before, are unchanged.  A literal id of that hashed
shape has its ``~`` encoded, so it can never equal the hash of another id.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from .programme import Reward
from .rewards import registry
from .rewards.base import CENT, AwardContext, Kind
from .rewards.base import decimal_or_none as _decimal
from .rewards.base import jsonable as _jsonable
from .rewards.discount import discount_code

__all__ = [
    "CENT", "SCOPES", "ImpliedAward", "ReconcilePlan", "award_key", "discount_code", "imply", "reconcile",
    "resolve_params",
]

SCOPES = ("stage", "order", "event", "period", "lapse", "manual", "redemption", "reminder", "privilege")
#: the length of the ``awards.key`` column (``store.AWARD_KEY``; awards is pure, below the store)
AWARD_KEY = 512
#: what ``quote(…, safe="")`` leaves alone; such components skip the (slow) quoting
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")
#: the longest encoded component kept as it is; longer ones are hashed.  Two of them (a customer
#: and an order or event id) plus the short parts (shop, reward and stage ids of at most 64
#: characters, the scope, a turn) stay well within the 512 characters of ``awards.key``
MAX_COMPONENT = 160
_HASH_DIGITS = 40
#: the shape of a hashed component; a literal id of this shape is encoded (``%7E…``)
_HASHED = re.compile(rf"~[0-9a-f]{{{_HASH_DIGITS}}}")


def _component(part: object) -> str:
    """One key part: as it is when unreserved, else percent-encoded; hashed when too long."""
    text = str(part)
    encoded = text if _UNRESERVED.fullmatch(text) else quote(text, safe="")
    if len(encoded) > MAX_COMPONENT:
        return "~" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_DIGITS]
    if _HASHED.fullmatch(encoded):
        return "%7E" + encoded[1:]
    return encoded


def award_key(shop: str, customer: str, reward_id: str, scope: str, ref: str | Sequence[Any]) -> str:
    """The award key; ``ref`` is the scope's reference: ``(stage, turn)`` for stage/lapse, else an id."""
    if scope not in SCOPES:
        raise ValueError(f"unknown award scope {scope!r}")
    parts = [ref] if isinstance(ref, str) else list(ref)
    key = "/".join(_component(p) for p in (shop, customer, reward_id, scope, *parts))
    if len(key) > AWARD_KEY:  # only when a shop, reward or stage id is longer than its own column
        raise ValueError(f"award key longer than {AWARD_KEY} characters: {key[:80]}…")
    return key


@dataclass(frozen=True)
class ImpliedAward:
    key: str
    shop: str
    customer_id: str
    reward_id: str
    type: str
    scope: str  # stage | order | event | period | lapse
    scope_ref: str  # "stage/turn", order id, event id, period id
    stage: str | None
    turn: int
    granted_at: datetime
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    value: Decimal | None = None
    historical: bool = False
    #: the programme version that decided the award (it keeps it: an activation never re-decides it)
    rule_version: str = ""
    #: a manual grant's author and reason, in words
    note: str = field(default="", compare=False)
    #: a privilege held and then ended (a later version no longer grants it, or changed it): when, why
    ended_at: datetime | None = None
    ended_reason: str = ""
    #: a held privilege paused (the customer lapsed): since when, why — restored when the cause ends
    suspended_at: datetime | None = None
    suspended_reason: str = ""
    #: a grant whose validity passed before it was used (or delivered): its ``expires_at``
    expired_at: datetime | None = None


def resolve_params(reward: Reward, key: str, granted_at: datetime,
                   order_net: Decimal | None = None) -> tuple[dict[str, Any], Decimal | None]:
    """The concrete, JSON-friendly parameters of one award and its money value (when known),
    as its reward type resolves them (:meth:`loyalty_ladder.rewards.RewardType.resolve`)."""
    return registry.of(reward.type).resolve(AwardContext(reward, key, granted_at, order_net))


def imply(reward: Reward, *, shop: str, customer_id: str, scope: str, ref: str | Sequence[Any],
          stage: str | None, turn: int, granted_at: datetime, live_from: datetime | None = None,
          order_net: Decimal | None = None, currency: str | None = None, rule_version: str = "",
          note: str = "", ended_at: datetime | None = None, ended_reason: str = "",
          points_base: Decimal | None = None, point_value: Decimal | None = None,
          suspended_at: datetime | None = None, suspended_reason: str = "", key: str | None = None) -> ImpliedAward:
    """One implied award of ``reward`` (params resolved by its type, historical when before
    ``live_from``); ``currency`` is the programme's (a fixed discount amount is in it);
    ``rule_version``: the version that decided it.

    A privilege still held at ``live_from`` (not ended before it) is not historical: the customer
    holds it when the shop goes live, so it is delivered then (an import's current stage tag, VIP
    service); one that ended before stays historical.  ``key``: the award key when the caller
    made it already (the fold does, once per grant)."""
    key = key or award_key(shop, customer_id, reward.id, scope, ref)
    reward_type = registry.of(reward.type)
    historical = live_from is not None and granted_at < live_from
    if historical and reward_type.kind == Kind.PRIVILEGE and (ended_at is None or ended_at >= live_from):
        historical = False  # held when the shop went live
    params, value = reward_type.resolve(
        AwardContext(reward, key, granted_at, order_net=order_net, currency=currency, points_base=points_base,
                     point_value=point_value))
    scope_ref = ref if isinstance(ref, str) else "/".join(str(p) for p in ref)
    return ImpliedAward(
        key=key, shop=shop, customer_id=customer_id, reward_id=reward.id, type=reward.type,
        scope=scope, scope_ref=scope_ref, stage=stage, turn=turn, granted_at=granted_at,
        params=params, value=value, historical=historical,
        rule_version=rule_version, note=note, ended_at=ended_at, ended_reason=ended_reason,
        suspended_at=suspended_at, suspended_reason=suspended_reason,
    )


# ------------------------------------------------------------------ reconcile
@dataclass(frozen=True)
class ReconcilePlan:
    """What to do so the recorded awards match the implied ones; every list sorted by key.

    * ``grant``: implied awards not recorded yet, or recorded as ``reversed`` and implied
      again (a re-grant: e.g. a refund was itself undone).  The service updates the old row;
    * ``reverse``: recorded awards (as given) no longer implied and not already reversed;
    * ``update``: implied awards whose recorded params, value or any of :data:`DERIVED_FIELDS`
      differ (points recomputed after a partial refund; the stage an order was made in, or the
      instant a stage was reached, after a late event or a refund inside the window); the
      recorded status is kept;
    * ``keep``: implied awards recorded with the same params, value and derived fields.
    """

    grant: tuple[ImpliedAward, ...] = ()
    reverse: tuple[Any, ...] = ()
    update: tuple[ImpliedAward, ...] = ()
    keep: tuple[ImpliedAward, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.grant or self.reverse or self.update)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _has(obj: Any, name: str) -> bool:
    return name in obj if isinstance(obj, Mapping) else hasattr(obj, name)


def _canon(params: Any) -> str:
    if isinstance(params, str):  # stored as JSON text by some drivers
        try:
            params = json.loads(params)
        except ValueError:
            return params
    return json.dumps(_jsonable(params or {}), sort_keys=True, separators=(",", ":"))


#: the recorded fields that are a function of the history (besides ``params`` and ``value``):
#: reconcile recomputes them, so an ordered and a shuffled delivery of the same events, or a
#: refund that undid a step, leave the same award behind
DERIVED_FIELDS = ("reward_id", "type", "scope", "scope_ref", "stage", "turn", "granted_at")


def _same(award: ImpliedAward, recorded: Any) -> bool:
    if _canon(award.params) != _canon(_get(recorded, "params")):
        return False
    if _has(recorded, "value") and _decimal(_get(recorded, "value")) != award.value:
        return False
    return all(_get(recorded, name) == getattr(award, name) for name in DERIVED_FIELDS if _has(recorded, name))


def reconcile(implied: Iterable[ImpliedAward], recorded: Iterable[Any]) -> ReconcilePlan:
    """Compare implied awards with recorded ones (objects or dicts with ``key``, ``status``, ``params``)."""
    by_key: dict[str, ImpliedAward] = {}
    for award in implied:
        by_key[award.key] = award
    rec_by_key = {str(_get(r, "key")): r for r in recorded}
    grant: list[ImpliedAward] = []
    update: list[ImpliedAward] = []
    keep: list[ImpliedAward] = []
    for key in sorted(by_key):
        award = by_key[key]
        rec = rec_by_key.get(key)
        if rec is None or _get(rec, "status") == "reversed":
            grant.append(award)
        elif _same(award, rec):
            keep.append(award)
        else:
            update.append(award)
    reverse = [rec_by_key[k] for k in sorted(rec_by_key)
               if k not in by_key and _get(rec_by_key[k], "status") != "reversed"]
    return ReconcilePlan(grant=tuple(grant), reverse=tuple(reverse), update=tuple(update), keep=tuple(keep))
