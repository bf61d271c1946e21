"""The shop adapter interface: one class per platform, one instance per configured shop.

Like ``requests.adapters.BaseAdapter``, an adapter is a small abstract interface; the registry
(:mod:`loyalty_ladder.adapters.registry`) picks the class by platform name.  Inbound, an adapter
identifies the shop of a webhook (:meth:`Adapter.shop_hint`), verifies its signature over the raw
bytes *before* anything is parsed (:meth:`Adapter.verify`), names its delivery id and topic, and
turns the vendor payload into our generic events (:meth:`Adapter.parse` → :class:`Inbound`).
Outbound, it carries an award to the shop (:meth:`Adapter.deliver`), pulls history
(:meth:`Adapter.sync`) and, where the platform has a consent field, reports an unsubscribe
(:meth:`Adapter.report_marketing_opt_out`).  Vendor errors never leak: they become the
``DeliveryError`` tree.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
from marshmallow import Schema

from ..errors import NotSupported
from ..shop import ShopConfig

__all__ = [
    "Adapter",
    "AdapterSettings",
    "Delivery",
    "DeliveryResult",
    "Inbound",
    "get_header",
    "hmac_sha256_base64",
    "normalise_domain",
    "verify_hmac_base64",
]

#: Default timeout (seconds) of an adapter's outbound requests.
DEFAULT_TIMEOUT = 10.0


# ---------------------------------------------------------------- value objects
@dataclass(frozen=True)
class Inbound:
    """What one webhook means for us, once parsed.

    ``events`` are generic events (our JSON, as ``POST …/events`` takes them) whose ids are
    deterministic from the vendor's ids, so a redelivery or the same state seen again is a no-op.
    """

    events: tuple[dict[str, Any], ...] = ()
    #: (guest customer id, account customer id): the account's fold includes the guest's events
    links: tuple[tuple[str, str], ...] = ()
    #: customers/redact: the shop's customer id to pseudonymise
    redact_customer: str | None = None
    #: shop/redact: erase the shop's personal data
    redact_shop: bool = False
    #: customers/data_request: the shop's customer id whose data was requested
    data_request: str | None = None
    #: why nothing happened (e.g. "pending order: waits for orders/paid")
    note: str = ""

    @property
    def empty(self) -> bool:
        """True when there is nothing to do: no events, links, redactions or data requests."""
        return not (self.events or self.links or self.redact_customer or self.redact_shop or self.data_request)


@dataclass(frozen=True)
class Delivery:
    """One outbox job handed to :meth:`Adapter.deliver`."""

    pk: int
    action: str  # "grant" | "revoke"
    #: key, reward, type, params, value, stage, turn, customer_id
    award: Mapping[str, Any]
    #: customer_id, email, locale, accepts_marketing, tags
    customer: Mapping[str, Any]
    #: for a revoke: what the grant's delivery returned, so exactly that object is removed
    external_id: str | None = None
    attempt: int = 1


@dataclass(frozen=True)
class DeliveryResult:
    """The shop's success: the id of the object it created (discount id, coupon id …)."""

    external_id: str | None
    detail: str = ""


# ---------------------------------------------------------------- helpers
def get_header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, case-insensitively, whatever mapping holds them (werkzeug or a dict)."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, val in headers.items():
        if key.lower() == wanted:
            return val
    return None


def normalise_domain(value: str | None) -> str | None:
    """``"https://Shop.Example.com/"`` → ``"shop.example.com"``: how shops are matched by domain.

    Lower-cased, scheme and trailing slashes stripped; a path is kept (a WordPress site may live
    under one: ``example.com/shop``).  Empty → None.
    """
    if value is None:
        return None
    text = value.strip().lower()
    if "://" in text:
        parts = urlsplit(text)
        text = parts.netloc + parts.path
    text = text.rstrip("/")
    return text or None


def hmac_sha256_base64(secret: str, body: bytes) -> str:
    """The base64 HMAC-SHA256 of ``body`` with ``secret``, as Shopify and WooCommerce sign."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_hmac_base64(header_value: str | None, body: bytes, secrets: Iterable[str | None]) -> bool:
    """True when ``header_value`` is the base64 HMAC-SHA256 of ``body`` under one of ``secrets``.

    Compares the decoded digests in constant time (``hmac.compare_digest``), and checks every
    secret whether or not an earlier one matched, so the timing says nothing about which secret
    (current or previous) is in use.  A missing or undecodable header is False.
    """
    if not header_value:
        return False
    try:
        given = base64.b64decode(header_value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    ok = False
    for secret in secrets:
        if not secret:
            continue
        expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
        ok = hmac.compare_digest(given, expected) or ok
    return ok


# ---------------------------------------------------------------- the platform's shop keys
class AdapterSettings(Schema):
    """Base of an adapter's :attr:`Adapter.settings_schema`: the platform's own keys of a shop entry.

    The shops file merges these fields with the common ones (``id``, ``platform``, ``domain`` …)
    into one ``unknown=RAISE`` schema, so a typo in a platform key is an error with a
    did-you-mean, like a typo in a common key.  Declare per field, in ``metadata``:

    * ``{"secret": True}``: the value may be ``env:NAME`` (resolved from the environment when the
      shops file is read) and is never shown by ``repr(shop)``;
    * ``{"required": True}``: the key is required in every mode; ``{"required": "live"}``:
      required unless the shop is in ``mode: shadow`` (which delivers nothing, so needs no
      credentials).

    Defaults are marshmallow's ``load_default``; a declared key without a value and without a
    default is present as ``None`` in :attr:`ShopConfig.settings`.  A field must not redefine a
    common key; require a common key with :attr:`Adapter.required_keys` instead.
    """


# ---------------------------------------------------------------- the interface
class Adapter(ABC):
    """One configured shop on one platform.

    Subclasses set ``platform`` (the registry key and the URL ``/webhooks/<platform>``) and
    ``capabilities`` (what :meth:`deliver` can carry: ``discount_codes``, ``tags`` …).  The class
    attributes below are the platform knowledge the core asks for, so the core never names a
    platform itself.
    """

    platform: ClassVar[str]
    capabilities: ClassVar[tuple[str, ...]] = ()
    #: the platform's own keys of a shop entry (credentials, API version …); see AdapterSettings
    settings_schema: ClassVar[type[Schema]] = AdapterSettings
    #: common shop keys this platform needs in every mode (``domain`` to match webhooks …)
    required_keys: ClassVar[tuple[str, ...]] = ()
    #: common shop keys it needs only to deliver, i.e. unless ``mode: shadow`` (``api_url`` …)
    live_required_keys: ClassVar[tuple[str, ...]] = ()
    #: the shops' webhooks arrive at ``POST /webhooks/<platform>`` (False: the platform has its
    #: own way in, like the generic events API)
    serves_webhooks: ClassVar[bool] = True
    #: the platform has a shop API that :meth:`deliver` carries awards to.  False: awards stay
    #: ``due`` for the integrator to fetch; only notices are sent
    has_shop_api: ClassVar[bool] = True
    #: the first part of this platform's vendor event ids (``shopify:order:…``, ``woo:order:…``)
    event_prefix: ClassVar[str] = ""

    def __init__(self, shop: ShopConfig, session: requests.Session | None = None,
                 timeout: float = DEFAULT_TIMEOUT):
        self.shop = shop
        self._session = session
        self.timeout = timeout

    @property
    def session(self) -> requests.Session:
        """The HTTP session of outbound calls; made on first use (inbound never needs one)."""
        if self._session is None:
            self._session = requests.Session()
        return self._session

    @property
    def secrets(self) -> list[str]:
        """The secrets a webhook signature may use: the current one, then the previous one
        (accepted during a rotation)."""
        return [s for s in (self.shop.webhook_secret, self.shop.previous_webhook_secret) if s]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} shop={self.shop.id!r}>"

    # ------------------------------------------------------------ platform knowledge (class level)
    @classmethod
    def secret_keys(cls) -> frozenset[str]:
        """The keys of :attr:`settings_schema` marked ``metadata={"secret": True}``."""
        return frozenset(name for name, f in cls.settings_schema._declared_fields.items()
                         if f.metadata.get("secret"))

    @classmethod
    def required_settings(cls, mode: str) -> tuple[str, ...]:
        """Every key (common or the platform's own) a shop entry in ``mode`` must give."""
        own = cls.settings_schema._declared_fields.items()
        always = [*cls.required_keys, *(n for n, f in own if f.metadata.get("required") is True)]
        if mode == "shadow":
            return tuple(dict.fromkeys(always))
        live = [*cls.live_required_keys, *(n for n, f in own if f.metadata.get("required") == "live")]
        return tuple(dict.fromkeys([*always, *live]))

    @classmethod
    def order_event_ids(cls, order_id: str) -> list[str]:
        """The ids of the vendor events that name an order's owner (placed, paid, cancelled), so
        the core can find who owns an order it already holds; empty when the platform's events
        carry no such scheme (generic events name their customer themselves)."""
        if not cls.event_prefix:
            return []
        return [f"{cls.event_prefix}:order:{order_id}:{what}" for what in ("placed", "paid", "cancelled")]

    @classmethod
    def matches_shop(cls, shop: ShopConfig, hint: str | None) -> bool:
        """Whether a webhook whose :meth:`shop_hint` is ``hint`` comes from ``shop``: by domain."""
        wanted = normalise_domain(hint)
        return wanted is not None and normalise_domain(shop.domain) == wanted

    # ------------------------------------------------------------ inbound
    @classmethod
    @abstractmethod
    def shop_hint(cls, headers: Mapping[str, str]) -> str | None:
        """The shop's domain as the webhook names it (``X-Shopify-Shop-Domain`` …); None if absent.

        The inbox matches it against :attr:`ShopConfig.domain` with :func:`normalise_domain`.
        """

    @abstractmethod
    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise ``SignatureError`` unless the raw ``body`` is signed by this shop.

        Constant time; the previous secret is accepted too (see :attr:`secrets`).
        """

    def is_ping(self, headers: Mapping[str, str], body: bytes) -> bool:
        """True for a platform's unsigned set-up ping (WooCommerce's ``webhook_id=N``): answered
        200 and stored nowhere.  Checked before :meth:`verify`, so it must be narrow."""
        return False

    @abstractmethod
    def delivery_id(self, headers: Mapping[str, str], body: bytes) -> str | None:
        """The inbox dedupe key (unique per platform and shop); None: never deduplicated there."""

    @abstractmethod
    def topic(self, headers: Mapping[str, str], body: bytes) -> str:
        """The webhook's topic (``orders/paid``, ``order.updated`` …)."""

    @abstractmethod
    def parse(self, topic: str, headers: Mapping[str, str], body: bytes) -> Inbound:
        """The webhook as our events; ``BadRequest`` on a malformed body (never retried)."""

    # ------------------------------------------------------------ outbound
    @abstractmethod
    def deliver(self, delivery: Delivery) -> DeliveryResult:
        """Carry a grant (or undo it, for a revoke) to the shop.

        Raises the ``DeliveryError`` tree: ``RateLimited`` (retry after), ``Unavailable``
        (retry), ``Rejected`` (permanent), ``NotSupported`` (the platform cannot carry this
        reward: the award becomes ``needs_manual_action``).
        """

    def sync(self, since: datetime | None, progress: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
        """Generic events for the shop's customers and orders since ``since``, through its API."""
        raise NotSupported(f"platform {self.platform} has no API to pull customers and orders from")

    def report_marketing_opt_out(self, customer_id: str) -> None:
        """Tell the shop that ``customer_id`` (our id) withdrew marketing consent through our
        unsubscribe link, so the shop's own e-mails stop too.

        Called on the bulk lane, never inside a request.  Raises the ``DeliveryError`` tree:
        ``RateLimited`` / ``Unavailable`` (retried), ``Rejected`` (permanent), ``NotSupported``
        (the platform has no standard consent field, or the customer has no account there):
        nothing is reported.  The default: ``NotSupported``.
        """
        raise NotSupported(f"platform {self.platform} has no standard marketing-consent field to report an opt-out to")


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def retry_after_seconds(value: str | None, default: float) -> float:
    """A 429's wait: the header's seconds or date when it gives a positive wait, else ``default``."""
    seconds = parse_retry_after(value)
    return seconds if seconds else default
