"""The points ledger: batches with their own expiry, spent first-expiring-first, clawed back from
their own order first, debts paid by new earnings; redemptions through the API and the CLI.

The default programme gives regulars and advocates one point per currency unit of each order
(``order-points``, a year's validity) and sets ``point_value: "0.01"``."""
from __future__ import annotations

import dataclasses
import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_ladder import rulefile, store
from loyalty_ladder.cli import main
from loyalty_ladder.engine import get_engine
from loyalty_ladder.events import parse_event
from loyalty_ladder.ladder import fold
from loyalty_ladder.points import PointsLedger
from loyalty_ladder.timeline import Timeline

from .conftest import ADMIN_TOKEN

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 1, 5, tzinfo=UTC)
DAY = timedelta(days=1)
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def default():
    programme = rulefile.load_programme(ROOT / "rules")
    return programme, get_engine().compile(programme)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def order(n: int, at: datetime, total: str = "100.00", customer: str = "c", **extra) -> dict:
    return {"id": f"paid-{n}", "type": "order_paid", "customer_id": customer, "occurred_at": iso(at),
            "order": {"id": f"O{n}", "total": total, "currency": "EUR", **extra}}


def refund(n: int, at: datetime, amount: str, customer: str = "c", rid: str | None = None) -> dict:
    return {"id": f"refund-{n}-{rid or amount}", "type": "order_refunded", "customer_id": customer,
            "occurred_at": iso(at), "order": {"id": f"O{n}"}, "refund": {"id": rid or f"r{n}-{amount}", "amount": amount}}


def redeemed(rid: str, at: datetime, points: int, customer: str = "c") -> dict:
    return {"id": f"redeem-{rid}", "type": "points_redeemed", "customer_id": customer, "occurred_at": iso(at),
            "adjustment": {"author": "shop", "reason": "points redeemed", "points": points, "redemption": rid,
                           "value": str(Decimal(points) / 100), "currency": "EUR"}}


def regular(n: int = 3, start: datetime = T0, gap: timedelta = 20 * DAY, **extra) -> list[dict]:
    """Orders every ``gap``: the third makes the customer regular (it and the later ones earn points)."""
    return [order(i, start + i * gap, **extra) for i in range(n)]


def run(default, raw, as_of):
    programme, compiled = default
    return fold(programme, compiled, [parse_event(e) for e in raw], as_of, shop="s", customer_id="c")


# ------------------------------------------------------------------ the ledger alone
def test_spending_takes_the_batch_that_expires_first_and_never_goes_below_zero():
    ledger = PointsLedger()
    ledger.earn("late", T0, 100, T0 + 300 * DAY)
    ledger.earn("soon", T0 + DAY, 50, T0 + 100 * DAY)
    ledger.earn("never", T0, 10, None)
    assert ledger.spend("r1", T0 + 2 * DAY, 70) == 70
    assert {k: b.remaining for k, b in ledger.batches.items()} == {"late": 80, "soon": 0, "never": 10}
    assert ledger.spend("r2", T0 + 3 * DAY, 100) == 90  # what is there; the rest is a debt
    assert ledger.balance(T0 + 3 * DAY) == 0 and ledger.debt == 10
    ledger.earn("next", T0 + 4 * DAY, 25, T0 + 400 * DAY)  # a new earning pays the debt first
    assert ledger.debt == 0 and ledger.batches["next"].remaining == 15
    assert [e.kind for e in ledger.entries][-2:] == ["earned", "debt_paid"]


def test_a_clawback_takes_its_own_batch_first_then_the_first_expiring():
    ledger = PointsLedger()
    ledger.earn("a", T0, 100, T0 + 50 * DAY)
    ledger.earn("b", T0, 100, T0 + 40 * DAY)
    ledger.earn("c", T0, 100, T0 + 60 * DAY)
    ledger.spend("r", T0 + DAY, 80)  # from b, the first to expire
    ledger.resize("c", T0 + 2 * DAY, 0)  # c's order refunded in full: its 100 points go
    assert {k: b.remaining for k, b in ledger.batches.items()} == {"a": 100, "b": 20, "c": 0}
    ledger.resize("a", T0 + 3 * DAY, 0)  # a's 100, and a has only ... all 100: nothing from others
    ledger.spend("r2", T0 + 3 * DAY, 10)
    ledger.resize("b", T0 + 4 * DAY, 50)  # b shrinks by 50: its 10 left, then nobody: a debt of 40
    assert ledger.balance(T0 + 4 * DAY) == 0 and ledger.debt == 40
    assert ledger.entries[-1].kind == "clawed_back" and ledger.entries[-1].debt == 40


def test_what_is_left_of_a_batch_expires_at_its_instant():
    ledger = PointsLedger()
    ledger.earn("a", T0, 100, T0 + 10 * DAY)
    ledger.spend("r", T0 + DAY, 30)
    assert ledger.next_expiry(T0) == T0 + 10 * DAY
    ledger.expire(T0 + 10 * DAY)
    assert ledger.balance(T0 + 10 * DAY) == 0 and ledger.entries[-1].kind == "expired"
    assert ledger.entries[-1].points == -70 and ledger.next_expiry(T0) is None


OPS = st.lists(st.tuples(st.sampled_from(["earn", "spend", "claw"]), st.integers(1, 300), st.integers(1, 400)),
               min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_property_the_balance_is_never_negative_and_spending_is_first_expiring_first(ops):
    ledger = PointsLedger()
    at = T0
    for i, (op, points, days) in enumerate(ops):
        at += DAY
        if op == "earn":
            ledger.earn(f"b{i}", at, points, at + days * DAY)
        elif op == "spend":
            before = {k: b.remaining for k, b in ledger.batches.items()}
            usable = sorted((b for b in ledger.batches.values() if b.usable(at)),
                            key=lambda b: (b.expires_at, b.earned_at, b.key))
            ledger.spend(f"r{i}", at, points)
            # every batch touched expires no later than every batch left with points
            touched = [b for b in usable if b.remaining != before[b.key]]
            kept = [b for b in usable if b.remaining > 0]
            assert not touched or not kept or max(b.expires_at for b in touched) <= min(b.expires_at for b in kept) \
                or len({b.key for b in touched} & {b.key for b in kept}) == 1
        elif ledger.batches:
            key = sorted(ledger.batches)[points % len(ledger.batches)]
            ledger.resize(key, at, max(0, ledger.batches[key].points - days))
        ledger.expire(at)
        assert all(b.remaining >= 0 for b in ledger.batches.values())
        assert ledger.balance(at) >= 0 and ledger.debt >= 0
        assert not (ledger.debt and ledger.balance(at) and ledger.entries[-1].kind != "expired"
                    and ledger.entries[-1].kind in ("earned", "debt_paid"))


# ------------------------------------------------------------------ in the fold
def test_points_earn_on_the_net_without_tax_gift_cards_and_the_part_paid_with_points(default):
    raw = regular(2) + [order(2, T0 + 40 * DAY, total="200.00", tax="20.00", points_paid="30.00",
                              lines=[{"quantity": 1, "price": "50.00", "gift_card": True},
                                     {"quantity": 1, "price": "150.00"}])]
    state = run(default, raw, T0 + 41 * DAY)
    assert state.stage == "regular"
    points = {a.scope_ref: a for a in state.awards if a.type == "points"}
    assert points["O2"].params["points"] == 100  # 200 − 20 tax − 50 gift card − 30 paid with points
    assert points["O2"].value == Decimal("1.00")  # 100 × 0.01
    assert state.points.balance == 100 and [b.points for b in state.points.batches] == [100]


def test_before_semantics_3_an_order_earns_on_its_whole_net(default):
    programme, compiled = default
    upgrade = T0 + 45 * DAY
    timeline = dataclasses.replace(Timeline.single(programme, compiled), semantics=((None, 2), (upgrade, 3)))
    raw = regular(2, tax="20.00") + [order(2, T0 + 40 * DAY, tax="20.00"), order(3, T0 + 60 * DAY, tax="20.00")]
    state = fold(timeline, None, [parse_event(e) for e in raw], T0 + 61 * DAY, shop="s", customer_id="c")
    assert {a.scope_ref: a.params["points"] for a in state.awards if a.type == "points"} == {"O2": 100, "O3": 80}


def test_a_partial_refund_claws_back_in_proportion(default):
    raw = regular(3) + [refund(2, T0 + 50 * DAY, "25.00")]
    state = run(default, raw, T0 + 51 * DAY)
    assert [a.params["points"] for a in state.awards if a.type == "points"] == [75]
    assert state.points.balance == 75
    assert [(e.kind, e.points) for e in state.points.entries] == [("earned", 100), ("clawed_back", -25)]


def test_points_spent_and_then_clawed_back_leave_a_debt_that_the_next_order_pays(default):
    raw = regular(3) + [redeemed("r1", T0 + 45 * DAY, 90), refund(2, T0 + 50 * DAY, "60.00"),
                        order(3, T0 + 60 * DAY)]
    state = run(default, raw, T0 + 55 * DAY)
    assert state.points.balance == 0 and state.points.debt == 50  # 10 left of the batch; 50 owed
    assert state.points.redeemed == 90
    state = run(default, raw, T0 + 61 * DAY)
    assert state.points.debt == 0 and state.points.balance == 50
    # the redemption already made stands, and its award pays out what was spent
    pay_out = [a for a in state.awards if a.type == "points_redemption"]
    assert [(a.key, a.params["points"], a.params["value"], a.value) for a in pay_out] == [
        ("s/c/points/redemption/r1", 90, "0.90", Decimal("0.90"))]
    assert pay_out[0].params["code"].startswith("POINTS-")


def test_an_order_that_never_counted_takes_its_points_and_what_was_spent_of_them_is_a_debt(default):
    # cancelled inside the refund window: the order vanishes from the history, with its batch
    raw = regular(3) + [redeemed("r1", T0 + 41 * DAY, 60),
                        {"id": "cancel-2", "type": "order_cancelled", "customer_id": "c",
                         "occurred_at": iso(T0 + 45 * DAY), "order": {"id": "O2"}}]
    state = run(default, raw, T0 + 46 * DAY)
    assert not [a for a in state.awards if a.type == "points"]
    assert state.points.balance == 0 and state.points.debt == 60
    assert [a.key for a in state.awards if a.type == "points_redemption"] == ["s/c/points/redemption/r1"]


def test_expiry_is_a_wake_up_and_the_customer_is_reminded_before(default):
    raw = regular(3)
    earned = T0 + 40 * DAY
    state = run(default, raw, earned + 300 * DAY)
    assert state.points.balance == 100
    reminder_at = earned + 365 * DAY - 14 * DAY
    assert state.next_wake_at <= reminder_at
    state = run(default, raw, reminder_at)
    reminders = [a for a in state.awards if a.type == "points_reminder"]
    assert [(a.key, a.params["points"], a.granted_at) for a in reminders] == [
        ("s/c/points/reminder/order-points/order/O2", 100, reminder_at)]
    assert reminders[0].params["expires_at"] == iso(earned + 365 * DAY)
    state = run(default, raw, earned + 365 * DAY)
    assert state.points.balance == 0 and state.points.entries[-1].kind == "expired"


def test_a_batch_already_spent_gets_no_reminder(default):
    raw = regular(3) + [redeemed("r1", T0 + 50 * DAY, 100)]
    state = run(default, raw, T0 + 40 * DAY + 365 * DAY)
    assert not [a for a in state.awards if a.type == "points_reminder"]


HISTORY = regular(6) + [refund(3, T0 + 70 * DAY, "40.00"), redeemed("r1", T0 + 75 * DAY, 120),
                        refund(4, T0 + 95 * DAY, "100.00", rid="full"), redeemed("r2", T0 + 130 * DAY, 30),
                        order(9, T0 + 140 * DAY, total="55.55")]


@settings(max_examples=25, deadline=None)
@given(st.randoms(use_true_random=False))
def test_property_reordering_the_events_gives_the_same_ledger_and_awards(default, rnd):
    expected = run(default, HISTORY, T0 + 500 * DAY)
    shuffled = list(HISTORY)
    rnd.shuffle(shuffled)
    state = run(default, shuffled + shuffled[:3], T0 + 500 * DAY)  # duplicates too
    assert state.points == expected.points
    assert [(a.key, dict(a.params), a.value) for a in state.awards] == [
        (a.key, dict(a.params), a.value) for a in expected.awards]


# ------------------------------------------------------------------ the API
def _post_history(client, raw):
    answer = client.post("/api/v1/shops/default/events", json=raw, headers=AUTH)
    assert answer.status_code in (200, 202), answer.get_json()


def _recent(n: int = 3) -> list[dict]:
    start = datetime.now(UTC).replace(microsecond=0) - 100 * DAY
    return regular(n, start=start)


def test_a_redemption_spends_points_and_the_same_id_answers_the_same(client, service):
    _post_history(client, _recent(4))  # 200 points
    doc = client.get("/api/v1/shops/default/customers/c", headers=AUTH).get_json()
    assert doc["points"]["balance"] == 200 and doc["points"]["value"] == "2.00" and doc["points"]["debt"] == 0
    assert [b["remaining"] for b in doc["points"]["batches"]] == [100, 100]

    answer = client.post("/api/v1/shops/default/customers/c/points/redemptions", json={"id": "checkout-1", "points": 150},
                         headers=AUTH)
    assert answer.status_code == 201, answer.get_json()
    body = answer.get_json()
    assert (body["id"], body["points"], body["value"], body["currency"], body["duplicate"]) == (
        "checkout-1", 150, "1.50", "EUR", False)
    assert body["author"] == "api" and body["balance_before"] == 200
    assert body["award"]["key"] == "default/c/points/redemption/checkout-1"
    assert body["award"]["status"] == "due"  # a generic shop: its integrator pays it out
    assert body["points_after"]["balance"] == 50
    assert [b["remaining"] for b in body["points_after"]["batches"]] == [50]  # the first to expire went first

    again = client.post("/api/v1/shops/default/customers/c/points/redemptions",
                        json={"id": "checkout-1", "points": 150}, headers=AUTH)
    assert again.status_code == 201
    repeat = again.get_json()
    assert repeat["duplicate"] is True and repeat["event_id"] == body["event_id"] and repeat["at"] == body["at"]
    assert repeat["points_after"]["balance"] == 50

    other = client.post("/api/v1/shops/default/customers/c/points/redemptions",
                        json={"id": "checkout-1", "points": 10}, headers=AUTH)
    assert other.status_code == 409 and other.get_json()["code"] == "idempotency_conflict"
    with service.db.connect() as conn:
        redemptions = conn.execute(sa.select(sa.func.count()).select_from(store.events)
                                   .where(store.events.c.type == "points_redeemed")).scalar()
        audit = conn.execute(sa.select(store.audit_log.c.action, store.audit_log.c.author)
                             .where(store.audit_log.c.action.like("points%"))).all()
    assert redemptions == 1 and [(a.action, a.author) for a in audit] == [("points_redeemed", "api")]


def test_more_than_the_balance_is_refused_and_changes_nothing(client, service):
    _post_history(client, _recent(3))  # 100 points
    answer = client.post("/api/v1/shops/default/customers/c/points/redemptions", json={"id": "x", "points": 101},
                         headers={**AUTH, "X-Ladder-Author": "till-3"})
    assert answer.status_code == 409
    body = answer.get_json()
    assert body["code"] == "insufficient_points" and body["errors"]["balance"] == 100
    with service.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.events)
                            .where(store.events.c.type == "points_redeemed")).scalar() == 0
    assert client.get("/api/v1/shops/default/customers/c", headers=AUTH).get_json()["points"]["balance"] == 100


@pytest.mark.parametrize(("body", "status"), [
    ({"id": "x", "points": 0}, 422), ({"id": "x", "points": "5"}, 422), ({"id": "x", "points": 1.5}, 422),
    ({"points": 5}, 422), ({"id": "", "points": 5}, 422), ({"id": "x\u0001", "points": 5}, 400),
    ({"id": "x", "points": 5, "extra": 1}, 422)])
def test_a_bad_redemption_is_a_clear_error(client, body, status):
    _post_history(client, _recent(3))
    answer = client.post("/api/v1/shops/default/customers/c/points/redemptions", json=body, headers=AUTH)
    assert answer.status_code == status, answer.get_json()
    assert answer.get_json()["code"] in ("bad_request", "unprocessable_entity", "invalid_input")


def test_an_unknown_customer_is_404(client):
    answer = client.post("/api/v1/shops/default/customers/nobody/points/redemptions", json={"id": "x", "points": 1},
                         headers=AUTH)
    assert answer.status_code == 404


def test_points_adjusted_by_hand_add_a_batch_and_remove_first_expiring_first(client):
    _post_history(client, _recent(3))
    staff = {**AUTH, "X-Ladder-Author": "maria"}
    added = client.post("/api/v1/shops/default/customers/c/points/adjustments",
                        json={"points": 40, "reason": "goodwill", "expires_days": 30}, headers=staff)
    assert added.status_code == 201, added.get_json()
    assert added.get_json()["points_after"]["balance"] == 140
    removed = client.post("/api/v1/shops/default/customers/c/points/adjustments",
                          json={"points": -50, "reason": "double credit"}, headers=staff)
    assert removed.status_code == 201
    after = removed.get_json()["points_after"]
    assert after["balance"] == 90 and [b["remaining"] for b in after["batches"]] == [90]  # the 30-day batch went
    too_much = client.post("/api/v1/shops/default/customers/c/points/adjustments",
                           json={"points": -91, "reason": "x"}, headers=staff)
    assert too_much.status_code == 409 and too_much.get_json()["code"] == "insufficient_points"
    no_author = client.post("/api/v1/shops/default/customers/c/points/adjustments",
                            json={"points": 5, "reason": "x"}, headers=AUTH)
    assert no_author.status_code == 400


def test_the_cli_redeems_and_says_what_is_left(client, ladder_settings, monkeypatch):
    _post_history(client, _recent(3))
    monkeypatch.setenv("LADDER_DATABASE_URL", ladder_settings.database_url)
    monkeypatch.setenv("LADDER_RULES", str(ROOT / "rules"))
    runner = CliRunner()
    result = runner.invoke(main, ["points", "redeem", "default", "c", "--id", "till-1", "--points", "60",
                                  "--author", "maria"])
    assert result.exit_code == 0, result.output
    assert "redemption till-1: 60 points = 0.60 EUR" in result.output and "balance now 40 points" in result.output
    refused = runner.invoke(main, ["points", "redeem", "default", "c", "--id", "till-2", "--points", "41",
                                   "--author", "maria"])
    assert refused.exit_code == 1 and "has 40 points, fewer than the 41 asked" in refused.output
    assert "Traceback" not in refused.output
    as_json = runner.invoke(main, ["points", "redeem", "default", "c", "--id", "till-1", "--points", "60",
                                   "--author", "maria", "--json"])
    assert json.loads(as_json.output.splitlines()[-1])["duplicate"] is True


def test_redemption_order_in_time_does_not_matter_for_a_random_history(default):
    rnd = random.Random(7)
    raw = regular(8)
    at = T0 + 200 * DAY
    state = run(default, raw, at)
    spends = [redeemed(f"r{i}", at + i * DAY, rnd.randint(1, 50)) for i in range(5)]
    total = sum(e["adjustment"]["points"] for e in spends)
    after = run(default, raw + spends, at + 10 * DAY)
    assert after.points.balance == state.points.balance - total and after.points.debt == 0
    # first-expiring-first: the oldest batches are the ones spent
    remaining = [b.remaining for b in after.points.batches]
    assert remaining == sorted(remaining)


def test_the_customer_document_lists_privileges_with_status_since_and_reason(client):
    _post_history(client, _recent(3))
    doc = client.get("/api/v1/shops/default/customers/c", headers=AUTH).get_json()
    privileges = {p["reward"]: p for p in doc["privileges"]}
    # the tag of the stage the customer is in is held; those of the stages passed ended
    assert privileges["tag-regular"]["status"] == "due" and privileges["tag-regular"]["tag"] == "ladder-regular"
    assert privileges["tag-regular"]["since"] == doc["history"][-1]["at"]
    assert privileges["tag-first-purchase"]["status"] == "ended"
    assert privileges["tag-first-purchase"]["reason"] == "ended: left stage first_purchase for regular"
    assert all(p["type"] == "tag" for p in doc["privileges"])
    assert all(r["type"] != "tag" or r["key"] in {p["key"] for p in doc["privileges"]} for r in doc["rewards"])


def test_a_refund_after_its_batch_expired_takes_nothing_from_the_other_batches():
    ledger = PointsLedger()
    ledger.earn("a", T0, 100, T0 + 10 * DAY)
    ledger.earn("b", T0, 100, T0 + 300 * DAY)
    ledger.spend("r", T0 + DAY, 30)  # from a: 70 left of it, which expire
    ledger.expire(T0 + 10 * DAY)
    ledger.resize("a", T0 + 20 * DAY, 0)  # a's order refunded in full: 70 expired, 30 were spent
    assert ledger.batches["b"].remaining == 70 and ledger.debt == 0


def test_a_zero_point_batch_grows_when_its_order_does():
    ledger = PointsLedger()
    ledger.earn("a", T0, 0, T0 + 10 * DAY)
    ledger.resize("a", T0 + DAY, 100)
    assert ledger.balance(T0 + DAY) == 100


def test_points_granted_before_the_shop_went_live_count_in_the_balance(default):
    """An imported history's points are the customer's (their awards are historical: recorded, not
    delivered again): live_from does not move them out of the ledger, so a second go-live after a
    shadow period never takes back what a customer earned, or spent, while the shop was live."""
    programme, compiled = default
    state = fold(programme, compiled, [parse_event(e) for e in regular(4)], T0 + 61 * DAY, shop="s",
                 customer_id="c", live_from=T0 + 50 * DAY)
    assert [b.key for b in state.points.batches] == ["s/c/order-points/order/O2", "s/c/order-points/order/O3"]
    assert [a.historical for a in state.awards if a.type == "points"] == [True, False]


@pytest.mark.parametrize(("redemption_id", "status"), [("\ud800", 400), ("a/b", 400), ("x" * 201, 422)])
def test_a_redemption_id_that_cannot_be_stored_is_a_clear_error(client, redemption_id, status):
    _post_history(client, _recent(3))
    body = json.dumps({"id": redemption_id, "points": 1}).encode()
    answer = client.post("/api/v1/shops/default/customers/c/points/redemptions", data=body,
                         content_type="application/json", headers=AUTH)
    assert answer.status_code == status, answer.get_json()


def test_points_worth_less_than_a_cent_are_refused(client, service):
    _post_history(client, _recent(3))
    answer = client.post("/api/v1/shops/default/customers/c/points/redemptions", json={"id": "tiny", "points": 0},
                         headers=AUTH)
    assert answer.status_code == 422
    # at 0.01 a point, 1 point is a cent: the smallest redemption
    answer = client.post("/api/v1/shops/default/customers/c/points/redemptions", json={"id": "cent", "points": 1},
                         headers=AUTH)
    assert answer.status_code == 201 and answer.get_json()["value"] == "0.01"


def test_a_guest_cannot_redeem_before_they_have_an_account(client):
    guest = "guest:0123456789abcdef"
    _post_history(client, [dict(e, customer_id=guest) for e in _recent(3)])
    answer = client.post(f"/api/v1/shops/default/customers/{guest}/points/redemptions",
                         json={"id": "g-1", "points": 10}, headers=AUTH)
    assert answer.status_code == 409 and answer.get_json()["code"] == "not_an_account"


def test_concurrent_redemptions_never_spend_more_than_the_balance(service, client):
    """The instant of a redemption is read under the customer's lock: one that waited for another
    is checked against a balance that includes the first, even when its clock read earlier."""
    from loyalty_ladder import redemptions

    _post_history(client, _recent(3))  # 100 points
    early = datetime.now(UTC)
    timeline = service.timeline("default")
    redemptions.redeem(service.db, timeline, "default", "c", "first", 80, author="t", now=early + timedelta(seconds=5))
    with pytest.raises(redemptions.InsufficientPoints):
        redemptions.redeem(service.db, timeline, "default", "c", "second", 80, author="t", now=early)


def test_simulate_shows_ended_privileges_as_ended():
    from loyalty_ladder.views import simulate

    programme = rulefile.load_programme(ROOT / "rules")
    compiled = get_engine().compile(programme)
    out = simulate(programme, compiled, regular(3), as_of=T0 + 41 * DAY)["customers"]["c"]
    privileges = {p["reward"]: p["status"] for p in out["privileges"]}
    assert privileges["tag-regular"] == "due" and privileges["tag-first-purchase"] == "ended"


def test_a_point_worth_a_tenth_of_a_cent_needs_ten_to_redeem(client, service, tmp_path):
    from loyalty_ladder import redemptions
    from loyalty_ladder.errors import BadRequest

    _post_history(client, _recent(3))
    cheap = (ROOT / "rules" / "ladder.yaml").read_text().replace('point_value: "0.01"', 'point_value: "0.001"')
    folder = tmp_path / "cheap"
    folder.mkdir()
    (folder / "ladder.yaml").write_text(cheap)
    cheap_programme = rulefile.load_programme(folder)
    timeline = Timeline.single(cheap_programme, get_engine().compile(cheap_programme))
    with pytest.raises(BadRequest, match="worth less than 0.01"):
        redemptions.redeem(service.db, timeline, "default", "c", "tiny", 4, author="t")
    stored = redemptions.redeem(service.db, timeline, "default", "c", "ten", 10, author="t")
    assert stored.event["adjustment"]["value"] == "0.01"


def test_points_restored_to_an_expired_batch_are_not_taken_twice():
    ledger = PointsLedger()
    ledger.earn("a", T0, 100, T0 + 10 * DAY)
    ledger.earn("b", T0, 100, T0 + 300 * DAY)
    ledger.resize("a", T0 + DAY, 0)  # cancelled outside the window: clawed back
    ledger.expire(T0 + 10 * DAY)
    ledger.resize("a", T0 + 20 * DAY, 100)  # restored, but its batch has expired: nothing to spend
    ledger.resize("a", T0 + 30 * DAY, 0)  # refunded in full after all: nothing more to take
    assert ledger.batches["b"].remaining == 100 and ledger.debt == 0


@pytest.mark.parametrize("old", ["historical", "ended"])
def test_a_suspended_privilege_recorded_as_history_or_ended_is_never_delivered_before_it_is_restored(
        sqlite_engine, old):
    """At go-live (historical → held) and when the history that ended it is undone (ended → held),
    a privilege paused now is ``suspended``, not ``due``: nothing reaches the shop until it is restored."""
    from loyalty_ladder import award_store
    from loyalty_ladder.awards import imply
    from loyalty_ladder.programme import Reward, Trigger

    vip = Reward(id="vip", type="vip_service", trigger=Trigger("stage"), params={"level": "gold", "tag": "vip"})
    held = imply(vip, shop="s", customer_id="c", scope="privilege", ref=("advocate", 1), stage="advocate", turn=1,
                 granted_at=T0, suspended_at=T0 + 10 * DAY, suspended_reason="suspended: the customer lapsed")
    with store.begin_write(sqlite_engine) as conn:
        award_store.record(conn, "s", "c", [held], "v1", T0 + 11 * DAY)
        conn.execute(store.awards.update().values(status=old))
        recorded = award_store.record(conn, "s", "c", [held], "v1", T0 + 12 * DAY)
        status = conn.execute(sa.select(store.awards.c.status)).scalar()
    assert status == "suspended" and held.key not in recorded.granted


def test_reminders_start_with_semantics_4(default):
    programme, compiled = default
    upgrade = T0 + 500 * DAY  # after the batch's reminder (day 391) and expiry (day 405)
    timeline = dataclasses.replace(Timeline.single(programme, compiled), semantics=((None, 3), (upgrade, 4)))
    state = fold(timeline, None, [parse_event(e) for e in regular(3)], T0 + 600 * DAY, shop="s", customer_id="c")
    assert [a.type for a in state.awards if a.type == "points"] == ["points"]
    assert not [a for a in state.awards if a.type == "points_reminder"]
