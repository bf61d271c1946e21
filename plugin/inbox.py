"""The inbox: shop webhooks verified, persisted raw, acknowledged fast, processed later.

The inbox knows the database and the configured shops, never the service: ``process`` returns
the customers it touched and its caller enqueues them.

``receive`` is all a webhook request does: identify the shop, verify the signature over the
raw bytes, store one ``inbox`` row (the raw body exactly as signed) and return; the caller
enqueues ``process(pk)``.  The row, not the queue message, is the source of truth: ``sweep``
finds rows a lost enqueue or a crash left ``received``.  ``export`` writes rows as JSON lines
(the ``ladder replay`` format) and ``replay`` sends such records through ``receive`` again —
signatures are checked again and known deliveries are no-ops.

Row statuses: ``received`` → ``processed`` (its Inbound was applied) | ``ignored`` (nothing to
do; the adapter's note is kept in ``error``) | ``failed`` (the body cannot be understood; the
reason is in ``error``; never retried).  Other failures (a shop API or the database down, a
bug) raise, so the consumer retries; each is counted on the row (``attempts``, with a backoff
in ``retry_at`` that ``sweep`` respects), and after MAX_ATTEMPTS the row is ``failed`` with the
last error.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from marshmallow import ValidationError

from . import events as events_mod
from . import identity, ledger, store
from .adapters.base import Adapter, Inbound
from .adapters.registry import adapter_for, load_adapters
from .clock import iso, utcnow
from .errors import BadRequest, Conflict, LadderError, NotFound, NotSupported, Rejected, Unauthorized
from .programme import Programme
from .shop import ShopConfig
from .statuses import InboxStatus

#: the shops by id, as the settings' shops file configures them
Shops = Mapping[str, ShopConfig]

log = logging.getLogger(__name__)

#: the default age of rows ``sweep`` finds still ``received`` (the live lane asks for any age)
SWEEP_AFTER = timedelta(seconds=60)
#: header names (lower-case) that are stored although they do not start with ``x-``
KEPT_HEADERS = ("content-type",)
#: a header whose name contains one of these is never stored: it could carry a credential
SECRET_HINTS = ("token", "secret", "password", "passwd", "auth", "cookie", "api-key", "apikey", "session")
_EXPORT_BATCH = 500


@dataclass(frozen=True)
class ReceiveResult:
    """The answer to one webhook: what the HTTP endpoint returns, and the row to process."""

    status_code: int
    inbox_pk: int | None
    duplicate: bool
    message: str
    shop_id: str | None = None

    @property
    def status(self) -> str:
        """``accepted`` (a new row: enqueue it), ``duplicate`` or ``ping``."""
        if self.inbox_pk is not None:
            return "accepted"
        return "duplicate" if self.duplicate else "ping"


# ---------------------------------------------------------------- receive
def stored_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers worth keeping with the raw body: the vendor's ``X-*`` headers (topic, shop,
    delivery id, signature — a signature is no secret, and replay needs it) and Content-Type;
    never anything that could carry a credential."""
    kept: dict[str, str] = {}
    for name, value in headers.items():
        low = name.lower()
        if not (low.startswith("x-") or low in KEPT_HEADERS):
            continue
        if any(hint in low for hint in SECRET_HINTS):
            continue
        kept[name] = value
    return kept


def served_platforms() -> list[str]:
    """The platforms whose adapters receive webhooks at ``/webhooks/<platform>``."""
    return [name for name, cls in load_adapters().items() if cls.serves_webhooks]


def identify(shops: Shops, platform: str, headers: Mapping[str, str]) -> tuple[type[Adapter], list[ShopConfig], ShopConfig | None]:
    """The adapter class, the shops of ``platform``, and the one the headers name (or None)."""
    adapters = load_adapters()
    cls = adapters.get(platform)
    if cls is None:
        raise NotFound(f"no webhook endpoint for platform {platform!r}",
                       {"platform": [f"webhooks are served for: {', '.join(served_platforms())}"]})
    candidates = [s for s in shops.values() if s.platform == platform]
    hint = cls.shop_hint(headers)
    shop = next((s for s in candidates if cls.matches_shop(s, hint)), None) if hint else None
    return cls, candidates, shop


def _delivery_key(value: str | None) -> str | None:
    # The column holds 255 characters; a longer vendor id is still a stable key once hashed.
    if value is None or len(value) <= store.EXTERNAL_ID:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()


def check_headers(shops: Shops, platform: str, headers: Mapping[str, str]) -> None:
    """What can be refused from the headers alone, before the body is read: an unknown platform
    (404), a platform without shops, or headers that name a shop we do not have (401).  Headers
    that name no shop pass: a set-up ping (WooCommerce's) names none, and needs its body."""
    cls, candidates, shop = identify(shops, platform, headers)
    if not candidates:
        raise Unauthorized(f"no {platform} shop is configured", {"shop": ["add the shop to the shops file"]})
    hint = cls.shop_hint(headers)
    if hint and shop is None:
        raise Unauthorized(f"unknown {platform} shop {hint!r}",
                           {"shop": ["the shop's domain must match a shop of the shops file"]})


def receive(db: sa.Engine, shops: Shops, platform: str, headers: Mapping[str, str], body: bytes) -> ReceiveResult:
    """Verify and persist one webhook; nothing is parsed beyond what the adapter needs to name
    the delivery.

    Raises Unauthorized (unknown shop) or SignatureError (401) with nothing stored, BadRequest
    (400) for a body that is not UTF-8, NotFound (404) for an unknown platform.
    """
    cls, candidates, shop = identify(shops, platform, headers)
    if not candidates:
        raise Unauthorized(f"no {platform} shop is configured", {"shop": ["add the shop to the shops file"]})
    # A set-up ping may carry no shop header at all (WooCommerce's does not): ask any shop's adapter.
    adapter = adapter_for(shop or candidates[0])
    if adapter.is_ping(headers, body):
        return ReceiveResult(200, None, False, "ping", shop.id if shop else None)
    if shop is None:
        hint = cls.shop_hint(headers)
        raise Unauthorized(f"unknown {platform} shop {hint!r}" if hint else f"the {platform} webhook names no shop",
                           {"shop": ["the shop's domain must match a shop of the shops file"]})
    adapter.verify(headers, body)  # before anything reads the body
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not UTF-8: {exc}", {"_schema": ["the body must be UTF-8 text"]}) from None
    delivery_id = _delivery_key(adapter.delivery_id(headers, body))
    topic = adapter.topic(headers, body)
    if len(topic) > 128:
        raise BadRequest("the topic is too long", {"topic": ["at most 128 characters"]})
    row = {"platform": platform, "shop_id": shop.id, "delivery_id": delivery_id, "topic": topic,
           "headers": stored_headers(headers), "body": text, "received_at": utcnow(), "status": InboxStatus.RECEIVED}
    pk = _insert(db, row)
    if pk is None:
        return ReceiveResult(200, None, True, f"delivery {delivery_id} already received", shop.id)
    return ReceiveResult(200, pk, False, "accepted", shop.id)


def _insert(db: sa.Engine, row: dict[str, Any]) -> int | None:
    """Insert the row unless its (platform, shop, delivery id) is known; the new pk or None.

    One short write transaction with one ``INSERT … ON CONFLICT DO NOTHING`` (no check first, no
    retry): the accept path of a webhook.  Rows without a delivery id are never duplicates
    (NULLs are distinct in the unique constraint).
    """
    with store.begin_write(db) as conn:
        pk = store.insert_new(conn, store.inbox, row, ["platform", "shop_id", "delivery_id"])
    return None if pk is None else int(pk)


# ---------------------------------------------------------------- process
def apply_inbound(db: sa.Engine, shop_id: str, programme: Programme, inbound: Inbound, source: str) -> list[str]:
    """What a shop adapter made of one verified webhook: links, events, redactions.

    Vendor events are stored keep-first (the same vendor id always means the same event).
    Returns the customers whose fold changed (to process).  Invalid events raise BadRequest
    before anything is written: a webhook that fails leaves no guest link behind.
    """
    parsed: list[events_mod.Event] = []
    if inbound.events:
        try:
            parsed = events_mod.parse_events(list(inbound.events))
        except ValidationError as exc:
            raise BadRequest(f"the {source} payload mapped to invalid events", exc.normalized_messages()) from None
        ledger.check_acceptable(programme, parsed, utcnow())
    touched: list[str] = identity.link_all(db, shop_id, inbound.links)
    if parsed:
        result = ledger.store_events(db, shop_id, parsed, source, keep_first=True)
        touched += result.customers
        touched += identity.link_guests(db, shop_id, parsed)
    if inbound.redact_customer:
        new_id = identity.redact_customer(db, shop_id, inbound.redact_customer)
        touched += [new_id] if new_id else []
    if inbound.redact_shop:
        touched += identity.redact_shop(db, shop_id)
    return list(dict.fromkeys(touched))


def process(db: sa.Engine, shops: Shops, pk: int, adapter_factory: Callable[[ShopConfig], Adapter],
            programme_for: Callable[[ShopConfig], Programme]) -> list[tuple[str, str]]:
    """Parse a received row and apply it; mark it processed, ignored or failed.  Returns the
    (shop, customer) pairs to process next.

    ``adapter_factory(shop)`` gives the shop's adapter (one that can ask the ledger who owns an
    order); ``programme_for(shop)`` its programme (events are checked against its currency).
    A row no longer ``received`` (processed meanwhile, redundant enqueue) is left alone.
    BadRequest/Conflict (from parsing or applying) fail the row permanently; anything else
    propagates so the queue retries, and the row stays ``received`` for the live lane.
    """
    t = store.inbox
    with db.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.pk == pk)).first()
    if row is None:
        log.warning("inbox row %s does not exist", pk)
        return []
    if row.status != InboxStatus.RECEIVED:
        log.debug("inbox row %s is already %s", pk, row.status)
        return []
    shop = shops.get(row.shop_id) if row.shop_id else None
    if shop is None or shop.platform != row.platform:
        _mark(db, pk, InboxStatus.FAILED, f"shop {row.shop_id!r} ({row.platform}) is no longer configured")
        return []
    adapter = adapter_factory(shop)
    try:
        inbound = adapter.parse(row.topic or "", row.headers or {}, row.body.encode("utf-8"))
        if inbound.empty:
            _mark(db, pk, InboxStatus.IGNORED, inbound.note or f"nothing to do for topic {row.topic}")
            return []
        touched = apply_inbound(db, shop.id, programme_for(shop), inbound, source=row.platform)
    except (BadRequest, Conflict, NotSupported, Rejected) as exc:
        # permanent: a malformed payload, or a shop API that refuses (or cannot be asked) what
        # parsing needed; a retry cannot fix these. RateLimited / Unavailable propagate: retried.
        log.warning("inbox row %s (%s %s) failed: %s", pk, row.platform, row.topic, exc.message)
        _mark(db, pk, InboxStatus.FAILED, _error_text(exc))
        return []
    except Exception as exc:
        # anything else may pass (a shop API or the database down): retried with a backoff, and
        # after MAX_ATTEMPTS the row is failed with this error (poison isolation)
        if _record_attempt(db, pk, exc):
            return []
        raise
    _mark(db, pk, InboxStatus.PROCESSED, inbound.note or None)
    return [(shop.id, customer_id) for customer_id in touched]


#: failed processing attempts after which a row still ``received`` is marked ``failed``
MAX_ATTEMPTS = 8
#: the wait after the first failed attempt; it doubles after each further one, up to RETRY_CAP
RETRY_BACKOFF = timedelta(seconds=15)
RETRY_CAP = timedelta(minutes=30)


def _record_attempt(db: sa.Engine, pk: int, exc: Exception) -> bool:
    """Count a failed attempt on a ``received`` row: set its next try (backoff), or mark it
    ``failed`` with the error at the MAX_ATTEMPTS-th.  True when the row was given up; False
    when it is to be retried (or the attempt cannot even be recorded: the database is down)."""
    t = store.inbox
    message = str(exc.orig) if isinstance(exc, sa.exc.StatementError) and exc.orig is not None else str(exc)
    reason = f"{type(exc).__name__}: {message.strip()}"[:2000]
    try:
        with store.begin_write(db) as conn:
            row = conn.execute(sa.select(t.c.attempts, t.c.status).where(t.c.pk == pk)).first()
            if row is None or row.status != InboxStatus.RECEIVED:
                return False
            attempts = int(row.attempts or 0) + 1
            values: dict[str, Any] = {"attempts": attempts}
            given_up = attempts >= MAX_ATTEMPTS
            if given_up:
                values.update(status=InboxStatus.FAILED, processed_at=utcnow(), retry_at=None,
                              error=sa.func.coalesce(t.c.error, f"gave up after {attempts} attempts: {reason}"))
            else:
                values["retry_at"] = utcnow() + min(RETRY_BACKOFF * 2 ** (attempts - 1), RETRY_CAP)
            conn.execute(t.update().where(t.c.pk == pk, t.c.status == InboxStatus.RECEIVED).values(**values))
    except Exception:
        log.exception("could not record the failed attempt of inbox row %s", pk)
        return False
    log.log(logging.ERROR if given_up else logging.WARNING, "inbox row %s failed (attempt %d of %d): %s",
            pk, attempts, MAX_ATTEMPTS, reason)
    return given_up


def _error_text(exc: LadderError) -> str:
    return f"{exc.message}: {exc.errors}" if exc.errors else exc.message


def _mark(db: sa.Engine, pk: int, status: InboxStatus, error: str | None) -> None:
    t = store.inbox
    with store.begin_write(db) as conn:
        # Only a received row moves: a concurrent run that finished first keeps its verdict,
        # and a redaction's "redacted" mark on the error column is not overwritten.
        values: dict[str, Any] = {"status": status, "processed_at": utcnow()}
        if error is not None:
            values["error"] = sa.func.coalesce(t.c.error, error)
        conn.execute(t.update().where(t.c.pk == pk, t.c.status == InboxStatus.RECEIVED).values(**values))


#: the live lane stops re-trying a row this long after it arrived (a shop API down for good must
#: not make every minute log the same failure forever); `ladder inbox-export` still lists it
SWEEP_GIVE_UP = timedelta(days=7)


def sweep(db: sa.Engine, older_than: timedelta = SWEEP_AFTER, now: datetime | None = None) -> list[int]:
    """Pks of rows still ``received`` that arrived at least ``older_than`` ago (and less than
    SWEEP_GIVE_UP ago) and whose backoff after a failed attempt has ended, oldest first."""
    t = store.inbox
    now = now or utcnow()
    with db.connect() as conn:
        return [r.pk for r in conn.execute(sa.select(t.c.pk).where(
            t.c.status == InboxStatus.RECEIVED, t.c.received_at <= now - older_than,
            t.c.received_at > now - SWEEP_GIVE_UP,
            # a failed attempt waits for its backoff (an operator's retry resets attempts to 0)
            sa.or_(t.c.attempts == 0, t.c.retry_at.is_(None), t.c.retry_at <= now)).order_by(t.c.pk))]


# ---------------------------------------------------------------- export / replay
def export(db: sa.Engine, since: datetime | None = None, *, platform: str | None = None,
           shop_id: str | None = None) -> Iterator[dict[str, Any]]:
    """Stored webhooks as ``{"platform", "headers", "body", "received_at"}`` records, oldest
    first — one JSON line each is the ``ladder replay`` format.  Redacted rows are skipped: their
    body is gone.  Reads in batches, so a long export holds no connection while it is consumed.
    """
    t = store.inbox
    where = [sa.or_(t.c.error.is_(None), t.c.error != "redacted")]
    if since is not None:
        where.append(t.c.received_at >= since)
    if platform is not None:
        where.append(t.c.platform == platform)
    if shop_id is not None:
        where.append(t.c.shop_id == shop_id)
    last = 0
    while True:
        with db.connect() as conn:
            rows = conn.execute(sa.select(t.c.pk, t.c.platform, t.c.headers, t.c.body, t.c.received_at)
                                .where(t.c.pk > last, *where).order_by(t.c.pk).limit(_EXPORT_BATCH)).all()
        for r in rows:
            yield {"platform": r.platform, "headers": dict(r.headers or {}), "body": r.body,
                   "received_at": iso(r.received_at)}
        if len(rows) < _EXPORT_BATCH:
            return
        last = rows[-1].pk


def replay(db: sa.Engine, shops: Shops, records: Iterable[Mapping[str, Any]],
           enqueue: Callable[[int], Any] | None = None,
           on_reject: Callable[[int, str], Any] | None = None) -> dict[str, int]:
    """Send recorded webhooks through :func:`receive` again: signatures are verified again and
    known deliveries are no-ops.  Returns ``{"accepted", "duplicates", "pings", "rejected"}``.

    Each new row goes to ``enqueue(pk)``; without a queue it stays ``received`` and the worker's
    live lane processes it.  A refused record (bad signature, unknown shop, malformed record) is
    counted and reported to ``on_reject(record number, message)`` (default: a warning in the
    log), never fatal: one bad line must not stop the re-injection of an outage's log.
    """
    counts = {"accepted": 0, "duplicates": 0, "pings": 0, "rejected": 0}
    for n, record in enumerate(records, 1):
        try:
            platform, headers, body = _record_parts(record)
            result = receive(db, shops, platform, headers, body)
        except (BadRequest, Unauthorized, NotFound) as exc:
            counts["rejected"] += 1
            if on_reject is not None:
                on_reject(n, exc.message)
            else:
                log.warning("replay record %d refused: %s", n, exc.message)
            continue
        if result.inbox_pk is not None:
            counts["accepted"] += 1
            if enqueue is not None:
                enqueue(result.inbox_pk)
        elif result.duplicate:
            counts["duplicates"] += 1
        else:
            counts["pings"] += 1
    return counts


def _record_parts(record: Any) -> tuple[str, dict[str, str], bytes]:
    if not isinstance(record, Mapping):
        raise BadRequest("a replay record must be a JSON object")
    platform, headers, body = record.get("platform"), record.get("headers"), record.get("body")
    if not isinstance(platform, str) or not isinstance(headers, Mapping) or not isinstance(body, str):
        raise BadRequest("a replay record needs platform (string), headers (object) and body (string)")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise BadRequest("replay record headers must map strings to strings")
    return platform, dict(headers), body.encode("utf-8")
