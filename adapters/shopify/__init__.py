"""Shopify: signed webhooks in, Admin GraphQL out, paginated GraphQL history for ``ladder sync``.

The package, one concept per module: :mod:`.schemas` (vendor payload schemas, ``unknown=EXCLUDE``),
:mod:`.mapping` (payload → our generic events, and the event-id scheme), :mod:`.graphql` (the
GraphQL documents, and GraphQL nodes in the webhook shape so ``sync`` reuses the mapping),
:mod:`.client` (one shop's GraphQL endpoint and its errors), :mod:`.delivery` (awards →
mutations).  This module is the adapter that ties them to the interface of
:class:`~loyalty_ladder.adapters.base.Adapter`, and declares the shop keys Shopify needs.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from marshmallow import fields

from ...errors import BadRequest, NotSupported, RateLimited, SignatureError
from ...events import format_time
from ...identity import guest_id
from ..base import Adapter, AdapterSettings, Delivery, DeliveryResult, Inbound, get_header, verify_hmac_base64
from . import delivery as _delivery
from .client import DEFAULT_RETRY_AFTER, ShopifyClient
from .graphql import (
    CUSTOMERS_PAGE,
    EMAIL_CONSENT_UPDATE,
    ORDER_OWNER,
    ORDERS_PAGE,
    customer_from_graphql,
    nodes,
    order_from_graphql,
)
from .mapping import (
    ORDER_STATES,
    PREFIX,
    account_id,
    checkout_started_event,
    customer_events,
    customer_links,
    gid,
    has_terms,
    order_cancelled_event,
    order_customer_id,
    order_event_id,
    order_paid_event,
    order_placed_event,
    order_refunded_event,
    order_refunds,
    order_state_events,
    refund_amount,
    valid_email,
)
from .schemas import CHECKOUT, COMPLIANCE, CUSTOMER, ORDER, REFUND, load

__all__ = ["DEFAULT_API_VERSION", "ShopifyAdapter", "ShopifySettings"]

#: the Admin API version a shop entry gets when it names none
DEFAULT_API_VERSION = "2025-07"
PAGE_SIZE = 100
#: how often ``sync`` waits out a throttle on one page before giving up
SYNC_THROTTLE_RETRIES = 5


class ShopifySettings(AdapterSettings):
    """A Shopify shop entry's own keys."""

    #: the Admin API version every call pins
    api_version = fields.String(load_default=DEFAULT_API_VERSION)
    #: the custom app's Admin API access token (``shpat_…``); not needed to compute in shadow mode
    access_token = fields.String(metadata={"secret": True, "required": "live"})


class ShopifyAdapter(Adapter):
    """One Shopify shop: webhooks in, Admin GraphQL out."""

    platform: ClassVar[str] = "shopify"
    capabilities: ClassVar[tuple[str, ...]] = ("discount_codes", "tags", "store_credit", "payment_terms",
                                               "customer_fields")
    settings_schema: ClassVar[type[AdapterSettings]] = ShopifySettings
    #: webhooks name the shop by X-Shopify-Shop-Domain and are signed with the app's secret
    required_keys: ClassVar[tuple[str, ...]] = ("domain", "webhook_secret")
    live_required_keys: ClassVar[tuple[str, ...]] = ("api_url",)
    event_prefix: ClassVar[str] = PREFIX

    #: Optional: order id → our customer id, from our own ledger (set by the inbox).  refunds/create
    #: names the order but not its customer; without a lookup the adapter asks the Admin API.
    order_owner_lookup: Callable[[str], str | None] | None = None

    # injectable for tests: the clock of discount start times, and sync's throttle wait
    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(seconds)

    # ------------------------------------------------------------ inbound
    @classmethod
    def shop_hint(cls, headers: Mapping[str, str]) -> str | None:
        return get_header(headers, "X-Shopify-Shop-Domain") or None

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        if not verify_hmac_base64(get_header(headers, "X-Shopify-Hmac-Sha256"), body, self.secrets):
            raise SignatureError("missing or invalid X-Shopify-Hmac-Sha256 signature")

    def delivery_id(self, headers: Mapping[str, str], body: bytes) -> str | None:
        return get_header(headers, "X-Shopify-Webhook-Id") or get_header(headers, "X-Shopify-Event-Id") or None

    def topic(self, headers: Mapping[str, str], body: bytes) -> str:
        return (get_header(headers, "X-Shopify-Topic") or "").strip().lower()

    def parse(self, topic: str, headers: Mapping[str, str], body: bytes) -> Inbound:
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise BadRequest(f"Shopify {topic} webhook: the body is not JSON") from None
        if not isinstance(data, dict):
            raise BadRequest(f"Shopify {topic} webhook: expected a JSON object")
        handler = self._HANDLERS.get(topic)
        if handler is None:
            return Inbound(note="topic not handled")
        return handler(self, data)

    def _orders_create(self, data: Mapping[str, Any]) -> Inbound:
        o = load(ORDER, data, "order")
        if (o.get("financial_status") or "").lower() == "paid":
            return Inbound(events=(order_paid_event(o),))
        if has_terms(o):
            return Inbound(events=(order_placed_event(o),))
        return Inbound(note=f"{o.get('financial_status') or 'unpaid'} order: waits for orders/paid")

    def _orders_paid(self, data: Mapping[str, Any]) -> Inbound:
        return Inbound(events=(order_paid_event(load(ORDER, data, "order")),))

    def _orders_updated(self, data: Mapping[str, Any]) -> Inbound:
        o = load(ORDER, data, "order")
        events = order_state_events(o)
        return Inbound(events=tuple(events), note="" if events else "no paid, cancelled or refunded state yet")

    def _orders_cancelled(self, data: Mapping[str, Any]) -> Inbound:
        o = load(ORDER, data, "order")
        if o.get("cancelled_at") is None:
            raise BadRequest(f"orders/cancelled for order {o['id']} without cancelled_at")
        # its refunds carry the same ids as refunds/create, so whichever comes first counts
        return Inbound(events=(order_cancelled_event(o), *order_refunds(o)))

    def _refunds_create(self, data: Mapping[str, Any]) -> Inbound:
        r = load(REFUND, data, "refund")
        if refund_amount(r) <= 0:
            return Inbound(note="no money moved: no successful refund transaction")
        order_id = r.get("order_id")
        if not order_id:
            raise BadRequest(f"refund {r['id']} names no order_id")
        event = order_refunded_event(r, self.order_owner(order_id), order_id)
        return Inbound(events=(event,) if event else ())

    def _customers_create(self, data: Mapping[str, Any]) -> Inbound:
        c = load(CUSTOMER, data, "customer")
        return Inbound(events=tuple(customer_events(c, created=True, updated=False)), links=customer_links(c))

    def _customers_update(self, data: Mapping[str, Any]) -> Inbound:
        c = load(CUSTOMER, data, "customer")
        return Inbound(events=tuple(customer_events(c, created=False, updated=True)), links=customer_links(c))

    def _checkouts_create(self, data: Mapping[str, Any]) -> Inbound:
        event = checkout_started_event(load(CHECKOUT, data, "checkout"))
        if event is None:
            return Inbound(note="anonymous checkout: no customer and no e-mail")
        return Inbound(events=(event,))

    def _compliance_customer(self, data: Mapping[str, Any]) -> str:
        payload = load(COMPLIANCE, data, "compliance")
        customer = payload.get("customer") or {}
        if customer.get("id"):
            return str(customer["id"])
        email = valid_email(customer.get("email"))
        if email:
            return guest_id(email)
        raise BadRequest("compliance webhook names no customer id or e-mail")

    def _data_request(self, data: Mapping[str, Any]) -> Inbound:
        return Inbound(data_request=self._compliance_customer(data))

    def _customers_redact(self, data: Mapping[str, Any]) -> Inbound:
        return Inbound(redact_customer=self._compliance_customer(data))

    def _shop_redact(self, data: Mapping[str, Any]) -> Inbound:
        return Inbound(redact_shop=True)

    _HANDLERS: ClassVar[dict[str, Callable[[ShopifyAdapter, Mapping[str, Any]], Inbound]]] = {
        "orders/create": _orders_create,
        "orders/paid": _orders_paid,
        "orders/updated": _orders_updated,
        "orders/cancelled": _orders_cancelled,
        "refunds/create": _refunds_create,
        "customers/create": _customers_create,
        "customers/update": _customers_update,
        "checkouts/create": _checkouts_create,
        "customers/data_request": _data_request,
        "customers/redact": _customers_redact,
        "shop/redact": _shop_redact,
    }

    @classmethod
    def order_event_ids(cls, order_id: str) -> list[str]:
        return [order_event_id(order_id, state) for state in ORDER_STATES]

    def order_owner(self, order_id: str) -> str:
        """Our customer id of an order: from the ledger lookup when set, else the Admin API."""
        if self.order_owner_lookup is not None:
            found = self.order_owner_lookup(order_id)
            if found:
                return found
        data = self.client.query(ORDER_OWNER, {"id": gid("Order", order_id)})
        order = data.get("order")
        if not order:
            # deleted or never visible to us: keep the refund under the order, as a guest sale is
            return guest_id(None, order_id)
        return order_customer_id({"id": order_id, "email": order.get("email"),
                                   "customer": {"id": (order.get("customer") or {}).get("legacyResourceId"),
                                                "email": (order.get("customer") or {}).get("email")}})[0]

    # ------------------------------------------------------------ outbound
    @property
    def client(self) -> ShopifyClient:
        """The shop's Admin GraphQL endpoint, over this adapter's session."""
        return ShopifyClient(self.shop, self.session, self.timeout)

    @property
    def graphql_url(self) -> str:
        return self.client.graphql_url

    def deliver(self, delivery: Delivery) -> DeliveryResult:
        return _delivery.deliver(self.client, delivery, self.now())

    def report_marketing_opt_out(self, customer_id: str) -> None:
        """``customerEmailMarketingConsentUpdate``: the account's e-mail marketing state becomes
        ``UNSUBSCRIBED``; its ``userErrors`` (a customer without an e-mail …) are ``Rejected``.
        A guest or a pseudonymised id has no Shopify account: ``NotSupported``, nothing sent."""
        account = account_id(customer_id)
        if account is None:
            raise NotSupported(f"customer {customer_id} has no Shopify account: no marketing consent to update")
        self.client.mutate("customerEmailMarketingConsentUpdate", EMAIL_CONSENT_UPDATE, {"input": {
            "customerId": gid("Customer", account),
            "emailMarketingConsent": {"marketingState": "UNSUBSCRIBED", "marketingOptInLevel": "SINGLE_OPT_IN"},
        }})

    # ------------------------------------------------------------ sync
    def sync(self, since: datetime | None, progress: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
        """Customers, then orders, updated since ``since`` (all when None), as generic events.

        Pages of ``PAGE_SIZE`` through GraphQL cursors; ``progress`` hears one line per page.
        A throttled page is retried after the wait Shopify names.
        """
        search = None if since is None else f"updated_at:>='{format_time(since)}'"
        for node in self._pages("customers", CUSTOMERS_PAGE, search, progress):
            c = load(CUSTOMER, customer_from_graphql(node), "customer")
            created = c.get("created_at")
            updated = c.get("updated_at")
            yield from customer_events(c, created=True, updated=bool(updated and created and updated > created))
        for node in self._pages("orders", ORDERS_PAGE, search, progress):
            yield from order_state_events(load(ORDER, order_from_graphql(node), "order"))

    def _pages(self, field: str, query: str, search: str | None,
               progress: Callable[[str], None] | None) -> Iterator[Mapping[str, Any]]:
        cursor: str | None = None
        page = 0
        while True:
            variables: dict[str, Any] = {"first": PAGE_SIZE, "after": cursor, "query": search}
            conn = self._throttled(query, variables).get(field) or {}
            found = nodes(conn)
            page += 1
            if progress is not None:
                progress(f"{field}: page {page}, {len(found)} records")
            yield from found
            info = conn.get("pageInfo") or {}
            if not info.get("hasNextPage") or not info.get("endCursor"):
                return
            cursor = info["endCursor"]

    def _throttled(self, query: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        for attempt in range(SYNC_THROTTLE_RETRIES + 1):
            try:
                return self.client.query(query, variables)
            except RateLimited as exc:
                if attempt == SYNC_THROTTLE_RETRIES:
                    raise
                self.sleep(exc.retry_after or DEFAULT_RETRY_AFTER)
        raise AssertionError("unreachable")  # pragma: no cover

