"""Customer notifications: a real local SMTP server (aiosmtpd), the signed webhook (responses),
templates per type and locale, and marketing consent."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
import requests
import responses
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from responses import matchers

from loyalty_ladder.adapters.base import parse_retry_after, verify_hmac_base64
from loyalty_ladder.config import Settings
from loyalty_ladder.errors import ConfigError, RateLimited, Rejected, Unavailable
from loyalty_ladder.notify import (
    NO_CONSENT,
    Notice,
    Notifier,
    consent_problem,
    is_promotional,
    language,
    parse_smtp_url,
)
from loyalty_ladder.shop import ShopConfig

# aiosmtpd warns that AUTH without TLS is unsafe: true, and irrelevant on 127.0.0.1 in a test.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

SHOP = ShopConfig(id="demo", platform="shopify", domain="demo.myshopify.com", webhook_secret="hush",
                  notify_webhook_url="https://hooks.example/ladder", currency="EUR")
AWARD = {"key": "demo/c-1/second-order/stage/first_purchase/1", "reward": "second-order", "type": "discount",
         "status": "delivered", "params": {"code": "AGAIN-1A2B3C4D", "amount": "10.00", "minimum_order": "50.00",
                                           "expires_at": "2026-04-01T10:00:00Z", "usage_limit": 1},
         "value": "10.00", "stage": "first_purchase", "turn": 1, "customer_id": "c-1", "scope": "stage",
         "scope_ref": "first_purchase/1", "granted_at": "2026-03-02T10:00:00Z"}


def notice(channel: str = "email", *, locale: str | None = "de", award: dict | None = None,
           event: str = "award.granted", **customer: Any) -> Notice:
    who = {"customer_id": "c-1", "email": "ana@example.com", "locale": locale, "accepts_marketing": False,
           "tags": [], **customer}
    return Notice(channel=channel, event=event, event_id="ladder-delivery-7-1", shop_id="demo",
                  award=award or AWARD, customer=who)


# ---------------------------------------------------------------- a real SMTP server
class Inbox:
    """aiosmtpd handler: keeps what it received; refuses recipients when told to."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.refuse: str | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 Message accepted"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = _free_port()

    def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = auth_data.login == b"ladder" and auth_data.password == b"s3cret"
        return AuthResult(success=ok)

    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=authenticate,
                            auth_require_tls=False, auth_required=True)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def notifier_for(port: int | None, **kw: Any) -> Notifier:
    url = f"smtp://ladder:s3cret@127.0.0.1:{port}?from=loyalty@shop.example" if port else None
    return Notifier(Settings(smtp_url=url, admin_token="test-admin-token"), {"demo": SHOP}, **kw)


def test_email_in_the_customers_locale_with_text_and_html(smtp_server):
    inbox, port = smtp_server
    message_id = notifier_for(port).send(notice(locale="de-AT"))
    ((sender, rcpts, msg),) = inbox.messages
    assert sender == "loyalty@shop.example" and rcpts == ["ana@example.com"]
    assert msg["Message-ID"].strip() == message_id and msg["X-Ladder-Event-Id"] == "ladder-delivery-7-1"
    assert msg["Content-Language"] == "de" and msg["Subject"] == "Ihr Rabattcode über 10.00 EUR"
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "AGAIN-1A2B3C4D" in text and "ab 50.00 EUR" in text and "Gültig bis 2026-04-01" in text
    assert '<html lang="de">' in html and "AGAIN-1A2B3C4D" in html


def test_unknown_locales_fall_back_to_english_and_types_to_the_default_template(smtp_server):
    inbox, port = smtp_server
    gift = {**AWARD, "reward": "apology", "type": "gift", "params": {"description": "a small gift, with our apologies"}}
    notifier_for(port).send(notice(locale="fr-FR", award=gift))
    ((_, _, msg),) = inbox.messages
    assert msg["Subject"] == "A reward for you: Apology" and msg["Content-Language"] == "en"
    assert "a small gift, with our apologies" in msg.get_body(("plain",)).get_content()


def test_html_escapes_what_the_rule_file_says():
    rendered = notifier_for(None).renderer.render(
        notice(locale="en", award={**AWARD, "type": "greeting", "params": {"message": "<b>Thanks</b> & more"}}), SHOP)
    assert "&lt;b&gt;Thanks&lt;/b&gt; &amp; more" in rendered.html
    assert "<b>Thanks</b> & more" in rendered.text


def test_language_choice():
    assert language("de_DE") == "de" and language("DE") == "de" and language("en-GB") == "en"
    assert language("pt") == "en" and language(None) == "en" and language("") == "en"


def test_refused_and_deferred_recipients(smtp_server):
    inbox, port = smtp_server
    inbox.refuse = "550 5.1.1 no such user"
    with pytest.raises(Rejected, match="no such user"):
        notifier_for(port).send(notice())
    inbox.refuse = "451 4.3.0 try again later"
    with pytest.raises(Unavailable, match="try again"):
        notifier_for(port).send(notice())
    assert inbox.messages == []


def test_the_server_requires_the_login_of_the_url(smtp_server):
    """The server only accepts mail after AUTH, so every delivered test message proves the
    URL's credentials were used; without them the server refuses permanently."""
    inbox, port = smtp_server
    anonymous = Notifier(Settings(smtp_url=f"smtp://127.0.0.1:{port}?from=loyalty@shop.example", secret_key="k"), {"demo": SHOP})
    with pytest.raises(Rejected, match="530"):
        anonymous.send(notice())
    assert inbox.messages == []


def test_an_unreachable_mail_server_is_unavailable():
    with pytest.raises(Unavailable, match="unreachable"):
        notifier_for(_free_port(), timeout=2).send(notice())


def test_email_needs_an_address_and_a_configured_server():
    with pytest.raises(Rejected, match="not configured"):
        notifier_for(None).send(notice())
    with pytest.raises(Rejected, match="no e-mail"):
        Notifier(Settings(smtp_url="smtp://127.0.0.1?from=a@b.example"), {"demo": SHOP}).send(notice(email=None))


def test_smtp_url_parsing():
    t = parse_smtp_url("smtp://us%40er:p%3Ass@mail.example:2525?from=loyalty@shop.example&starttls=1")
    assert (t.host, t.port, t.user, t.password, t.sender, t.ssl, t.starttls) == (
        "mail.example", 2525, "us@er", "p:ss", "loyalty@shop.example", False, True)
    assert "p:ss" not in repr(t)
    assert parse_smtp_url("smtps://mail.example?from=a@b.example").port == 465
    assert parse_smtp_url("smtp://mail.example?from=a@b.example&starttls=true").port == 587
    assert parse_smtp_url("smtp://loyalty@shop.example@mail.example").sender == "loyalty@shop.example"
    for bad in ("http://mail.example?from=a@b.example", "smtp://mail.example", "smtp://mail.example:x?from=a@b.c"):
        with pytest.raises(ConfigError):
            parse_smtp_url(bad)


def test_retry_after_parsing():
    from datetime import UTC, datetime

    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    assert parse_retry_after("17", now) == 17.0
    assert parse_retry_after("Mon, 02 Mar 2026 10:01:00 GMT", now) == 60.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


# ---------------------------------------------------------------- consent
def test_promotional_rule():
    """Every offer is marketing, of whatever stage or trigger; notices of what was earned are not."""
    welcome = {**AWARD, "reward": "welcome", "stage": "potential"}
    assert is_promotional(welcome, first_stage="potential")
    assert is_promotional(AWARD, first_stage="potential")  # a second-order code: an offer too
    assert is_promotional({**welcome, "scope": "lapse"}, first_stage="potential")  # a win-back
    assert is_promotional({**AWARD, "type": "greeting"}) and is_promotional({**AWARD, "type": "free_service"})
    for earned in ("tag", "points", "gift", "vip_service", "deferred_payment", "debt_forgiveness"):
        assert not is_promotional({**welcome, "type": earned}, first_stage="potential"), earned
    assert is_promotional({**AWARD, "type": "points", "params": {"notify": "promotional"}}, first_stage="potential")
    assert not is_promotional({**welcome, "params": {"notify": "transactional"}}, first_stage="potential")


def test_consent_problem():
    welcome = {**AWARD, "stage": "potential"}
    points = {**AWARD, "type": "points", "params": {"points": 10}}
    assert consent_problem(welcome, {"accepts_marketing": False}, "potential") == NO_CONSENT
    assert consent_problem(welcome, {}, "potential") == NO_CONSENT
    assert consent_problem(welcome, {"accepts_marketing": True}, "potential") is None
    assert consent_problem(AWARD, {"accepts_marketing": False}, "potential") == NO_CONSENT
    assert consent_problem(points, {"accepts_marketing": False}, "potential") is None


# ---------------------------------------------------------------- the signed webhook
def _signature(body: bytes, secret: str = "hush") -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def _expected_body(event: str = "award.granted") -> bytes:
    return json.dumps({"event": event, "shop": "demo", "customer_id": "c-1", "award": AWARD},
                      sort_keys=True, separators=(",", ":")).encode()


def test_webhook_is_signed_over_the_exact_body():
    body = _expected_body()
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post("https://hooks.example/ladder", status=204, match=[
            matchers.json_params_matcher(json.loads(body)),
            matchers.header_matcher({"X-Ladder-Hmac-Sha256": _signature(body), "X-Ladder-Event-Id": "ladder-delivery-7-1",
                                     "X-Ladder-Event": "award.granted", "Content-Type": "application/json"}),
        ])
        assert notifier_for(None).send(notice("webhook")) == "ladder-delivery-7-1"
        sent = rsps.calls[0].request.body
    assert sent == body and verify_hmac_base64(_signature(body), sent, ["hush"])


def test_webhook_reversal_event():
    body = _expected_body("award.reversed")
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post("https://hooks.example/ladder", status=200,
                  match=[matchers.header_matcher({"X-Ladder-Hmac-Sha256": _signature(body)})])
        notifier_for(None).send(notice("webhook", event="award.reversed"))


@pytest.mark.parametrize(("answer", "error", "retry_after"), [
    ({"status": 429, "headers": {"Retry-After": "17"}}, RateLimited, 17.0),
    ({"status": 429}, RateLimited, None),
    ({"status": 503}, Unavailable, None),
    ({"body": requests.Timeout("read timed out")}, Unavailable, None),
    ({"body": requests.ConnectionError("refused")}, Unavailable, None),
    ({"status": 404, "body": "no such hook"}, Rejected, None),
    ({"status": 301, "headers": {"Location": "https://elsewhere.example/"}}, Rejected, None),
])
def test_webhook_errors(answer, error, retry_after):
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post("https://hooks.example/ladder", **answer)
        with pytest.raises(error) as caught:
            notifier_for(None).send(notice("webhook"))
    if error is RateLimited:
        assert caught.value.retry_after == retry_after
    if answer.get("status") == 404:
        assert "HTTP 404: no such hook" in caught.value.message
    if answer.get("status") == 301:
        assert "redirected to https://elsewhere.example/" in caught.value.message


def test_webhook_needs_a_secret_to_sign_with():
    unsigned = ShopConfig(id="demo", platform="generic", notify_webhook_url="https://hooks.example/ladder")
    with pytest.raises(Rejected, match="webhook_secret"):
        Notifier(Settings(), {"demo": unsigned}).send(notice("webhook"))


# ---------------------------------------------------------------- through the outbox
def test_outbox_sends_the_email_and_respects_consent(tmp_path, smtp_server):
    """A delivered grant arms its notices; the real notifier mails the transactional one and
    cancels the promotional one of a customer without consent."""
    from datetime import UTC, datetime

    from loyalty_ladder import outbox, store
    from loyalty_ladder.adapters.base import DeliveryResult

    inbox, port = smtp_server
    t0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    db = store.make_engine(f"sqlite:///{tmp_path / 'ladder.db'}")
    store.upgrade(db)
    shop = ShopConfig(id="demo", platform="shopify", capabilities=("discount_codes", "points"))
    with db.begin() as conn:
        conn.execute(store.events.insert().values(
            shop_id="demo", event_id="e-1", customer_id="c-1", type="customer_created", occurred_at=t0,
            body={"id": "e-1", "customer": {"email": "ana@example.com", "locale": "de", "accepts_marketing": False}},
            body_hash="0" * 64, source="api", received_at=t0))
        conn.execute(store.customers.insert().values(
            shop_id="demo", customer_id="c-1", email="ana@example.com", lapsed=False, turn=1, updated_at=t0,
            state={"history": [{"stage": "potential", "at": "2026-03-02T10:00:00Z", "turn": 1}]}))
        for reward, stage, type_, params in (
                ("welcome", "potential", "discount", {"code": "WELCOME-1", "percent": "10"}),
                ("free-points", "first_purchase", "points", {"points": 50, "notify": "transactional"})):
            conn.execute(store.awards.insert().values(
                key=f"demo/c-1/{reward}/stage/{stage}/1", shop_id="demo", customer_id="c-1", reward_id=reward,
                type=type_, scope="stage", scope_ref=f"{stage}/1", stage=stage, turn=1, status="due",
                params=params, rule_version="abc123def456", granted_at=t0, created_at=t0, updated_at=t0))
    keys = ["demo/c-1/welcome/stage/potential/1", "demo/c-1/free-points/stage/first_purchase/1"]
    with store.begin_write(db) as conn:
        grants = outbox.plan(conn, shop, keys, [], smtp_configured=True, now=t0)

    class Shop:
        def deliver(self, delivery):
            return DeliveryResult(f"gid://{delivery.award['reward']}")

    notifier = notifier_for(port)
    for pk in grants:  # the discount's grant (its notice follows it); the points' notice (points are ours)
        for follow in outbox.run(db, pk, lambda _shop: Shop(), notifier, now=t0).follow_up:
            outbox.run(db, follow, lambda _shop: Shop(), notifier, now=t0)
    with db.connect() as conn:
        notices = conn.execute(sa.select(store.deliveries.c.award_key, store.deliveries.c.status)
                               .where(store.deliveries.c.action == "notify")).all()
    # the offer waits for consent it does not have; the points earned are announced
    assert sorted((n.award_key.split("/")[2], n.status) for n in notices) == [("free-points", "delivered"),
                                                                             ("welcome", "cancelled")]
    ((_, rcpts, msg),) = inbox.messages
    assert rcpts == ["ana@example.com"] and "50" in msg.get_body(("plain",)).get_content()
    db.dispose()
