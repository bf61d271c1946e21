"""``ladder points redeem|adjust``: a customer's points spent, added or removed (see :mod:`..redemptions`)."""
from __future__ import annotations

import json
from typing import Any

import click

from .admin import _key_option, _reason_option, author_option, resolve_author
from .base import LadderGroup, existing_service, main


@main.group(cls=LadderGroup)
def points() -> None:
    """A customer's points: spend them (redeem), add or remove them by hand (adjust)."""


def _show(result: dict[str, Any], as_json: bool) -> None:
    from ..documents import POINTS_INPUT

    doc = POINTS_INPUT.dump(result)
    if as_json:
        click.echo(json.dumps(doc, ensure_ascii=False))
        return
    after = doc.get("points_after") or {}
    if doc["type"] == "points_redeemed":
        what = f"redemption {doc['id']}: {doc['points']} points = {doc['value']} {doc['currency']}"
    else:
        what = f"points adjusted by {doc['points']:+d}"
    if doc["duplicate"]:
        click.echo(f"{what} of customer '{doc['customer_id']}' was already made at {doc['at']}: nothing new")
    else:
        click.echo(f"{what} for customer '{doc['customer_id']}' at {doc['at']} by {doc['author']}")
    award = doc.get("award")
    if award is not None:
        click.echo(f"award {award['key']}: {award['status'] or 'not processed yet'}"
                   + (f" ({award['reason']})" if award.get("reason") else ""))
    click.echo(f"balance now {after.get('balance', 0)} points"
               + (f" ({after['value']} {after['currency']})" if after.get("value") is not None else "")
               + (f", debt {after['debt']}" if after.get("debt") else ""))


@points.command(name="redeem")
@click.argument("shop")
@click.argument("customer")
@click.option("--id", "redemption_id", required=True,
              help="the redemption's id (an idempotency key): the same id again is the same redemption")
@click.option("--points", "amount", required=True, type=click.IntRange(1), help="points to spend")
@author_option
@click.option("--json", "as_json", is_flag=True, help="the redemption as JSON")
def redeem(shop: str, customer: str, redemption_id: str, amount: int, author: str | None, as_json: bool) -> None:
    """Spend AMOUNT points of CUSTOMER of SHOP now: first-expiring-first, paid out in the shop as
    store credit or a one-time code.  More than the balance is refused (exit 1), nothing changes."""
    service = existing_service("using")
    _show(service.redeem_points(shop, customer, redemption_id, amount, author=resolve_author(author)), as_json)


@points.command(name="adjust")
@click.argument("shop")
@click.argument("customer")
@click.option("--points", "amount", required=True, type=int, help="points to add (> 0) or remove (< 0)")
@click.option("--expires-days", type=click.IntRange(1, 36_500), help="points added last this many days "
              "(default: they never expire)")
@_reason_option
@author_option
@_key_option
@click.option("--json", "as_json", is_flag=True, help="the adjustment as JSON")
def adjust(shop: str, customer: str, amount: int, expires_days: int | None, reason: str, author: str | None,
           idempotency_key: str | None, as_json: bool) -> None:
    """Add or remove points of CUSTOMER of SHOP by hand, with the reason (kept in the audit log)."""
    service = existing_service("using")
    _show(service.adjust_points(shop, customer, amount, author=resolve_author(author), reason=reason,
                                expires_days=expires_days, idempotency_key=idempotency_key), as_json)
