"""The unsubscribe link of promotional e-mails: ``GET`` / ``POST /unsubscribe/<token>`` (public).

The token names the shop and the customer and is signed by the server
(:func:`loyalty_ladder.unsubscribe_links.unsubscribe_token`), so no admin token is needed and nobody can
unsubscribe someone else.  ``GET`` (the link a customer opens; mail scanners open it too) only
shows a page with a button; ``POST`` (that button, or a mail client's one-click unsubscribe,
RFC 8058) records the opt-out.  Answers:

* 200 — an HTML page: the confirmation button (``GET``), or "unsubscribed" (``POST``);
* 404 JSON — a token that is not genuine, an unknown shop, or a customer we hold no event of.

The opt-out is a customer event like the shop's own: ``customer_updated`` with
``accepts_marketing: false``, source ``unsubscribe``, its id derived from the consent it
replaces (``ladder:unsubscribe:<hash of the customer and the event that last said yes>``), so a
second click, a retried POST or two at once store nothing new; a customer who already has no
consent gets the same page and no event.  The customer is then processed as after any event:
the fact ``accepts_marketing`` turns false, and every later offer is cancelled for lack of consent.
A newly stored opt-out is also reported to the shop where its API has a consent field (Shopify),
by a job on the bulk lane (``service.opt_out_recorded``), never inside this request.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from html import escape
from typing import Any

import sqlalchemy as sa
from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint

from .. import identity, store
from ..clock import iso, utcnow
from ..errors import Conflict, NotFound
from ..globals import ladder
from ..notify import language
from ..unsubscribe_links import read_unsubscribe_token, unsubscribe_secret
from .responses import error_responses

URL_PREFIX = ""
blp = Blueprint("unsubscribe", __name__, description="The unsubscribe link of promotional e-mails (public, signed)")

SOURCE = "unsubscribe"
ERRORS = error_responses(_404="not a genuine unsubscribe link, or nobody to unsubscribe")
HTML = {"description": "an HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}

TEXTS = {
    "en": {"title": "Unsubscribe", "ask": "Stop receiving offers from {shop} by e-mail?", "button": "Unsubscribe",
           "done": "You are unsubscribed: {shop} sends you no more offers. Notices of what you earned still reach you."},
    "de": {"title": "Abmelden", "ask": "Keine Angebote mehr von {shop} per E-Mail erhalten?", "button": "Abmelden",
           "done": "Sie sind abgemeldet: {shop} sendet Ihnen keine Angebote mehr. Mitteilungen über das, was Sie "
                   "erhalten haben, bekommen Sie weiterhin."},
}


def _who(token: str) -> tuple[str, str]:
    """The shop and the customer (as the ledger knows them) of a genuine token, else NotFound."""
    state = ladder()
    found = read_unsubscribe_token(unsubscribe_secret(state.settings), token)
    if found is None or found[0] not in state.service.shops:
        raise NotFound("not a genuine unsubscribe link", {"token": ["unknown or tampered with"]})
    shop_id, customer_id = found
    with state.service.db.connect() as conn:
        customer_id = identity.canonical(conn, shop_id, customer_id)
    return shop_id, customer_id


def _consent_events(conn: sa.Connection, shop_id: str, customer_id: str) -> list[Any]:
    """The customer's events that say anything about marketing consent, in ledger order."""
    ev = store.events
    ids = identity.ids_of(conn, shop_id, customer_id)
    rows = conn.execute(sa.select(ev.c.event_id, ev.c.occurred_at, ev.c.body)
                        .where(ev.c.shop_id == shop_id, ev.c.customer_id.in_(ids))).all()
    if not rows:
        raise NotFound("nobody to unsubscribe", {"token": ["no customer with this link"]})
    said = [r for r in rows if ((r.body or {}).get("customer") or {}).get("accepts_marketing") is not None]
    return sorted(said, key=lambda r: (r.occurred_at, r.event_id))


def opt_out_event(shop_id: str, customer_id: str, consent: Any | None, now: datetime) -> dict[str, Any]:
    """The ``customer_updated`` event that records the opt-out replacing ``consent`` (the event
    that last said yes, or None); its id and time depend only on that, and on ``now`` for a
    first click (a later time than the consent's, so it wins the ledger order)."""
    replaced = consent.event_id if consent is not None else ""
    digest = hashlib.sha256(f"{customer_id}\n{replaced}".encode()).hexdigest()[:32]
    at = now if consent is None or now > consent.occurred_at else consent.occurred_at + timedelta(seconds=1)
    return {"id": f"ladder:unsubscribe:{digest}", "type": "customer_updated", "customer_id": customer_id,
            "occurred_at": iso(at), "customer": {"accepts_marketing": False}}


def unsubscribe(shop_id: str, customer_id: str, now: datetime | None = None) -> bool:
    """Record the opt-out (see the module docstring); False when there was no consent to withdraw."""
    service = ladder().service
    with service.db.connect() as conn:
        said = _consent_events(conn, shop_id, customer_id)
    if not said or said[-1].body["customer"]["accepts_marketing"] is not True:
        return False
    try:
        stored = service.accept_events(shop_id, [opt_out_event(shop_id, customer_id, said[-1], now or utcnow())],
                                       source=SOURCE)
    except Conflict:  # the same opt-out with another instant, stored by a concurrent click
        pass
    else:
        if stored.accepted:  # tell the shop too: a job on the bulk lane, never in this request
            service.opt_out_recorded(shop_id, customer_id)
    return True


def _page(shop_id: str, body: str) -> Response:
    lang = language(request.accept_languages.best_match(list(TEXTS)) if request.accept_languages else None)
    texts = TEXTS.get(lang, TEXTS["en"])
    shop = ladder().service.shops[shop_id]
    name = escape(shop.domain or shop.id)
    html = (f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8"><title>{texts["title"]}</title>'
            f'<meta name="robots" content="noindex"></head>\n<body style="font-family: Helvetica, Arial, sans-serif;">'
            f'{body.format(**{k: v.format(shop=name) for k, v in texts.items()})}</body></html>\n')
    return Response(html, status=200, mimetype="text/html", headers={"Cache-Control": "no-store"})


@blp.route("/unsubscribe/<string:token>")
class Unsubscribe(MethodView):
    @blp.doc(security=[], responses={"200": HTML, **ERRORS})
    def get(self, token: str):
        """The page behind an e-mail's unsubscribe link: a button that confirms (nothing changes yet)."""
        shop_id, customer_id = _who(token)
        with ladder().service.db.connect() as conn:
            _consent_events(conn, shop_id, customer_id)  # 404 for nobody
        return _page(shop_id, '<p>{ask}</p><form method="post"><button type="submit">{button}</button></form>')

    @blp.doc(security=[], responses={"200": HTML, **ERRORS})
    def post(self, token: str):
        """Unsubscribe from offers: records ``customer_updated`` with ``accepts_marketing: false``."""
        shop_id, customer_id = _who(token)
        unsubscribe(shop_id, customer_id)
        return _page(shop_id, "<p>{done}</p>")
