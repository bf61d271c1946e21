"""``ladder turn start``, ``adjust``, ``exclusions set|show`` and ``audit``: manual inputs by staff
and the audit log.

A manual input is stored as an event with its author and reason (and an audit row); it is not
processed here: a running ``ladder worker`` (or ``ladder serve``) re-decides the customers it
concerns — the live lane finds a customer's unapplied adjustment, the bulk lane's sweep the
customers a shop-wide input made due.
"""
from __future__ import annotations

import getpass
import json
from collections.abc import Callable
from typing import Any

import click

from ..clock import iso
from .base import (
    LadderGroup,
    existing_service,
    main,
    parse_time,
    print_rows,
)

#: what the commands say about when their input takes effect
LANES_NOTE = "a running `ladder worker` (or `ladder serve`) re-decides"


def author_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--author`` of an admin command (default ``$LADDER_AUTHOR``, else the OS user name)."""
    return click.option("--author", envvar="LADDER_AUTHOR", show_envvar=True,
                        help="who performs this, kept in the audit log (default: $LADDER_AUTHOR, "
                             "else your user name)")(f)


#: the longest author name kept (the API's X-Ladder-Author has the same limit)
MAX_AUTHOR = 255


def resolve_author(value: str | None) -> str:
    """The author of an admin command: ``--author``/``$LADDER_AUTHOR``, else the OS user name."""
    if value is not None and value.strip():
        if len(value.strip()) > MAX_AUTHOR:
            raise click.BadParameter(f"at most {MAX_AUTHOR} characters", param_hint="--author")
        return value.strip()
    try:
        name = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in this environment (a container without one)
        name = ""
    if not name:
        raise click.UsageError("name who performs this: --author NAME (or set LADDER_AUTHOR)")
    return name


def _reason_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--reason", required=True, help="why, in words (kept with the input and in the audit log)")(f)


def _key_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--idempotency-key", "idempotency_key",
                        help="name this request: running the command again with the same key stores nothing new")(f)


# ------------------------------------------------------------------ turn
@main.group(cls=LadderGroup)
def turn() -> None:
    """Admin turns: every customer of a shop on the ladder starts a new turn."""


@turn.command(name="start")
@click.option("--shop", required=True, help="the shop whose customers start a new turn")
@_reason_option
@author_option
@_key_option
def turn_start(shop: str, reason: str, author: str | None, idempotency_key: str | None) -> None:
    """Every customer of SHOP on the ladder starts a new turn now (stage kept, lapse cleared)."""
    service = existing_service("using")
    stored = service.start_shop_turn(shop, author=resolve_author(author), reason=reason,
                                     idempotency_key=idempotency_key)
    when = iso(stored["occurred_at"])
    if stored["duplicate"]:
        click.echo(f"turn {stored['event_id']} of shop '{shop}' was already stored at {when} "
                   "(same idempotency key): nothing new")
        return
    click.echo(f"stored turn {stored['event_id']} of shop '{shop}' at {when} by {stored['author']}: {stored['reason']}")
    click.echo(f"{stored['customers_due']} customer(s) on the ladder are due now; {LANES_NOTE} them")


# ------------------------------------------------------------------ adjust
@main.command()
@click.argument("shop")
@click.argument("customer")
@click.option("--stage", help="set the customer's stage (below the current one only with --force)")
@click.option("--force", is_flag=True, help="with --stage: allow a stage below the current one")
@click.option("--new-turn", "new_turn", is_flag=True, help="the customer starts a new turn")
@click.option("--grant", "grant", metavar="REWARD", help="grant a reward of the active programme by hand")
@click.option("--revoke", "revoke", metavar="AWARD_KEY", help="reverse one of the customer's awards")
@_reason_option
@author_option
@_key_option
def adjust(shop: str, customer: str, stage: str | None, force: bool, new_turn: bool, grant: str | None,
           revoke: str | None, reason: str, author: str | None, idempotency_key: str | None) -> None:
    """A manual adjustment of CUSTOMER of SHOP, stored as an event of the customer's ledger with
    its author and reason: exactly one of --stage, --new-turn, --grant, --revoke.  It takes
    effect now (never in the past) and a later reconcile keeps it."""
    chosen = [name for name, given in (("--stage", stage is not None), ("--new-turn", new_turn),
                                       ("--grant", grant is not None), ("--revoke", revoke is not None)) if given]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --stage STAGE, --new-turn, --grant REWARD, --revoke AWARD_KEY"
                               + (f" (not {' and '.join(chosen)})" if chosen else ""))
    if force and stage is None:
        raise click.UsageError("--force goes with --stage")
    action = {"--stage": "set_stage", "--new-turn": "start_turn", "--grant": "grant", "--revoke": "revoke"}[chosen[0]]
    service = existing_service("using")
    stored = service.adjust(shop, customer, action, author=resolve_author(author), reason=reason, stage=stage,
                            force=force, reward=grant, award_key=revoke, idempotency_key=idempotency_key,
                            enqueue=False)
    event = stored.event
    what = _describe(event)
    if stored.duplicate:
        click.echo(f"{what} of customer '{stored.customer_id}' was already stored as {event['id']} at "
                   f"{event['occurred_at']} (same idempotency key): nothing new")
        return
    adjustment = event["adjustment"]
    click.echo(f"stored {event['type']} {event['id']} for customer '{stored.customer_id}' of shop '{shop}' at "
               f"{event['occurred_at']} by {adjustment['author']}: {what}; reason: {adjustment['reason']}")
    click.echo(f"{LANES_NOTE} the customer (`ladder explain {shop} {stored.customer_id}` shows the outcome)")


def _describe(event: dict[str, Any]) -> str:
    data = event.get("adjustment") or {}
    kind = event.get("type")
    if kind == "stage_set":
        return f"stage set to {data.get('stage')}" + (" (forced)" if data.get("force") else "")
    if kind == "turn_started":
        return "a new turn"
    if kind == "reward_granted":
        return f"reward {data.get('reward')} granted"
    return f"award {data.get('award_key')} revoked"


# ------------------------------------------------------------------ exclusions
@main.group(cls=LadderGroup)
def exclusions() -> None:
    """Customers never evaluated (staff, test accounts): by tag or e-mail pattern."""


@exclusions.command(name="set")
@click.option("--shop", required=True)
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="exclude customers with this tag (repeatable)")
@click.option("--email", "emails", multiple=True, metavar="PATTERN",
              help="exclude e-mails matching this shell pattern, case-insensitive: '*@myshop.example' (repeatable)")
@_reason_option
@author_option
@_key_option
def exclusions_set(shop: str, tags: tuple[str, ...], emails: tuple[str, ...], reason: str, author: str | None,
                   idempotency_key: str | None) -> None:
    """Replace SHOP's exclusions from now on with exactly these tags and patterns (none: the
    exclusions end).  Excluded customers are never evaluated: no stage changes, no rewards."""
    service = existing_service("using")
    stored = service.set_exclusions(shop, author=resolve_author(author), reason=reason, tags=list(tags),
                                    emails=list(emails), idempotency_key=idempotency_key)
    listed = _exclusion_words(stored)
    if stored["unchanged"]:
        click.echo(f"shop '{shop}' excludes {listed} already: nothing stored")
        return
    if stored["duplicate"]:
        click.echo(f"exclusions {stored['event_id']} of shop '{shop}' were already stored at "
                   f"{iso(stored['since'])} (same idempotency key): nothing new")
        return
    click.echo(f"stored exclusions {stored['event_id']} of shop '{shop}' from {iso(stored['since'])} by "
               f"{stored['author']}: {listed}")
    click.echo(f"{stored['customers_due']} customer(s) are due now; {LANES_NOTE} them")


@exclusions.command(name="show")
@click.option("--shop", required=True)
@click.option("--json", "as_json", is_flag=True, help="the exclusions document as JSON")
def exclusions_show(shop: str, as_json: bool) -> None:
    """The exclusions in force for SHOP: since when, by whom and why."""
    from ..documents import EXCLUSIONS

    service = existing_service()
    current = service.exclusions(shop)
    if as_json:
        click.echo(json.dumps(EXCLUSIONS.dump(current), ensure_ascii=False))
        return
    if current["event_id"] is None:
        click.echo(f"shop '{shop}' has no exclusions: every customer is evaluated")
        return
    click.echo(f"shop '{shop}' excludes {_exclusion_words(current)}")
    click.echo(f"since {iso(current['since'])}, set by {current['author']}: {current['reason']} ({current['event_id']})")


def _exclusion_words(doc: dict[str, Any]) -> str:
    parts = [f"tag {t}" for t in doc["tags"]] + [f"e-mail {p}" for p in doc["emails"]]
    return ", ".join(parts) if parts else "nobody"


# ------------------------------------------------------------------ audit
@main.command()
@click.option("--shop", help="only this shop's entries")
@click.option("--since", help="only entries at or after this time (ISO 8601 with a zone)")
@click.option("--action", help="only this action (stage_set, turn_started, exclusions_set, inbox_retried, …)")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--cursor", help="the next page (printed on stderr after a full page)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line, with each entry's detail")
def audit(shop: str | None, since: str | None, action: str | None, limit: int, cursor: str | None,
          as_json: bool) -> None:
    """The audit log, newest first: every admin action with its time, shop, author, target and reason."""
    from .. import audit as audit_mod
    from ..documents import AUDIT_ENTRY

    service = existing_service()
    page = audit_mod.entries(service.db, shop_id=shop, since=parse_time(since, "--since"), action=action,
                             limit=limit, cursor=cursor)
    print_rows(page.items, AUDIT_ENTRY, ("id", "at", "shop", "author", "action", "target", "reason"), as_json)
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}", err=True)
