"""The outbox: one delivery job per (award, action, channel), planned inside the reconcile
transaction, run by queue jobs, retried with backoff, and marked done only on the shop's success.

Planning (:func:`plan`) happens in the same transaction that records the awards, so an award and
the jobs that carry it commit together or not at all.  Running (:func:`run`) happens outside any
transaction for the slow part (the shop's API, SMTP, a webhook), between two short ones:

1. *claim*: the row must be ``pending`` and due; it is leased (``next_attempt_at`` moved
   :data:`CLAIM_LEASE` ahead) so a second worker given the same pk does nothing;
2. the call;
3. *finish*: the row is re-read under the customer's write lock.  If a reconcile changed it
   meanwhile (a grant cancelled because its award was reversed while the call was in flight), the
   shop's answer still wins — what exists in the shop is a fact — and the missing compensation
   (a revoke, or a grant again) is armed and returned as ``follow_up``.

Statuses of a row: ``pending`` (due when ``next_attempt_at`` has come; ``NULL`` means it waits
for something else — a notice waits for its grant), ``delivered``, ``failed``,
``needs_manual_action``, ``shadow`` (the shop watches; never run) and ``cancelled``.  The award's
status follows its grant: ``due`` → ``delivered`` | ``failed`` | ``needs_manual_action``; a revoke
leaves it ``reversed``.

A ``generic`` shop has no API to deliver to: its integrator reads the ``due`` awards from the
customer endpoint, so it gets no grant or revoke jobs, only notices (sent at once).

Notices (``notify``) are sent only after the grant is delivered (a customer must never receive a
code that does not exist yet), except for rewards that *are* a notice (:data:`NOTICE_ONLY_TYPES`,
a greeting), which need no grant at all when the shop has a notification channel.  E-mail tells
the customer of what they got; the signed webhook also reports reversals (``award.reversed``) to
the shop's marketing tool, which heard of the grant.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from . import store
from .config import ShopConfig
from .errors import DeliveryError, NotFound, NotSupported, RateLimited, Rejected

log = logging.getLogger(__name__)

#: consecutive ``Unavailable`` failures after which a delivery is ``failed``
MAX_ATTEMPTS = 10
#: the first retry waits this many seconds, then twice as long each time (2, 4, 8 … s)
BACKOFF_BASE_SECONDS = 2
BACKOFF_MAX = timedelta(hours=1)
#: how long a run in flight owns its row; after that a crashed run's row is due again
CLAIM_LEASE = timedelta(minutes=5)
#: when a 429 names no Retry-After
DEFAULT_RATE_LIMIT_WAIT = timedelta(seconds=2)

#: what a reward type needs from the shop; a shop without it gets ``needs_manual_action`` at once
REQUIRED_CAPABILITY: dict[str, str] = {
    "discount": "discount_codes",
    "tag": "tags",
    "vip_service": "tags",
    "deferred_payment": "payment_terms",
}
#: rewards that are nothing but a notice: with a notification channel they need no grant job
NOTICE_ONLY_TYPES = ("greeting",)
#: rewards never e-mailed to the customer: stage tags are the shop's segmentation, not a gift
NOT_EMAILED_TYPES = ("tag",)

#: the platform without a shop API (generic events): awards stay `due` for the integrator to fetch
GENERIC_PLATFORM = "generic"

EVENT_GRANTED = "award.granted"
EVENT_REVERSED = "award.reversed"

#: ``adapter_factory(shop_id)`` → the shop's adapter (anything with ``deliver(Delivery)``)
AdapterFactory = Callable[[str], Any]


@dataclass(frozen=True)
class RunOutcome:
    """What one :func:`run` did: the row's status afterwards, when to run it again (a pending
    retry) and the rows it armed that should run now (notices after a grant, a compensation)."""

    status: str
    retry_at: datetime | None = None
    follow_up: tuple[int, ...] = ()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


# ================================================================ customer and award documents
def customer_profile(conn: sa.Connection, shop_id: str, customer_id: str) -> dict[str, Any]:
    """The latest e-mail, locale, marketing consent and tags the shop told us of a customer.

    Folded from the ``customer`` blocks of the customer's events (and those of guest ids linked
    to them) in the ledger's order (``occurred_at``, id), so it is as current as the ledger,
    even inside the reconcile transaction before ``customers`` is updated.
    """
    ev, links = store.events, store.customer_links
    ids = [customer_id, *(r.alias_id for r in conn.execute(
        sa.select(links.c.alias_id).where(links.c.shop_id == shop_id, links.c.customer_id == customer_id)))]
    rows = conn.execute(sa.select(ev.c.event_id, ev.c.occurred_at, ev.c.body)
                        .where(ev.c.shop_id == shop_id, ev.c.customer_id.in_(ids))).all()
    profile: dict[str, Any] = {"customer_id": customer_id, "email": None, "locale": None,
                               "accepts_marketing": False, "tags": []}
    for row in sorted(rows, key=lambda r: (r.occurred_at, r.event_id)):
        info = (row.body or {}).get("customer") or {}
        for name in ("email", "locale", "accepts_marketing", "tags"):
            if info.get(name) is not None:
                profile[name] = info[name]
    if profile["email"] is None:
        email = conn.execute(sa.select(store.customers.c.email).where(
            store.customers.c.shop_id == shop_id, store.customers.c.customer_id == customer_id)).scalar()
        profile["email"] = email
    return profile


def award_document(award: Mapping[str, Any]) -> dict[str, Any]:
    """An award row as adapters, templates and the outgoing webhook see it (JSON-friendly)."""
    value = award.get("value")
    return {
        "key": award["key"], "reward": award["reward_id"], "type": award["type"], "status": award["status"],
        "params": dict(award.get("params") or {}), "value": None if value is None else str(value),
        "stage": award.get("stage"), "turn": award.get("turn"), "customer_id": award["customer_id"],
        "scope": award.get("scope"), "scope_ref": award.get("scope_ref"),
        "granted_at": _iso(award.get("granted_at")),
    }


def first_stage(conn: sa.Connection, shop_id: str, customer_id: str) -> str | None:
    """The first stage of the customer's recorded history (where every customer starts)."""
    state = conn.execute(sa.select(store.customers.c.state).where(
        store.customers.c.shop_id == shop_id, store.customers.c.customer_id == customer_id)).scalar()
    history = (state or {}).get("history") or []
    return history[0].get("stage") if history else None


# ================================================================ planning
def arm_row(conn: sa.Connection, now: datetime, award: Mapping[str, Any], existing: Mapping[str, Any] | None,
            action: str, channel: str | None, status: str, *, due: bool, reason: str | None = None,
            event: str | None = None) -> int:
    """Create a delivery row, or re-arm an existing one for a new round (its past kept in
    ``detail.history``, its ``generation`` counted up so a notice gets a new event id)."""
    t = store.deliveries
    next_at = now if (status == "pending" and due) else None
    last_error = reason if status != "pending" else None
    if existing is None:
        detail: dict[str, Any] = {"generation": 1}
    else:
        old = dict(existing.get("detail") or {})
        past = list(old.get("history") or [])
        past.append({"status": existing["status"], "external_id": existing["external_id"],
                     "last_error": existing["last_error"], "event": old.get("event"),
                     "at": _iso(existing["updated_at"])})
        detail = {"generation": int(old.get("generation", 1)) + 1, "history": past[-10:]}
    if event:
        detail["event"] = event
    if reason:
        detail["reason"] = reason
    if existing is None:
        return int(conn.execute(t.insert().values(
            award_key=award["key"], shop_id=award["shop_id"], customer_id=award["customer_id"], action=action,
            channel=channel, status=status, attempts=0, last_error=last_error, external_id=None, detail=detail,
            created_at=now, updated_at=now, next_attempt_at=next_at, delivered_at=None)).inserted_primary_key[0])
    conn.execute(t.update().where(t.c.pk == existing["pk"]).values(
        status=status, attempts=0, last_error=last_error, external_id=None, detail=detail, updated_at=now,
        next_attempt_at=next_at, delivered_at=None))
    return int(existing["pk"])


@dataclass
class _Planner:
    conn: sa.Connection
    shop: ShopConfig
    smtp_configured: bool
    now: datetime
    to_run: list[int]

    # ------------------------------------------------------------ row helpers
    def rows_for(self, key: str) -> dict[tuple[str, str | None], dict[str, Any]]:
        t = store.deliveries
        return {(r["action"], r["channel"]): dict(r) for r in self.conn.execute(
            sa.select(t).where(t.c.award_key == key)).mappings()}

    def arm(self, award: Mapping[str, Any], existing: Mapping[str, Any] | None, action: str,
            channel: str | None, status: str, *, due: bool, reason: str | None = None,
            event: str | None = None) -> int:
        pk = arm_row(self.conn, self.now, award, existing, action, channel, status, due=due, reason=reason,
                     event=event)
        if status == "pending" and due:
            self.to_run.append(pk)
        return pk

    def set_status(self, row: Mapping[str, Any], status: str, reason: str) -> None:
        t = store.deliveries
        detail = dict(row.get("detail") or {})
        detail["reason"] = reason
        self.conn.execute(t.update().where(t.c.pk == row["pk"]).values(
            status=status, last_error=reason, detail=detail, next_attempt_at=None, updated_at=self.now))

    def award_status(self, award: Mapping[str, Any], status: str, reason: str) -> None:
        set_award_status(self.conn, award, status, reason, self.now)

    # ------------------------------------------------------------ decisions
    def initial_status(self, award: Mapping[str, Any]) -> tuple[str, str | None]:
        if self.shop.shadow:
            return "shadow", "shop in shadow mode: computed, not delivered"
        need = REQUIRED_CAPABILITY.get(award["type"])
        if need is not None and need not in self.shop.capabilities:
            have = ", ".join(self.shop.capabilities) or "none"
            return "needs_manual_action", (
                f"{award['type']} needs the shop capability '{need}', which shop '{self.shop.id}' "
                f"({self.shop.platform}) lacks (it has: {have})")
        return "pending", None

    def channels(self, award: Mapping[str, Any], email: str | None) -> list[str]:
        out = []
        if self.smtp_configured and email and award["type"] not in NOT_EMAILED_TYPES:
            out.append("email")
        if self.shop.notify_webhook_url:
            out.append("webhook")
        return out

    # ------------------------------------------------------------ grant
    def grant(self, award: Mapping[str, Any]) -> None:
        rows = self.rows_for(award["key"])
        profile = customer_profile(self.conn, award["shop_id"], award["customer_id"])
        channels = self.channels(award, profile["email"])
        status, reason = self.initial_status(award)
        grant_row = rows.get(("grant", None))

        if self.shop.platform == GENERIC_PLATFORM:
            # No shop API: the integrator reads due awards from the customer endpoint and hands
            # them over itself, so the award stays `due`; only the notices are ours to send.
            self.notices(award, rows, channels, EVENT_GRANTED, due=True)
            return
        if award["type"] in NOTICE_ONLY_TYPES and channels and grant_row is None:
            # The notice is the reward: it runs now, and its success delivers the award.
            self.notices(award, rows, channels, EVENT_GRANTED, due=True)
            return

        if grant_row is not None and grant_row["status"] == "pending":
            return  # still on its way (or waiting for a retry): nothing new to plan
        if grant_row is not None and grant_row["status"] == "shadow" and status == "shadow":
            return
        if grant_row is not None and grant_row["status"] == "delivered":
            revoke = rows.get(("revoke", None))
            if revoke is None or revoke["status"] not in ("delivered", "shadow"):
                # The object the grant created still exists in the shop: nothing to deliver.
                if revoke is not None and revoke["status"] == "pending":
                    self.set_status(revoke, "cancelled", "granted again before the revoke ran")
                    self.cancel_notices(rows, EVENT_REVERSED, "granted again before the reversal was announced")
                self.award_status(award, "delivered",
                                  "implied again; what the shop holds from the earlier delivery still stands")
                return
            # The revoke removed it: deliver it again below.

        self.arm(award, grant_row, "grant", None, status, due=True, reason=reason)
        if status == "needs_manual_action":
            self.award_status(award, "needs_manual_action", reason or "")
        elif status in ("pending", "shadow"):
            # Notices wait for the grant (status pending, not due) or mirror a shadow grant.
            self.notices(award, rows, channels, EVENT_GRANTED, due=False)

    def notices(self, award: Mapping[str, Any], rows: Mapping[tuple[str, str | None], Mapping[str, Any]],
                channels: Sequence[str], event: str, *, due: bool) -> None:
        status = "shadow" if self.shop.shadow else "pending"
        for channel in channels:
            row = rows.get(("notify", channel))
            if row is not None:
                same = (row.get("detail") or {}).get("event") == event
                if same and row["status"] in ("pending", "delivered", "shadow"):
                    continue  # already told (or about to be): never twice
            self.arm(award, row, "notify", channel, status, due=due, event=event)

    def cancel_notices(self, rows: Mapping[tuple[str, str | None], Mapping[str, Any]], event: str | None,
                       reason: str) -> None:
        for (action, _channel), row in rows.items():
            if action == "notify" and row["status"] == "pending" and (
                    event is None or (row.get("detail") or {}).get("event") == event):
                self.set_status(row, "cancelled", reason)

    # ------------------------------------------------------------ reverse
    def reverse(self, award: Mapping[str, Any]) -> None:
        rows = self.rows_for(award["key"])
        grant_row = rows.get(("grant", None))
        revoke = rows.get(("revoke", None))
        if grant_row is None or grant_row["status"] in ("pending", "failed", "cancelled"):
            if grant_row is not None and grant_row["status"] == "pending":
                self.set_status(grant_row, "cancelled", "award reversed before it was delivered")
            self.cancel_notices(rows, None, "award reversed before the customer was told")
            if grant_row is None:  # a notice-only reward, or a generic shop: the notice was the delivery
                self.announce_reversal(award, rows)
            return
        self.cancel_notices(rows, EVENT_GRANTED, "award reversed before the customer was told")
        if revoke is not None and revoke["status"] == "pending":
            return
        status = grant_row["status"]
        if status == "delivered":
            self.arm(award, revoke, "revoke", None, "shadow" if self.shop.shadow else "pending", due=True,
                     reason="shop in shadow mode: computed, not delivered" if self.shop.shadow else None)
            self.announce_reversal(award, rows)
        elif status == "shadow":
            self.arm(award, revoke, "revoke", None, "shadow", due=False,
                     reason="shop in shadow mode: computed, not delivered")
        elif status == "needs_manual_action":
            self.arm(award, revoke, "revoke", None, "needs_manual_action", due=False,
                     reason="award reversed: if it was handed over by hand, take it back by hand")

    def announce_reversal(self, award: Mapping[str, Any],
                          rows: Mapping[tuple[str, str | None], Mapping[str, Any]]) -> None:
        """Tell the shop's marketing tool of a reversal, only if it heard of the grant."""
        row = rows.get(("notify", "webhook"))
        if (self.shop.notify_webhook_url and row is not None and row["status"] == "delivered"
                and (row.get("detail") or {}).get("event") == EVENT_GRANTED):
            self.arm(award, row, "notify", "webhook", "shadow" if self.shop.shadow else "pending", due=True,
                     event=EVENT_REVERSED)


def plan(conn: sa.Connection, shop: ShopConfig, granted: Iterable[str], reversed_: Iterable[str], *,
         smtp_configured: bool = False, now: datetime | None = None) -> list[int]:
    """Plan the delivery jobs of a reconcile: call inside its transaction, after the awards rows
    are written, with the keys it granted and reversed.  Returns the pks to run now.

    * granted (award status ``due``; ``historical`` ones are never delivered): a ``grant`` job
      (none for a ``generic`` shop: its integrator fetches due awards), and
      ``notify`` jobs per channel (``email`` when ``smtp_configured`` and the customer has an
      address, ``webhook`` when the shop has ``notify_webhook_url``) that wait for the grant;
      a type needing a capability the shop lacks → ``needs_manual_action`` at once (award too);
    * reversed: a pending grant is ``cancelled``; a delivered one gets a ``revoke``;
    * shop in shadow mode: rows are ``shadow`` and never run.
    Re-planning the same keys changes nothing (rows are unique per award, action and channel).
    """
    now = now or utcnow()
    granted, reversed_ = list(dict.fromkeys(granted)), list(dict.fromkeys(reversed_))
    keys = [*granted, *reversed_]
    if not keys:
        return []
    t = store.awards
    awards: dict[str, dict[str, Any]] = {}
    for i in range(0, len(keys), 500):
        for r in conn.execute(sa.select(t).where(t.c.key.in_(keys[i:i + 500]))).mappings():
            awards[r["key"]] = dict(r)
    planner = _Planner(conn, shop, smtp_configured, now, [])
    for key in granted:
        award = awards.get(key)
        if award is not None and award["status"] == "due":
            planner.grant(award)
    for key in reversed_:
        award = awards.get(key)
        if award is not None and award["status"] == "reversed":
            planner.reverse(award)
    return list(dict.fromkeys(planner.to_run))


def set_award_status(conn: sa.Connection, award: Mapping[str, Any], status: str, reason: str,
                     now: datetime) -> None:
    """Change an award's status and write its audit row (as the service's reconcile does)."""
    t = store.awards
    conn.execute(t.update().where(t.c.key == award["key"]).values(status=status, reason=reason, updated_at=now))
    conn.execute(store.award_log.insert().values(award_key=award["key"], at=now, status=status, reason=reason,
                                                 rule_version=award.get("rule_version")))


def _log_award(conn: sa.Connection, award: Mapping[str, Any], reason: str, now: datetime) -> None:
    """An audit row that keeps the award's status (e.g. a revoke's result on a reversed award)."""
    conn.execute(store.award_log.insert().values(award_key=award["key"], at=now, status=award["status"],
                                                 reason=reason, rule_version=award.get("rule_version")))


# ================================================================ running
def due(db: sa.Engine, now: datetime | None = None, limit: int = 500) -> list[int]:
    """Pending deliveries whose time has come (retries, lost enqueues, crashed runs), oldest first."""
    now = now or utcnow()
    t = store.deliveries
    with db.connect() as conn:
        return [int(r.pk) for r in conn.execute(
            sa.select(t.c.pk).where(t.c.status == "pending", t.c.next_attempt_at.is_not(None),
                                    t.c.next_attempt_at <= now)
            .order_by(t.c.next_attempt_at, t.c.pk).limit(limit))]


def _load(conn: sa.Connection, pk: int, lock: bool = False) -> dict[str, Any]:
    query = sa.select(store.deliveries).where(store.deliveries.c.pk == pk)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFound(f"no delivery {pk}")
    return dict(row)


def _award(conn: sa.Connection, key: str) -> dict[str, Any]:
    return dict(conn.execute(sa.select(store.awards).where(store.awards.c.key == key)).mappings().one())


def _sibling(conn: sa.Connection, key: str, action: str, channel: str | None = None) -> dict[str, Any] | None:
    t = store.deliveries
    cond = t.c.channel.is_(None) if channel is None else t.c.channel == channel
    row = conn.execute(sa.select(t).where(t.c.award_key == key, t.c.action == action, cond)).mappings().first()
    return dict(row) if row is not None else None


def event_id(row: Mapping[str, Any]) -> str:
    """The notice's dedupe key: the same across retries of one notice, new for a new round."""
    generation = int((row.get("detail") or {}).get("generation", 1))
    return f"ladder-delivery-{row['pk']}-{generation}"


@dataclass(frozen=True)
class _Job:
    row: dict[str, Any]
    award: dict[str, Any]
    customer: dict[str, Any]
    external_id: str | None
    first_stage: str | None


def _close(conn: sa.Connection, row: Mapping[str, Any], status: str, reason: str, now: datetime) -> RunOutcome:
    t = store.deliveries
    detail = dict(row.get("detail") or {})
    detail["reason"] = reason
    conn.execute(t.update().where(t.c.pk == row["pk"]).values(
        status=status, last_error=reason, detail=detail, next_attempt_at=None, updated_at=now))
    return RunOutcome(status)


def _claim(db: sa.Engine, pk: int, now: datetime) -> _Job | RunOutcome:
    from . import notify  # notify imports this module's documents; import here to keep the order simple

    with store.begin_write(db) as conn:
        row = _load(conn, pk, lock=True)
        if row["status"] != "pending":
            return RunOutcome(row["status"])  # done, cancelled or shadow: running again does nothing
        if row["next_attempt_at"] is None:
            return RunOutcome("pending")  # waits for something else (a notice for its grant)
        if row["next_attempt_at"] > now:
            return RunOutcome("pending", retry_at=row["next_attempt_at"])  # not yet, or in flight elsewhere
        award = _award(conn, row["award_key"])
        customer = customer_profile(conn, row["shop_id"], row["customer_id"])
        external_id = None
        stage_one = None
        if row["action"] == "revoke":
            grant_row = _sibling(conn, row["award_key"], "grant")
            external_id = grant_row["external_id"] if grant_row else None
        elif row["action"] == "notify":
            grant_row = _sibling(conn, row["award_key"], "grant")
            granted_event = (row.get("detail") or {}).get("event", EVENT_GRANTED) == EVENT_GRANTED
            if granted_event and grant_row is not None and grant_row["status"] == "pending":
                conn.execute(store.deliveries.update().where(store.deliveries.c.pk == pk)
                             .values(next_attempt_at=None, updated_at=now))
                return RunOutcome("pending")  # armed again when the grant is delivered
            if granted_event and grant_row is not None and grant_row["status"] != "delivered":
                return _close(conn, row, "cancelled", f"the reward was not delivered ({grant_row['status']})", now)
            stage_one = first_stage(conn, row["shop_id"], row["customer_id"])
            problem = notify.consent_problem(award_document(award), customer, stage_one)
            if problem:
                return _close(conn, row, "cancelled", problem, now)
            if row["channel"] == "email" and not customer.get("email"):
                return _close(conn, row, "cancelled", "the customer has no e-mail address", now)
        conn.execute(store.deliveries.update().where(store.deliveries.c.pk == pk).values(
            attempts=row["attempts"] + 1, next_attempt_at=now + CLAIM_LEASE, updated_at=now))
        row["attempts"] += 1
        return _Job(row, award, customer, external_id, stage_one)


def _call(job: _Job, adapter_factory: AdapterFactory, notifier: Any) -> tuple[str | None, str]:
    """The slow part, outside any transaction: (external id, detail), or a DeliveryError."""
    from . import notify
    from .adapters.base import Delivery

    row = job.row
    if row["action"] == "notify":
        notice = notify.Notice(channel=row["channel"], event=(row.get("detail") or {}).get("event", EVENT_GRANTED),
                               event_id=event_id(row), shop_id=row["shop_id"], award=award_document(job.award),
                               customer=job.customer)
        return notifier.send(notice), ""
    adapter = adapter_factory(row["shop_id"])
    result = adapter.deliver(Delivery(pk=row["pk"], action=row["action"], award=award_document(job.award),
                                      customer=job.customer, external_id=job.external_id, attempt=row["attempts"]))
    return result.external_id, result.detail


def backoff(failures: int) -> timedelta:
    """Wait before retry number ``failures``: 2, 4, 8 … seconds, at most :data:`BACKOFF_MAX`."""
    return min(timedelta(seconds=BACKOFF_BASE_SECONDS * 2 ** (failures - 1)), BACKOFF_MAX)


def _finish_success(conn: sa.Connection, row: dict[str, Any], external_id: str | None, detail_text: str,
                    now: datetime) -> RunOutcome:
    t = store.deliveries
    award = _award(conn, row["award_key"])
    was = row["status"]  # what the row is *now*: a reconcile may have cancelled it during the call
    detail = dict(row.get("detail") or {})
    if detail_text:
        detail["result"] = detail_text
    detail.pop("failures", None)
    conn.execute(t.update().where(t.c.pk == row["pk"]).values(
        status="delivered", external_id=external_id, last_error=None, detail=detail, next_attempt_at=None,
        delivered_at=now, updated_at=now))
    follow: list[int] = []
    where = f" (shop id {external_id})" if external_id else ""
    action = row["action"]
    if action == "grant":
        if was == "pending" and award["status"] == "due":
            set_award_status(conn, award, "delivered", f"delivered to the shop{where}", now)
            follow += _arm_waiting_notices(conn, award["key"], now)
        elif award["status"] == "reversed":
            # Reversed while the call was in flight: it exists in the shop now, so take it back.
            _log_award(conn, award, f"delivered{where} after it was reversed; revoking it", now)
            follow += _rearm(conn, award, "revoke", now)
        elif award["status"] == "due":
            set_award_status(conn, award, "delivered", f"delivered to the shop{where}", now)
            follow += _arm_waiting_notices(conn, award["key"], now)
    elif action == "revoke":
        if award["status"] == "reversed":
            _log_award(conn, award, f"revoked in the shop{where}", now)
        else:
            # Granted again while the revoke was in flight: the object is gone, deliver it again.
            _log_award(conn, award, "revoked in the shop while it was granted again; delivering it again", now)
            follow += _rearm(conn, award, "grant", now)
    elif action == "notify" and award["type"] in NOTICE_ONLY_TYPES and award["status"] == "due" \
            and _sibling(conn, award["key"], "grant") is None:
        set_award_status(conn, award, "delivered", f"sent by {row['channel']}", now)
    return RunOutcome("delivered", follow_up=tuple(follow))


def _arm_waiting_notices(conn: sa.Connection, key: str, now: datetime) -> list[int]:
    t = store.deliveries
    pks = [int(r.pk) for r in conn.execute(sa.select(t.c.pk).where(
        t.c.award_key == key, t.c.action == "notify", t.c.status == "pending", t.c.next_attempt_at.is_(None)))]
    if pks:
        conn.execute(t.update().where(t.c.pk.in_(pks)).values(next_attempt_at=now, updated_at=now))
    return pks


def _rearm(conn: sa.Connection, award: Mapping[str, Any], action: str, now: datetime) -> list[int]:
    """Arm a compensation found only after the fact (a late success); return its pk to run."""
    existing = _sibling(conn, award["key"], action)
    if existing is not None and existing["status"] == "pending":
        conn.execute(store.deliveries.update().where(store.deliveries.c.pk == existing["pk"])
                     .values(next_attempt_at=now, updated_at=now))
        return [int(existing["pk"])]
    return [arm_row(conn, now, award, existing, action, None, "pending", due=True)]


def _finish_error(conn: sa.Connection, row: dict[str, Any], exc: Exception, now: datetime) -> RunOutcome:
    t = store.deliveries
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    detail = dict(row.get("detail") or {})
    if row["status"] != "pending":
        # Cancelled while the call was in flight, and nothing was created: nothing more to do.
        conn.execute(t.update().where(t.c.pk == row["pk"]).values(last_error=message, updated_at=now))
        return RunOutcome(row["status"])
    if isinstance(exc, RateLimited):
        wait = timedelta(seconds=exc.retry_after) if exc.retry_after is not None else DEFAULT_RATE_LIMIT_WAIT
        retry_at = now + max(wait, timedelta(0))
        conn.execute(t.update().where(t.c.pk == row["pk"]).values(
            last_error=f"rate limited: {message}", next_attempt_at=retry_at, updated_at=now))
        return RunOutcome("pending", retry_at=retry_at)
    if isinstance(exc, (Rejected, NotSupported)):
        status = "needs_manual_action" if isinstance(exc, NotSupported) else "failed"
        conn.execute(t.update().where(t.c.pk == row["pk"]).values(
            status=status, last_error=message, next_attempt_at=None, updated_at=now))
        _award_after_error(conn, row, status, message, now)
        return RunOutcome(status)
    # Unavailable, or an unexpected error (a bug in an adapter): retried with backoff, then failed.
    failures = int(detail.get("failures", 0)) + 1
    detail["failures"] = failures
    if not isinstance(exc, DeliveryError):
        message = f"unexpected {type(exc).__name__}: {message}"
    if failures >= MAX_ATTEMPTS:
        reason = f"gave up after {failures} failed attempts: {message}"
        conn.execute(t.update().where(t.c.pk == row["pk"]).values(
            status="failed", last_error=reason, detail=detail, next_attempt_at=None, updated_at=now))
        _award_after_error(conn, row, "failed", reason, now)
        return RunOutcome("failed")
    retry_at = now + backoff(failures)
    conn.execute(t.update().where(t.c.pk == row["pk"]).values(
        last_error=message, detail=detail, next_attempt_at=retry_at, updated_at=now))
    return RunOutcome("pending", retry_at=retry_at)


def _award_after_error(conn: sa.Connection, row: Mapping[str, Any], status: str, message: str,
                       now: datetime) -> None:
    award = _award(conn, row["award_key"])
    if row["action"] == "grant" and award["status"] == "due":
        set_award_status(conn, award, status, message, now)
        t = store.deliveries
        conn.execute(t.update().where(t.c.award_key == award["key"], t.c.action == "notify",
                                      t.c.status == "pending")
                     .values(status="cancelled", last_error="the reward was not delivered", next_attempt_at=None,
                             updated_at=now))
    elif row["action"] == "revoke":
        _log_award(conn, award, f"revoke {status}: {message}", now)


def run(db: sa.Engine, pk: int, adapter_factory: AdapterFactory, notifier: Any,
        now: datetime | None = None) -> RunOutcome:
    """Run one delivery: claim it, call the shop (or the notifier), record the answer.

    ``adapter_factory(shop_id)`` gives the shop's adapter; ``notifier`` has ``send(Notice) -> str``
    (see :class:`loyalty_ladder.notify.Notifier`).  A row that is not pending, or not yet due,
    is left alone, so running a delivered delivery again does nothing.  ``retry_at`` says when
    to run it again; ``follow_up`` lists rows to run now.
    """
    now = now or utcnow()
    claimed = _claim(db, pk, now)
    if isinstance(claimed, RunOutcome):
        return claimed
    try:
        external_id, detail_text = _call(claimed, adapter_factory, notifier)
    except Exception as exc:  # every failure is recorded on the row; none is lost
        if not isinstance(exc, DeliveryError):
            log.exception("delivery %s: unexpected error", pk)
        else:
            log.info("delivery %s: %s", pk, exc)
        with store.begin_write(db) as conn:
            store.lock_customer(conn, claimed.row["shop_id"], claimed.row["customer_id"])
            return _finish_error(conn, _load(conn, pk, lock=True), exc, now)
    with store.begin_write(db) as conn:
        # The customer lock orders this after (or before) a reconcile of the same customer, so
        # the row's status read here is the one that reconcile left.
        store.lock_customer(conn, claimed.row["shop_id"], claimed.row["customer_id"])
        return _finish_success(conn, _load(conn, pk, lock=True), external_id, detail_text, now)
