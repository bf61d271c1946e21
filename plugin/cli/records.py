"""``ladder explain``, ``import``, ``sync``, ``replay``, ``inbox-export``, ``customer-data``: a shop's records in and out."""
from __future__ import annotations

import json
import sys
from typing import TextIO

import click

from .base import (
    cli_settings,
    existing_service,
    main,
    parse_time,
    read_events,
    read_labelled,
)


@main.command()
@click.argument("shop")
@click.argument("customer")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default=None,
              help="text: a report to read; json: the API's document  [default: text on a terminal, else json]")
@click.option("--as-of", "as_of", help="explain the customer as of this time (ISO 8601 with a zone; default: now)")
def explain(shop: str, customer: str, fmt: str | None, as_of: str | None) -> None:
    """Why CUSTOMER of SHOP is where they are, what is missing for the next stage, when they
    lapse, and each reward's fate (from the database; read-only)."""
    from ..documents import EXPLANATION
    from ..explanations import render_text

    when = parse_time(as_of, "--as-of")
    service = existing_service()
    doc = service.explanation(shop, customer, when)
    if (fmt or ("text" if sys.stdout.isatty() else "json")) == "text":
        click.echo(render_text(doc, shop, customer), nl=False)
    else:
        click.echo(json.dumps(EXPLANATION.dump(doc), indent=2, ensure_ascii=False))


@main.command(name="import")
@click.argument("events", type=click.File("r"))
@click.option("--shop", default="default", show_default=True)
@click.option("--live-from", "live_from", help="the shop goes live at this time (default: now); "
                                              "awards before it are recorded as historical, never paid")
def import_(events: TextIO, shop: str, live_from: str | None) -> None:
    """Load a shop's history (JSON lines); no rewards are paid for the past."""
    from ..service import LadderService

    service = LadderService(cli_settings())
    labels, items = read_labelled(events, events.name)
    totals = service.import_events(shop, items, labels=labels, live_from=parse_time(live_from, "--live-from"),
                                   progress=lambda msg: click.echo(msg, err=True))
    click.echo(f"imported {totals['accepted']} events ({totals['duplicates']} already known) "
               f"for {totals['customers']} customers into shop '{shop}'")


@main.command()
@click.argument("shop")
@click.option("--since", help="only what changed since this time (default: everything)")
@click.option("--live-from", "live_from", help="for a first import: the shop goes live at this time (default: now)")
def sync(shop: str, since: str | None, live_from: str | None) -> None:
    """Pull SHOP's customers and orders through its API: the initial import of its history
    (no rewards paid for the past) or the reconciliation of anything webhooks missed."""
    from ..service import LadderService

    service = LadderService(cli_settings())
    adapter = service.adapter(shop)
    events = adapter.sync(parse_time(since, "--since"), lambda msg: click.echo(msg, err=True))
    totals = service.import_events(shop, events, live_from=parse_time(live_from, "--live-from"),
                                   progress=lambda msg: click.echo(msg, err=True), source=adapter.platform)
    click.echo(f"synced {totals['accepted']} new events ({totals['duplicates']} already known) "
               f"for {totals['customers']} customers of shop '{shop}'")


@main.command()
@click.argument("records", type=click.File("r"))
def replay(records: TextIO) -> None:
    """Re-inject recorded webhooks (JSON lines {platform, headers, body}, as `ladder inbox-export`
    writes them), e.g. after an outage. Signatures are verified again; duplicates are no-ops."""
    from .. import inbox
    from ..service import LadderService

    service = LadderService(cli_settings())
    counts = inbox.replay(service.db, service.shops, read_events(records, records.name),
                          on_reject=lambda n, msg: click.echo(f"record {n}: {msg}", err=True))
    click.echo(", ".join(f"{k}: {v}" for k, v in counts.items()))
    click.echo("run `ladder worker` (or `ladder serve`) to process what was accepted")


@main.command(name="inbox-export")
@click.option("--since", help="only webhooks received since this time")
def inbox_export(since: str | None) -> None:
    """Write the recorded webhooks as JSON lines (the `ladder replay` format) to stdout."""
    from .. import inbox

    service = existing_service()
    for record in inbox.export(service.db, since=parse_time(since, "--since")):
        click.echo(json.dumps(record, ensure_ascii=False))


@main.command(name="customer-data")
@click.argument("shop")
@click.argument("customer")
def customer_data(shop: str, customer: str) -> None:
    """Everything stored about CUSTOMER (answers a shop's customers/data_request; read-only)."""
    service = existing_service()
    click.echo(json.dumps(service.customer_data(shop, customer), indent=2, ensure_ascii=False))
