"""``ladder customers`` and ``ladder stats``: which customers are where (from the database; read-only)."""
from __future__ import annotations

import json
from typing import Any

import click

from .base import existing_service, main

#: the columns of ``ladder customers`` (the summary's, without the processing times)
CUSTOMER_COLUMNS = ("customer_id", "email", "stage", "subgroup", "lapsed", "turn", "since", "next_wake_at",
                    "rule_version")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).replace("\n", " ").replace("\t", " ")


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    """Rows as aligned columns (two spaces apart), a header first."""
    cells = [tuple(header), *(tuple(_cell(v) for v in row) for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]


@main.command()
@click.argument("shop")
@click.option("--stage", help="only customers in this stage (a stage id the programme lacks finds nobody)")
@click.option("--subgroup", help="only customers in this subgroup")
@click.option("--lapsed/--not-lapsed", default=None, help="only lapsed customers / only the others")
@click.option("--email", help="the customer with this e-mail (case-insensitive; a guest linked to an account "
                              "shows the account)")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500), help="customers per page")
@click.option("--cursor", help="continue after the previous page (the cursor it printed on stderr)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def customers(shop: str, stage: str | None, subgroup: str | None, lapsed: bool | None, email: str | None,
              limit: int, cursor: str | None, as_json: bool) -> None:
    """SHOP's customers in customer-id order, a page at a time: stage, subgroup, lapse, turn and
    since when.  When there is more, the next page's --cursor is printed on stderr."""
    from .. import customer_lists
    from ..documents import CUSTOMER_SUMMARY

    if cursor is not None:
        try:
            customer_lists.decode_cursor(cursor)
        except customer_lists.BadCursor as exc:
            raise click.BadParameter(str(exc), param_hint="--cursor") from None
    service = existing_service()
    service.shop(shop)
    page = customer_lists.list_customers(service.db, shop, stage=stage, subgroup=subgroup, lapsed=lapsed,
                                         email=email, limit=limit, cursor=cursor)
    docs = [CUSTOMER_SUMMARY.dump(item) for item in page.items]
    if as_json:
        for doc in docs:
            click.echo(json.dumps(doc, ensure_ascii=False))
    elif docs:
        for line in _table(CUSTOMER_COLUMNS, [tuple(doc[c] for c in CUSTOMER_COLUMNS) for doc in docs]):
            click.echo(line)
    if not docs:
        click.echo("(no customers)", err=True)
    if page.next_cursor is not None:
        click.echo(f"more: --cursor {page.next_cursor}", err=True)


@main.command()
@click.argument("shop")
@click.option("--json", "as_json", is_flag=True, help="the stats document (as GET …/stats returns it)")
def stats(shop: str, as_json: bool) -> None:
    """How many of SHOP's customers are in each stage × subgroup (lapsed or not; '-' = not on the
    ladder yet), and its awards per status and per reward."""
    from .. import customer_lists
    from ..clock import utcnow
    from ..documents import SHOP_STATS

    service = existing_service()
    service.shop(shop)
    programme = service.programme(shop)[0]
    doc = SHOP_STATS.dump(customer_lists.stats(
        service.db, shop, programme_version=programme.version, stage_order=[s.id for s in programme.stages],
        subgroup_order=[g.id for g in programme.subgroups], as_of=utcnow()))
    if as_json:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    people, awards = doc["customers"], doc["awards"]
    click.echo(f"shop {doc['shop']} · programme {doc['programme_version']} · as of {doc['as_of']}")
    click.echo("")
    click.echo(f"customers: {people['total']} ({people['on_ladder']} on the ladder, {people['lapsed']} lapsed)")
    if people["by_stage"]:
        for line in _table(("stage", "subgroup", "lapsed", "customers"),
                           [(g["stage"], g["subgroup"], g["lapsed"], g["count"]) for g in people["by_stage"]]):
            click.echo("  " + line)
    click.echo("")
    click.echo(f"awards: {awards['total']}")
    counted = [(status, n) for status, n in awards["by_status"].items() if n]
    if counted:
        for line in _table(("status", "awards"), counted):
            click.echo("  " + line)
    if awards["by_reward"]:
        click.echo("")
        click.echo("awards per reward:")
        for line in _table(("reward", "status", "awards"),
                           [(a["reward"], a["status"], a["count"]) for a in awards["by_reward"]]):
            click.echo("  " + line)
