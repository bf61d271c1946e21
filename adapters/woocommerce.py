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

Outbound
--------
REST v3 with Basic auth (consumer key / secret).  WooCommerce accepts Basic auth only over HTTPS
(plain HTTP needs OAuth 1.0a), so a real shop's ``api_url`` must be ``https://``.

* ``discount`` grant → ``POST /coupons`` restricted to the customer's e-mail; external id = the
  coupon id; revoke → ``DELETE /coupons/<id>?force=true``.  ``date_expires`` is the award's
  ``expires_at`` written in the shop's ``timezone`` (WooCommerce reads it in the *site's*
  timezone: keep the two equal).
* ``tag`` (and ``vip_service`` with a ``tag``) → the customer meta ``loyalty_ladder_tags``
  (comma-separated), read with ``GET /customers/<id>`` and written with ``PUT``.
* everything else → ``NotSupported`` (the award needs manual action).

Errors: 429 → ``RateLimited`` (Retry-After, default 2 s); 5xx, connection errors and timeouts →
``Unavailable``; other 4xx → ``Rejected`` with WooCommerce's ``message``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, ClassVar

import requests
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from ..errors import BadRequest, NotSupported, RateLimited, Rejected, SignatureError, Unavailable
from ..identity import guest_id
from .base import Adapter, Delivery, DeliveryResult, Inbound, get_header, retry_after_seconds, verify_hmac_base64

__all__ = ["TAGS_META_KEY", "WooCommerceAdapter"]

#: the customer meta key that carries our tags (comma-separated)
TAGS_META_KEY = "loyalty_ladder_tags"
#: payment methods that are not a card payment
OFFLINE_METHODS = frozenset({"cod", "bacs", "cheque"})
PAID_STATUSES = frozenset({"processing", "completed"})
#: a rate-limited request without Retry-After waits this long
DEFAULT_RETRY_AFTER = 2.0
PER_PAGE = 100
CENT = Decimal("0.01")
MAX_LINES = 1000
MAX_CODES = 100
MAX_ID = 200
MAX_REASON = 1000
_PING_BODY = re.compile(rb"^webhook_id=\d+$")
_is_email = validate.Email()


# ---------------------------------------------------------------- vendor schemas (unknown=EXCLUDE)
class _Vendor(Schema):
    class Meta:
        unknown = EXCLUDE


class _AddressSchema(_Vendor):
    email = fields.String(allow_none=True)


class _LineSchema(_Vendor):
    sku = fields.String(allow_none=True)
    quantity = fields.Integer(allow_none=True)
    price = fields.Raw(allow_none=True)  # a JSON number (price = total / quantity) in REST v3


class _CouponLineSchema(_Vendor):
    code = fields.String(allow_none=True)


class _RefundRefSchema(_Vendor):
    id = fields.Integer(required=True)
    reason = fields.String(allow_none=True)
    refund = fields.String(allow_none=True)  # the older key of the reason (REST v1/v2 payloads)
    total = fields.Raw(required=True)


class _OrderSchema(_Vendor):
    id = fields.Integer(required=True)
    status = fields.String(required=True)
    currency = fields.String(required=True)
    date_created_gmt = fields.String(required=True)
    date_modified_gmt = fields.String(allow_none=True)
    date_paid_gmt = fields.String(allow_none=True)
    total = fields.Raw(required=True)
    discount_total = fields.Raw(allow_none=True)
    shipping_total = fields.Raw(allow_none=True)
    customer_id = fields.Integer(load_default=0, allow_none=True)
    billing = fields.Nested(_AddressSchema, allow_none=True)
    payment_method = fields.String(allow_none=True)
    line_items = fields.List(fields.Nested(_LineSchema), load_default=list)
    coupon_lines = fields.List(fields.Nested(_CouponLineSchema), load_default=list)
    refunds = fields.List(fields.Nested(_RefundRefSchema), load_default=list)


class _CustomerSchema(_Vendor):
    id = fields.Integer(required=True)
    email = fields.String(allow_none=True)
    date_created_gmt = fields.String(required=True)
    date_modified_gmt = fields.String(allow_none=True)
    billing = fields.Nested(_AddressSchema, allow_none=True)


class _IdOnlySchema(_Vendor):
    id = fields.Integer(required=True)


_ORDER = _OrderSchema()
_CUSTOMER = _CustomerSchema()
_ID_ONLY = _IdOnlySchema()


# ---------------------------------------------------------------- small conversions
def _gmt(value: str | None) -> datetime | None:
    """A REST ``*_gmt`` time (``2017-03-22T19:28:08``, no zone: it *is* GMT) → aware UTC."""
    if not value:
        return None
    text = value.strip()
    if text[-1:] in "Zz":
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"not a WooCommerce date: {value!r}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _when(value: str | None) -> datetime:
    """A time the payload must have (its schema requires the field, but it may be blank)."""
    parsed = _gmt(value)
    if parsed is None:
        raise BadRequest("a WooCommerce payload without its date")
    return parsed


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _money(value: Any) -> Decimal | None:
    """A WooCommerce amount (string or number, any decimals) → cents; None when absent/blank."""
    if value is None or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise BadRequest(f"not an amount: {value!r}") from None
    if not amount.is_finite():
        raise BadRequest(f"not an amount: {value!r}")
    # line prices are total / quantity and may have many decimals: round to the cent
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def _email(value: str | None) -> str | None:
    """The e-mail when it is one (admin-created orders may have an empty billing e-mail)."""
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        _is_email(text)
    except ValidationError:
        return None
    return text if len(text) <= 320 else None


def _load(schema: Schema, data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise BadRequest(f"the {what} payload must be a JSON object")
    try:
        return schema.load(dict(data))
    except ValidationError as exc:
        raise BadRequest(f"malformed WooCommerce {what} payload", exc.normalized_messages()) from None


def _retry_after(value: str | None) -> float:
    return retry_after_seconds(value, DEFAULT_RETRY_AFTER)


def _split_tags(value: Any) -> list[str]:
    if isinstance(value, list):
        items = [str(v) for v in value]
    elif isinstance(value, str):
        items = value.split(",")
    else:
        items = []
    return list(dict.fromkeys(t.strip() for t in items if t and t.strip()))


# ---------------------------------------------------------------- the adapter
class WooCommerceAdapter(Adapter):
    """One WooCommerce site: its webhooks, its REST API v3."""

    platform: ClassVar[str] = "woocommerce"
    capabilities: ClassVar[tuple[str, ...]] = ("discount_codes", "tags")

    def __init__(self, shop: Any, session: requests.Session | None = None, timeout: float = 10.0):
        super().__init__(shop, session, timeout)
        #: the receipt time of events whose payload has no time of its own (customer.deleted)
        self.now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)

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
            order = _load(_ORDER, payload, "order")
            events, note = self._order_events(order, restored=topic == "order.restored")
            return Inbound(events=tuple(events), note=note)
        if topic == "order.deleted":
            return self._order_deleted(payload)
        if topic in ("customer.created", "customer.updated"):
            return self._customer_inbound(_load(_CUSTOMER, payload, "customer"), created=topic == "customer.created")
        if topic == "customer.deleted":
            found = _load(_ID_ONLY, payload, "customer")
            return Inbound(events=({
                "id": f"woo:customer:{found['id']}:deleted",
                "type": "customer_deleted",
                "customer_id": str(found["id"]),
                # WooCommerce sends only the id: the receipt time is the only time there is
                "occurred_at": _iso(self.now()),
            },))
        return Inbound(note=f"topic {topic!r} is not used by loyalty-ladder")

    # ------------------------------------------------------------ orders
    def _order_owner(self, order: Mapping[str, Any]) -> tuple[str, str | None]:
        email = _email((order.get("billing") or {}).get("email"))
        customer = order.get("customer_id") or 0
        if customer > 0:
            return str(customer), email
        return guest_id(email, str(order["id"])), email

    def _order_events(self, order: Mapping[str, Any], restored: bool = False) -> tuple[list[dict[str, Any]], str]:
        """The events one order state implies, and a note when it implies nothing."""
        oid = str(order["id"])
        status = order["status"].removeprefix("wc-")
        customer_id, email = self._order_owner(order)
        created = _when(order["date_created_gmt"])
        modified = _gmt(order.get("date_modified_gmt")) or created

        def base(event_id: str, kind: str, at: datetime, order_obj: dict[str, Any]) -> dict[str, Any]:
            event: dict[str, Any] = {"id": event_id, "type": kind, "customer_id": customer_id,
                                     "occurred_at": _iso(at), "order": order_obj}
            if email:
                event["customer"] = {"email": email}
            return event

        events: list[dict[str, Any]] = []
        note = ""
        if status in PAID_STATUSES or status == "refunded":
            paid_at = _gmt(order.get("date_paid_gmt")) or created
            events.append(base(f"woo:order:{oid}:paid", "order_paid", paid_at, self._order_body(order)))
            for ref in order.get("refunds") or ():
                amount = _money(ref["total"])
                refund: dict[str, Any] = {"id": str(ref["id"]), "amount": str(abs(amount or Decimal(0)))}
                reason = (ref.get("reason") or ref.get("refund") or "").strip()
                if reason:
                    refund["reason"] = reason[:MAX_REASON]
                event = base(f"woo:refund:{ref['id']}", "order_refunded", modified, {"id": oid})
                event["refund"] = refund
                events.append(event)
            if status == "refunded" and not order.get("refunds"):
                # refunded without refund records (status set by hand): the whole order goes back
                event = base(f"woo:order:{oid}:refunded", "order_refunded", modified, {"id": oid})
                event["refund"] = {"id": f"{oid}:refunded", "amount": str(_money(order["total"]) or Decimal(0))}
                events.append(event)
            if restored:
                stamp = order.get("date_modified_gmt") or order["date_created_gmt"]
                events.append(base(f"woo:order:{oid}:restored:{stamp}", "order_restored", modified, {"id": oid}))
        elif status in ("cancelled", "trash"):
            events.append(base(f"woo:order:{oid}:cancelled", "order_cancelled", modified, {"id": oid}))
            if restored:
                note = f"order {oid} restored as cancelled: it does not count"
        elif status == "failed":
            note = f"order {oid} failed: never paid, so nothing to count or reverse"
        elif status in ("pending", "on-hold"):
            note = f"order {oid} is {status}: not paid yet, waits for processing/completed"
        else:
            note = f"order {oid} has status {status!r}, which loyalty-ladder does not count"
        return events, note

    def _order_body(self, order: Mapping[str, Any]) -> dict[str, Any]:
        """Our ``order`` object of a paid order: money, codes, payment, lines."""
        body: dict[str, Any] = {"id": str(order["id"]), "total": str(_money(order["total"]) or Decimal(0)),
                                "currency": order["currency"].upper()}
        discount = _money(order.get("discount_total"))
        if discount is not None:
            body["discount_total"] = str(abs(discount))
        shipping = _money(order.get("shipping_total"))
        if shipping is not None:
            body["shipping"] = str(abs(shipping))
        codes = [c["code"].strip() for c in order.get("coupon_lines") or ()
                 if c.get("code") and c["code"].strip() and len(c["code"].strip()) <= MAX_ID]
        if codes:
            body["discount_codes"] = list(dict.fromkeys(codes))[:MAX_CODES]
        method = (order.get("payment_method") or "").strip()
        if method:  # empty for free and admin-created orders: no payment information
            body["payment"] = {"method": "other" if method in OFFLINE_METHODS else "card"}
        lines = []
        for item in order.get("line_items") or ():
            quantity = item.get("quantity")
            if not isinstance(quantity, int) or quantity < 1:
                continue
            line: dict[str, Any] = {"quantity": min(quantity, 1_000_000)}
            sku = (item.get("sku") or "").strip()
            if sku:
                line["sku"] = sku[:MAX_ID]
            price = _money(item.get("price"))
            if price is not None:
                line["price"] = str(abs(price))
            lines.append(line)
        if lines:
            body["lines"] = lines[:MAX_LINES]
        return body

    def _order_deleted(self, payload: Any) -> Inbound:
        """order.deleted: the body is ``{"id": N}``; the trashed order is read back through REST."""
        found = _load(_ID_ONLY, payload, "order")
        oid = found["id"]
        if isinstance(payload, Mapping) and "status" in payload and "date_created_gmt" in payload:
            order = _load(_ORDER, payload, "order")  # a full payload (some sites filter it in)
        else:
            if not self._has_api:
                return Inbound(note=f"order {oid} deleted: without REST credentials its customer is unknown")
            try:
                fetched = self._call("GET", f"orders/{oid}").json()
            except Rejected as exc:
                if exc.errors.get("status") == 404:
                    # deleted for good (emptied from the trash): its trashing was already reported
                    return Inbound(note=f"order {oid} was deleted permanently")
                raise
            order = _load(_ORDER, fetched, "order")
        customer_id, email = self._order_owner(order)
        stamp = order.get("date_modified_gmt") or order["date_created_gmt"]
        event: dict[str, Any] = {
            "id": f"woo:order:{oid}:deleted:{stamp}",
            "type": "order_cancelled",
            "customer_id": customer_id,
            "occurred_at": _iso(_when(stamp)),
            "order": {"id": str(oid)},
        }
        if email:
            event["customer"] = {"email": email}
        return Inbound(events=(event,))

    # ------------------------------------------------------------ customers
    def _customer_events(self, customer: Mapping[str, Any], created: bool) -> list[dict[str, Any]]:
        cid = str(customer["id"])
        email = _email(customer.get("email")) or _email((customer.get("billing") or {}).get("email"))
        info = {"email": email} if email else None
        if created:
            event: dict[str, Any] = {"id": f"woo:customer:{cid}:created", "type": "customer_created",
                                     "customer_id": cid, "occurred_at": _iso(_when(customer["date_created_gmt"]))}
        else:
            stamp = customer.get("date_modified_gmt") or customer["date_created_gmt"]
            event = {"id": f"woo:customer:{cid}:updated:{stamp}", "type": "customer_updated",
                     "customer_id": cid, "occurred_at": _iso(_when(stamp))}
        if info:
            event["customer"] = info
        return [event]

    def _customer_inbound(self, customer: Mapping[str, Any], created: bool) -> Inbound:
        events = self._customer_events(customer, created)
        email = (events[0].get("customer") or {}).get("email")
        # guest orders placed with this e-mail belong to the account from now on
        links = ((guest_id(email), str(customer["id"])),) if email else ()
        return Inbound(events=tuple(events), links=links)

    # ============================================================ outbound
    @property
    def _has_api(self) -> bool:
        return bool(self.shop.api_url and self.shop.consumer_key and self.shop.consumer_secret)

    def _url(self, path: str) -> str:
        return f"{(self.shop.api_url or '').rstrip('/')}/wp-json/wc/v3/{path}"

    def _call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
              body: Any = None) -> requests.Response:
        """One REST call, vendor failures translated into our ``DeliveryError`` tree."""
        if not self._has_api:
            raise Rejected(f"shop {self.shop.id} has no api_url / consumer_key / consumer_secret")
        where = f"WooCommerce {method} {path}"
        try:
            response = self.session.request(
                method, self._url(path), params=params, json=body, timeout=self.timeout,
                auth=(self.shop.consumer_key or "", self.shop.consumer_secret or ""),
                headers={"Accept": "application/json"},
            )
        except requests.Timeout as exc:
            raise Unavailable(f"{where}: timed out after {self.timeout:g} s") from exc
        except requests.RequestException as exc:
            raise Unavailable(f"{where}: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status < 400:
            return response
        message, code = _error_message(response)
        if status == 429:
            raise RateLimited(f"{where}: rate limited ({message})",
                              retry_after=_retry_after(response.headers.get("Retry-After")))
        if status >= 500:
            raise Unavailable(f"{where}: HTTP {status}: {message}")
        # errors carry the status and WooCommerce's code, so callers can tell a 404 apart
        raise Rejected(f"{where}: HTTP {status}: {message}", {"status": status, "code": code, "message": message})

    def _json(self, response: requests.Response, where: str) -> Any:
        try:
            return response.json()
        except ValueError:
            # an HTML maintenance page or a proxy's answer: the API is not really there
            raise Unavailable(f"{where}: the answer is not JSON (HTTP {response.status_code})") from None

    def deliver(self, delivery: Delivery) -> DeliveryResult:
        kind = delivery.award.get("type")
        params = delivery.award.get("params") or {}
        if delivery.action not in ("grant", "revoke"):
            raise NotSupported(f"WooCommerce adapter cannot {delivery.action!r} an award")
        if kind == "discount":
            if delivery.action == "grant":
                return self._create_coupon(delivery)
            return self._delete_coupon(delivery)
        if kind == "tag" or (kind == "vip_service" and params.get("tag")):
            tag = str(params.get("tag") or "").strip()
            if not tag:
                raise NotSupported("a tag reward without a tag")
            return self._set_tag(delivery, tag, add=delivery.action == "grant")
        raise NotSupported(f"WooCommerce cannot carry a {kind!r} reward: deliver it by hand")

    # ------------------------------------------------------------ coupons
    def coupon_body(self, delivery: Delivery) -> dict[str, Any]:
        """The ``POST /coupons`` body for a discount award (public: the tests match it exactly)."""
        params = delivery.award.get("params") or {}
        email = _email(delivery.customer.get("email"))
        if email is None:
            raise NotSupported("a WooCommerce coupon is restricted to the customer's e-mail, and there is none")
        if "percent" in params:
            discount_type, amount = "percent", str(params["percent"])
        elif "amount" in params:
            currency = params.get("currency")
            if currency and currency != self.shop.currency:
                raise NotSupported(f"a {currency} amount cannot be a coupon in a {self.shop.currency} shop")
            discount_type, amount = "fixed_cart", str(params["amount"])
        else:
            raise NotSupported("a discount without percent or amount")
        body: dict[str, Any] = {
            "code": params["code"],
            "discount_type": discount_type,
            "amount": amount,
            "individual_use": True,
            "usage_limit": int(params.get("usage_limit") or 1),
            "usage_limit_per_user": 1,
            "email_restrictions": [email],
            "description": f"loyalty-ladder {delivery.award.get('key', '')}".strip(),
        }
        if params.get("expires_at"):
            expires = _when(str(params["expires_at"]))
            # WooCommerce reads date_expires in the site's timezone: write it in the shop's
            body["date_expires"] = expires.astimezone(self.shop.zone).strftime("%Y-%m-%dT%H:%M:%S")
        if params.get("minimum_order") is not None:
            body["minimum_amount"] = str(params["minimum_order"])
        return body

    def _create_coupon(self, delivery: Delivery) -> DeliveryResult:
        body = self.coupon_body(delivery)
        try:
            response = self._call("POST", "coupons", body=body)
        except Rejected as exc:
            if exc.errors.get("code") != "woocommerce_rest_coupon_code_already_exists":
                raise
            # an earlier attempt created it but its answer was lost (timeout): the code is
            # deterministic per award, so the existing coupon is ours
            found = self._json(self._call("GET", "coupons", params={"code": body["code"]}), "GET coupons")
            if not found:
                raise
            return DeliveryResult(external_id=str(found[0]["id"]), detail=f"coupon {body['code']} (existed)")
        created = self._json(response, "POST coupons")
        if not isinstance(created, Mapping) or created.get("id") is None:
            raise Unavailable("WooCommerce created no coupon id")
        return DeliveryResult(external_id=str(created["id"]), detail=f"coupon {body['code']}")

    def _delete_coupon(self, delivery: Delivery) -> DeliveryResult:
        if not delivery.external_id:
            return DeliveryResult(external_id=None, detail="no coupon was created: nothing to delete")
        try:
            self._call("DELETE", f"coupons/{delivery.external_id}", params={"force": "true"})
        except Rejected as exc:
            if exc.errors.get("status") != 404:
                raise
            return DeliveryResult(external_id=delivery.external_id, detail="coupon already gone")
        return DeliveryResult(external_id=delivery.external_id, detail=f"coupon {delivery.external_id} deleted")

    # ------------------------------------------------------------ tags (customer meta)
    def _set_tag(self, delivery: Delivery, tag: str, add: bool) -> DeliveryResult:
        customer_id = str(delivery.customer.get("customer_id") or delivery.award.get("customer_id") or "")
        if not customer_id.isdigit():
            raise NotSupported(f"customer {customer_id!r} has no WooCommerce account to tag")
        customer = self._json(self._call("GET", f"customers/{customer_id}"), f"GET customers/{customer_id}")
        current: list[str] = []
        for meta in (customer.get("meta_data") or []) if isinstance(customer, Mapping) else []:
            if isinstance(meta, Mapping) and meta.get("key") == TAGS_META_KEY:
                current = _split_tags(meta.get("value"))
        if add:
            wanted = current if tag in current else [*current, tag]
        else:
            wanted = [t for t in current if t != tag]
        if wanted == current:
            return DeliveryResult(external_id=customer_id, detail=f"tag {tag!r} already {'set' if add else 'absent'}")
        self._call("PUT", f"customers/{customer_id}",
                   body={"meta_data": [{"key": TAGS_META_KEY, "value": ",".join(wanted)}]})
        return DeliveryResult(external_id=customer_id, detail=f"tag {tag!r} {'added' if add else 'removed'}")

    # ============================================================ sync
    def sync(self, since: datetime | None, progress: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
        """Customers, then orders (modified after ``since``), as the webhooks would have sent them.

        Same ids as the webhooks, so sync and webhooks dedupe against each other.  WooCommerce's
        customer list has no modification filter: every customer is read each time.
        """
        for customer in self._pages("customers", {"orderby": "id", "order": "asc"}, progress):
            loaded = _load(_CUSTOMER, customer, "customer")
            yield from self._customer_events(loaded, created=True)
            if loaded.get("date_modified_gmt") and loaded["date_modified_gmt"] != loaded["date_created_gmt"]:
                yield from self._customer_events(loaded, created=False)
        params: dict[str, Any] = {"orderby": "id", "order": "asc"}
        if since is not None:
            if since.tzinfo is None:
                since = since.replace(tzinfo=timezone.utc)
            params["modified_after"] = since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
            params["dates_are_gmt"] = "true"
        for order in self._pages("orders", params, progress):
            events, _ = self._order_events(_load(_ORDER, order, "order"))
            yield from events

    def _pages(self, resource: str, params: Mapping[str, Any],
               progress: Callable[[str], None] | None) -> Iterator[Mapping[str, Any]]:
        page = 1
        while True:
            response = self._call("GET", resource, params={**params, "per_page": PER_PAGE, "page": page})
            items = self._json(response, f"GET {resource}")
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


def _error_message(response: requests.Response) -> tuple[str, str | None]:
    """WooCommerce's error ``{"code", "message", "data"}`` → (message, code)."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, Mapping) and data.get("message"):
        return str(data["message"]), (str(data["code"]) if data.get("code") else None)
    text = (response.text or "").strip()
    return (text[:200] or response.reason or f"HTTP {response.status_code}"), None

