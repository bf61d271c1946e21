"""Planning deliveries: the jobs a reconcile implies, written in the reconcile's own transaction,
so an award and the jobs that carry it commit together or not at all.

* granted (award status ``due``; ``historical`` ones are never delivered): a ``grant`` job (none
  for a platform without a shop API: its integrator fetches due awards), and ``notify`` jobs per
  channel that wait for the grant; a type needing a capability the shop lacks →
  ``needs_manual_action`` at once (award too);
* reversed: a pending grant is ``cancelled``; a delivered one gets a ``revoke``;
* refreshed (a held award whose shop copy is stale: the customer's VIP manager changed): a
  delivered grant runs again (a *re-delivery*, so the shop keeps the current customer field);
* a type kept here (``RewardType.kept_here``: points, credited to the ledger loyalty-ladder keeps)
  is ``delivered`` at once, with no job for the shop; its notices run now;
* shop in shadow mode: rows are ``shadow`` and never run.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .. import store
from ..adapters.registry import adapter_class
from ..clock import iso_or_none, utcnow
from ..rewards import registry as reward_types
from ..shop import ShopConfig
from ..statuses import AwardStatus, DeliveryAction, DeliveryStatus, NotifyChannel
from .documents import EVENT_GRANTED, EVENT_REVERSED, customer_profile

#: ``detail`` flag of a grant run again for a held award (:meth:`_Planner.refresh`): the shop holds
#: the earlier delivery, so ending the award takes it back even before the re-delivery ran
REDELIVERY = "redelivery"
#: the reason of an award decided in a shadow-mode shop
SHADOW_REASON = "decided in shadow mode: recorded, never delivered"
#: the reason of an award delivered by being recorded here (points credited to the ledger)
KEPT_HERE_REASON = "credited to the customer's points ledger"


def arm_row(conn: sa.Connection, now: datetime, award: Mapping[str, Any], existing: Mapping[str, Any] | None,
            action: str, channel: str | None, status: str, *, due: bool, reason: str | None = None,
            event: str | None = None, extra: Mapping[str, Any] | None = None) -> int:
    """Create a delivery row, or re-arm an existing one for a new round (its past kept in
    ``detail.history``, its ``generation`` counted up so a notice gets a new event id); ``extra``
    goes into the new round's ``detail``."""
    t = store.deliveries
    next_at = now if (status == DeliveryStatus.PENDING and due) else None
    last_error = reason if status != DeliveryStatus.PENDING else None
    if existing is None:
        detail: dict[str, Any] = {"generation": 1}
    else:
        old = dict(existing.get("detail") or {})
        past = list(old.get("history") or [])
        past.append({"status": existing["status"], "external_id": existing["external_id"],
                     "last_error": existing["last_error"], "event": old.get("event"),
                     "at": iso_or_none(existing["updated_at"])})
        detail = {"generation": int(old.get("generation", 1)) + 1, "history": past[-10:]}
    if event:
        detail["event"] = event
    if reason:
        detail["reason"] = reason
    detail.update(extra or {})
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
            event: str | None = None, extra: Mapping[str, Any] | None = None) -> int:
        pk = arm_row(self.conn, self.now, award, existing, action, channel, status, due=due, reason=reason,
                     event=event, extra=extra)
        if status == DeliveryStatus.PENDING and due:
            self.to_run.append(pk)
        return pk

    def set_status(self, row: Mapping[str, Any], status: str, reason: str) -> None:
        t = store.deliveries
        detail = dict(row.get("detail") or {})
        detail["reason"] = reason
        self.conn.execute(t.update().where(t.c.pk == row["pk"]).values(
            status=status, last_error=reason, detail=detail, next_attempt_at=None, updated_at=self.now))

    def award_status(self, award: Mapping[str, Any], status: str, reason: str, *, keep_reason: bool = False) -> None:
        set_award_status(self.conn, award, status, reason, self.now, keep_reason=keep_reason)

    # ------------------------------------------------------------ decisions
    @property
    def live_status(self) -> DeliveryStatus:
        """A new runnable row's status: ``shadow`` in a shadow-mode shop (never run), else ``pending``."""
        return DeliveryStatus.SHADOW if self.shop.shadow else DeliveryStatus.PENDING

    def initial_status(self, award: Mapping[str, Any]) -> tuple[str, str | None]:
        if self.shop.shadow:
            return DeliveryStatus.SHADOW, "shop in shadow mode: computed, not delivered"
        # what the award's type needs from the shop (rewards.RewardType.capability)
        need = reward_types.capability_of(award)
        if need is not None and need not in self.shop.capabilities:
            have = ", ".join(self.shop.capabilities) or "none"
            return DeliveryStatus.NEEDS_MANUAL_ACTION, (
                f"{award['type']} needs the shop capability '{need}', which shop '{self.shop.id}' "
                f"({self.shop.platform}) lacks (it has: {have})")
        return DeliveryStatus.PENDING, None

    def channels(self, award: Mapping[str, Any], email: str | None) -> list[str]:
        out = []
        if self.smtp_configured and email and reward_types.of(award["type"]).emailed:
            out.append(NotifyChannel.EMAIL)
        if self.shop.notify_webhook_url:
            out.append(NotifyChannel.WEBHOOK)
        return out

    # ------------------------------------------------------------ grant
    def grant(self, award: Mapping[str, Any]) -> None:
        rows = self.rows_for(award["key"])
        profile = customer_profile(self.conn, award["shop_id"], award["customer_id"], self.shop.vip_managers, self.now)
        channels = self.channels(award, profile["email"])
        status, reason = self.initial_status(award)
        grant_row = rows.get((DeliveryAction.GRANT, None))
        if self.shop.shadow:
            # decided, never delivered: the award says so (an integrator reading `due` awards
            # of a generic shop would otherwise hand it over)
            self.award_status(award, AwardStatus.SHADOW, SHADOW_REASON)

        if reward_types.of(award["type"]).kept_here and not self.shop.shadow:
            # recorded here is delivered (the points ledger is ours): nothing for the shop to do
            self.award_status(award, AwardStatus.DELIVERED, KEPT_HERE_REASON, keep_reason=True)
            self.notices(award, rows, channels, EVENT_GRANTED, due=True)
            return
        if not adapter_class(self.shop.platform).has_shop_api:
            # No shop API: the integrator reads due awards from the customer endpoint and hands
            # them over itself, so the award stays `due`; only the notices are ours to send.
            self.notices(award, rows, channels, EVENT_GRANTED, due=True)
            return
        if reward_types.of(award["type"]).withheld_without_channel and not channels and grant_row is None:
            self.award_status(award, AwardStatus.WITHHELD, "no notification channel (SMTP or webhook) to send it",
                              keep_reason=True)
            return
        if reward_types.of(award["type"]).notice_only and channels and grant_row is None:
            # The notice is the reward: it runs now, and its success delivers the award.
            self.notices(award, rows, channels, EVENT_GRANTED, due=True)
            return

        if grant_row is not None and grant_row["status"] == DeliveryStatus.PENDING:
            return  # still on its way (or waiting for a retry): nothing new to plan
        if grant_row is not None and grant_row["status"] == DeliveryStatus.SHADOW and status == DeliveryStatus.SHADOW:
            return
        if grant_row is not None and grant_row["status"] == DeliveryStatus.DELIVERED:
            revoke = rows.get((DeliveryAction.REVOKE, None))
            if revoke is None or revoke["status"] not in (DeliveryStatus.DELIVERED, DeliveryStatus.SHADOW):
                # The object the grant created still exists in the shop: nothing to deliver.
                if revoke is not None and revoke["status"] in (DeliveryStatus.PENDING, DeliveryStatus.NEEDS_MANUAL_ACTION,
                                                               DeliveryStatus.FAILED):
                    # (staff asked to take back by hand what the customer holds again: not any more)
                    self.set_status(revoke, DeliveryStatus.CANCELLED, "granted again before the revoke ran")
                    self.cancel_notices(rows, EVENT_REVERSED, "granted again before the reversal was announced")
                self.award_status(award, AwardStatus.DELIVERED,
                                  "implied again; what the shop holds from the earlier delivery still stands")
                return
            # The revoke removed it: deliver it again below.

        self.arm(award, grant_row, DeliveryAction.GRANT, None, status, due=True, reason=reason)
        if status == DeliveryStatus.NEEDS_MANUAL_ACTION:
            self.award_status(award, AwardStatus.NEEDS_MANUAL_ACTION, reason or "")
        elif status in (DeliveryStatus.PENDING, DeliveryStatus.SHADOW):
            # Notices wait for the grant (status pending, not due) or mirror a shadow grant.
            self.notices(award, rows, channels, EVENT_GRANTED, due=False)

    def notices(self, award: Mapping[str, Any], rows: Mapping[tuple[str, str | None], Mapping[str, Any]],
                channels: Sequence[str], event: str, *, due: bool) -> None:
        status = self.live_status
        for channel in channels:
            row = rows.get((DeliveryAction.NOTIFY, channel))
            if row is not None:
                same = (row.get("detail") or {}).get("event") == event
                if same and row["status"] in (DeliveryStatus.PENDING, DeliveryStatus.DELIVERED, DeliveryStatus.SHADOW):
                    continue  # already told (or about to be): never twice
            self.arm(award, row, DeliveryAction.NOTIFY, channel, status, due=due, event=event)

    def cancel_notices(self, rows: Mapping[tuple[str, str | None], Mapping[str, Any]], event: str | None,
                       reason: str) -> None:
        for (action, _channel), row in rows.items():
            if action == DeliveryAction.NOTIFY and row["status"] == DeliveryStatus.PENDING and (
                    event is None or (row.get("detail") or {}).get("event") == event):
                self.set_status(row, DeliveryStatus.CANCELLED, reason)

    # ------------------------------------------------------------ reverse
    def reverse(self, award: Mapping[str, Any], announce: bool = True) -> None:
        """Undo an award in the shop (reversed, or a privilege ended): cancel what was not sent,
        revoke what was delivered; ``announce``: tell the marketing webhook of a reversal."""
        rows = self.rows_for(award["key"])
        grant_row = rows.get((DeliveryAction.GRANT, None))
        revoke = rows.get((DeliveryAction.REVOKE, None))
        unsent = (DeliveryStatus.PENDING, DeliveryStatus.FAILED, DeliveryStatus.CANCELLED)
        if grant_row is not None and grant_row["status"] in unsent and (grant_row.get("detail") or {}).get(REDELIVERY):
            # a re-delivery not done (waiting, or refused): the shop still holds the earlier delivery
            if grant_row["status"] == DeliveryStatus.PENDING:
                self.set_status(grant_row, DeliveryStatus.CANCELLED,
                                "award ended before its re-delivery ran; the earlier delivery is revoked")
            grant_row = {**grant_row, "status": DeliveryStatus.DELIVERED}
        if grant_row is None or grant_row["status"] in unsent:
            if grant_row is not None and grant_row["status"] == DeliveryStatus.PENDING:
                self.set_status(grant_row, DeliveryStatus.CANCELLED, "award reversed before it was delivered")
            self.cancel_notices(rows, None, "award reversed before the customer was told")
            if grant_row is None and announce:  # a notice-only reward, or a generic shop: the notice was the delivery
                self.announce_reversal(award, rows)
            return
        self.cancel_notices(rows, EVENT_GRANTED, "award reversed before the customer was told")
        if revoke is not None and revoke["status"] == DeliveryStatus.PENDING:
            return
        status = grant_row["status"]
        if status == DeliveryStatus.DELIVERED and (grant_row.get("detail") or {}).get("by_hand"):
            # staff handed it over (the worklist): the shop's API never created it, staff take it back
            self.arm(award, revoke, DeliveryAction.REVOKE, None, DeliveryStatus.NEEDS_MANUAL_ACTION, due=False,
                     reason="award reversed: it was handed over by hand, take it back by hand")
            if announce:
                self.announce_reversal(award, rows)
        elif status == DeliveryStatus.DELIVERED:
            self.arm(award, revoke, DeliveryAction.REVOKE, None, self.live_status, due=True,
                     reason="shop in shadow mode: computed, not delivered" if self.shop.shadow else None)
            if announce:
                self.announce_reversal(award, rows)
        elif status == DeliveryStatus.SHADOW:
            self.arm(award, revoke, DeliveryAction.REVOKE, None, DeliveryStatus.SHADOW, due=False,
                     reason="shop in shadow mode: computed, not delivered")
        elif status == DeliveryStatus.NEEDS_MANUAL_ACTION:
            self.arm(award, revoke, DeliveryAction.REVOKE, None, DeliveryStatus.NEEDS_MANUAL_ACTION, due=False,
                     reason="award reversed: if it was handed over by hand, take it back by hand")

    def refresh(self, award: Mapping[str, Any]) -> None:
        """Deliver a held award again because what the shop keeps beside it changed (the
        customer's VIP manager): only a grant the shop's API delivered is run again.  One still
        pending carries the current state when it runs; one waiting for staff, handed over by
        hand, refused, or in a shadow-mode shop is left alone (its status says what happened)."""
        rows = self.rows_for(award["key"])
        grant_row = rows.get((DeliveryAction.GRANT, None))
        revoke = rows.get((DeliveryAction.REVOKE, None))
        if grant_row is None or grant_row["status"] != DeliveryStatus.DELIVERED or self.shop.shadow:
            return
        if (grant_row.get("detail") or {}).get("by_hand"):
            return
        if revoke is not None and revoke["status"] in (DeliveryStatus.PENDING, DeliveryStatus.DELIVERED):
            return  # being taken back, or gone: a grant again is planned by grant(), not here
        self.arm(award, grant_row, DeliveryAction.GRANT, None, DeliveryStatus.PENDING, due=True,
                 extra={REDELIVERY: True})

    def expire(self, award: Mapping[str, Any]) -> None:
        """A grant whose validity passed before it was used or delivered: what has not run, or
        waits for staff, is cancelled — the worklist no longer offers it."""
        waiting = (DeliveryStatus.PENDING, DeliveryStatus.NEEDS_MANUAL_ACTION, DeliveryStatus.FAILED,
                   DeliveryStatus.SHADOW)
        for row in self.rows_for(award["key"]).values():
            if row["status"] in waiting:
                self.set_status(row, DeliveryStatus.CANCELLED, "the award expired before it was delivered")

    def announce_reversal(self, award: Mapping[str, Any],
                          rows: Mapping[tuple[str, str | None], Mapping[str, Any]]) -> None:
        """Tell the shop's marketing tool of a reversal, only if it heard of the grant."""
        row = rows.get((DeliveryAction.NOTIFY, NotifyChannel.WEBHOOK))
        if (self.shop.notify_webhook_url and row is not None and row["status"] == DeliveryStatus.DELIVERED
                and (row.get("detail") or {}).get("event") == EVENT_GRANTED):
            self.arm(award, row, DeliveryAction.NOTIFY, NotifyChannel.WEBHOOK, self.live_status, due=True,
                     event=EVENT_REVERSED)


def plan(conn: sa.Connection, shop: ShopConfig, granted: Iterable[str], reversed_: Iterable[str], *,
         smtp_configured: bool = False, now: datetime | None = None, ended: Iterable[str] = (),
         refreshed: Iterable[str] = (), expired: Iterable[str] = ()) -> list[int]:
    """Plan the delivery jobs of a reconcile: call inside its transaction, after the awards rows
    are written, with the keys it granted and reversed.  Returns the pks to run now.

    * granted (award status ``due``; ``historical`` ones are never delivered): a ``grant`` job
      (none for a ``generic`` shop: its integrator fetches due awards), and
      ``notify`` jobs per channel (``email`` when ``smtp_configured`` and the customer has an
      address, ``webhook`` when the shop has ``notify_webhook_url``) that wait for the grant;
      a type needing a capability the shop lacks → ``needs_manual_action`` at once (award too);
    * reversed: a pending grant is ``cancelled``; a delivered one gets a ``revoke``;
    * ended (a privilege, status ``ended`` or ``suspended``): the same, without announcing a reversal;
    * expired (a grant, status ``expired``): its jobs not run yet, or waiting for staff, are
      ``cancelled`` (nothing is taken back: its validity passed in the shop too);
    * refreshed (held awards whose shop copy is stale, after the rest): a delivered grant is
      re-armed, due now (:meth:`_Planner.refresh`);
    * shop in shadow mode: rows are ``shadow`` and never run.
    Re-planning the same keys changes nothing (rows are unique per award, action and channel).
    """
    now = now or utcnow()
    granted, reversed_, ended = list(dict.fromkeys(granted)), list(dict.fromkeys(reversed_)), list(ended)
    refreshed, expired = list(dict.fromkeys(refreshed)), list(dict.fromkeys(expired))
    keys = [*granted, *reversed_, *ended, *refreshed, *expired]
    if not keys:
        return []
    t = store.awards
    awards: dict[str, dict[str, Any]] = {}
    for i in range(0, len(keys), 500):
        for r in conn.execute(sa.select(t).where(t.c.key.in_(keys[i:i + 500]))).mappings():
            awards[r["key"]] = dict(r)
    planner = _Planner(conn, shop, smtp_configured, now, [])
    # each list, in this order, with the status its awards must still have and what is planned
    steps: tuple[tuple[Sequence[str], tuple[str, ...], Callable[[dict[str, Any]], None]], ...] = (
        (granted, (AwardStatus.DUE,), planner.grant),
        (reversed_, (AwardStatus.REVERSED,), planner.reverse),
        (ended, (AwardStatus.ENDED, AwardStatus.SUSPENDED), lambda award: planner.reverse(award, announce=False)),
        (expired, (AwardStatus.EXPIRED,), planner.expire),
        (refreshed, (AwardStatus.DELIVERED,), planner.refresh),
    )
    for step_keys, statuses, act in steps:
        for key in step_keys:
            award = awards.get(key)
            if award is not None and award["status"] in statuses:
                act(award)
    return list(dict.fromkeys(planner.to_run))


def set_award_status(conn: sa.Connection, award: Mapping[str, Any], status: str, reason: str,
                     now: datetime, *, keep_reason: bool = False) -> None:
    """Change an award's status and write its audit row (as the service's reconcile does);
    ``keep_reason``: the award keeps the reason the fold gives it, the audit row says why."""
    t = store.awards
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if not keep_reason:
        values["reason"] = reason
    conn.execute(t.update().where(t.c.key == award["key"]).values(**values))
    conn.execute(store.award_log.insert().values(award_key=award["key"], at=now, status=status, reason=reason,
                                                 rule_version=award.get("rule_version")))


def handed_over(conn: sa.Connection, shop: ShopConfig, award: Mapping[str, Any], *, smtp_configured: bool = False,
                now: datetime | None = None) -> list[int]:
    """Staff carried out an award by hand (the worklist): its grant row, waiting for them, is
    ``delivered``, and the customer is told as after any delivery (the notices are armed, due
    now).  Call in the transaction that marks the award delivered; returns the pks to run now."""
    now = now or utcnow()
    planner = _Planner(conn, shop, smtp_configured, now, [])
    rows = planner.rows_for(award["key"])
    grant_row = rows.get((DeliveryAction.GRANT, None))
    waiting = (DeliveryStatus.NEEDS_MANUAL_ACTION, DeliveryStatus.FAILED)
    if grant_row is not None and grant_row["status"] in waiting:
        detail = dict(grant_row.get("detail") or {})
        detail.update(done_by=award.get("done_by"), by_hand=True)  # nothing of it exists in the shop's API
        conn.execute(store.deliveries.update().where(store.deliveries.c.pk == grant_row["pk"],
                                                     store.deliveries.c.status.in_(waiting)).values(
            status=DeliveryStatus.DELIVERED, last_error=None, detail=detail, next_attempt_at=None, delivered_at=now,
            updated_at=now))
    profile = customer_profile(conn, award["shop_id"], award["customer_id"], shop.vip_managers, now)
    planner.notices(award, rows, planner.channels(award, profile["email"]), EVENT_GRANTED, due=True)
    return list(dict.fromkeys(planner.to_run))


def _log_award(conn: sa.Connection, award: Mapping[str, Any], reason: str, now: datetime) -> None:
    """An audit row that keeps the award's status (e.g. a revoke's result on a reversed award)."""
    conn.execute(store.award_log.insert().values(award_key=award["key"], at=now, status=award["status"],
                                                 reason=reason, rule_version=award.get("rule_version")))
