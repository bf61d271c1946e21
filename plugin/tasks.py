"""Queue jobs: the bulk lane on Huey, and the synchronous wiring of tests and embedding.

With a real queue, webhooks, events and deliveries are not Huey jobs: their rows in the
database are the queue items, read by the live and deliveries lanes (:mod:`.lanes`), so the
accept path is one transaction.  Huey carries the bulk lane: the minute sweep and the customers
it finds with a due wake-up (minimum stays ending, lapse deadlines, month starts), processed by
the Huey consumer, so a month start never delays a webhook; and the report of an unsubscribe to
the shop (``ladder.report_opt_out``), so the unsubscribe page never waits for the shop's API.

With an immediate Huey (tests, ``immediate_queue=True``) every job runs as it is called, and the
service is bound to them: an accepted event is processed before the request returns.

Jobs carry only ``(shop, customer)``; the ledger is the source of truth, so a job that runs
twice or never changes nothing.  Tasks are registered on the Huey instance a process builds
from its settings — no module-level queue — so the web process, `ladder worker` and tests each
wire their own.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from huey import crontab
from huey.exceptions import RetryTask

from .errors import NotFound, NotSupported, RateLimited, Rejected, Unavailable

log = logging.getLogger(__name__)

#: how often a report of an unsubscribe to the shop is retried (rate limited, shop unavailable)
OPT_OUT_RETRIES = 4
#: the first retry's wait when the shop names none (seconds); it doubles with every attempt
OPT_OUT_RETRY_DELAY = 60.0


@dataclass
class Tasks:
    huey: Any
    process: Any
    sweep: Any
    process_inbox: Any
    deliver: Any
    report_opt_out: Any

    def enqueue(self, shop_id: str, customer_id: str) -> None:
        self.process(shop_id, customer_id)

    def enqueue_delivery(self, pk: int) -> None:
        self.deliver(pk)


def register_tasks(huey: Any, service: Any) -> Tasks:
    """Register the processing and sweeping jobs on ``huey`` and bind ``service`` to them."""

    # No Huey retries for customers and inbox rows: a failure is counted where the work lives,
    # with its backoff (customers.retry_at, inbox.retry_at), and the lanes and the sweep find the
    # work again when it is due; after the limit it is set aside or failed (poison isolation).
    @huey.task(name="ladder.process_customer")
    def process_customer(shop_id: str, customer_id: str) -> None:
        try:
            service.process_customer(shop_id, customer_id)
        except NotFound:
            log.warning("nothing to process for %s/%s", shop_id, customer_id)

    @huey.task(name="ladder.process_inbox")
    def process_inbox(pk: int) -> None:
        service.process_inbox(pk)  # enqueues the customers the row touched

    # Deliveries retry through the outbox's own schedule (Retry-After, backoff), not Huey's
    # retries: the outbox row records every attempt and decides when the next one is due.
    @huey.task(name="ladder.deliver")
    def deliver(pk: int) -> None:
        outcome = service.run_delivery(pk)
        if outcome is None:
            return
        if outcome.retry_at is not None:
            deliver.schedule(args=(pk,), eta=outcome.retry_at)
        for ready in outcome.follow_up:  # notices after a grant, a revoke after a late success
            deliver(ready)

    # An unsubscribe through our link, reported to the shop (Shopify's e-mail marketing consent).
    # Huey's retries, each with a wait: Retry-After for RateLimited, else a doubling delay;
    # RetryTask does not count an attempt by itself, so this one takes it off task.retries.
    @huey.task(name="ladder.report_opt_out", retries=OPT_OUT_RETRIES, retry_delay=OPT_OUT_RETRY_DELAY, context=True)
    def report_opt_out(shop_id: str, customer_id: str, task: Any = None) -> None:
        try:
            sent = service.report_opt_out(shop_id, customer_id)
        except NotSupported as exc:
            log.debug("opt-out of %s/%s not reported to the shop: %s", shop_id, customer_id, exc)
        except Rejected as exc:
            log.warning("opt-out of %s/%s refused by the shop (not retried): %s", shop_id, customer_id, exc)
        except (RateLimited, Unavailable) as exc:
            left = task.retries if task is not None else 0
            attempt = OPT_OUT_RETRIES - left + 1
            if left <= 0:
                log.error("opt-out of %s/%s not reported to the shop: failed after %d attempts: %s",
                          shop_id, customer_id, attempt, exc)
                return
            wait = exc.retry_after if isinstance(exc, RateLimited) and exc.retry_after else None
            wait = max(wait or OPT_OUT_RETRY_DELAY * 2 ** (attempt - 1), 1.0)
            task.retries -= 1
            log.info("opt-out of %s/%s: attempt %d failed (%s); retrying in %g s",
                     shop_id, customer_id, attempt, exc, wait)
            raise RetryTask(str(exc), delay=wait) from None
        except NotFound:
            log.warning("opt-out of %s/%s not reported: the shop is no longer configured", shop_id, customer_id)
        else:
            if sent:
                log.info("opt-out of %s/%s reported to the shop", shop_id, customer_id)
            else:
                log.debug("opt-out of %s/%s not reported: the shop is in shadow mode", shop_id, customer_id)

    # Every minute, the bulk lane: customers with a due wake-up (minimum stays ending, lapse
    # deadlines, month starts), each a job of its own on this queue.
    @huey.periodic_task(crontab(minute="*"), name="ladder.sweep")
    def sweep() -> None:
        due = service.due_wakeups()
        for shop_id, customer_id in due:
            process_customer(shop_id, customer_id)
        if due:
            log.info("sweep: %d customers with a due wake-up", len(due))

    tasks = Tasks(huey=huey, process=process_customer, sweep=sweep, process_inbox=process_inbox, deliver=deliver,
                  report_opt_out=report_opt_out)
    # an opt-out is in no table a lane reads: it is a Huey job in both modes (at once when immediate)
    if huey.immediate:
        service.bind_queue(tasks.enqueue, tasks.enqueue_delivery, tasks.process_inbox, opt_out=tasks.report_opt_out)
    else:
        service.bind_queue(_left_to_the_lanes, _left_to_the_lanes, _left_to_the_lanes, opt_out=tasks.report_opt_out)
    return tasks


def _left_to_the_lanes(*_work: object) -> None:
    """The accept path stores the row; the live and deliveries lanes find it there."""
