"""The outbox: planning inside the reconcile transaction, the run state machine, retries, idempotency.

The adapter here is a scripted fake (it tests the outbox's state machine, not a shop); shops are
tested against their fake APIs in their own modules.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from loyalty_ladder import outbox, store
from loyalty_ladder.adapters.base import Delivery, DeliveryResult
from loyalty_ladder.errors import NotSupported, RateLimited, Rejected, Unavailable
from loyalty_ladder.shop import ShopConfig

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
LIVE = ShopConfig(id="s", platform="shopify", domain="s.myshopify.com", webhook_secret="k",
                  capabilities=("discount_codes", "tags"), notify_webhook_url="https://hooks.example/ladder")
GENERIC = ShopConfig(id="s", platform="generic", webhook_secret="k", notify_webhook_url="https://hooks.example/ladder")
#: a WooCommerce shop that switched its discount codes off in the shops file
NO_CODES = ShopConfig(id="s", platform="woocommerce", capabilities=("tags",))
SHADOW = ShopConfig(id="s", platform="shopify", mode="shadow", capabilities=("discount_codes", "tags"),
                    notify_webhook_url="https://hooks.example/ladder", webhook_secret="k")


# ---------------------------------------------------------------- fixtures
@pytest.fixture
def db(engine) -> sa.Engine:
    """A migrated database: SQLite, and PostgreSQL when it answers (conftest's ``engine``)."""
    return engine


def add_customer(db: sa.Engine, customer: str = "c-1", *, email: str | None = "ana@example.com",
                 locale: str | None = "de", accepts_marketing: bool = True, first: str = "potential") -> None:
    info: dict[str, Any] = {"accepts_marketing": accepts_marketing}
    if email:
        info["email"] = email
    if locale:
        info["locale"] = locale
    with db.begin() as conn:
        conn.execute(store.events.insert().values(
            shop_id="s", event_id=f"{customer}-created", customer_id=customer, type="customer_created",
            occurred_at=T0, body={"id": f"{customer}-created", "type": "customer_created", "customer": info},
            body_hash="0" * 64, source="api", received_at=T0))
        conn.execute(store.customers.insert().values(
            shop_id="s", customer_id=customer, email=email, stage=first, lapsed=False, turn=1, updated_at=T0,
            state={"history": [{"stage": first, "at": "2026-03-02T10:00:00Z", "turn": 1}]}))


def add_award(db: sa.Engine, reward: str = "second-order", *, type_: str = "discount", stage: str = "first_purchase",
              status: str = "due", customer: str = "c-1", params: dict | None = None) -> str:
    key = f"s/{customer}/{reward}/stage/{stage}/1"
    with db.begin() as conn:
        conn.execute(store.awards.insert().values(
            key=key, shop_id="s", customer_id=customer, reward_id=reward, type=type_, scope="stage",
            scope_ref=f"{stage}/1", stage=stage, turn=1, status=status, reason="reached",
            params=params if params is not None else {"code": "AGAIN-1A2B3C4D", "amount": "10.00", "usage_limit": 1},
            value=Decimal("10.00"), rule_version="abc123def456", granted_at=T0, created_at=T0, updated_at=T0))
    return key


def plan(db: sa.Engine, shop: ShopConfig, granted=(), reversed_=(), smtp: bool = True) -> list[int]:
    with store.begin_write(db) as conn:
        return outbox.plan(conn, shop, list(granted), list(reversed_), smtp_configured=smtp, now=T0)


def reverse(db: sa.Engine, key: str, shop: ShopConfig = LIVE, at: datetime = T0) -> list[int]:
    """What the service's reconcile does for a key no longer implied, then the outbox plan."""
    with store.begin_write(db) as conn:
        conn.execute(store.awards.update().where(store.awards.c.key == key)
                     .values(status="reversed", reversed_at=at, updated_at=at))
        return outbox.plan(conn, shop, [], [key], smtp_configured=True, now=at)


def regrant(db: sa.Engine, key: str, shop: ShopConfig = LIVE, at: datetime = T0) -> list[int]:
    with store.begin_write(db) as conn:
        conn.execute(store.awards.update().where(store.awards.c.key == key)
                     .values(status="due", reversed_at=None, updated_at=at))
        return outbox.plan(conn, shop, [key], [], smtp_configured=True, now=at)


def rows(db: sa.Engine, key: str | None = None) -> dict[tuple[str, str | None], dict]:
    t = store.deliveries
    query = sa.select(t) if key is None else sa.select(t).where(t.c.award_key == key)
    with db.connect() as conn:
        return {(r["action"], r["channel"]): dict(r) for r in conn.execute(query).mappings()}


def award_status(db: sa.Engine, key: str) -> str:
    with db.connect() as conn:
        return conn.execute(sa.select(store.awards.c.status).where(store.awards.c.key == key)).scalar_one()


def award_log(db: sa.Engine, key: str) -> list[tuple[str, str]]:
    t = store.award_log
    with db.connect() as conn:
        return [(r.status, r.reason) for r in conn.execute(sa.select(t).where(t.c.award_key == key).order_by(t.c.pk))]


class FakeAdapter:
    """Answers deliver() from a script: DeliveryResult values or exceptions, in order."""

    def __init__(self, *script: Any, on_call=None):
        self.script = list(script)
        self.calls: list[Delivery] = []
        self.on_call = on_call

    def deliver(self, delivery: Delivery) -> DeliveryResult:
        self.calls.append(delivery)
        if self.on_call is not None:
            self.on_call(delivery)
        answer = self.script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeNotifier:
    def __init__(self, *script: Any):
        self.script = list(script)
        self.sent: list[Any] = []

    def send(self, notice) -> str:
        self.sent.append(notice)
        answer = self.script.pop(0) if self.script else notice.event_id
        if isinstance(answer, Exception):
            raise answer
        return answer


def run(db, pk, adapter=None, notifier=None, at=T0) -> outbox.RunOutcome:
    adapter = adapter or FakeAdapter()
    return outbox.run(db, pk, lambda shop_id: adapter, notifier or FakeNotifier(), now=at)


# ---------------------------------------------------------------- planning
def test_a_granted_discount_gets_a_grant_and_notices_that_wait_for_it(db):
    add_customer(db)
    key = add_award(db)
    to_run = plan(db, LIVE, [key])
    got = rows(db, key)
    assert set(got) == {("grant", None), ("notify", "email"), ("notify", "webhook")}
    assert to_run == [got["grant", None]["pk"]]
    assert got["grant", None]["status"] == "pending" and got["grant", None]["next_attempt_at"] == T0
    for channel in ("email", "webhook"):
        notice = got["notify", channel]
        assert notice["status"] == "pending" and notice["next_attempt_at"] is None  # waits for the grant
        assert notice["detail"]["event"] == "award.granted"
    assert outbox.due(db, T0) == to_run


def test_notice_channels_follow_the_configuration(db):
    add_customer(db, email=None)
    key = add_award(db)
    plan(db, LIVE, [key], smtp=True)
    assert set(rows(db, key)) == {("grant", None), ("notify", "webhook")}  # no address, no e-mail
    add_customer(db, "c-2")
    key2 = add_award(db, customer="c-2")
    plan(db, ShopConfig(id="s", platform="shopify", capabilities=("discount_codes",)), [key2], smtp=False)
    assert set(rows(db, key2)) == {("grant", None)}  # no SMTP URL, no webhook URL


def test_stage_tags_are_not_emailed_but_reach_the_webhook(db):
    add_customer(db)
    key = add_award(db, "tag-regular", type_="tag", stage="regular", params={"tag": "ladder-regular"})
    plan(db, LIVE, [key])
    assert set(rows(db, key)) == {("grant", None), ("notify", "webhook")}


def test_shadow_mode_records_everything_and_runs_nothing(db):
    add_customer(db)
    key = add_award(db)
    assert plan(db, SHADOW, [key]) == []
    got = rows(db, key)
    assert {r["status"] for r in got.values()} == {"shadow"}
    assert outbox.due(db, T0 + timedelta(days=1)) == []
    adapter = FakeAdapter()
    assert run(db, got["grant", None]["pk"], adapter).status == "shadow"
    assert adapter.calls == [] and award_status(db, key) == "shadow"
    assert award_log(db, key)[-1] == ("shadow", "decided in shadow mode: recorded, never delivered")


def test_a_missing_capability_needs_manual_action_at_once(db):
    add_customer(db)
    key = add_award(db)
    assert plan(db, NO_CODES, [key]) == []
    grant = rows(db, key)["grant", None]
    assert grant["status"] == "needs_manual_action" and "discount_codes" in grant["last_error"]
    assert award_status(db, key) == "needs_manual_action"
    assert award_log(db, key)[-1][0] == "needs_manual_action"
    assert ("notify", "email") not in rows(db, key)  # nothing to tell before someone hands it over


def test_a_generic_shop_gets_notices_only_and_its_awards_stay_due(db):
    add_customer(db)
    key = add_award(db)
    to_run = plan(db, GENERIC, [key])
    got = rows(db, key)
    assert set(got) == {("notify", "email"), ("notify", "webhook")} and sorted(to_run) == sorted(
        r["pk"] for r in got.values())
    notifier = FakeNotifier()
    for pk in to_run:
        assert run(db, pk, notifier=notifier).status == "delivered"
    assert award_status(db, key) == "due"  # the integrator fetches and hands it over
    assert reverse(db, key) == [got["notify", "webhook"]["pk"]]  # the hook heard of it: announce
    assert run(db, got["notify", "webhook"]["pk"], notifier=notifier).status == "delivered"
    assert notifier.sent[-1].event == "award.reversed"


def test_historical_awards_are_never_planned(db):
    add_customer(db)
    key = add_award(db, status="historical")
    assert plan(db, LIVE, [key]) == []
    assert rows(db, key) == {}


def test_planning_twice_changes_nothing(db):
    add_customer(db)
    key = add_award(db)
    first = plan(db, LIVE, [key])
    before = rows(db, key)
    assert plan(db, LIVE, [key]) == []
    assert rows(db, key) == before and len(first) == 1


def test_reversed_while_pending_the_grant_is_cancelled_never_delivered(db):
    add_customer(db)
    key = add_award(db)
    (pk,) = plan(db, LIVE, [key])
    assert reverse(db, key) == []
    got = rows(db, key)
    assert got["grant", None]["status"] == "cancelled"
    assert got["notify", "email"]["status"] == "cancelled" and got["notify", "webhook"]["status"] == "cancelled"
    assert ("revoke", None) not in got
    adapter = FakeAdapter()
    assert run(db, pk, adapter).status == "cancelled" and adapter.calls == []


def test_reversed_after_delivery_gets_a_revoke_of_exactly_that_object(db):
    add_customer(db)
    key = add_award(db)
    (pk,) = plan(db, LIVE, [key])
    out = run(db, pk, FakeAdapter(DeliveryResult("gid://shopify/DiscountCodeNode/7")))
    assert out.status == "delivered" and award_status(db, key) == "delivered"
    # the grant's success arms the notices waiting for it
    got = rows(db, key)
    assert set(out.follow_up) == {got["notify", "email"]["pk"], got["notify", "webhook"]["pk"]}
    notifier = FakeNotifier()
    for notice_pk in out.follow_up:
        assert run(db, notice_pk, notifier=notifier).status == "delivered"
    later = T0 + timedelta(days=3)
    to_run = reverse(db, key, at=later)
    revoke_pk = rows(db, key)["revoke", None]["pk"]
    assert revoke_pk in to_run
    assert rows(db, key)["notify", "webhook"]["detail"]["event"] == "award.reversed"
    adapter = FakeAdapter(DeliveryResult(None))
    assert run(db, revoke_pk, adapter, at=later).status == "delivered"
    (call,) = adapter.calls
    assert call.action == "revoke" and call.external_id == "gid://shopify/DiscountCodeNode/7"
    assert call.award["key"] == key and call.customer["email"] == "ana@example.com"
    assert award_status(db, key) == "reversed"
    assert "revoked in the shop" in award_log(db, key)[-1][1]


def test_granted_again_while_the_revoke_waits_cancels_the_revoke(db):
    add_customer(db)
    key = add_award(db)
    (pk,) = plan(db, LIVE, [key])
    run(db, pk, FakeAdapter(DeliveryResult("d-1")))
    reverse(db, key)
    assert rows(db, key)["revoke", None]["status"] == "pending"
    assert regrant(db, key) == []
    assert rows(db, key)["revoke", None]["status"] == "cancelled"
    assert award_status(db, key) == "delivered"  # the shop still holds the first delivery


def test_granted_again_after_the_revoke_ran_delivers_again(db):
    add_customer(db)
    key = add_award(db)
    (pk,) = plan(db, LIVE, [key])
    run(db, pk, FakeAdapter(DeliveryResult("d-1")))
    reverse(db, key)
    revoke_pk = rows(db, key)["revoke", None]["pk"]
    run(db, revoke_pk, FakeAdapter(DeliveryResult(None)))
    assert regrant(db, key) == [pk]
    grant = rows(db, key)["grant", None]
    assert grant["status"] == "pending" and grant["external_id"] is None
    assert grant["detail"]["generation"] == 2 and grant["detail"]["history"][-1]["external_id"] == "d-1"
    assert run(db, pk, FakeAdapter(DeliveryResult("d-2"))).status == "delivered"
    assert rows(db, key)["grant", None]["external_id"] == "d-2" and award_status(db, key) == "delivered"


def test_a_greeting_is_a_notice_and_needs_no_grant(db):
    add_customer(db)
    key = add_award(db, "new-year-greeting", type_="greeting", stage="regular",
                    params={"occasion": "holiday", "message": "Thank you"})
    to_run = plan(db, LIVE, [key])
    got = rows(db, key)
    assert ("grant", None) not in got and sorted(to_run) == sorted(r["pk"] for r in got.values())
    for pk in to_run:
        assert run(db, pk).status == "delivered"
    assert award_status(db, key) == "delivered"


# ---------------------------------------------------------------- running
def test_success_records_the_shop_id_and_running_again_does_nothing(db):
    add_customer(db)
    key = add_award(db)
    (pk,) = plan(db, LIVE, [key])
    adapter = FakeAdapter(DeliveryResult("coupon-42", "created"))
    assert run(db, pk, adapter).status == "delivered"
    grant = rows(db, key)["grant", None]
    assert grant["external_id"] == "coupon-42" and grant["delivered_at"] == T0 and grant["attempts"] == 1
    (call,) = adapter.calls
    assert call.action == "grant" and call.attempt == 1 and call.award["params"]["code"] == "AGAIN-1A2B3C4D"
    assert call.customer == {"customer_id": "c-1", "email": "ana@example.com", "locale": "de",
                             "accepts_marketing": True, "tags": [], "vip": None,
                             "ladder_tags": {"desired": [], "managed": []}}
    again = FakeAdapter(DeliveryResult("coupon-43"))
    assert run(db, pk, again, at=T0 + timedelta(hours=1)).status == "delivered"
    assert again.calls == [] and rows(db, key)["grant", None]["external_id"] == "coupon-42"
    assert [s for s, _ in award_log(db, key)] == ["delivered"]


def test_rejected_fails_with_the_shops_message(db):
    add_customer(db)
    key = add_award(db)
    (pk,) = plan(db, LIVE, [key])
    out = run(db, pk, FakeAdapter(Rejected("Code must be unique. Please try a different code.")))
    assert out == outbox.RunOutcome("failed")
    got = rows(db, key)
    assert got["grant", None]["last_error"] == "Code must be unique. Please try a different code."
    assert award_status(db, key) == "failed"
    assert award_log(db, key)[-1] == ("failed", "Code must be unique. Please try a different code.")
    assert got["notify", "email"]["status"] == "cancelled"  # never tell of a reward that is not there


def test_not_supported_needs_manual_action(db):
    add_customer(db)
    key = add_award(db, "apology", type_="gift", stage="first_purchase", params={"description": "a gift"})
    plan(db, LIVE, [key])
    grant_pk = rows(db, key)["grant", None]["pk"]
    assert run(db, grant_pk, FakeAdapter(NotSupported("shopify cannot send gifts"))).status == "needs_manual_action"
    assert award_status(db, key) == "needs_manual_action"


def test_rate_limited_waits_for_retry_after(db):
    add_customer(db)
    key = add_award(db)
    (pk,) = plan(db, LIVE, [key])
    adapter = FakeAdapter(RateLimited("throttled", retry_after=30), DeliveryResult("d-1"))
    out = run(db, pk, adapter)
    assert out == outbox.RunOutcome("pending", retry_at=T0 + timedelta(seconds=30))
    assert rows(db, key)["grant", None]["next_attempt_at"] == T0 + timedelta(seconds=30)
    assert outbox.due(db, T0 + timedelta(seconds=29)) == []
    early = run(db, pk, adapter, at=T0 + timedelta(seconds=10))
    assert early.status == "pending" and len(adapter.calls) == 1  # not yet: the shop asked us to wait
    assert outbox.due(db, T0 + timedelta(seconds=30)) == [pk]
    assert run(db, pk, adapter, at=T0 + timedelta(seconds=30)).status == "delivered"
    assert [c.attempt for c in adapter.calls] == [1, 2]


def test_unavailable_backs_off_exponentially_then_fails(db):
    add_customer(db)
    key = add_award(db)
    (pk,) = plan(db, LIVE, [key])
    adapter = FakeAdapter(*[Unavailable("503 Service Unavailable")] * outbox.MAX_ATTEMPTS)
    at = T0
    waits = []
    for _ in range(outbox.MAX_ATTEMPTS - 1):
        out = run(db, pk, adapter, at=at)
        assert out.status == "pending"
        waits.append((out.retry_at - at).total_seconds())
        at = out.retry_at
    assert waits[:4] == [2, 4, 8, 16]
    assert run(db, pk, adapter, at=at).status == "failed"
    grant = rows(db, key)["grant", None]
    assert grant["attempts"] == outbox.MAX_ATTEMPTS and "503" in grant["last_error"]
    assert award_status(db, key) == "failed"


def test_unavailable_then_success(db):
    add_customer(db)
    key = add_award(db)
    (pk,) = plan(db, LIVE, [key])
    adapter = FakeAdapter(Unavailable("timed out"), DeliveryResult("d-1"))
    out = run(db, pk, adapter)
    assert out.retry_at == T0 + timedelta(seconds=2)
    assert run(db, pk, adapter, at=out.retry_at).status == "delivered"
    assert rows(db, key)["grant", None]["last_error"] is None


def test_an_unexpected_adapter_error_is_retried_not_lost(db):
    add_customer(db)
    key = add_award(db)
    (pk,) = plan(db, LIVE, [key])
    out = run(db, pk, FakeAdapter(KeyError("data")))
    assert out.status == "pending" and "unexpected KeyError" in rows(db, key)["grant", None]["last_error"]


def test_a_claimed_delivery_is_not_run_twice(db):
    add_customer(db)
    key = add_award(db)
    (pk,) = plan(db, LIVE, [key])
    second = FakeAdapter(DeliveryResult("other"))
    inner: list[outbox.RunOutcome] = []
    first = FakeAdapter(DeliveryResult("d-1"), on_call=lambda d: inner.append(run(db, pk, second)))
    assert run(db, pk, first).status == "delivered"
    assert inner[0].status == "pending" and second.calls == []  # leased by the first run


def test_reversed_while_in_flight_the_late_success_is_revoked(db):
    add_customer(db)
    key = add_award(db)
    (pk,) = plan(db, LIVE, [key])
    adapter = FakeAdapter(DeliveryResult("d-late"), on_call=lambda d: reverse(db, key))
    out = run(db, pk, adapter)
    got = rows(db, key)
    assert out.status == "delivered" and got["grant", None]["external_id"] == "d-late"
    assert out.follow_up == (got["revoke", None]["pk"],) and got["revoke", None]["status"] == "pending"
    assert award_status(db, key) == "reversed"
    revoke = FakeAdapter(DeliveryResult(None))
    assert run(db, out.follow_up[0], revoke).status == "delivered"
    assert revoke.calls[0].external_id == "d-late"


# ---------------------------------------------------------------- notices and consent
def _deliver_grant(db, key) -> tuple[int, ...]:
    grant_pk = rows(db, key)["grant", None]["pk"]
    return run(db, grant_pk, FakeAdapter(DeliveryResult("d-1"))).follow_up


def test_a_notice_waits_for_its_grant(db):
    add_customer(db)
    key = add_award(db)
    plan(db, LIVE, [key])
    email_pk = rows(db, key)["notify", "email"]["pk"]
    notifier = FakeNotifier()
    assert run(db, email_pk, notifier=notifier) == outbox.RunOutcome("pending")
    assert notifier.sent == []
    assert email_pk in _deliver_grant(db, key)
    assert run(db, email_pk, notifier=notifier).status == "delivered"
    (notice,) = notifier.sent
    assert notice.channel == "email" and notice.event == "award.granted"
    assert notice.event_id == f"ladder-delivery-{email_pk}-1" and notice.customer["locale"] == "de"
    assert rows(db, key)["notify", "email"]["external_id"] == notice.event_id


def test_a_promotional_notice_without_consent_is_cancelled(db):
    add_customer(db, accepts_marketing=False)
    key = add_award(db, "welcome", stage="potential", params={"code": "WELCOME-1", "percent": "10"})
    plan(db, LIVE, [key])
    notifier = FakeNotifier()
    for pk in _deliver_grant(db, key):
        assert run(db, pk, notifier=notifier).status == "cancelled"
    assert notifier.sent == []
    assert {r["last_error"] for a, r in rows(db, key).items() if a[0] == "notify"} == {"no marketing consent"}
    assert award_status(db, key) == "delivered"  # the code exists; only the e-mail is withheld


def test_a_promotional_notice_with_consent_is_sent(db):
    add_customer(db, accepts_marketing=True)
    key = add_award(db, "welcome", stage="potential", params={"code": "WELCOME-1", "percent": "10"})
    plan(db, LIVE, [key])
    notifier = FakeNotifier()
    assert {run(db, pk, notifier=notifier).status for pk in _deliver_grant(db, key)} == {"delivered"}
    assert len(notifier.sent) == 2


def test_a_failing_notice_retries_and_leaves_the_award_alone(db):
    add_customer(db)
    key = add_award(db)
    plan(db, LIVE, [key])
    _deliver_grant(db, key)
    pk = rows(db, key)["notify", "webhook"]["pk"]
    out = run(db, pk, notifier=FakeNotifier(RateLimited("429", retry_after=5)))
    assert out.retry_at == T0 + timedelta(seconds=5)
    assert run(db, pk, notifier=FakeNotifier(Rejected("410 Gone")), at=out.retry_at).status == "failed"
    assert award_status(db, key) == "delivered"


def test_the_reversal_notice_gets_a_new_event_id(db):
    add_customer(db)
    key = add_award(db)
    plan(db, LIVE, [key])
    webhook_pk = rows(db, key)["notify", "webhook"]["pk"]
    notifier = FakeNotifier()
    _deliver_grant(db, key)
    run(db, webhook_pk, notifier=notifier)
    assert webhook_pk in reverse(db, key)
    run(db, webhook_pk, notifier=notifier)
    assert [(n.event, n.event_id) for n in notifier.sent] == [
        ("award.granted", f"ladder-delivery-{webhook_pk}-1"), ("award.reversed", f"ladder-delivery-{webhook_pk}-2")]


def test_customer_links_bring_a_guests_email(db):
    with db.begin() as conn:
        conn.execute(store.events.insert().values(
            shop_id="s", event_id="g-1", customer_id="guest:abc", type="order_paid", occurred_at=T0,
            body={"id": "g-1", "customer": {"email": "guest@example.com", "locale": "en"}},
            body_hash="0" * 64, source="api", received_at=T0))
        conn.execute(store.customer_links.insert().values(shop_id="s", alias_id="guest:abc", customer_id="c-9",
                                                          created_at=T0))
        profile = outbox.customer_profile(conn, "s", "c-9")
    assert profile["email"] == "guest@example.com" and profile["locale"] == "en"


def test_backoff_is_capped():
    assert outbox.backoff(1) == timedelta(seconds=2)
    assert outbox.backoff(3) == timedelta(seconds=8)
    assert outbox.backoff(40) == outbox.BACKOFF_MAX
