"""``ladder inbox …`` and ``ladder deliveries …``: failures listed and sent round again."""
from __future__ import annotations

import click

from ..statuses import AwardStatus
from .admin import author_option, resolve_author
from .base import (
    LadderGroup,
    echo_retry,
    existing_service,
    main,
    print_rows,
    retry_args,
)


@main.group(cls=LadderGroup)
def inbox() -> None:
    """Received webhooks: list them by status, send failed ones round again."""


@inbox.command(name="list")
@click.option("--shop", help="only this shop's rows")
@click.option("--status", type=click.Choice(["received", "processed", "ignored", "failed"]))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--before", type=click.IntRange(1, 2**63 - 1), help="only rows with a smaller pk (the next page)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def inbox_list(shop: str | None, status: str | None, limit: int, before: int | None, as_json: bool) -> None:
    """Inbox rows, newest first: pk, status, shop, topic, times and the reason (never the body)."""
    from .. import inbox_failures as inbox_mod
    from ..documents import INBOX_ROW

    service = existing_service()
    rows = inbox_mod.list_rows(service.db, shop_id=shop, status=status, limit=limit, before=before)
    print_rows(rows, INBOX_ROW, ("pk", "status", "shop", "platform", "topic", "delivery_id", "received_at",
                            "processed_at", "error"), as_json)


@inbox.command(name="retry")
@click.argument("pks", nargs=-1, type=int)
@click.option("--status", type=click.Choice(["failed", "ignored"]), help="every row with this status")
@click.option("--shop", help="only this shop's rows")
@click.option("--now", "process_now", is_flag=True,
              help="process the retried rows in this process at once and print each outcome")
@click.option("--reason", help="why, kept in the audit log")
@author_option
def inbox_retry(pks: tuple[int, ...], status: str | None, shop: str | None, process_now: bool,
                reason: str | None, author: str | None) -> None:
    """Set failed (or ignored) rows back to received, so the consumer processes them again — once
    the cause is fixed.  Idempotent: a row already received is left alone."""
    from .. import inbox_failures as inbox_mod

    retry_args(pks, status)
    service = existing_service("using")
    result = inbox_mod.retry(service.db, pks, status=status, shop_id=shop, author=resolve_author(author),
                             reason=reason)
    if process_now:
        for pk in result.retried:
            service.process_inbox(pk)
        outcome = {row["pk"]: row for row in inbox_mod.list_rows(service.db, limit=inbox_mod.LIST_MAX)
                   if row["pk"] in result.retried}
        for pk in result.retried:
            row = outcome.get(pk) or {"status": "?", "error": None}
            click.echo(f"inbox row {pk}: {row['status']}" + (f": {row['error']}" if row["error"] else ""))
        return echo_retry("inbox row", result, "processed above")
    stale = inbox_mod.stale(service.db, result.retried)
    for pk in stale:
        click.echo(f"inbox row {pk}: arrived more than {inbox_mod.SWEEP_GIVE_UP.days} days ago, so the consumer's "
                   "sweep no longer looks at it: process it with `ladder inbox retry --now`", err=True)
    echo_retry("inbox row", result, "a running `ladder worker` (or `ladder serve`) processes them")


@main.group(cls=LadderGroup)
def deliveries() -> None:
    """Outbox deliveries (grants, revokes, notices): list them by status, retry failed ones."""


@deliveries.command(name="list")
@click.option("--shop", help="only this shop's deliveries")
@click.option("--status", type=click.Choice(["pending", "delivered", "failed", "needs_manual_action", "shadow",
                                             "cancelled"]))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--before", type=click.IntRange(1, 2**63 - 1), help="only rows with a smaller pk (the next page)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def deliveries_list(shop: str | None, status: str | None, limit: int, before: int | None, as_json: bool) -> None:
    """Deliveries, newest first: pk, status, action, award key, attempts and the last error."""
    from ..documents import DELIVERY_ROW
    from ..outbox import failures

    service = existing_service()
    rows = failures.list_rows(service.db, shop_id=shop, status=status, limit=limit, before=before)
    print_rows(rows, DELIVERY_ROW, ("pk", "status", "shop", "action", "channel", "award_key", "attempts",
                               "updated_at", "last_error"), as_json)


@deliveries.command(name="retry")
@click.argument("pks", nargs=-1, type=int)
@click.option("--status", type=click.Choice(["failed"]), help="every failed delivery")
@click.option("--shop", help="only this shop's deliveries")
@click.option("--reason", help="why, kept in the audit log")
@author_option
def deliveries_retry(pks: tuple[int, ...], status: str | None, shop: str | None, reason: str | None,
                     author: str | None) -> None:
    """Set failed deliveries back to pending (due now); a failed grant's award is due again.
    Idempotent: a pending delivery is left alone."""
    from ..outbox import failures

    retry_args(pks, status)
    service = existing_service("using")
    result = failures.retry(service.db, pks, status=status, shop_id=shop, author=resolve_author(author),
                            reason=reason)
    echo_retry("delivery", result, "a running `ladder worker` (or `ladder serve`) delivers them")


@main.group(cls=LadderGroup)
def awards() -> None:
    """Awards by status, and the staff worklist: rewards no shop API carries, marked done by hand."""


@awards.command(name="list")
@click.argument("shop")
@click.option("--status", type=click.Choice([str(s) for s in AwardStatus]),
              help="only awards with this status (the worklist: needs_manual_action)")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--before", type=click.IntRange(1, 2**63 - 1), help="only awards with a smaller pk (the next page)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def awards_list(shop: str, status: str | None, limit: int, before: int | None, as_json: bool) -> None:
    """SHOP's awards, newest first: pk, status, customer, reward, value, granted, reason (and who did it by hand)."""
    from ..documents import AWARD_ROW

    service = existing_service()
    rows = service.awards(shop, status=status, before=before, limit=limit)
    print_rows(rows, AWARD_ROW, ("pk", "status", "customer_id", "reward_id", "type", "value", "granted_at", "reason",
                                "done_by", "done_note"), as_json)


@awards.command(name="done")
@click.argument("shop")
@click.argument("pk", type=click.IntRange(1, 2**63 - 1))
@click.option("--note", required=True, help="what was done (e.g. the parcel number), kept with the award")
@author_option
def awards_done(shop: str, pk: int, note: str, author: str | None) -> None:
    """Staff carried out award PK of SHOP by hand (a gift sent, a service booked): it is delivered,
    with who, when and the note, and the customer is told as after any delivery."""
    service = existing_service("using")
    done = service.mark_award_done(shop, pk, author=resolve_author(author), note=note)
    award = done.award
    if not done.changed:
        click.echo(f"award {pk}: already done by {award['done_by']} with this note; nothing changed")
        return
    click.echo(f"award {pk} ({award['reward_id']} for customer {award['customer_id']}): delivered, done by "
               f"{award['done_by']}")
    if done.deliveries:
        click.echo(f"{len(done.deliveries)} notice(s) to the customer queued; a running `ladder worker` "
                   "(or `ladder serve`) sends them")
