"""Use cases: accept events, process a customer, show a customer, explain, simulate, import.

This is the one place that strings the line together: the events ledger
(store) → facts → engine → ladder → awards.  Everything that changes state
happens in one database transaction per use case; queue jobs only carry
``(shop, customer)`` and re-read the ledger, so a lost or repeated job loses
nothing and changes nothing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from marshmallow import ValidationError

from . import awards as awards_mod
from . import events as events_mod
from . import identity, outbox, rulefile, store
from . import ladder as ladder_mod
from .config import Settings, ShopConfig, load_shops
from .engine import CompiledProgramme, get_engine
from .errors import BadRequest, ConfigError, Conflict, NotFound
from .programme import Programme

log = logging.getLogger(__name__)

#: largest batch the events endpoint and `ladder import` accept in one request/transaction
MAX_EVENTS_PER_REQUEST = 1000
#: accepted events older than this and still unapplied are re-enqueued by the sweeper
SWEEP_AFTER = timedelta(seconds=30)
#: how far in the future an event's time may lie (the shop's clock may run a little ahead)
MAX_CLOCK_SKEW = timedelta(minutes=5)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def to_jsonable(value: Any) -> Any:
    """Decimal → str, datetime → ISO 8601, sets → sorted lists, dataclasses stay out."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, (set, frozenset)):
        return sorted(to_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value


def body_hash(raw: Mapping[str, Any]) -> str:
    """Hash of an event's canonical JSON: 'the same content (equal as JSON)'."""
    return hashlib.sha256(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class AcceptResult:
    accepted: int = 0
    duplicates: int = 0
    customers: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "customers": self.customers}


class ProgrammeRegistry:
    """Loads each programme directory once and keeps it compiled, per process."""

    def __init__(self, default_path: Path | None):
        self.default_path = Path(default_path) if default_path else rulefile.default_programme_path()
        self._cache: dict[Path, tuple[Programme, CompiledProgramme]] = {}
        self._lock = threading.Lock()

    def path_for(self, shop: ShopConfig | None) -> Path:
        if shop is not None and shop.programme:
            return Path(shop.programme)
        return self.default_path

    def get(self, shop: ShopConfig | None = None) -> tuple[Programme, CompiledProgramme]:
        path = self.path_for(shop).resolve()
        with self._lock:
            hit = self._cache.get(path)
            if hit is None:
                programme = rulefile.load_programme(path)
                hit = (programme, get_engine().compile(programme))
                self._cache[path] = hit
            return hit


class LadderService:
    """The loyalty engine for one database and one set of shops."""

    def __init__(self, settings: Settings, *, db: sa.Engine | None = None,
                 shops: Mapping[str, ShopConfig] | None = None):
        self.settings = settings
        try:
            self.db = db if db is not None else store.make_engine(settings.database_url)
            if settings.auto_migrate:
                store.upgrade(self.db)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
            raise ConfigError(f"LADDER_DATABASE_URL {settings.database_url!r} is not usable: {exc}") from None
        except sa.exc.OperationalError as exc:
            raise ConfigError(f"cannot open the database {settings.database_url!r}: {exc.orig}") from None
        self.shops: dict[str, ShopConfig] = dict(shops) if shops is not None else load_shops(settings.shops_file)
        self.programmes = ProgrammeRegistry(settings.rules)
        # set by bind_queue(): how to hand work to the consumer; default: do it now.
        # Due wake-ups need no scheduled jobs: the periodic sweep finds next_wake_at <= now.
        self._enqueue: Callable[[str, str], None] = self._process_now
        # Without a queue, planned deliveries wait in the outbox for a worker's sweep.
        self._deliver: Callable[[int], None] | None = None
        self._notifier: Any = None

    # ------------------------------------------------------------ wiring
    def bind_queue(self, enqueue: Callable[[str, str], None], deliver: Callable[[int], None] | None = None) -> None:
        self._enqueue = enqueue
        self._deliver = deliver

    def _enqueue_deliveries(self, pks: Sequence[int]) -> None:
        if self._deliver is not None:
            for pk in pks:
                self._deliver(pk)

    def _process_now(self, shop_id: str, customer_id: str) -> None:
        self.process_customer(shop_id, customer_id)

    def shop(self, shop_id: str) -> ShopConfig:
        try:
            return self.shops[shop_id]
        except KeyError:
            raise NotFound(f"unknown shop '{shop_id}'", {"shop": [f"no shop with id '{shop_id}' is configured"]}) from None

    def programme(self, shop_id: str) -> tuple[Programme, CompiledProgramme]:
        return self.programmes.get(self.shop(shop_id))

    def ensure_programme_recorded(self, shop_id: str) -> Programme:
        """Record the programme version and the shop row (idempotent)."""
        programme, _ = self.programme(shop_id)
        with self.db.begin() as conn:
            self._record_version(conn, shop_id, programme)
        return programme

    def _record_version(self, conn: sa.Connection, shop_id: str, programme: Programme) -> None:
        t_ver, t_shop = store.programme_versions, store.shops
        if conn.execute(sa.select(t_ver.c.version).where(t_ver.c.version == programme.version)).first() is None:
            conn.execute(t_ver.insert().values(version=programme.version, source=str(programme.source),
                                               canonical=programme.canonical, created_at=utcnow()))
        row = conn.execute(sa.select(t_shop).where(t_shop.c.shop_id == shop_id)).first()
        if row is None:
            conn.execute(t_shop.insert().values(shop_id=shop_id, active_version=programme.version, created_at=utcnow()))
        elif row.active_version != programme.version:
            conn.execute(t_shop.update().where(t_shop.c.shop_id == shop_id).values(active_version=programme.version))

    # ------------------------------------------------------------ accept
    def accept_events(self, shop_id: str, payload: Any, source: str = "api") -> AcceptResult:
        """Validate a batch all-or-nothing, persist it, and enqueue the customers it touches.

        Raises BadRequest (per-item errors) or Conflict (an id reused with other content);
        in both cases nothing is stored.
        """
        self.shop(shop_id)
        programme, _ = self.programme(shop_id)
        items = payload if isinstance(payload, list) else [payload]
        if not items:
            raise BadRequest("no events given", {"_schema": ["send one event object or a non-empty list"]})
        if len(items) > MAX_EVENTS_PER_REQUEST:
            raise BadRequest(f"too many events: {len(items)} (at most {MAX_EVENTS_PER_REQUEST} per request)",
                             {"_schema": [f"at most {MAX_EVENTS_PER_REQUEST} events per request"]})
        try:
            parsed = events_mod.parse_events(items)
        except ValidationError as exc:
            raise BadRequest("invalid events; nothing was stored", exc.normalized_messages()) from None
        check_acceptable(programme, parsed, utcnow())
        result = self._store_events(shop_id, parsed, source)
        for customer_id in result.customers:
            self._enqueue(shop_id, customer_id)
        return result

    def apply_inbound(self, shop_id: str, inbound: Any, source: str) -> dict[str, Any]:
        """What a shop adapter made of one verified webhook: links, events, redactions.

        Vendor events are stored keep-first (the same vendor id always means the same
        event), then every customer they touch is enqueued.  Invalid events raise
        BadRequest: the inbox marks the delivery failed, it is not retried.
        """
        self.shop(shop_id)
        programme, _ = self.programme(shop_id)
        now = utcnow()
        touched: list[str] = []
        if inbound.links:
            with store.begin_write(self.db) as conn:
                for alias, account in inbound.links:
                    if identity.link(conn, shop_id, alias, account, now):
                        touched += [alias, account]
        result = AcceptResult()
        if inbound.events:
            try:
                parsed = events_mod.parse_events(list(inbound.events))
            except ValidationError as exc:
                raise BadRequest(f"the {source} payload mapped to invalid events", exc.normalized_messages()) from None
            check_acceptable(programme, parsed, utcnow())
            result = self._store_events(shop_id, parsed, source, keep_first=True)
            touched += result.customers
            touched += self._link_guests(shop_id, parsed, now)
        if inbound.redact_customer:
            self.redact_customer(shop_id, inbound.redact_customer)
        if inbound.redact_shop:
            self.redact_shop(shop_id)
        for customer_id in dict.fromkeys(touched):
            self._enqueue(shop_id, customer_id)
        return {**result.to_dict(), "linked": len(inbound.links), "redacted": bool(
            inbound.redact_customer or inbound.redact_shop), "data_request": inbound.data_request}

    def _link_guests(self, shop_id: str, parsed: Sequence[events_mod.Event], now: datetime) -> list[str]:
        """An account event carrying an e-mail claims the guest sales made with that e-mail."""
        touched: list[str] = []
        pairs = {(identity.guest_id(e.customer.email), e.customer_id) for e in parsed
                 if e.type in ("customer_created", "customer_updated") and e.customer is not None
                 and e.customer.email and not e.customer_id.startswith(("guest:", "guest-order:", "redacted:"))}
        if not pairs:
            return touched
        with store.begin_write(self.db) as conn:
            for alias, account in sorted(pairs):
                if identity.link(conn, shop_id, alias, account, now):
                    touched += [alias, account]
        return touched

    def redact_customer(self, shop_id: str, customer_id: str) -> str | None:
        """Pseudonymise one customer (and their guest aliases): personal fields erased,
        the ledger kept under a random id. Returns the new id, or None if unknown."""
        now = utcnow()
        with store.begin_write(self.db) as conn:
            account = identity.canonical(conn, shop_id, customer_id)
            ids = [account, *identity.aliases(conn, shop_id, account)]
            emails = [r.email for r in conn.execute(sa.select(store.customers.c.email).where(
                store.customers.c.shop_id == shop_id, store.customers.c.customer_id.in_(ids)))]
            known = conn.execute(sa.select(sa.func.count()).select_from(store.events).where(
                store.events.c.shop_id == shop_id, store.events.c.customer_id.in_(ids))).scalar()
            if not known:
                return None
            new_id = identity.pseudonymise(conn, shop_id, ids, now)
            identity.scrub_inbox(conn, shop_id, [*ids, *emails])
        self._enqueue(shop_id, new_id)
        return new_id

    def redact_shop(self, shop_id: str) -> int:
        """Shopify shop/redact: pseudonymise every customer of the shop and erase raw bodies."""
        with self.db.connect() as conn:
            customers = [r.customer_id for r in conn.execute(
                sa.select(store.events.c.customer_id).distinct().where(
                    store.events.c.shop_id == shop_id, ~store.events.c.customer_id.like("redacted:%")))]
        for customer_id in customers:
            self.redact_customer(shop_id, customer_id)
        with store.begin_write(self.db) as conn:
            conn.execute(store.inbox.update().where(store.inbox.c.shop_id == shop_id)
                         .values(body="{}", error="redacted"))
        return len(customers)

    def customer_data(self, shop_id: str, customer_id: str) -> dict[str, Any]:
        """Everything stored about a customer (answers a data request): document + ledger."""
        view = self.customer_view(shop_id, customer_id)
        customer_id = view["customer_id"]  # a guest id answers for the account it joined
        with self.db.connect() as conn:
            ids = [customer_id, *identity.aliases(conn, shop_id, customer_id)]
            rows = conn.execute(sa.select(store.events.c.body, store.events.c.received_at, store.events.c.source)
                                .where(store.events.c.shop_id == shop_id, store.events.c.customer_id.in_(ids))
                                .order_by(store.events.c.pk)).all()
        return {"customer": view, "events": [to_jsonable({"received_at": r.received_at, "source": r.source,
                                                         "event": r.body}) for r in rows]}

    def _store_events(self, shop_id: str, parsed: Sequence[events_mod.Event], source: str,
                      keep_first: bool = False) -> AcceptResult:
        """Insert new events; ``keep_first``: an id reused with other content is a duplicate
        (shop webhooks re-derive the same event from a changed payload), not a conflict.

        Two requests carrying the same new id at once (a client retrying while its first try is
        in flight) race on PostgreSQL, where reads do not block: the loser's insert hits the
        unique key, and it runs again, now seeing the winner's rows as duplicates."""
        try:
            return self._store_events_once(shop_id, parsed, source, keep_first)
        except sa.exc.IntegrityError:
            return self._store_events_once(shop_id, parsed, source, keep_first)

    def _store_events_once(self, shop_id: str, parsed: Sequence[events_mod.Event], source: str,
                           keep_first: bool) -> AcceptResult:
        t = store.events
        result = AcceptResult()
        seen_in_batch: dict[str, str] = {}
        now = utcnow()
        rows = []
        conflicts: dict[str, Any] = {}
        with store.begin_write(self.db) as conn:
            ids = [e.id for e in parsed]
            existing = {
                r.event_id: r.body_hash
                for chunk in _chunks(ids, 500)
                for r in conn.execute(sa.select(t.c.event_id, t.c.body_hash)
                                      .where(t.c.shop_id == shop_id, t.c.event_id.in_(chunk)))
            }
            for i, event in enumerate(parsed):
                digest = body_hash(event.raw)
                known = existing.get(event.id) or seen_in_batch.get(event.id)
                if known is not None:
                    if known != digest and not keep_first:
                        conflicts[str(i)] = {"id": [f"event id '{event.id}' was already accepted with other content"]}
                    else:
                        result.duplicates += 1
                    continue
                seen_in_batch[event.id] = digest
                rows.append({"shop_id": shop_id, "event_id": event.id, "customer_id": event.customer_id,
                                 "type": event.type, "occurred_at": event.occurred_at, "body": event.raw,
                                 "body_hash": digest, "source": source, "received_at": now, "applied_at": None})
                if event.customer_id not in result.customers:
                    result.customers.append(event.customer_id)
                result.ids.append(event.id)
            if conflicts:
                # raising inside the `with` rolls the whole batch back
                raise Conflict("an event id was reused with other content; nothing was stored", conflicts)
            if rows:
                conn.execute(t.insert(), rows)
            result.accepted = len(rows)
        return result

    # ------------------------------------------------------------ process
    def process_customer(self, shop_id: str, customer_id: str, as_of: datetime | None = None) -> ladder_mod.LadderState:
        """Re-fold one customer's whole history and reconcile their awards, in one transaction."""
        as_of = as_of or utcnow()
        programme, compiled = self.programme(shop_id)
        deliveries: list[int] = []
        with store.begin_write(self.db) as conn:
            account = identity.canonical(conn, shop_id, customer_id)
            if account != customer_id:
                # a guest merged into an account: what it earned alone is reversed, the account
                # (whose fold now includes the guest's events) is processed instead
                deliveries += self._reconcile(conn, shop_id, customer_id, (), programme, as_of,
                                              reverse_reason=f"merged into customer {account}")
                conn.execute(store.customers.delete().where(store.customers.c.shop_id == shop_id,
                                                            store.customers.c.customer_id == customer_id))
        if account != customer_id:
            self._enqueue_deliveries(deliveries)
            return self.process_customer(shop_id, account, as_of)
        with store.begin_write(self.db) as conn:
            store.lock_customer(conn, shop_id, customer_id)
            self._record_version(conn, shop_id, programme)
            rows, evs, live_from, turns = _fold_inputs(conn, shop_id, customer_id)
            if not rows:
                raise NotFound(f"customer '{customer_id}' has no accepted events in shop '{shop_id}'")
            state = ladder_mod.fold(programme, compiled, evs, as_of, shop=shop_id, customer_id=customer_id,
                                    live_from=live_from, shop_turns=turns)
            deliveries += self._reconcile(conn, shop_id, customer_id, state.awards, programme, as_of)
            # an event a little ahead of our clock is folded when its time comes, not marked applied now
            ahead = [e.occurred_at for e in evs if e.occurred_at > as_of]
            if ahead:
                wake = min(ahead) if state.next_wake_at is None else min(state.next_wake_at, min(ahead))
                state = dataclasses.replace(state, next_wake_at=wake)
            self._save_customer(conn, shop_id, customer_id, state, evs, as_of)
            applied = [r.pk for r, e in zip(rows, evs) if e.occurred_at <= as_of]
            conn.execute(store.events.update()
                         .where(store.events.c.pk.in_(applied), store.events.c.applied_at.is_(None))
                         .values(applied_at=as_of))
        self._enqueue_deliveries(deliveries)
        return state

    def _reconcile(self, conn: sa.Connection, shop_id: str, customer_id: str,
                   implied: Sequence[awards_mod.ImpliedAward], programme: Programme, now: datetime,
                   reverse_reason: str | None = None) -> list[int]:
        """Grant / reverse / recompute awards; plan their deliveries. Returns delivery pks to run."""
        t = store.awards
        recorded = [dict(r._mapping) for r in conn.execute(
            sa.select(t).where(t.c.shop_id == shop_id, t.c.customer_id == customer_id))]
        plan = awards_mod.reconcile(list(implied), recorded)
        version = programme.version
        by_key = {r["key"]: r for r in recorded}
        for award in plan.grant:
            status = "historical" if award.historical else "due"
            reason = grant_reason(award)
            values = {"shop_id": shop_id, "customer_id": customer_id, "reward_id": award.reward_id, "type": award.type,
                          "scope": award.scope, "scope_ref": award.scope_ref, "stage": award.stage, "turn": award.turn,
                          "status": status, "reason": reason, "params": to_jsonable(award.params), "value": award.value,
                          "rule_version": version, "granted_at": award.granted_at, "updated_at": now, "reversed_at": None}
            if award.key in by_key:  # a reversed award implied again
                conn.execute(t.update().where(t.c.key == award.key).values(**values))
            else:
                conn.execute(t.insert().values(key=award.key, created_at=now, **values))
            self._log(conn, award.key, now, status, reason, version)
        for rec in plan.reverse:
            key = rec["key"] if isinstance(rec, Mapping) else rec.key
            reason = reverse_reason or (
                "no longer implied by the customer's history (e.g. its order was refunded within the refund window)")
            conn.execute(t.update().where(t.c.key == key)
                         .values(status="reversed", reason=reason, reversed_at=now, updated_at=now, rule_version=version))
            self._log(conn, key, now, "reversed", reason, version)
        for award in plan.update:
            old = by_key[award.key]
            reason = f"recomputed: {award_change(old, award)}"
            conn.execute(t.update().where(t.c.key == award.key)
                         .values(params=to_jsonable(award.params), value=award.value, reason=reason,
                                 updated_at=now, rule_version=version))
            self._log(conn, award.key, now, old["status"], reason, version)
        granted = [a.key for a in plan.grant if not a.historical]
        reversed_keys = [rec["key"] if isinstance(rec, Mapping) else rec.key for rec in plan.reverse]
        if not granted and not reversed_keys:
            return []
        return outbox.plan(conn, self.shop(shop_id), granted, reversed_keys,
                           smtp_configured=bool(self.settings.smtp_url))

    @staticmethod
    def _log(conn: sa.Connection, key: str, at: datetime, status: str, reason: str, version: str) -> None:
        conn.execute(store.award_log.insert().values(award_key=key, at=at, status=status, reason=reason,
                                                     rule_version=version))

    def _save_customer(self, conn: sa.Connection, shop_id: str, customer_id: str,
                       state: ladder_mod.LadderState, evs: Sequence[events_mod.Event], now: datetime) -> None:
        t = store.customers
        email = None
        for event in sorted(evs, key=lambda e: (e.occurred_at, e.id)):
            if event.customer is not None and event.customer.email:
                email = event.customer.email
        values = {"email": email, "stage": state.stage, "subgroup": state.subgroup, "lapsed": state.lapsed,
                      "turn": state.turn, "since": state.since, "rule_version": state.rule_version,
                      "next_wake_at": state.next_wake_at, "updated_at": now,
                      "state": to_jsonable({
                          "history": [{"stage": h.stage, "at": h.at, "turn": h.turn} for h in state.history],
                          "facts": state.facts,
                          "next": next_to_dict(state.next),
                          "lapse_at": state.lapse_at,
                      })}
        key = (t.c.shop_id == shop_id) & (t.c.customer_id == customer_id)
        if conn.execute(sa.select(t.c.customer_id).where(key)).first() is None:
            conn.execute(t.insert().values(shop_id=shop_id, customer_id=customer_id, **values))
        else:
            conn.execute(t.update().where(key).values(**values))

    # ------------------------------------------------------------ read
    def customer_view(self, shop_id: str, customer_id: str) -> dict[str, Any]:
        """The public customer document (ARCHITECTURE.md, GET …/customers/<id>)."""
        self.shop(shop_id)
        with self.db.connect() as conn:
            customer_id = identity.canonical(conn, shop_id, customer_id)
            ids = [customer_id, *identity.aliases(conn, shop_id, customer_id)]
            ev = store.events
            total, pending = conn.execute(
                sa.select(sa.func.count(), sa.func.sum(sa.case((ev.c.applied_at.is_(None), 1), else_=0)))
                .where(ev.c.shop_id == shop_id, ev.c.customer_id.in_(ids))).one()
            if not total:
                raise NotFound(f"no customer '{customer_id}' in shop '{shop_id}'",
                               {"customer_id": ["no accepted event for this customer"]})
            row = conn.execute(sa.select(store.customers).where(store.customers.c.shop_id == shop_id,
                                                                store.customers.c.customer_id == customer_id)).first()
            award_rows = conn.execute(sa.select(store.awards)
                                      .where(store.awards.c.shop_id == shop_id, store.awards.c.customer_id == customer_id)
                                      .order_by(store.awards.c.granted_at, store.awards.c.key)).all()
        state = (row.state if row is not None else None) or {}
        return {
            "shop": shop_id,
            "customer_id": customer_id,
            "stage": row.stage if row else None,
            "subgroup": row.subgroup if row else None,
            "lapsed": bool(row.lapsed) if row else False,
            "turn": row.turn if row else 1,
            "since": to_jsonable(row.since) if row else None,
            "history": state.get("history", []),
            "facts": state.get("facts", {}),
            "rewards": [award_to_dict(a) for a in award_rows],
            "next": state.get("next"),
            "lapse_at": state.get("lapse_at"),
            "rule_version": row.rule_version if row else None,
            "pending_events": int(pending or 0),
        }

    def explain(self, shop_id: str, customer_id: str, as_of: datetime | None = None) -> dict[str, Any]:
        """Why this stage, what gets to the next, when lapse would come, and each reward's fate."""
        as_of = as_of or utcnow()
        programme, compiled = self.programme(shop_id)
        view = self.customer_view(shop_id, customer_id)
        customer_id = view["customer_id"]
        with self.db.connect() as conn:
            _, evs, live_from, turns = _fold_inputs(conn, shop_id, customer_id)
        state = ladder_mod.fold(programme, compiled, evs, as_of, shop=shop_id, customer_id=customer_id,
                                live_from=live_from, shop_turns=turns)
        return explain_state(programme, compiled, state, view["rewards"], as_of)

    # ------------------------------------------------------------ outbox / inbox
    def adapter(self, shop_id: str) -> Any:
        """The shop's platform adapter, able to ask our ledger who owns an order
        (Shopify's refunds/create names the order, not the customer)."""
        from .adapters.registry import adapter_for

        adapter = adapter_for(self.shop(shop_id))
        if hasattr(adapter, "order_owner_lookup"):
            adapter.order_owner_lookup = lambda order_id: self.order_owner(shop_id, adapter.platform, order_id)
        return adapter

    def order_owner(self, shop_id: str, platform: str, order_id: str) -> str | None:
        """The customer of an order we already hold (vendor event ids are deterministic)."""
        prefix = {"shopify": "shopify", "woocommerce": "woo"}.get(platform, platform)
        ids = [f"{prefix}:order:{order_id}:{what}" for what in ("placed", "paid", "cancelled")]
        t = store.events
        with self.db.connect() as conn:
            row = conn.execute(sa.select(t.c.customer_id).where(t.c.shop_id == shop_id, t.c.event_id.in_(ids))
                               .order_by(t.c.pk).limit(1)).first()
        return row.customer_id if row is not None else None

    @property
    def notifier(self) -> Any:
        if self._notifier is None:
            from .notify import Notifier

            self._notifier = Notifier(self.settings, self.shops)
        return self._notifier

    def run_delivery(self, pk: int, now: datetime | None = None) -> Any:
        """Run one outbox delivery (grant, revoke or notification) through the shop's adapter.
        ``now`` (tests, replays): the time the attempt happens, e.g. a previous retry_at."""
        return outbox.run(self.db, pk, self.adapter, self.notifier, now=now)

    def due_deliveries(self) -> list[int]:
        return outbox.due(self.db, utcnow())

    def unprocessed_inbox(self) -> list[int]:
        from . import inbox

        return inbox.sweep(self, SWEEP_AFTER)

    # ------------------------------------------------------------ history
    def import_events(self, shop_id: str, events: Iterable[Mapping[str, Any]], *, live_from: datetime | None = None,
                      progress: Callable[[str], None] | None = None, source: str = "import",
                      labels: Sequence[str] | None = None) -> dict[str, int]:
        """Load history: set the shop's live_from (once) so past awards are `historical`, never paid.

        Everything is validated first — an invalid item (named by ``labels``, e.g. file lines)
        rejects the whole import and nothing is stored. Then the events are stored in batches and
        every customer of the shop with unapplied events is evaluated (so a crashed earlier run
        is finished too).
        """
        self.shop(shop_id)
        programme = self.ensure_programme_recorded(shop_id)
        parsed, names = parse_labelled(list(events), labels, "invalid events in the import; nothing was stored")
        check_acceptable(programme, parsed, utcnow(), names)
        wanted_live_from = live_from or utcnow()
        with store.begin_write(self.db) as conn:
            row = conn.execute(sa.select(store.shops).where(store.shops.c.shop_id == shop_id)).first()
            if row.live_from is None:
                conn.execute(store.shops.update().where(store.shops.c.shop_id == shop_id)
                             .values(live_from=wanted_live_from))
            elif live_from is not None and row.live_from != live_from and progress:
                progress(f"note: shop '{shop_id}' went live at {to_jsonable(row.live_from)} (an earlier import "
                         f"or sync); --live-from {to_jsonable(live_from)} is ignored")
        totals = {"accepted": 0, "duplicates": 0, "customers": 0}
        counted: set[str] = set()
        for start in range(0, len(parsed), MAX_EVENTS_PER_REQUEST):
            chunk = parsed[start:start + MAX_EVENTS_PER_REQUEST]
            # a shop sync re-derives vendor events: the same id is the same event (keep-first)
            res = self._store_events(shop_id, chunk, source, keep_first=source != "import")
            totals["accepted"] += res.accepted
            totals["duplicates"] += res.duplicates
            counted.update(res.customers)
            if source != "import":
                self._link_guests(shop_id, chunk, utcnow())  # guests merged into an account
            if progress:
                progress(f"stored {totals['accepted']} events ({totals['duplicates']} already known)")
        ev = store.events
        with self.db.connect() as conn:
            customers = [r.customer_id for r in conn.execute(
                sa.select(ev.c.customer_id).distinct().where(ev.c.shop_id == shop_id, ev.c.applied_at.is_(None))
                .order_by(ev.c.customer_id))]
        for i, customer_id in enumerate(customers, 1):
            try:
                self.process_customer(shop_id, customer_id)
            except NotFound:
                pass  # a guest alias whose events now belong to its account
            if progress and (i % 100 == 0 or i == len(customers)):
                progress(f"evaluated {i}/{len(customers)} customers")
        totals["customers"] = len(counted)
        return totals

    def sweep(self, now: datetime | None = None) -> dict[str, int]:
        """Re-enqueue customers with unapplied events (lost enqueue, crash) or a due wake-up."""
        now = now or utcnow()
        ev, cu = store.events, store.customers
        with self.db.connect() as conn:
            stale = conn.execute(sa.select(ev.c.shop_id, ev.c.customer_id).distinct()
                                 .where(ev.c.applied_at.is_(None), ev.c.received_at <= now - SWEEP_AFTER)).all()
            due = conn.execute(sa.select(cu.c.shop_id, cu.c.customer_id)
                               .where(cu.c.next_wake_at.is_not(None), cu.c.next_wake_at <= now)).all()
        pairs = {(r.shop_id, r.customer_id) for r in (*stale, *due) if r.shop_id in self.shops}
        for shop_id, customer_id in sorted(pairs):
            self._enqueue(shop_id, customer_id)
        return {"stale": len(stale), "due": len(due)}


# ---------------------------------------------------------------- views
def _fold_inputs(conn: sa.Connection, shop_id: str, customer_id: str
                 ) -> tuple[list[Any], list[events_mod.Event], datetime | None, list[datetime]]:
    """What a customer's fold reads: their ledger rows (with linked guests') and events in
    ledger order, the shop's go-live time and its admin turns."""
    ids = [customer_id, *identity.aliases(conn, shop_id, customer_id)]
    rows = conn.execute(sa.select(store.events.c.pk, store.events.c.body)
                        .where(store.events.c.shop_id == shop_id, store.events.c.customer_id.in_(ids))
                        .order_by(store.events.c.pk)).all()
    shop_row = conn.execute(sa.select(store.shops.c.live_from).where(store.shops.c.shop_id == shop_id)).first()
    turns = [r.started_at for r in conn.execute(
        sa.select(store.shop_turns.c.started_at).where(store.shop_turns.c.shop_id == shop_id))]
    return rows, [events_mod.Event.from_raw(r.body) for r in rows], shop_row.live_from if shop_row else None, turns


def parse_labelled(items: list[Any], labels: Sequence[str] | None, message: str
                   ) -> tuple[list[events_mod.Event], list[str]]:
    """Parse events all-or-nothing; errors keyed by each item's label (e.g. ``file:line``)."""
    names = list(labels) if labels is not None else [str(i) for i in range(len(items))]
    try:
        return events_mod.parse_events(items), names
    except ValidationError as exc:
        errors = {names[int(k)] if str(k).isdigit() and int(k) < len(names) else k: v
                  for k, v in exc.normalized_messages().items()}
        raise BadRequest(message, errors) from None


def check_acceptable(programme: Programme, parsed: Sequence[events_mod.Event], now: datetime | None,
                     labels: Sequence[str] | None = None) -> None:
    """Raise BadRequest naming each event in another currency, or (when ``now`` is given)
    more than MAX_CLOCK_SKEW in the future. ``labels`` name the items (default: their index)."""
    currency = programme.settings.currency
    problems: dict[str, Any] = {}
    for i, event in enumerate(parsed):
        label = labels[i] if labels is not None else str(i)
        order = event.order
        if order is not None and order.currency and order.currency != currency:
            problems[label] = {"order": {"currency": [
                f"currency {order.currency} differs from the programme's {currency}; convert amounts before sending"]}}
        if now is not None and event.occurred_at > now + MAX_CLOCK_SKEW:
            problems.setdefault(label, {})["occurred_at"] = [
                (f"{to_jsonable(event.occurred_at)} is in the future (now {to_jsonable(now)}); "
                 "events are accepted once they happened")]
    if problems:
        raise BadRequest("invalid events; nothing was stored", problems)


def _chunks(seq: Sequence[str], n: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def next_to_dict(step: Any) -> dict[str, Any] | None:
    if step is None:
        return None
    return {"stage": step.stage, "missing": [dict(m) for m in step.missing], "earliest_at": step.earliest_at}


def grant_reason(award: awards_mod.ImpliedAward) -> str:
    where = f"in stage {award.stage}" if award.stage else ""
    text = {
        "stage": f"reached stage {award.stage} (turn {award.turn})",
        "order": f"order {award.scope_ref} {where}",
        "event": f"event {award.scope_ref} {where}",
        "period": f"period {award.scope_ref} {where}",
        "lapse": f"lapsed {where} (turn {award.turn})",
    }.get(award.scope, award.scope)
    if award.historical:
        text += "; before the shop went live, recorded only"
    return text.strip()


def award_change(old: Mapping[str, Any], new: awards_mod.ImpliedAward) -> str:
    if str(old.get("value")) != str(new.value):
        return f"value {old.get('value')} → {new.value}"
    return "parameters changed"


def award_to_dict(row: Any) -> dict[str, Any]:
    m = row._mapping if hasattr(row, "_mapping") else row
    return to_jsonable({
        "key": m["key"], "reward": m["reward_id"], "type": m["type"], "status": m["status"], "reason": m["reason"],
        "rule_version": m["rule_version"], "scope": m["scope"], "scope_ref": m["scope_ref"], "stage": m["stage"],
        "turn": m["turn"], "granted_at": m["granted_at"], "value": m["value"], "params": m["params"],
        "reversed_at": m["reversed_at"],
    })


def state_to_dict(state: ladder_mod.LadderState, shop_id: str = "", customer_id: str = "") -> dict[str, Any]:
    """A ladder state as the customer document would show it (used by `simulate`)."""
    return to_jsonable({
        "shop": shop_id, "customer_id": customer_id, "stage": state.stage, "subgroup": state.subgroup,
        "lapsed": state.lapsed, "turn": state.turn, "since": state.since,
        "history": [{"stage": h.stage, "at": h.at, "turn": h.turn} for h in state.history],
        "facts": state.facts, "next": next_to_dict(state.next), "lapse_at": state.lapse_at,
        "rule_version": state.rule_version,
        "rewards": [{"key": a.key, "reward": a.reward_id, "type": a.type,
                     "status": "historical" if a.historical else "due", "reason": grant_reason(a),
                     "rule_version": state.rule_version, "scope": a.scope, "scope_ref": a.scope_ref,
                     "stage": a.stage, "turn": a.turn, "granted_at": a.granted_at, "value": a.value,
                     "params": a.params} for a in state.awards],
    })


def passed_through(state: ladder_mod.LadderState, stages: Sequence[str]) -> list[str]:
    """Which of ``stages`` the customer only passed through (left in the instant they entered)."""
    history = list(state.history)
    out = []
    for here, after in itertools.pairwise(history):
        if here.stage in stages and after.at == here.at and here.turn == after.turn and here.stage != after.stage:
            out.append(here.stage)
    return out


def explain_state(programme: Programme, compiled: CompiledProgramme, state: ladder_mod.LadderState,
                  recorded: Sequence[Mapping[str, Any]], as_of: datetime) -> dict[str, Any]:
    """The explanation document: stage, next step, lapse, and every reward's fate with a reason."""
    evaluation = compiled.evaluate(state.facts, trace=True)
    by_condition: dict[str, list[dict[str, Any]]] = {}
    for entry in evaluation.trace:
        by_condition.setdefault(entry.condition, []).append(to_jsonable({
            "fact": entry.fact, "op": entry.op, "value": entry.value, "current": entry.current, "result": entry.result}))
    stage_text = "not on the ladder yet" if state.stage is None else (
        f"in stage {state.stage} since {to_jsonable(state.since)} (turn {state.turn})"
        + (", lapsed" if state.lapsed else ""))
    rewards = []
    recorded_by_reward: dict[str, list[Mapping[str, Any]]] = {}
    for rec in recorded:
        recorded_by_reward.setdefault(rec["reward"], []).append(rec)
    for reward in programme.rewards:
        cid = f"reward:{reward.id}"
        recs = recorded_by_reward.get(reward.id, [])
        if recs:
            fate = [{"key": r["key"], "status": r["status"], "reason": r["reason"]} for r in recs]
        else:
            fate = []
        why_not = None
        if not recs:
            passed = passed_through(state, reward.trigger.stages) if reward.trigger.kind == "stage" else []
            if passed:
                why_not = (f"passed through stage {', '.join(passed)} in the same moment; stage rewards are "
                           "for customers who are in the stage at a wake-up")
            elif reward.trigger.stages and state.stage not in reward.trigger.stages:
                why_not = f"only for stages {', '.join(reward.trigger.stages)}; the customer is in {state.stage}"
            elif reward.subgroups and state.subgroup not in reward.subgroups:
                why_not = f"only for subgroups {', '.join(reward.subgroups)}; the customer is {state.subgroup}"
            elif cid not in evaluation.holds:
                why_not = "its condition does not hold now"
            else:
                why_not = {"order": "granted per counting order in its stages; none yet",
                           "event": f"granted per '{reward.trigger.event}' event; none yet",
                           "period": "granted at the start of each period while in its stages",
                           "lapse": "granted when the customer lapses",
                           "stage": "granted at the next wake-up in its stage"}.get(reward.trigger.kind)
        rewards.append({
            "reward": reward.id, "type": reward.type, "trigger": reward.trigger.kind,
            "condition_holds": cid in evaluation.holds, "condition": by_condition.get(cid, []),
            "awards": fate, "withheld_because": why_not,
        })
    stages = [{"stage": s.id, "holds": f"stage:{s.id}" in evaluation.holds,
               "condition": by_condition.get(f"stage:{s.id}", []), "min_stay_days": s.min_stay_days,
               "lapse_after_days": s.lapse_after_days} for s in programme.stages]
    return to_jsonable({
        "stage": state.stage, "subgroup": state.subgroup, "lapsed": state.lapsed, "turn": state.turn,
        "as_of": as_of, "rule_version": programme.version, "why": stage_text,
        "history": [{"stage": h.stage, "at": h.at, "turn": h.turn} for h in state.history],
        "stages": stages,
        "subgroups": [{"subgroup": g.id, "holds": f"subgroup:{g.id}" in evaluation.holds,
                       "condition": by_condition.get(f"subgroup:{g.id}", [])} for g in programme.subgroups],
        "next": next_to_dict(state.next),
        "lapse_at": state.lapse_at,
        "rewards": rewards,
    })


def simulate(programme: Programme, compiled: CompiledProgramme, raw_events: Sequence[Mapping[str, Any]],
             as_of: datetime | None = None, trace: bool = False,
             labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Events in, per-customer result (and trace) out; nothing is stored.

    The events are checked as the API checks them (schema, currency, an id reused with other
    content), so what simulates is what the live server would accept; only future times are
    allowed here (a what-if may look ahead)."""
    parsed, names = parse_labelled(list(raw_events), labels, "invalid events")
    check_acceptable(programme, parsed, None, names)
    seen: dict[str, str] = {}
    for name, event in zip(names, parsed):
        digest = body_hash(event.raw)
        if seen.setdefault(event.id, digest) != digest:
            raise Conflict(f"{name}: event id '{event.id}' appears twice with different content",
                           {name: {"id": ["reused with other content"]}})
    if as_of is None:
        as_of = max((e.occurred_at for e in parsed), default=utcnow())
    by_customer: dict[str, list[events_mod.Event]] = {}
    for event in parsed:
        by_customer.setdefault(event.customer_id, []).append(event)
    out = {}
    for customer_id, evs in by_customer.items():
        state = ladder_mod.fold(programme, compiled, evs, as_of, shop="simulate", customer_id=customer_id)
        doc = state_to_dict(state, "simulate", customer_id)
        if trace:
            doc["explain"] = explain_state(programme, compiled, state, doc["rewards"], as_of)
        out[customer_id] = doc
    return {"as_of": to_jsonable(as_of), "rule_version": programme.version, "customers": out}
