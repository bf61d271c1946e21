"""Queue jobs: the link between the service and Huey.

Jobs carry only ``(shop, customer)``; the ledger is the source of truth, so a job
that runs twice or never (the sweeper re-enqueues) changes nothing.
Tasks are registered on the Huey instance a process builds from its settings —
no module-level queue — so the web process, `ladder worker` and tests each wire
their own.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from huey import crontab

from .errors import NotFound

log = logging.getLogger(__name__)


@dataclass
class Tasks:
    huey: Any
    process: Any
    sweep: Any
    process_inbox: Any
    deliver: Any

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

    # Every minute: unapplied events (a lost enqueue, a crash), due wake-ups (minimum stays
    # ending, lapse deadlines, month starts), inbox rows left unprocessed, deliveries due.
    @huey.periodic_task(crontab(minute="*"), name="ladder.sweep")
    def sweep() -> None:
        customers = service.sweep()
        for pk in service.unprocessed_inbox():
            process_inbox(pk)
        for pk in service.due_deliveries():
            deliver(pk)
        if customers:
            log.info("sweep: %d customers with unapplied events or a due wake-up", customers)

    tasks = Tasks(huey=huey, process=process_customer, sweep=sweep, process_inbox=process_inbox, deliver=deliver)
    service.bind_queue(tasks.enqueue, tasks.enqueue_delivery)
    return tasks
