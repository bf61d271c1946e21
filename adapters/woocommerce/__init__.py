"""WooCommerce: webhooks in (``X-WC-Webhook-*``), REST API v3 out (coupons, customer meta), sync.

Inbound
-------
WooCommerce delivers the REST v3 representation of the resource (``order``, ``customer``),
signed with ``X-WC-Webhook-Signature`` = base64(HMAC-SHA256(secret, raw body)).  Exceptions:

* the creation *ping* is an unsigned, form-encoded ``webhook_id=N`` without any ``X-WC-*``
  header — answered 200 and stored nowhere (:meth:`WooCommerceAdapter.is_ping`);
* ``*.deleted`` payloads carry nothing but ``{"id": N}`` (``WC_Webhook::build_payload``), so a
  deleted (trashed) order is read back through the REST API to learn whose it was.

Its ``X-WC-Webhook-Delivery-ID`` is new for every delivery, and WooCommerce never retries (it
disables a webhook after repeated failures), so the inbox dedupes on the resource's own state:
``order:<id>:<date_modified_gmt>:<topic>`` — the same order state seen again is a no-op.

Status mapping (one id per fact, so the same state always maps to the same events):

* ``processing`` / ``completed`` → ``order_paid`` ``woo:order:<id>:paid`` (one id for both: going
  processing → completed is not a second payment; occurred_at = ``date_paid_gmt`` or
  ``date_created_gmt``), plus one ``order_refunded`` ``woo:refund:<refund id>`` per ``refunds[]``
  entry (partial refunds; amount = abs(total), reason from ``reason`` or the older ``refund``);
* ``refunded`` → the paid event, then one ``order_refunded`` per ``refunds[]`` entry or — with no
  entry — one full refund ``woo:order:<id>:refunded`` of the total, so it reverses once;
* ``cancelled`` (and ``trash``) → ``order_cancelled`` ``woo:order:<id>:cancelled``;
* ``pending`` / ``on-hold`` → nothing yet (note); ``failed`` → nothing (note): never paid, so
  nothing to reverse;
* order.deleted → ``order_cancelled`` ``woo:order:<id>:deleted:<date_modified_gmt>``: its own id
  per deletion, so trash → restore → trash cancels again;
* order.restored in a paid status → the paid event and ``order_restored``
  ``woo:order:<id>:restored:<date_modified_gmt>``: the order counts again although its
  cancellation stays in the ledger;
* customer.created / .updated → ``customer_created`` ``woo:customer:<id>:created`` /
  ``customer_updated`` ``woo:customer:<id>:updated:<date_modified_gmt>``; customer.deleted →
  ``customer_deleted`` ``woo:customer:<id>:deleted`` (its body is only the id, so its time is
  the receipt time).

Refunds and cancellations take the order's ``date_modified_gmt``: the order payload carries no
refund date, and the first time an id is seen is the one kept (vendor events are keep-first).
A guest order (``customer_id`` 0) belongs to ``guest:<hash of billing e-mail>``; a customer
created or updated with that e-mail links the guest to the account (``Inbound.links``).

Outbound and layout
-------------------
:mod:`.schemas` (vendor payload schemas and value spellings), :mod:`.mapping` (payload → our
events), :mod:`.client` (REST v3 with Basic auth, errors translated by
:mod:`loyalty_ladder.adapters.http`), :mod:`.delivery` (coupons and customer-meta tags).  This
module is the adapter that ties them to the interface, and declares the shop keys WooCommerce
needs.

An unsubscribe through our link is not reported to the site: the REST v3 customer has no
marketing-consent field (our mapping reads none either), so
:meth:`~loyalty_ladder.adapters.base.Adapter.report_marketing_opt_out` stays ``NotSupported``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import requests
from marshmallow import fields

from ...errors import BadRequest, Rejected, SignatureError, Unavailable
from ...shop import ShopConfig
from ..base import Adapter, AdapterSettings, Delivery, DeliveryResult, Inbound, get_header, verify_hmac_base64
from . import delivery as _delivery
from .client import WooClient
from .delivery import TAGS_META_KEY
from .mapping import (
    ORDER_STATES,
    PREFIX,
    customer_deleted_event,
    customer_events,
    customer_links,
    order_deleted_event,
    order_event_id,
    order_events,
)
from .schemas import CUSTOMER, ID_ONLY, ORDER, load

__all__ = ["TAGS_META_KEY", "WooCommerceAdapter", "WooCommerceSettings"]

PER_PAGE = 100
_PING_BODY = re.compile(rb"^webhook_id=\d+$")


class WooCommerceSettings(AdapterSettings):
    """A WooCommerce shop entry's own keys: the REST API key pair (WooCommerce → Settings →
    Advanced → REST API), not needed to compute in shadow mode."""

    consumer_key = fields.String(metadata={"secret": True, "required": "live"})
    consumer_secret = fields.String(metadata={"secret": True, "required": "live"})


class WooCommerceAdapter(Adapter):
    """One WooCommerce site: its webhooks, its REST API v3."""

    platform: ClassVar[str] = "woocommerce"
    capabilities: ClassVar[tuple[str, ...]] = ("discount_codes", "tags", "store_credit", "customer_fields")
    settings_schema: ClassVar[type[AdapterSettings]] = WooCommerceSettings
    #: webhooks name the site by X-WC-Webhook-Source and are signed with the webhook's secret
    required_keys: ClassVar[tuple[str, ...]] = ("domain", "webhook_secret")
    live_required_keys: ClassVar[tuple[str, ...]] = ("api_url",)
    event_prefix: ClassVar[str] = PREFIX

    def __init__(self, shop: ShopConfig, session: requests.Session | None = None, timeout: float = 10.0):
        super().__init__(shop, session, timeout)
        #: the receipt time of events whose payload has no time of its own (customer.deleted)
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)

    @classmethod
    def order_event_ids(cls, order_id: str) -> list[str]:
        return [order_event_id(order_id, state) for state in ORDER_STATES]

    # ============================================================ inbound
    @classmethod
    def shop_hint(cls, headers: Mapping[str, str]) -> str | None:
        return get_header(headers, "X-WC-Webhook-Source") or None

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        if not verify_hmac_base64(get_header(headers, "X-WC-Webhook-Signature"), body, self.secrets):
            raise SignatureError("missing or bad X-WC-Webhook-Signature")

    def is_ping(self, headers: Mapping[str, str], body: bytes) -> bool:
        """The creation ping: ``webhook_id=N`` form-encoded, with no topic (it is not signed)."""
        if get_header(headers, "X-WC-Webhook-Topic"):
            return False
        content_type = (get_header(headers, "Content-Type") or "").lower()
        if content_type and not content_type.startswith("application/x-www-form-urlencoded"):
            return False
        return bool(_PING_BODY.match(body.strip()))

    def topic(self, headers: Mapping[str, str], body: bytes) -> str:
        value = (get_header(headers, "X-WC-Webhook-Topic") or "").strip().lower()
        if not value:
            raise BadRequest("missing X-WC-Webhook-Topic")
        return value

    def delivery_id(self, headers: Mapping[str, str], body: bytes) -> str | None:
        """``order:<id>:<date_modified_gmt>:<topic>`` (``customer:…`` alike): the resource's state.

        ``*.deleted`` bodies hold only the id: their key is ``<resource>:<id>:delivery:<delivery
        id>`` — WooCommerce never redelivers, and a replayed recording repeats the same header.
        """
        topic = (get_header(headers, "X-WC-Webhook-Topic") or "").strip().lower()
        header_id = get_header(headers, "X-WC-Webhook-Delivery-ID")
        resource = topic.split(".", 1)[0]
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            payload = None
        if resource in ("order", "customer") and isinstance(payload, Mapping) and payload.get("id") is not None:
            modified = payload.get("date_modified_gmt")
            if modified:
                return f"{resource}:{payload['id']}:{modified}:{topic}"
            if header_id:
                return f"{resource}:{payload['id']}:delivery:{header_id}"
            return f"{resource}:{payload['id']}:{topic}"
        return f"delivery:{header_id}" if header_id else None

    def parse(self, topic: str, headers: Mapping[str, str], body: bytes) -> Inbound:
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise BadRequest("the WooCommerce webhook body is not JSON") from None
        if topic in ("order.created", "order.updated", "order.restored"):
            events, note = order_events(load(ORDER, payload, "order"), restored=topic == "order.restored")
            return Inbound(events=tuple(events), note=note)
        if topic == "order.deleted":
            return self._order_deleted(payload)
        if topic in ("customer.created", "customer.updated"):
            customer = load(CUSTOMER, payload, "customer")
            found = customer_events(customer, created=topic == "customer.created")
            return Inbound(events=tuple(found), links=customer_links(customer, found))
        if topic == "customer.deleted":
            gone = load(ID_ONLY, payload, "customer")
            return Inbound(events=(customer_deleted_event(str(gone["id"]), self.now()),))
        return Inbound(note=f"topic {topic!r} is not used by loyalty-ladder")

    def _order_deleted(self, payload: Any) -> Inbound:
        """order.deleted: the body is ``{"id": N}``; the trashed order is read back through REST."""
        oid = load(ID_ONLY, payload, "order")["id"]
        if isinstance(payload, Mapping) and "status" in payload and "date_created_gmt" in payload:
            order = load(ORDER, payload, "order")  # a full payload (some sites filter it in)
        else:
            if not self.client.has_api:
                return Inbound(note=f"order {oid} deleted: without REST credentials its customer is unknown")
            try:
                fetched = self.client.call("GET", f"orders/{oid}").json()
            except Rejected as exc:
                if exc.errors.get("status") == 404:
                    # deleted for good (emptied from the trash): its trashing was already reported
                    return Inbound(note=f"order {oid} was deleted permanently")
                raise
            order = load(ORDER, fetched, "order")
        return Inbound(events=(order_deleted_event(order),))

    # ============================================================ outbound
    @property
    def client(self) -> WooClient:
        """The site's REST API, over this adapter's session."""
        return WooClient(self.shop, self.session, self.timeout)

    def deliver(self, delivery: Delivery) -> DeliveryResult:
        return _delivery.deliver(self.client, delivery)

    def coupon_body(self, delivery: Delivery) -> dict[str, Any]:
        """The ``POST /coupons`` body for a discount award."""
        return _delivery.coupon_body(self.shop, delivery)

    # ============================================================ sync
    def sync(self, since: datetime | None, progress: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
        """Customers, then orders (modified after ``since``), as the webhooks would have sent them.

        Same ids as the webhooks, so sync and webhooks dedupe against each other.  WooCommerce's
        customer list has no modification filter: every customer is read each time.
        """
        for customer in self._pages("customers", {"orderby": "id", "order": "asc"}, progress):
            loaded = load(CUSTOMER, customer, "customer")
            yield from customer_events(loaded, created=True)
            if loaded.get("date_modified_gmt") and loaded["date_modified_gmt"] != loaded["date_created_gmt"]:
                yield from customer_events(loaded, created=False)
        params: dict[str, Any] = {"orderby": "id", "order": "asc"}
        if since is not None:
            if since.tzinfo is None:
                since = since.replace(tzinfo=UTC)
            params["modified_after"] = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
            params["dates_are_gmt"] = "true"
        for order in self._pages("orders", params, progress):
            events, _ = order_events(load(ORDER, order, "order"))
            yield from events

    def _pages(self, resource: str, params: Mapping[str, Any],
               progress: Callable[[str], None] | None) -> Iterator[Mapping[str, Any]]:
        page = 1
        while True:
            response = self.client.call("GET", resource, params={**params, "per_page": PER_PAGE, "page": page})
            items = self.client.json(response, f"GET {resource}")
            if not isinstance(items, list):
                raise Unavailable(f"GET {resource}: expected a list")
            try:
                total = int(response.headers.get("X-WP-TotalPages") or page)
            except ValueError:
                total = page
            if progress is not None:
                progress(f"woocommerce {resource}: page {page}/{max(total, page)} ({len(items)} items)")
            yield from items
            if not items or page >= total:
                return
            page += 1

