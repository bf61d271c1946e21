"""The generic event schema: valid examples, per-type requirements, canonical ``raw``."""
from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from marshmallow import ValidationError

from loyalty_ladder.events import EVENT_TYPES, Event, parse_event, parse_events

ARCHITECTURE_EXAMPLE = {
    "id": "evt-1001", "type": "order_paid", "customer_id": "c-42", "occurred_at": "2026-03-02T10:00:00Z",
    "order": {"id": "o-7", "total": "108.00", "currency": "EUR", "discount_total": "12.00", "cost": "70.00",
              "shipping": "5.00", "discount_codes": ["WELCOME10"],
              "payment": {"method": "card"},
              "lines": [{"sku": "A-1", "quantity": 2, "price": "57.50", "cost": "35.00", "gift_card": False}]},
    "customer": {"email": "ana@example.com"},
}


def base(kind: str, **extra) -> dict:
    return {"id": f"e-{kind}", "type": kind, "customer_id": "c-1", "occurred_at": "2026-03-02T10:00:00+02:00",
            **extra}


def errors_of(data) -> dict:
    with pytest.raises(ValidationError) as info:
        parse_event(data)
    return info.value.normalized_messages()


def test_architecture_example_parses_to_typed_event():
    event = parse_event(ARCHITECTURE_EXAMPLE)
    assert event.id == "evt-1001" and event.type == "order_paid" and event.customer_id == "c-42"
    assert event.occurred_at == datetime(2026, 3, 2, 10, tzinfo=UTC)
    order = event.order
    assert order is not None
    assert order.total == Decimal("108.00") and order.currency == "EUR"
    assert order.discount_codes == ("WELCOME10",)
    assert order.payment is not None and order.payment.method == "card"
    assert order.lines[0].quantity == 2 and order.lines[0].cost == Decimal("35.00")
    assert order.lines[0].gift_card is False
    assert event.customer is not None and event.customer.email == "ana@example.com"


def test_raw_is_canonical_json_and_rebuilds_the_same_event():
    event = parse_event(ARCHITECTURE_EXAMPLE)
    assert json.loads(json.dumps(event.raw)) == event.raw
    assert event.raw == ARCHITECTURE_EXAMPLE  # already canonical: nothing added, nothing lost
    assert Event.from_raw(event.raw) == event


def test_same_meaning_gives_same_raw():
    variant = copy.deepcopy(ARCHITECTURE_EXAMPLE)
    variant["occurred_at"] = "2026-03-02T12:00:00+02:00"  # the same instant in another zone
    variant["order"]["total"] = 108  # a JSON number
    variant["order"]["shipping"] = "5"
    variant["schema"] = 1
    assert parse_event(variant).raw == parse_event(ARCHITECTURE_EXAMPLE).raw


def test_order_tax_is_optional_money_and_absent_stays_absent():
    with_tax = copy.deepcopy(ARCHITECTURE_EXAMPLE)
    with_tax["order"]["tax"] = 17.24  # a JSON number goes through str
    event = parse_event(with_tax)
    assert event.order is not None and event.order.tax == Decimal("17.24")
    assert event.raw["order"]["tax"] == "17.24"
    assert Event.from_raw(event.raw) == event
    plain = parse_event(ARCHITECTURE_EXAMPLE)
    assert plain.order is not None and plain.order.tax is None
    assert "tax" not in plain.raw["order"]  # the canonical form of every stored event is unchanged
    assert errors_of({**with_tax, "order": {**with_tax["order"], "tax": "-1.00"}}) == {
        "order": {"tax": ["Must not be negative."]}}
    assert errors_of({**with_tax, "order": {**with_tax["order"], "tax": "1.234"}}) == {
        "order": {"tax": ["At most 2 decimal places."]}}


def test_time_is_converted_to_utc():
    event = parse_event(base("checkout_started"))
    assert event.occurred_at == datetime(2026, 3, 2, 8, tzinfo=UTC)
    assert event.raw["occurred_at"] == "2026-03-02T08:00:00Z"


def test_naive_time_rejected():
    data = base("checkout_started", occurred_at="2026-03-02T10:00:00")
    assert errors_of(data) == {"occurred_at": ["timezone required (e.g. 2026-03-02T10:00:00Z)"]}


def test_garbage_time_rejected():
    assert "occurred_at" in errors_of(base("checkout_started", occurred_at="yesterday"))


def test_unknown_field_rejected_at_any_depth():
    assert errors_of(base("checkout_started", colour="red")) == {"colour": ["Unknown field."]}
    data = base("order_paid", order={"id": "o", "total": "1.00", "currency": "EUR", "totl": "1"})
    assert errors_of(data) == {"order": {"totl": ["Unknown field."]}}


@pytest.mark.parametrize("missing", ["id", "type", "customer_id", "occurred_at"])
def test_always_required(missing):
    data = base("checkout_started")
    del data[missing]
    assert missing in errors_of(data)


def test_unknown_type_and_empty_ids_rejected():
    assert "type" in errors_of(base("order_shipped"))
    assert "id" in errors_of({**base("checkout_started"), "id": ""})
    assert "customer_id" in errors_of({**base("checkout_started"), "customer_id": "x" * 201})


@pytest.mark.parametrize("kind", ["order_placed", "order_paid", "payment_received", "order_refunded",
                                  "order_cancelled"])
def test_order_events_need_order_id(kind):
    assert "order" in errors_of(base(kind, amount="1.00", refund={"id": "r", "amount": "1.00"}))
    assert "id" in errors_of(base(kind, order={"total": "1.00", "currency": "EUR"}, amount="1.00",
                                  refund={"id": "r", "amount": "1.00"}))["order"]


@pytest.mark.parametrize("kind", ["order_placed", "order_paid"])
def test_creating_events_need_total_and_currency(kind):
    problems = errors_of(base(kind, order={"id": "o-1"}))
    assert set(problems["order"]) == {"total", "currency"}
    event = parse_event(base(kind, order={"id": "o-1", "total": "10.00", "currency": "EUR"}))
    assert event.order is not None and event.order.total == Decimal("10.00")


def test_order_placed_on_terms():
    event = parse_event(base("order_placed", order={
        "id": "o-1", "total": "300.00", "currency": "EUR",
        "payment": {"method": "terms", "due_at": "2026-04-01T00:00:00Z"}}))
    assert event.order is not None and event.order.payment is not None
    assert event.order.payment.method == "terms"
    assert event.order.payment.due_at == datetime(2026, 4, 1, tzinfo=UTC)
    assert "method" in errors_of(base("order_placed", order={
        "id": "o-1", "total": "1.00", "currency": "EUR", "payment": {"method": "cheque"}}))["order"]["payment"]


def test_refund_requirements():
    assert "refund" in errors_of(base("order_refunded", order={"id": "o-1"}))
    assert "amount" in errors_of(base("order_refunded", order={"id": "o-1"}, refund={"id": "r-1"}))["refund"]
    event = parse_event(base("order_refunded", order={"id": "o-1"},
                             refund={"id": "r-1", "amount": "5.50", "reason": "broken"}))
    assert event.refund is not None and event.refund.amount == Decimal("5.50") and event.refund.reason == "broken"


def test_payment_received_needs_amount():
    assert "amount" in errors_of(base("payment_received", order={"id": "o-1"}))
    assert parse_event(base("payment_received", order={"id": "o-1"}, amount="99.99")).amount == Decimal("99.99")


def test_referral_review_complaint():
    assert "referred_customer_id" in errors_of(base("referral"))
    assert parse_event(base("referral", referred_customer_id="c-2")).referred_customer_id == "c-2"
    assert "rating" in errors_of(base("review"))
    assert "rating" in errors_of(base("review", rating=6))
    assert "rating" in errors_of(base("review", rating="5"))
    review = parse_event(base("review", rating=4, order={"id": "o-1"}))
    assert review.rating == 4 and review.order_id == "o-1"
    assert parse_event(base("complaint")).reason is None
    assert parse_event(base("complaint", reason="late")).reason == "late"


def test_customer_block():
    event = parse_event(base("customer_updated", customer={
        "email": "a@example.com", "birthday": "1990-05-17", "locale": "lt-LT", "tags": ["vip", "image-client"],
        "accepts_marketing": True, "image_client": False}))
    info = event.customer
    assert info is not None and info.tags == ("vip", "image-client") and info.accepts_marketing is True
    assert info.birthday is not None and info.birthday.isoformat() == "1990-05-17"
    assert event.raw["customer"]["birthday"] == "1990-05-17"
    assert "email" in errors_of(base("customer_updated", customer={"email": "not-an-email"}))["customer"]


@pytest.mark.parametrize("amount, ok", [
    ("12.50", True), (12.5, True), (12, True), ("0", True), ("-1.00", False), ("1.001", False),
    ("NaN", False), ("Infinity", False), ("12,50", False), (True, False), (None, False), ("1e20", False),
])
def test_money_fields(amount, ok):
    data = base("payment_received", order={"id": "o-1"}, amount=amount)
    if ok:
        assert parse_event(data).amount == Decimal(str(amount)).quantize(Decimal("0.01"))
    else:
        assert "amount" in errors_of(data)


def test_json_number_goes_through_str_not_binary_float():
    event = parse_event(base("order_paid", order={"id": "o", "total": 19.99, "currency": "EUR"}))
    assert event.order is not None and event.order.total == Decimal("19.99")
    assert event.raw["order"]["total"] == "19.99"


def test_line_quantity_must_be_positive_integer():
    for quantity in (0, -1, 1.5, "2"):
        data = base("order_paid", order={"id": "o", "total": "1.00", "currency": "EUR",
                                         "lines": [{"sku": "A", "quantity": quantity}]})
        assert "lines" in errors_of(data)["order"]


def test_currency_is_three_letters():
    assert "currency" in errors_of(base("order_paid", order={"id": "o", "total": "1.00", "currency": "euro"}))["order"]


def test_schema_version_only_one():
    assert parse_event(base("checkout_started", schema=1)).raw.get("schema") is None
    assert "schema" in errors_of(base("checkout_started", schema=2))


def test_every_type_has_a_minimal_valid_form():
    extras = {
        "order_placed": {"order": {"id": "o", "total": "1.00", "currency": "EUR"}},
        "order_paid": {"order": {"id": "o", "total": "1.00", "currency": "EUR"}},
        "payment_received": {"order": {"id": "o"}, "amount": "1.00"},
        "order_refunded": {"order": {"id": "o"}, "refund": {"id": "r", "amount": "1.00"}},
        "order_cancelled": {"order": {"id": "o"}},
        "order_restored": {"order": {"id": "o"}},
        "referral": {"referred_customer_id": "c-9"},
        "review": {"rating": 5},
        "stage_set": {"adjustment": {"author": "ana", "reason": "r", "stage": "regular"}},
        "turn_started": {"adjustment": {"author": "ana", "reason": "r"}},
        "reward_granted": {"adjustment": {"author": "ana", "reason": "r", "reward": "welcome"}},
        "reward_revoked": {"adjustment": {"author": "ana", "reason": "r", "award_key": "s/c/welcome/stage/x/1"}},
        "points_adjusted": {"adjustment": {"author": "ana", "reason": "r", "points": -5}},
        "points_redeemed": {"adjustment": {"author": "ana", "reason": "r", "points": 5, "redemption": "r-1",
                                           "value": "0.05", "currency": "EUR"}},
    }
    for kind in EVENT_TYPES:
        assert parse_event(base(kind, **extras.get(kind, {}))).type == kind


def test_parse_events_reports_per_index():
    good = base("checkout_started")
    bad = base("checkout_started", occurred_at="2026-03-02T10:00:00")
    with pytest.raises(ValidationError) as info:
        parse_events([good, bad, {"id": "x"}, "nope"])
    messages = info.value.normalized_messages()
    assert set(messages) == {"1", "2", "3"}
    assert messages["1"] == {"occurred_at": ["timezone required (e.g. 2026-03-02T10:00:00Z)"]}
    assert parse_events([good])[0].id == "e-checkout_started"
    with pytest.raises(ValidationError):
        parse_events(good)  # an object is not a list


@pytest.mark.parametrize(("kind", "adjustment", "error"), [
    ("stage_set", None, {"adjustment": ["Required for stage_set: {author, reason, …}."]}),
    ("stage_set", {"author": "ana", "reason": "r"}, {"adjustment": {"stage": ["Required for stage_set."]}}),
    ("reward_revoked", {"author": "ana", "reason": "r"}, {"adjustment": {"award_key": ["Required for reward_revoked."]}}),
    ("order_cancelled", {"author": "ana", "reason": "r"},
     {"adjustment": [("Only for manual adjustments (stage_set, turn_started, reward_granted, reward_revoked, "
                     "points_adjusted, points_redeemed).")]}),
    ("points_redeemed", {"author": "ana", "reason": "r", "redemption": "r-1", "points": 0},
     {"adjustment": {"points": ["A redemption spends at least 1 point."]}}),
])
def test_manual_adjustments_carry_their_author_reason_and_data(kind, adjustment, error):
    extra = {"order": {"id": "o"}} if kind == "order_cancelled" else {}
    if adjustment is not None:
        extra["adjustment"] = adjustment
    with pytest.raises(ValidationError) as info:
        parse_event(base(kind, **extra))
    assert info.value.normalized_messages() == error
