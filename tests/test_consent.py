"""Marketing only with consent, through the real app, outbox and notifier (an SMTP server, a
webhook receiver): every offer needs consent, notices of what was earned go to everyone, every
promotional e-mail carries an unsubscribe link, and that link withdraws the consent."""
from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import responses
import sqlalchemy as sa

from loyalty_ladder import store
from loyalty_ladder.app import create_app
from loyalty_ladder.rewards import registry
from loyalty_ladder.service import LadderService
from loyalty_ladder.shop import ShopConfig
from loyalty_ladder.unsubscribe_links import read_unsubscribe_token, unsubscribe_secret, unsubscribe_token

from .test_notify import smtp_server  # noqa: F401  (the fixture: a real SMTP server)

#: the tests that run through the app: on SQLite and on PostgreSQL
on_both = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)

HOOK = "https://hooks.example/ladder"
PUBLIC = "https://loyalty.example"
SHOP = ShopConfig(id="demo", platform="generic", currency="EUR", webhook_secret="hook-secret", notify_webhook_url=HOOK)
#: one reward of every built-in type, all given when the customer is created
PARAMS = {
    "discount": "{percent: 10}", "tag": "{tag: club}", "points": "{points: 25}",
    "gift": "{description: a tote bag, value: \"5.00\"}", "free_service": "{service: gift wrapping}",
    "vip_service": "{level: gold}", "deferred_payment": "{net_days: 30, credit_limit: \"500.00\"}",
    "debt_forgiveness": "{max_amount: \"50.00\"}", "greeting": "{occasion: birthday, message: Happy birthday}",
}
OFFERS = {"discount", "greeting", "free_service"}
EARNED = {"points", "gift", "vip_service", "deferred_payment", "debt_forgiveness", "tag"}
NOT_EMAILED = {"tag"}


def test_the_table_covers_every_built_in_type():
    built_ins = {registry.get(path.rpartition(".")[2].partition(":")[0]).name for path in registry.BUILTIN}
    # the core's own types (points paid out, a reminder of points expiring) tell what was earned
    internal = {name for name in built_ins if registry.get(name).internal}
    assert internal == {"points_redemption", "points_reminder"}
    assert not any(registry.get(name).promotional for name in internal)
    built_ins -= internal
    assert set(PARAMS) == OFFERS | EARNED == built_ins
    for name in OFFERS:
        assert registry.get(name).promotional
    for name in EARNED:
        assert not registry.get(name).promotional


@pytest.fixture
def world(ladder_settings, tmp_path, smtp_server):  # noqa: F811
    inbox, port = smtp_server
    rules = tmp_path / "consent-rules"
    rules.mkdir()
    rewards = "".join(f"  - id: every-{name.replace('_', '-')}\n    type: {name}\n    on: {{event: customer_created}}\n"
                      f"    params: {params}\n" for name, params in PARAMS.items())
    rewards += ("  - id: review-code\n    type: discount\n    on: {event: review}\n    params: {amount: \"5.00\"}\n"
                "  - id: review-points\n    type: points\n    on: {event: review}\n    params: {points: 10}\n")
    (rules / "ladder.yaml").write_text("programme:\n  currency: EUR\nstages:\n  - id: potential\nrewards:\n" + rewards)
    settings = dataclasses.replace(
        ladder_settings, rules=rules, public_url=PUBLIC,
        smtp_url=f"smtp://ladder:s3cret@127.0.0.1:{port}?from=loyalty@shop.example")
    service = LadderService(settings, shops={SHOP.id: SHOP})
    app = create_app(settings, service=service, immediate_queue=True)
    app.testing = True
    hooks: list[dict] = []

    def receive(request):
        hooks.append(json.loads(request.body))
        return 204, {}, ""

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(responses.POST, HOOK, callback=receive)
        yield app.test_client(), service, inbox, hooks
    service.db.dispose()


def created(customer: str, consent: bool) -> dict:
    return {"id": f"{customer}-created", "type": "customer_created", "customer_id": customer,
            # yesterday: a code decided long ago would have expired unsent (fold semantics 4)
            "occurred_at": (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0).isoformat(),
            "customer": {"email": f"{customer}@example.com", "accepts_marketing": consent, "locale": "en"}}


def post(client, auth, body):
    response = client.post(f"/api/v1/shops/{SHOP.id}/events", json=body, headers=auth)
    assert response.status_code == 202, response.get_json()
    return response


def mails_of(inbox, service, customer: str) -> dict[str, object]:
    """The e-mails the SMTP server received for a customer, by the type of the award they announce."""
    t = store.deliveries
    with service.db.connect() as conn:
        types = {f"ladder-delivery-{r.pk}-{r.attempts}": r.award_key for r in conn.execute(
            sa.select(t.c.pk, t.c.attempts, t.c.award_key).where(t.c.channel == "email"))}
        kinds = dict(conn.execute(sa.select(store.awards.c.key, store.awards.c.type)).all())
    out = {}
    for _, rcpts, msg in inbox.messages:
        if rcpts == [f"{customer}@example.com"]:
            kind = kinds[types[msg["X-Ladder-Event-Id"]]]
            assert kind not in out
            out[kind] = msg
    return out


def hooks_of(hooks, customer: str) -> list[str]:
    return sorted(h["award"]["type"] for h in hooks if h["customer_id"] == customer)


@on_both
def test_every_reward_type_with_and_without_consent(world, auth):
    client, service, inbox, hooks = world
    post(client, auth, [created("no", consent=False), created("yes", consent=True)])
    # without consent: only notices of what was earned, by e-mail and by webhook
    assert set(mails_of(inbox, service, "no")) == EARNED - NOT_EMAILED
    assert hooks_of(hooks, "no") == sorted(EARNED)
    # with consent: everything (a tag is never e-mailed)
    mails = mails_of(inbox, service, "yes")
    assert set(mails) == (OFFERS | EARNED) - NOT_EMAILED
    assert hooks_of(hooks, "yes") == sorted(OFFERS | EARNED)
    # exactly the promotional e-mails carry an unsubscribe link, in both parts and the headers
    for kind, msg in [*mails.items(), *mails_of(inbox, service, "no").items()]:
        text, html = msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content()
        linked = f"{PUBLIC}/unsubscribe/" in text
        assert linked == (kind in OFFERS), kind
        assert (f'href="{PUBLIC}/unsubscribe/' in html) == linked, kind
        assert (msg["List-Unsubscribe"] is not None) == linked and (msg["List-Unsubscribe-Post"] is not None) == linked
    # the cancelled notices say why
    t = store.deliveries
    with service.db.connect() as conn:
        reasons = {r.last_error for r in conn.execute(sa.select(t.c.last_error).where(
            t.c.customer_id == "no", t.c.status == "cancelled"))}
    assert reasons == {"no marketing consent"}


@on_both
def test_the_unsubscribe_link_withdraws_consent_end_to_end(world, auth):
    client, service, inbox, hooks = world
    post(client, auth, created("ana", consent=True))
    discount = mails_of(inbox, service, "ana")["discount"]
    link = re.search(rf"{re.escape(PUBLIC)}(/unsubscribe/\S+)", discount.get_body(("plain",)).get_content()).group(1)
    assert discount["List-Unsubscribe"] == f"<{PUBLIC}{link}>"

    page = client.get(link)  # opening the link (or a mail scanner doing so) changes nothing
    assert page.status_code == 200 and page.mimetype == "text/html" and 'method="post"' in page.get_data(as_text=True)
    doc = client.get(f"/api/v1/shops/{SHOP.id}/customers/ana", headers=auth).get_json()
    assert doc["facts"]["accepts_marketing"] is True

    done = client.post(link)
    assert done.status_code == 200 and "unsubscribed" in done.get_data(as_text=True)
    assert client.post(link, data="List-Unsubscribe=One-Click",  # a mail client's one-click, and a second click
                       content_type="application/x-www-form-urlencoded").status_code == 200
    doc = client.get(f"/api/v1/shops/{SHOP.id}/customers/ana", headers=auth).get_json()
    assert doc["facts"]["accepts_marketing"] is False and doc["pending_events"] == 0
    with service.db.connect() as conn:
        opt_outs = conn.execute(sa.select(store.events.c.event_id, store.events.c.type, store.events.c.source)
                                .where(store.events.c.source == "unsubscribe")).all()
    assert len(opt_outs) == 1 and opt_outs[0].type == "customer_updated"
    assert opt_outs[0].event_id.startswith("ladder:unsubscribe:")

    # no further offers: a review earns a code (an offer: withheld) and points (earned: sent)
    before_mails = [m for _, r, m in inbox.messages if r == ["ana@example.com"]]
    before_hooks = len(hooks)
    post(client, auth, {"id": "ana-review", "type": "review", "customer_id": "ana",
                        "occurred_at": (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0).isoformat(),
                        "rating": 5})
    new_mails = [m for _, r, m in inbox.messages if r == ["ana@example.com"]][len(before_mails):]
    assert len(new_mails) == 1 and "10" in new_mails[0].get_body(("plain",)).get_content()
    assert "/unsubscribe/" not in new_mails[0].get_body(("plain",)).get_content()
    assert [h["award"]["type"] for h in hooks[before_hooks:]] == ["points"]
    t = store.deliveries
    with service.db.connect() as conn:
        review = {(r.award_key.split("/")[2], r.channel): (r.status, r.last_error) for r in conn.execute(
            sa.select(t).where(t.c.award_key.like("demo/ana/review-%")))}
    assert review == {("review-code", "email"): ("cancelled", "no marketing consent"),
                      ("review-code", "webhook"): ("cancelled", "no marketing consent"),
                      ("review-points", "email"): ("delivered", None),
                      ("review-points", "webhook"): ("delivered", None)}


@on_both
def test_bad_unsubscribe_tokens_are_404_json_never_500(world, auth):
    client, service, _, _ = world
    post(client, auth, created("ana", consent=True))
    secret = unsubscribe_secret(service.settings)
    good = unsubscribe_token(secret, SHOP.id, "ana")
    assert read_unsubscribe_token(secret, good) == (SHOP.id, "ana")
    forged = unsubscribe_token(b"another secret", SHOP.id, "ana")
    who, _, mac = good.partition(".")
    bad = [forged, who, f"{who}.", f"{who}.{mac[:-2]}", f"{mac}.{who}", "x", "%00", "a.b.c", "..", "ü.ü",
           unsubscribe_token(secret, "no-such-shop", "ana"), unsubscribe_token(secret, SHOP.id, "nobody"),
           who[:-1] + ("A" if who[-1] != "A" else "B") + "." + mac]
    for token in bad:
        for method in (client.get, client.post):
            response = method(f"/unsubscribe/{token}")
            assert response.status_code == 404, (token, response.status_code)
            assert response.get_json()["code"] == "not_found"
    doc = client.get(f"/api/v1/shops/{SHOP.id}/customers/ana", headers=auth).get_json()
    assert doc["facts"]["accepts_marketing"] is True


def test_the_secret_is_never_in_the_link_and_the_link_needs_a_secret(ladder_settings):
    settings = dataclasses.replace(ladder_settings, secret_key="a-long-server-secret")
    token = unsubscribe_token(unsubscribe_secret(settings), "demo", "ana")
    assert "a-long-server-secret" not in token and settings.admin_token not in token
    assert unsubscribe_secret(dataclasses.replace(ladder_settings, admin_token=None)) is None
    derived = unsubscribe_secret(ladder_settings)
    assert derived is not None and ladder_settings.admin_token.encode() not in derived


def test_rules_md_names_every_type_and_how_it_is_announced():
    text = (Path(__file__).resolve().parent.parent / "docs" / "rules.md").read_text()
    for name in OFFERS:
        assert re.search(rf"\| `{name}` \|[^\n]*\| [^\n]*promotional", text), name
    for name in EARNED:
        assert re.search(rf"\| `{name}` \|[^\n]*\| [^\n]*transactional", text), name
