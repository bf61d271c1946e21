"""Facts: each definition, refunds, terms orders, excluded orders, order independence."""
from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from loyalty_ladder.events import parse_event
from loyalty_ladder.facts import FactsAccumulator, compute_facts
from loyalty_ladder.factspec import FACTS
from loyalty_ladder.programme import Settings

T0 = datetime(2026, 3, 2, 10, tzinfo=UTC)
SETTINGS = Settings()
D = Decimal


def at(days: float = 0, hours: float = 0) -> datetime:
    return T0 + timedelta(days=days, hours=hours)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def event(eid: str, kind: str, t: datetime, **extra):
    return parse_event({"id": eid, "type": kind, "customer_id": "c-1", "occurred_at": iso(t), **extra})


def paid(eid: str, t: datetime, oid: str, total: str, kind: str = "order_paid", **order):
    return event(eid, kind, t, order={"id": oid, "total": total, "currency": "EUR", **order})


def refund(eid: str, t: datetime, oid: str, rid: str, amount: str):
    return event(eid, "order_refunded", t, order={"id": oid}, refund={"id": rid, "amount": amount})


def test_no_events_every_fact_present_as_key():
    facts = compute_facts([], T0, SETTINGS)
    assert set(facts) == set(FACTS)
    assert facts["orders_count"] == 0 and facts["net_spent"] == D("0.00")
    for name in ("average_order_value", "first_order_at", "last_order_at", "days_since_last_order",
                 "days_since_first_order", "days_known", "full_price_share", "average_rating"):
        assert facts[name] is None, name
    assert facts["tags"] == frozenset() and facts["accepts_marketing"] is False


def test_types_follow_the_fact_kinds():
    evs = [paid("e1", at(0), "o1", "100.00"),
           event("e2", "review", at(1), rating=4),
           event("e3", "customer_updated", at(1), customer={"tags": ["x"]})]
    facts = compute_facts(evs, at(10), SETTINGS)
    kinds = {"count": int, "days": int, "money": Decimal, "ratio": Decimal, "number": Decimal, "bool": bool,
             "time": datetime, "tags": frozenset}
    for name, spec in FACTS.items():
        value = facts[name]
        assert value is None or isinstance(value, kinds[spec.kind]), name
        if spec.kind in ("count", "days"):
            assert not isinstance(value, bool), name
        if isinstance(value, datetime):
            assert value.tzinfo is not None


def test_order_counts_once_placed_then_paid():
    evs = [paid("e1", at(0), "o1", "300.00", kind="order_placed", payment={"method": "terms"}),
           paid("e2", at(5), "o1", "300.00")]
    facts = compute_facts(evs, at(6), SETTINGS)
    assert facts["orders_count"] == 1
    assert facts["net_spent"] == D("300.00")
    assert facts["first_order_at"] == at(0) == facts["last_order_at"]
    assert facts["outstanding_balance"] == D("0.00")


def test_money_facts_and_average():
    evs = [paid("e1", at(0), "o1", "100.00"), paid("e2", at(1), "o2", "50.00")]
    facts = compute_facts(evs, at(2), SETTINGS)
    assert facts["net_spent"] == D("150.00")
    assert facts["average_order_value"] == D("75.00")
    assert facts["orders_count"] == 2


def test_profit_from_line_costs_order_cost_and_default_margin():
    lines = [{"sku": "A", "quantity": 2, "cost": "20.00"}, {"sku": "B", "quantity": 1, "cost": "10.00"}]
    with_lines = compute_facts([paid("e1", at(0), "o1", "105.00", shipping="5.00", cost="99.00", lines=lines)],
                               at(1), SETTINGS)
    assert with_lines["profit"] == D("50.00")  # 105 - 5 - (2*20 + 10)
    # one line without cost: the order's cost is used instead
    partial = [{"sku": "A", "quantity": 2, "cost": "20.00"}, {"sku": "B", "quantity": 1}]
    order_cost = compute_facts([paid("e1", at(0), "o1", "105.00", shipping="5.00", cost="70.00", lines=partial)],
                               at(1), SETTINGS)
    assert order_cost["profit"] == D("30.00")
    margin = compute_facts([paid("e1", at(0), "o1", "105.00", shipping="5.00")], at(1), SETTINGS)
    assert margin["profit"] == D("30.00")  # (105 - 5) * 0.30
    custom = compute_facts([paid("e1", at(0), "o1", "100.00")], at(1), Settings(default_margin=D("0.5")))
    assert custom["profit"] == D("50.00")


def test_shipping_subsidy_reduces_profit():
    facts = compute_facts([paid("e1", at(0), "o1", "104.00", shipping="4.00", shipping_cost="10.00", cost="60.00")],
                          at(1), SETTINGS)
    assert facts["profit"] == D("34.00")  # 104 - 4 - 60 - (10 - 4)
    free = compute_facts([paid("e1", at(0), "o1", "100.00", shipping_cost="7.00", cost="60.00")], at(1), SETTINGS)
    assert free["profit"] == D("33.00")


def test_tax_is_not_profit():
    lines = [{"sku": "A", "quantity": 2, "price": "50.00", "cost": "30.00"}]
    # 124.00 paid = 100.00 goods + 5.00 shipping + 19.00 VAT: profit 124 - 5 - 19 - 60
    with_lines = compute_facts([paid("e1", at(0), "o1", "124.00", shipping="5.00", tax="19.00", lines=lines)],
                               at(1), SETTINGS)
    assert with_lines["profit"] == D("40.00")
    assert with_lines["net_spent"] == D("124.00")  # what the customer paid, tax included
    with_cost = compute_facts([paid("e1", at(0), "o1", "124.00", shipping="5.00", tax="19.00", cost="70.00")],
                              at(1), SETTINGS)
    assert with_cost["profit"] == D("30.00")  # 124 - 5 - 19 - 70
    # the default margin works on the net sale: (124 - 5 - 19) * 0.30
    margin = compute_facts([paid("e1", at(0), "o1", "124.00", shipping="5.00", tax="19.00")], at(1), SETTINGS)
    assert margin["profit"] == D("30.00")
    # a partial refund keeps the same share of the profit: (119 - 19 - 60) * (1 - 31/119) - (8 - 0)
    refunded = compute_facts([paid("e1", at(0), "o1", "119.00", tax="19.00", cost="60.00", shipping_cost="8.00"),
                              refund("e2", at(2), "o1", "r1", "31.00")], at(3), SETTINGS)
    assert refunded["profit"] == D("21.58")  # 40 * 88/119 = 29.579… - 8
    assert refunded["net_spent"] == D("88.00")


def test_an_order_without_tax_folds_as_before_the_field():
    evs = [paid("e1", at(0), "o1", "124.00", shipping="5.00", shipping_cost="7.00"),
           paid("e2", at(1), "o2", "80.00", cost="50.00", discount_codes=["X"]),
           refund("e3", at(2), "o2", "r1", "20.00")]
    facts = compute_facts(evs, at(3), SETTINGS)
    # (124 - 5) * 0.30 - (7 - 5) + (80 - 50) * (1 - 20/80)
    assert facts["profit"] == D("56.20")
    zero_tax = [paid("e1", at(0), "o1", "124.00", shipping="5.00", shipping_cost="7.00", tax="0.00"),
                paid("e2", at(1), "o2", "80.00", cost="50.00", discount_codes=["X"], tax="0.00"),
                refund("e3", at(2), "o2", "r1", "20.00")]
    assert compute_facts(zero_tax, at(3), SETTINGS) == facts
    assert "tax" not in evs[0].raw["order"] and evs[0].order.tax is None


def test_partial_refund_reduces_net_and_profit_proportionally():
    evs = [paid("e1", at(0), "o1", "200.00", cost="100.00"), refund("e2", at(3), "o1", "r1", "50.00")]
    facts = compute_facts(evs, at(4), SETTINGS)
    assert facts["net_spent"] == D("150.00")
    assert facts["profit"] == D("75.00")  # (200 - 100) * (1 - 50/200)
    assert facts["orders_count"] == 1
    assert facts["refunds_count"] == 1
    before = compute_facts(evs, at(2), SETTINGS)
    assert before["net_spent"] == D("200.00") and before["refunds_count"] == 0


def test_refund_ids_are_not_double_counted():
    evs = [paid("e1", at(0), "o1", "200.00"), refund("e2", at(3), "o1", "r1", "50.00"),
           refund("e3", at(3, 1), "o1", "r1", "50.00")]
    facts = compute_facts(evs, at(4), SETTINGS)
    assert facts["net_spent"] == D("150.00") and facts["refunds_count"] == 1


def test_full_refund_leaves_counts_but_not_refunds_count():
    evs = [paid("e1", at(0), "o1", "80.00"), paid("e2", at(40), "o2", "20.00"),
           refund("e3", at(60), "o1", "r1", "50.00"), refund("e4", at(61), "o1", "r2", "30.00")]
    facts = compute_facts(evs, at(62), SETTINGS)
    assert facts["orders_count"] == 1
    assert facts["net_spent"] == D("20.00")
    assert facts["first_order_at"] == at(40)
    assert facts["refunds_count"] == 2


def test_cancelled_order_contributes_nothing():
    evs = [paid("e1", at(0), "o1", "80.00"), event("e2", "order_cancelled", at(1), order={"id": "o1"})]
    facts = compute_facts(evs, at(2), SETTINGS)
    assert facts["orders_count"] == 0 and facts["net_spent"] == D("0.00") and facts["profit"] == D("0.00")
    assert facts["refunds_count"] == 1 and facts["average_order_value"] is None


def test_excluded_orders_contribute_nothing_but_their_refunds_count():
    evs = [paid("e1", at(0), "o1", "80.00", kind="order_placed", payment={"method": "terms"}),
           refund("e2", at(2), "o1", "r1", "80.00"), paid("e3", at(3), "o2", "10.00")]
    facts = compute_facts(evs, at(4), SETTINGS, excluded_orders=frozenset({"o1"}))
    assert facts["orders_count"] == 1 and facts["net_spent"] == D("10.00")
    assert facts["first_order_at"] == at(3)
    assert facts["outstanding_balance"] == D("0.00")
    assert facts["refunds_count"] == 1


def test_outstanding_balance_of_terms_orders():
    terms = {"payment": {"method": "terms", "due_at": iso(at(30))}}
    evs = [paid("e1", at(0), "o1", "300.00", kind="order_placed", **terms),
           paid("e2", at(1), "o2", "100.00", kind="order_placed", **terms),
           paid("e3", at(1), "o3", "50.00", kind="order_placed", payment={"method": "card"}),
           event("e4", "payment_received", at(5), order={"id": "o1"}, amount="120.00")]
    assert compute_facts(evs, at(6), SETTINGS)["outstanding_balance"] == D("280.00")  # 180 + 100
    evs.append(paid("e5", at(7), "o2", "100.00"))  # o2 paid in full
    assert compute_facts(evs, at(8), SETTINGS)["outstanding_balance"] == D("180.00")
    evs.append(refund("e6", at(9), "o1", "r1", "30.00"))
    assert compute_facts(evs, at(10), SETTINGS)["outstanding_balance"] == D("150.00")
    evs.append(event("e7", "payment_received", at(11), order={"id": "o1"}, amount="500.00"))
    assert compute_facts(evs, at(12), SETTINGS)["outstanding_balance"] == D("0.00")


def test_full_price_share():
    evs = [paid("e1", at(0), "o1", "60.00"),
           paid("e2", at(1), "o2", "30.00", discount_codes=["WELCOME"]),
           paid("e3", at(2), "o3", "10.00", discount_total="2.00")]
    assert compute_facts(evs, at(3), SETTINGS)["full_price_share"] == D("0.6000")
    assert compute_facts(evs[1:], at(3), SETTINGS)["full_price_share"] == D("0.0000")
    zero = [paid("e1", at(0), "o1", "0.00")]
    assert compute_facts(zero, at(1), SETTINGS)["full_price_share"] is None


def test_days_facts_floor_whole_days():
    evs = [event("e0", "customer_created", at(-3)), paid("e1", at(0), "o1", "10.00"),
           paid("e2", at(5), "o2", "10.00")]
    facts = compute_facts(evs, at(7, hours=23.9), SETTINGS)
    assert facts["days_since_last_order"] == 2
    assert facts["days_since_first_order"] == 7
    assert facts["days_known"] == 10
    assert compute_facts(evs, at(5), SETTINGS)["days_since_last_order"] == 0


def test_twelve_month_window():
    evs = [paid("e1", datetime(2025, 1, 10, tzinfo=UTC), "o1", "10.00"),
           paid("e2", datetime(2025, 6, 1, tzinfo=UTC), "o2", "10.00"),
           paid("e3", datetime(2025, 6, 20, tzinfo=UTC), "o3", "10.00"),
           paid("e4", datetime(2025, 12, 31, 23, tzinfo=UTC), "o4", "10.00")]
    now = datetime(2026, 1, 10, tzinfo=UTC)  # 2025-01-10 is exactly 365 days ago: outside
    facts = compute_facts(evs, now, SETTINGS)
    assert facts["orders_12m"] == 3
    assert facts["active_months_12m"] == 2
    assert facts["orders_count"] == 4
    facts = compute_facts(evs, now - timedelta(microseconds=1), SETTINGS)
    assert facts["orders_12m"] == 4 and facts["active_months_12m"] == 3


def test_counts_of_simple_events():
    evs = [event("e1", "checkout_started", at(0)), event("e2", "checkout_started", at(1)),
           event("e3", "referral", at(2), referred_customer_id="c-2"),
           event("e4", "referral", at(3), referred_customer_id="c-2"),
           event("e5", "referral", at(3), referred_customer_id="c-3"),
           event("e6", "complaint", at(4), reason="late"),
           event("e7", "review", at(5), rating=5), event("e8", "review", at(6), rating=4),
           event("e9", "review", at(6), rating=4)]
    facts = compute_facts(evs, at(7), SETTINGS)
    assert facts["checkouts_started"] == 2
    assert facts["referrals"] == 2  # distinct referred customers
    assert facts["complaints"] == 1
    assert facts["reviews_count"] == 3
    assert facts["average_rating"] == D("4.33")


def test_customer_flags_and_tags():
    evs = [event("e1", "customer_created", at(0), customer={"tags": ["a", "b"], "accepts_marketing": True}),
           event("e2", "customer_updated", at(1), customer={"email": "x@example.com"})]
    facts = compute_facts(evs, at(2), SETTINGS)
    assert facts["has_account"] is True and facts["accepts_marketing"] is True
    assert facts["tags"] == frozenset({"a", "b"})  # a block without tags keeps them
    assert facts["image_client"] is False
    evs.append(event("e3", "customer_updated", at(3), customer={"tags": ["image-client"], "accepts_marketing": False}))
    facts = compute_facts(evs, at(4), SETTINGS)
    assert facts["tags"] == frozenset({"image-client"}) and facts["image_client"] is True
    assert facts["accepts_marketing"] is False
    evs.append(event("e4", "customer_deleted", at(5)))
    assert compute_facts(evs, at(6), SETTINGS)["has_account"] is False
    flag = [event("e1", "customer_updated", at(0), customer={"image_client": True})]
    assert compute_facts(flag, at(1), SETTINGS)["image_client"] is True
    assert compute_facts(evs, at(6), Settings(image_client_tag="famous"))["image_client"] is False


def test_events_after_at_are_ignored_and_input_order_does_not_matter():
    evs = [paid("e1", at(0), "o1", "100.00"), refund("e2", at(3), "o1", "r1", "40.00"),
           paid("e3", at(4), "o2", "60.00", discount_codes=["X"]), event("e4", "review", at(5), rating=3),
           paid("e5", at(50), "o3", "10.00")]
    expected = compute_facts(evs, at(10), SETTINGS)
    rng = random.Random(7)
    for _ in range(10):
        shuffled = evs + evs[:2]
        rng.shuffle(shuffled)
        assert compute_facts(shuffled, at(10), SETTINGS) == expected
    assert expected["orders_count"] == 2


def test_accumulator_snapshots_are_incremental():
    acc = FactsAccumulator(SETTINGS)
    acc.apply(paid("e1", at(0), "o1", "100.00"))
    first = acc.snapshot(at(0))
    acc.apply(paid("e2", at(1), "o2", "50.00"))
    second = acc.snapshot(at(1))
    assert first["net_spent"] == D("100.00") and second["net_spent"] == D("150.00")
    assert acc.new_orders == ["o1", "o2"]
    assert acc.order_net("o2") == D("50.00") and acc.order_net("nope") is None


@pytest.mark.parametrize("total, refunded", [("0.10", "0.03"), ("99.99", "33.33")])
def test_money_is_quantised(total, refunded):
    facts = compute_facts([paid("e1", at(0), "o1", total), refund("e2", at(1), "o1", "r", refunded)],
                          at(2), SETTINGS)
    for name in ("net_spent", "profit", "average_order_value", "outstanding_balance"):
        assert facts[name].as_tuple().exponent == -2, name


def test_a_cancelled_order_never_seen_paid_is_not_a_refund():
    """Shops auto-cancel unpaid orders: only orders we saw count in refunds_count."""
    from loyalty_ladder.events import parse_event
    from loyalty_ladder.facts import compute_facts
    from loyalty_ladder.programme import Settings

    def ev(kind, eid, day, **extra):
        return parse_event({"id": eid, "type": kind, "customer_id": "c", "occurred_at": f"2026-01-{day:02d}T10:00:00Z",
                            **extra})

    unseen = ev("order_cancelled", "x1", 2, order={"id": "never-paid"})
    paid = ev("order_paid", "p1", 3, order={"id": "o1", "total": "10.00", "currency": "EUR"})
    cancel_seen = ev("order_cancelled", "x2", 4, order={"id": "o1"})
    at = datetime(2026, 2, 1, tzinfo=UTC)
    assert compute_facts([unseen], at, Settings())["refunds_count"] == 0
    assert compute_facts([unseen, paid, cancel_seen], at, Settings())["refunds_count"] == 1
