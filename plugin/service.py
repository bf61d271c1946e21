"""The facade: one object that wires the line for one database and one set of shops.

Like ``requests.Session`` wiring adapters, :class:`LadderService` holds no logic of its own: it
owns the settings, the database engine, the shops, the programmes and the queue bindings, and
hands them to the modules of the line, in the line's order::

    inbox → ledger → identity → processing (facts → engine → ladder → awards) → outbox → notify

Methods returning a *document* (``customer_view``, ``explain``, ``customer_data``) give it as
JSON-ready data, dumped by its schema in :mod:`.documents`; the HTTP API and the CLI print the
same.  ``customer`` and ``explanation`` give the undumped view (the API's schemas dump it).
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from . import adjustments, audit, golive, history, identity, inbox, ledger, processing, redemptions, store, views, vip
from . import ladder as ladder_mod
from .adapters.base import Adapter
from .adapters.registry import adapter_for
from .awards import award_key
from .clock import utcnow
from .config import Settings
from .documents import CUSTOMER, CUSTOMER_DATA, EXPLANATION
from .engine import CompiledProgramme
from .errors import ConfigError, Conflict, NotFound
from .ledger import AcceptResult
from .notify import Notifier
from .outbox import running, worklist
from .programme import Programme
from .programmes import (
    FIRST_START,
    Activated,
    ActivationRefused,
    Bootstrap,
    Listing,
    ProgrammeRegistry,
    activate,
    listing,
    load_version,
    normalise_version,
)
from .shop import ShopConfig
from .shops import DEFAULT_SHOP, check_currencies, declared_shop, load_shops
from .timeline import Timeline

__all__ = ["AcceptResult", "LadderService"]

log = logging.getLogger(__name__)


class LadderService:
    """The loyalty engine for one database and one set of shops."""

    def __init__(self, settings: Settings, *, db: sa.Engine | None = None,
                 shops: Mapping[str, ShopConfig] | None = None, sync_modes: bool = True):
        self.settings = settings
        try:
            self.db = db if db is not None else store.make_engine(settings.database_url)
            if settings.auto_migrate:
                store.upgrade(self.db)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
            raise ConfigError(f"LADDER_DATABASE_URL {settings.database_url!r} is not usable: {exc}") from None
        except sa.exc.OperationalError as exc:
            raise ConfigError(f"cannot open the database {settings.database_url!r}: {exc.orig}") from None
        # each shop's env: secrets are resolved when the shop is first used (shops.Shops)
        self.shops: Mapping[str, ShopConfig] = (dict(shops) if shops is not None
                                                else load_shops(settings.shops_file, lazy=True))
        # which version decides when: the shops' timelines in the database (see .programmes)
        self.programmes = ProgrammeRegistry(settings.rules)
        check_currencies(self.shops, self._programme_currency)
        # the shops file's modes against the ones last seen: a shop switched from shadow to live
        # goes live now, its shadow awards historical (one SELECT when nothing changed)
        if sync_modes:
            golive.sync_modes(self.db, self.shops)
            # a VIP whose manager left the shops file's list gets another one at the next sweep
            vip.wake_reassigned(self.db, {shop_id: declared_shop(self.shops, shop_id).vip_managers
                                          for shop_id in self.shops}, utcnow())
        # set by bind_queue(): how to hand work to the consumer; default: do it now.
        # Due wake-ups need no scheduled jobs: the periodic sweep finds next_wake_at <= now.
        self._enqueue: Callable[[str, str], None] = self._process_now
        # Without a queue, planned deliveries wait in the outbox for the deliveries lane.
        self._deliver: Callable[[int], None] | None = None
        # A stored inbox row: without a queue, processed now (``ladder replay`` leaves it).
        self._inbox_received: Callable[[int], None] = self._process_inbox_now
        self._notifier: Notifier | None = None
        # Set by bind_queue(): the bulk-lane job that reports an unsubscribe to the shop; never
        # run in a request, so without a queue an opt-out stays ours only.
        self._opt_out: Callable[[str, str], None] | None = None

    # ------------------------------------------------------------ wiring
    def bind_queue(self, enqueue: Callable[[str, str], None], deliver: Callable[[int], None] | None = None,
                   inbox_received: Callable[[int], None] | None = None,
                   opt_out: Callable[[str, str], None] | None = None) -> None:
        """Hand customers (``enqueue(shop, customer)``), deliveries (``deliver(pk)``) and stored
        inbox rows (``inbox_received(pk)``) to a queue — or to nobody, when the lanes read them
        from the database (:mod:`.tasks`); ``opt_out(shop, customer)``: report an unsubscribe
        to the shop (a Huey job on the bulk lane)."""
        self._enqueue = enqueue
        self._deliver = deliver
        if inbox_received is not None:
            self._inbox_received = inbox_received
        if opt_out is not None:
            self._opt_out = opt_out

    def _process_inbox_now(self, pk: int) -> None:
        self.process_inbox(pk)

    def _process_now(self, shop_id: str, customer_id: str) -> None:
        self.process_customer(shop_id, customer_id)

    def _enqueue_all(self, shop_id: str, customers: Iterable[str]) -> None:
        for customer_id in dict.fromkeys(customers):
            self._enqueue(shop_id, customer_id)

    def _enqueue_deliveries(self, pks: Sequence[int]) -> None:
        if self._deliver is not None:
            for pk in pks:
                self._deliver(pk)

    def shop(self, shop_id: str) -> ShopConfig:
        """The configured shop, or NotFound."""
        try:
            return self.shops[shop_id]
        except KeyError:
            raise NotFound(f"unknown shop '{shop_id}'", {"shop": [f"no shop with id '{shop_id}' is configured"]}) from None

    def _declared(self, shop_id: str) -> ShopConfig:
        """The configured shop without resolving its secrets (admin commands about its
        programme need none), or NotFound."""
        if shop_id not in self.shops:
            self.shop(shop_id)  # NotFound
        return declared_shop(self.shops, shop_id)

    def _programme_currency(self, shop: ShopConfig) -> str:
        """The currency of the shop's active version, or of its rules directory before it has
        one (RuleFileError when that does not load: there would be nothing to serve)."""
        try:
            current = self.programmes.current(self.db, shop)
        except sa.exc.DBAPIError:  # a database not migrated yet (auto_migrate off)
            current = None
        programme = current.at(utcnow()).programme if current is not None else self.programmes.directory(shop)
        return programme.settings.currency

    def programme(self, shop_id: str) -> tuple[Programme, CompiledProgramme]:
        """The version that decides the shop's customers now, compiled."""
        return self.programmes.active(self.db, self.shop(shop_id))

    def timeline(self, shop_id: str) -> Timeline:
        """The shop's programme versions over time (and the fold's semantics), compiled."""
        return self.programmes.timeline(self.db, self._declared(shop_id))

    def shop_directory(self, shop_id: str) -> Path:
        """The shop's rules directory (its ``programme:``, else ``LADDER_RULES``, else the shipped
        programme): what ``ladder rules activate`` activates by default; NotFound for an unknown shop."""
        return self.programmes.path_for(self._declared(shop_id))

    def ensure_programme_recorded(self, shop_id: str) -> Programme:
        """The shop's row and a programme version exist (a shop with none gets its rules
        directory activated from the beginning); returns the version active now."""
        return self.programme(shop_id)[0]

    def bootstrap_programmes(self, author: str = FIRST_START) -> list[Bootstrap]:
        """At the start of a process serving every shop: each shop's rules directory compared
        with (or, for a shop with no version yet, activated as) its active version; see
        :meth:`ProgrammeRegistry.bootstrap`.  RuleFileError for a shop with nothing to serve."""
        return [self.programmes.bootstrap(self.db, declared_shop(self.shops, shop_id), author)
                for shop_id in self.shops]

    def activate_programme(self, shop_id: str, what: str | Programme, *, author: str, at: datetime | None = None,
                           stage_map: Mapping[str, str] | None = None, reason: str | None = None,
                           files: Mapping[str, str] | None = None, source: str | None = None) -> Activated:
        """Activate a stored version (its hash) or a validated programme for the shop (see
        :func:`.programmes.activate`); this process uses it at once, every other one within
        the registry's poll interval."""
        shop = self._declared(shop_id)
        if not isinstance(what, Programme):
            with self.db.connect() as conn:
                what = load_version(conn, normalise_version(what))
        if shop is not DEFAULT_SHOP and what.settings.currency != shop.currency:
            raise ActivationRefused(
                f"version {what.version} is in {what.settings.currency} but shop {shop_id!r} sells in "
                f"{shop.currency}; nothing was changed", {"currency": [f"{what.settings.currency} != {shop.currency}"]})
        done = activate(self.db, shop_id, what, at=at, stage_map=stage_map, author=author,
                       reason=reason, files=files, source=source)
        self.programmes.invalidate(shop_id)
        return done

    def programme_listing(self, shop_id: str) -> Listing:
        """The shop's activations, the version active now, the stored versions, and the version
        this process decides with now (read-only)."""
        current = self.programmes.current(self.db, self._declared(shop_id))
        return dataclasses.replace(listing(self.db, shop_id),
                                   serving=current.at(utcnow()).version if current is not None else None)

    def adapter(self, shop_id: str) -> Adapter:
        """The shop's platform adapter, able to ask our ledger who owns an order
        (Shopify's refunds/create names the order, not the customer)."""
        return self._adapter_for(self.shop(shop_id))

    def _adapter_for(self, shop: ShopConfig) -> Adapter:
        adapter = adapter_for(shop)
        if hasattr(adapter, "order_owner_lookup"):
            adapter.order_owner_lookup = lambda order_id: self.order_owner(shop.id, order_id)
        return adapter

    def order_owner(self, shop_id: str, order_id: str) -> str | None:
        """The customer of an order we already hold, by the adapter's own event-id scheme."""
        adapter = adapter_for(self.shop(shop_id))
        return ledger.owner_of(self.db, shop_id, adapter.order_event_ids(order_id))

    @property
    def notifier(self) -> Notifier:
        if self._notifier is None:
            self._notifier = Notifier(self.settings, self.shops)
        return self._notifier

    # ------------------------------------------------------------ accept
    def accept_events(self, shop_id: str, payload: Any, source: str = "api") -> AcceptResult:
        """Validate a batch all-or-nothing, persist it, and enqueue the customers it touches.

        Raises BadRequest (per-item errors) or Conflict (an id reused with other content);
        in both cases nothing is stored.
        """
        programme, _ = self.programme(shop_id)  # the active version's currency and settings
        parsed = ledger.parse_batch(payload)
        ledger.check_acceptable(programme, parsed, utcnow())
        result = ledger.store_events(self.db, shop_id, parsed, source)
        self._enqueue_all(shop_id, result.customers)
        return result

    def check_webhook_headers(self, platform: str, headers: Mapping[str, str]) -> None:
        """Refuse what the headers alone say is not ours (see :func:`inbox.check_headers`)."""
        inbox.check_headers(self.shops, platform, headers)

    def receive_webhook(self, platform: str, headers: Mapping[str, str], body: bytes) -> inbox.ReceiveResult:
        """Verify and persist one webhook (see :func:`inbox.receive`) and hand a new row on."""
        result = inbox.receive(self.db, self.shops, platform, headers, body)
        if result.inbox_pk is not None:
            try:
                self._inbox_received(result.inbox_pk)
            except Exception:  # the row is stored: the live lane processes it
                log.exception("inbox row %s stored; processing it failed, the live lane retries it",
                              result.inbox_pk)
        return result

    def process_inbox(self, pk: int) -> list[tuple[str, str]]:
        """Apply one inbox row and enqueue the customers it touched; returns them."""
        touched = inbox.process(self.db, self.shops, pk, self._adapter_for,
                                lambda shop: self.programmes.active(self.db, shop)[0])
        for shop_id, customer_id in touched:
            self._enqueue(shop_id, customer_id)
        return touched

    def opt_out_recorded(self, shop_id: str, customer_id: str) -> None:
        """An unsubscribe through our link was stored: hand the report to the shop to the queue
        (see :meth:`report_opt_out`).  The opt-out is ours already, so a queue that cannot take
        the job is logged, never the caller's failure."""
        if self._opt_out is None:
            log.info("opt-out of %s/%s recorded; no queue bound, so the shop is not told", shop_id, customer_id)
            return
        try:
            self._opt_out(shop_id, customer_id)
        except Exception:
            log.exception("opt-out of %s/%s recorded; reporting it to the shop could not be queued",
                          shop_id, customer_id)

    def report_opt_out(self, shop_id: str, customer_id: str) -> bool:
        """Tell the shop that the customer unsubscribed (:meth:`Adapter.report_marketing_opt_out`);
        False in shadow mode (nothing is sent).  Raises the adapter's ``DeliveryError`` tree."""
        shop = self.shop(shop_id)
        if shop.shadow:
            return False
        self._adapter_for(shop).report_marketing_opt_out(customer_id)
        return True

    def redact_customer(self, shop_id: str, customer_id: str) -> str | None:
        """Pseudonymise one customer (see :func:`identity.redact_customer`)."""
        new_id = identity.redact_customer(self.db, shop_id, customer_id)
        if new_id:
            self._enqueue(shop_id, new_id)
        return new_id

    # ------------------------------------------------------------ process
    def process_customer(self, shop_id: str, customer_id: str, as_of: datetime | None = None) -> ladder_mod.LadderState:
        """Fold one customer and save the outcome (see :mod:`.processing`); run what it planned."""
        shop = self.shop(shop_id)
        done = processing.process_customer(self.db, shop, lambda key=None: self.programmes.timeline(self.db, shop, key=key), customer_id,
                                           as_of, smtp_configured=bool(self.settings.smtp_url))
        self._enqueue_deliveries(done.deliveries)
        return done.state

    # ------------------------------------------------------------ the staff worklist
    def awards(self, shop_id: str, *, status: str | None = None, before: int | None = None,
               limit: int = store.PAGE_DEFAULT) -> list[dict[str, Any]]:
        """The shop's awards with ``status`` (e.g. ``needs_manual_action``: the staff worklist), newest first."""
        self._declared(shop_id)
        return worklist.list_awards(self.db, shop_id, status=status, before=before, limit=limit)

    def mark_award_done(self, shop_id: str, pk: int, *, author: str, note: str) -> worklist.Done:
        """Staff carried out award ``pk`` by hand (see :mod:`.outbox.worklist`); its notices run."""
        done = worklist.mark_done(self.db, self.shop(shop_id), pk, author=author, note=note,
                                  smtp_configured=bool(self.settings.smtp_url))
        self._enqueue_deliveries(done.deliveries)
        return done

    def due_wakeups(self, now: datetime | None = None) -> list[tuple[str, str]]:
        """Customers of configured shops whose next wake-up has come (the bulk lane's work)."""
        return [(s, c) for s, c in processing.wakeups_due(self.db, now or utcnow()) if s in self.shops]

    # ------------------------------------------------------------ deliver
    def run_delivery(self, pk: int, now: datetime | None = None) -> running.RunOutcome:
        """Run one outbox delivery (grant, revoke or notification) through the shop's adapter.
        ``now`` (tests, replays): the time the attempt happens, e.g. a previous retry_at."""
        return running.run(self.db, pk, self.adapter, self.notifier, now=now, shops=self.shops)

    def due_deliveries(self) -> list[int]:
        return running.due(self.db, utcnow())

    # ------------------------------------------------------------ read
    def customer(self, shop_id: str, customer_id: str) -> dict[str, Any]:
        """The customer view, undumped (Python values)."""
        shop = self.shop(shop_id)
        return views.customer_view(self.db, shop_id, customer_id, shop.vip_managers)

    def customer_view(self, shop_id: str, customer_id: str) -> dict[str, Any]:
        """The public customer document (``GET …/customers/<id>``)."""
        return CUSTOMER.dump(self.customer(shop_id, customer_id))

    def explanation(self, shop_id: str, customer_id: str, as_of: datetime | None = None) -> dict[str, Any]:
        """The explanation, undumped (Python values)."""
        shop = self.shop(shop_id)
        return views.explain(self.db, self.programmes.timeline(self.db, shop), shop_id, customer_id, as_of)

    def explain(self, shop_id: str, customer_id: str, as_of: datetime | None = None) -> dict[str, Any]:
        """Why this stage, what gets to the next, when lapse would come, and each reward's fate."""
        return EXPLANATION.dump(self.explanation(shop_id, customer_id, as_of))

    def customer_data(self, shop_id: str, customer_id: str) -> dict[str, Any]:
        """Everything stored about a customer (answers a data request): document + ledger."""
        shop = self.shop(shop_id)
        return CUSTOMER_DATA.dump(views.customer_data(self.db, shop_id, customer_id, shop.vip_managers))

    # ------------------------------------------------------------ history
    def import_events(self, shop_id: str, events: Iterable[Mapping[str, Any]], *, live_from: datetime | None = None,
                      progress: Callable[[str], None] | None = None, source: str = "import",
                      labels: Sequence[str] | None = None) -> dict[str, int]:
        """Load history (see :mod:`.history`): past awards are ``historical``, never paid."""
        self.shop(shop_id)
        programme = self.ensure_programme_recorded(shop_id)
        return history.import_events(self.db, programme, shop_id, events,
                                     lambda customer_id: self.process_customer(shop_id, customer_id),
                                     live_from=live_from, progress=progress, source=source, labels=labels)

    # ------------------------------------------------------------ manual inputs, audit log
    def adjust(self, shop_id: str, customer_id: str, action: str, *, author: str, reason: str,
               stage: str | None = None, force: bool = False, reward: str | None = None,
               award_key: str | None = None, idempotency_key: str | None = None,
               enqueue: bool = True) -> adjustments.StoredAdjustment:
        """Store one manual adjustment of a customer (see :func:`adjustments.adjust`), checked
        against the shop's active programme, and hand the customer to the queue like an accepted
        event (``enqueue=False``: the live lane finds the unapplied event, as for ``ladder adjust``)."""
        self.shop(shop_id)
        programme, _ = self.programme(shop_id)
        stored = adjustments.adjust(self.db, programme, shop_id, customer_id, action, author=author, reason=reason,
                                    stage=stage, force=force, reward=reward, award_key=award_key,
                                    idempotency_key=idempotency_key)
        if enqueue and not stored.duplicate:
            self._enqueue_all(shop_id, [stored.customer_id])
        return stored

    # ------------------------------------------------------------ points
    def redeem_points(self, shop_id: str, customer_id: str, redemption_id: Any, points: Any, *,
                      author: str) -> dict[str, Any]:
        """Spend a customer's points now (see :mod:`.redemptions`) and process the customer at
        once, so the answer carries the award that pays the value out; the same id again answers
        the same redemption.  A shop in shadow mode refuses: nothing would reach the customer."""
        shop = self.shop(shop_id)
        if shop.shadow:
            raise Conflict(f"shop '{shop_id}' is in shadow mode: a redemption would never reach the customer; "
                           "nothing was changed", {"shop": ["in shadow mode"]})
        stored = redemptions.redeem(self.db, self.timeline(shop_id), shop_id, customer_id, redemption_id, points,
                                    author=author)
        self._process_after_input(shop_id, stored.customer_id)
        return self._points_result(stored)

    def adjust_points(self, shop_id: str, customer_id: str, points: Any, *, author: str, reason: str,
                      expires_days: int | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
        """Add or remove a customer's points by hand (see :mod:`.redemptions`), processed at once."""
        self.shop(shop_id)
        stored = redemptions.adjust_points(self.db, self.timeline(shop_id), shop_id, customer_id, points,
                                           author=author, reason=reason, expires_days=expires_days,
                                           idempotency_key=idempotency_key)
        self._process_after_input(shop_id, stored.customer_id)
        return self._points_result(stored)

    def _process_after_input(self, shop_id: str, customer_id: str) -> None:
        """Process a customer whose ledger just got an input; a failure is left to the queue (the
        input is stored, the live lane finds it) rather than failing the request that stored it."""
        try:
            self.process_customer(shop_id, customer_id)
        except Exception as exc:  # noqa: BLE001 - recorded on the customer by processing; the lane retries
            log.warning("processing %s/%s after a points input failed: %s", shop_id, customer_id,
                        processing.reason_of(exc))
            self._enqueue_all(shop_id, [customer_id])

    def _points_result(self, stored: redemptions.Stored) -> dict[str, Any]:
        """A stored points input as the API answers it: the event, the award paying a redemption
        out (with its status now) and the customer's points after it."""
        event = stored.event
        data = dict(event.get("adjustment") or {})
        award = None
        if event.get("type") == "points_redeemed":
            key = award_key(stored.shop_id, stored.customer_id, ladder_mod.REDEMPTION_REWARD, "redemption",
                            str(data.get("redemption")))
            with self.db.connect() as conn:
                row = conn.execute(sa.select(store.awards.c.key, store.awards.c.status, store.awards.c.reason)
                                   .where(store.awards.c.key == key)).first()
            award = {"key": key, "status": row.status if row else None, "reason": row.reason if row else None}
        customer = self.customer(stored.shop_id, stored.customer_id)
        return {"id": data.get("redemption"), "event_id": event.get("id"), "type": event.get("type"),
                "customer_id": stored.customer_id, "points": data.get("points"), "value": data.get("value"),
                "currency": data.get("currency"), "at": event.get("occurred_at"), "author": data.get("author"),
                "reason": data.get("reason"), "expires_days": data.get("expires_days"),
                "duplicate": stored.duplicate, "award": award, "balance_before": stored.balance_before,
                "points_now": customer.get("points")}

    def start_shop_turn(self, shop_id: str, *, author: str, reason: str,
                        idempotency_key: str | None = None) -> dict[str, Any]:
        """An admin turn of the whole shop (see :func:`adjustments.start_shop_turn`); the
        customers on the ladder are due at once for the bulk lane's sweep."""
        self.shop(shop_id)
        stored = adjustments.start_shop_turn(self.db, shop_id, author=author, reason=reason,
                                             idempotency_key=idempotency_key)
        return {"event_id": stored.event_id, "occurred_at": stored.occurred_at, "duplicate": stored.duplicate,
                "customers_due": stored.customers_due, **stored.body}

    def exclusions(self, shop_id: str) -> dict[str, Any]:
        """The shop's exclusions in force (``tags``, ``emails``, since when, by whom and why)."""
        self.shop(shop_id)
        with self.db.connect() as conn:
            current = adjustments.current_exclusions(conn, shop_id)
        return adjustments.exclusions_view(current)

    def set_exclusions(self, shop_id: str, *, author: str, reason: str, tags: Sequence[str] = (),
                       emails: Sequence[str] = (), idempotency_key: str | None = None) -> dict[str, Any]:
        """Replace the shop's exclusions from now on (see :func:`adjustments.set_exclusions`)."""
        self.shop(shop_id)
        stored = adjustments.set_exclusions(self.db, shop_id, author=author, reason=reason, tags=tags, emails=emails,
                                            idempotency_key=idempotency_key)
        return {**adjustments.exclusions_view(stored if stored.event_id else None), "unchanged": stored.unchanged,
                "duplicate": stored.duplicate, "customers_due": stored.customers_due}

    def audit_entries(self, shop_id: str | None = None, *, since: datetime | None = None, action: str | None = None,
                      limit: int = audit.PAGE_DEFAULT, cursor: str | None = None) -> audit.Page:
        """A page of the audit log, newest first (see :func:`audit.entries`); ``shop_id`` must be
        a configured shop when given."""
        if shop_id is not None:
            self.shop(shop_id)
        return audit.entries(self.db, shop_id=shop_id, since=since, action=action, limit=limit, cursor=cursor)

