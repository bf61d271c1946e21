"""Lanes: the consumers that read their work straight from the database.

The accept path (a webhook, the events API) is one short transaction: the ``inbox`` row or the
stored ``events`` rows *are* the queue items, so nothing is enqueued anywhere else and a request
never waits for a second store.  Three lanes, each with its own threads, pick the work up:

* **live** (:class:`LiveLane`) — received inbox rows, then customers with unapplied events,
  oldest first, polled every ``queue_poll_seconds`` (0.1 s: an accepted event is applied within
  1 s p95).  Only webhooks and events travel here, so they are never behind bulk work.
* **deliveries** (:class:`DeliveryLane`) — due outbox rows.  Each shop's deliveries run one at a
  time and at most ``delivery_rate_per_shop`` calls per second (the platforms' rate limits);
  shops run in parallel in a small thread pool, so a shop whose API hangs delays only itself.
* **bulk** — the Huey queue (:mod:`.tasks`): the minute sweep and the customers it finds with a
  due wake-up (minimum stays ending, lapse deadlines, month starts: at the first of a month
  that is most customers), processed by the Huey consumer, never by the live lane.

Several processes may run the same lanes (``ladder worker`` on several machines).  On PostgreSQL
an advisory lock per inbox row, customer or shop (:func:`claim`) makes each piece of work run in
one process at a time; processing is idempotent anyway (a row no longer ``received`` is left
alone; a customer re-folded changes nothing), so on SQLite — one machine, one writer at a
time — no claim is needed.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from . import inbox, ledger
from .clock import utcnow
from .errors import NotFound
from .outbox import running

if TYPE_CHECKING:
    from .service import LadderService

log = logging.getLogger(__name__)

#: how much one poll of the live lane takes on at most, before it looks for new work again
LIVE_BATCH = 100
#: due deliveries read per poll
DELIVERY_BATCH = 200
#: idle lanes still wake this often to notice a stop
_MAX_IDLE = 1.0


def _lock_key(*parts: str) -> int:
    """A signed 64-bit key for ``pg_try_advisory_lock`` from the parts' text."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def claim(db: sa.Engine, *parts: str) -> Iterator[bool]:
    """Whether this process may do the work named by ``parts`` now.

    PostgreSQL: a session advisory lock, held until the block ends (another process holding it
    → False: someone else is on it).  Other backends: always True.
    """
    if db.dialect.name != "postgresql":
        yield True
        return
    key = _lock_key(*parts)
    with db.connect() as conn:
        got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        conn.commit()  # the lock is the session's, not a transaction's: end the implicit one
        try:
            yield got
        finally:
            if got:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()


class Lane(threading.Thread):
    """A daemon thread that runs :meth:`step` until stopped, sleeping ``poll_seconds`` when a step
    found nothing to do.  An exception in a step is logged and the lane goes on: one bad piece of
    work must not stop the consumer (what failed is recorded where the work lives)."""

    lane = "lane"

    def __init__(self, service: LadderService, poll_seconds: float):
        super().__init__(name=f"ladder-{self.lane}", daemon=True)
        self.service = service
        self.poll_seconds = poll_seconds
        self._stop_event = threading.Event()

    def step(self) -> int:  # pragma: no cover - overridden
        """Do one batch of work; return how much was done (0: idle)."""
        raise NotImplementedError

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                done = self.step()
            except Exception:  # the lane must outlive any one failure
                log.exception("%s lane: a step failed; going on", self.lane)
                done = 0
            if not done:
                self._stop_event.wait(min(self.poll_seconds, _MAX_IDLE))

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the lane to stop after its current piece of work; True when it has."""
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)
        return not self.is_alive()


class LiveLane(Lane):
    """Received inbox rows, then customers with unapplied events (see the module docstring)."""

    lane = "live"

    def step(self) -> int:
        service = self.service
        done = 0
        for pk in inbox.sweep(service.db, older_than=timedelta(0))[:LIVE_BATCH]:
            if self._stop_event.is_set():
                return done
            with claim(service.db, "inbox", str(pk)) as mine:
                if mine:
                    self._guarded(f"inbox row {pk}", lambda pk=pk: service.process_inbox(pk))
                    done += 1
        for shop_id, customer_id in ledger.customers_with_unapplied(service.db)[:LIVE_BATCH]:
            if self._stop_event.is_set():
                return done
            if shop_id not in service.shops:
                continue
            with claim(service.db, "customer", shop_id, customer_id) as mine:
                if mine:
                    self._guarded(f"customer {shop_id}/{customer_id}",
                                  lambda s=shop_id, c=customer_id: service.process_customer(s, c))
                    done += 1
        return done

    @staticmethod
    def _guarded(what: str, work: Callable[[], object]) -> None:
        try:
            work()
        except NotFound:
            pass  # a guest alias whose events now belong to its account
        except Exception:
            # The work stays where it is (the row `received`, the events unapplied) and is tried
            # again at the next poll; what keeps failing is recorded by the processing itself.
            log.exception("live lane: %s failed", what)


class DeliveryLane(Lane):
    """Due outbox rows: shops in parallel, each shop's deliveries in order and rate-limited."""

    lane = "deliveries"

    def __init__(self, service: LadderService, poll_seconds: float, workers: int = 4,
                 rate_per_shop: float = 2.0):
        super().__init__(service, poll_seconds)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ladder-delivery")
        self.min_interval = 1.0 / rate_per_shop if rate_per_shop > 0 else 0.0
        self._busy: dict[str, Future[None]] = {}
        self._last_call: dict[str, float] = {}

    def step(self) -> int:
        self._busy = {shop: f for shop, f in self._busy.items() if not f.done()}
        by_shop: dict[str, list[int]] = {}
        for pk, shop_id in running.due_by_shop(self.service.db, utcnow(), DELIVERY_BATCH):
            if shop_id not in self._busy:
                by_shop.setdefault(shop_id, []).append(pk)
        for shop_id, pks in by_shop.items():
            self._busy[shop_id] = self.pool.submit(self._run_shop, shop_id, pks)
        return sum(len(p) for p in by_shop.values())

    def _run_shop(self, shop_id: str, pks: list[int]) -> None:
        with claim(self.service.db, "deliveries", shop_id) as mine:
            if not mine:
                return
            for pk in pks:
                if self._stop_event.is_set():
                    return
                wait = self._last_call.get(shop_id, 0.0) + self.min_interval - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self._last_call[shop_id] = time.monotonic()
                try:
                    self.service.run_delivery(pk)  # retries are rows due later; follow-ups are due now
                except Exception:
                    log.exception("deliveries lane: delivery %s failed", pk)

    def stop(self, timeout: float = 10.0) -> bool:
        stopped = super().stop(timeout)
        self.pool.shutdown(wait=True, cancel_futures=True)
        return stopped


def start_lanes(service: LadderService, names: tuple[str, ...] = ("live", "deliveries")) -> list[Lane]:
    """Start the named database lanes for ``service`` (bulk is the Huey consumer); return them."""
    settings = service.settings
    lanes: list[Lane] = []
    if "live" in names:
        lanes.append(LiveLane(service, settings.queue_poll_seconds))
    if "deliveries" in names:
        lanes.append(DeliveryLane(service, max(settings.queue_poll_seconds, 0.5),
                                  workers=settings.delivery_workers, rate_per_shop=settings.delivery_rate_per_shop))
    for lane in lanes:
        lane.start()
    return lanes


def stop_lanes(lanes: list[Lane], timeout: float = 10.0) -> bool:
    """Stop every lane; True when all have ended."""
    stopped = [lane.stop(timeout) for lane in lanes]  # every lane, even after one fails to stop
    return all(stopped)
