"""Award keys, resolved parameters, deterministic codes, reconciliation."""
from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from loyalty_ladder.awards import award_key, discount_code, imply, reconcile
from loyalty_ladder.programme import Reward, Trigger

T = datetime(2026, 3, 2, 10, tzinfo=UTC)


def reward(rid: str, kind: str, trigger: str = "stage", **params) -> Reward:
    return Reward(id=rid, type=kind, trigger=Trigger(kind=trigger), params=params)


def test_keys_exactly_as_documented():
    assert award_key("demo", "c-42", "welcome", "stage", ("potential", 1)) == "demo/c-42/welcome/stage/potential/1"
    assert award_key("demo", "c-42", "points", "order", "o-7") == "demo/c-42/points/order/o-7"
    assert award_key("demo", "c-42", "apology", "event", "evt-9") == "demo/c-42/apology/event/evt-9"
    assert award_key("demo", "c-42", "greet", "period", "2026-Q1") == "demo/c-42/greet/period/2026-Q1"
    assert award_key("demo", "c-42", "win-back", "lapse", ("regular", 2)) == "demo/c-42/win-back/lapse/regular/2"


def test_key_components_with_slashes_cannot_collide():
    a = award_key("s", "a/b", "r", "order", "c")
    b = award_key("s", "a", "r", "order", "b/c")
    assert a != b and a == "s/a%2Fb/r/order/c"


def test_unknown_scope_rejected():
    with pytest.raises(ValueError):
        award_key("s", "c", "r", "forever", "x")


def test_discount_code_deterministic_and_distinct():
    key = "demo/c-42/welcome/stage/potential/1"
    code = discount_code("WELCOME", key)
    assert code == f"WELCOME-{hashlib.sha256(key.encode()).hexdigest()[:8].upper()}"
    assert code == discount_code("WELCOME", key)
    assert code != discount_code("WELCOME", key.replace("/1", "/2"))


def test_discount_params_percent_and_amount():
    welcome = reward("welcome", "discount", percent="10", expires_days=30, code_prefix="WELCOME", usage_limit=1)
    award = imply(welcome, shop="demo", customer_id="c-1", scope="stage", ref=("potential", 1), stage="potential",
                  turn=1, granted_at=T, currency="EUR")
    assert award.key == "demo/c-1/welcome/stage/potential/1"
    assert award.scope_ref == "potential/1"
    assert award.params == {"code": discount_code("WELCOME", award.key), "usage_limit": 1, "percent": "10",
                            "expires_at": "2026-04-01T10:00:00Z"}
    assert award.value is None  # a percentage costs nothing until used
    again = reward("again", "discount", amount="10", minimum_order="50", expires_days=30)
    award = imply(again, shop="demo", customer_id="c-1", scope="stage", ref=("first_purchase", 1),
                  stage="first_purchase", turn=1, granted_at=T, currency="EUR")
    assert award.params["amount"] == "10.00" and award.params["minimum_order"] == "50.00"
    assert award.params["currency"] == "EUR"
    assert award.params["code"].startswith("AGAIN-")  # default prefix: the reward id
    assert award.value == Decimal("10.00")


def test_points_params():
    per_order = reward("pts", "points", trigger="order", points_per_unit="1.5", expires_days=365)
    # the programme's point value values it; the points base (semantics 3) wins over the order's net
    award = imply(per_order, shop="s", customer_id="c", scope="order", ref="o-1", stage="regular", turn=1,
                  granted_at=T, order_net=Decimal("99.99"), point_value=Decimal("0.01"))
    assert award.params == {"points": 149, "expires_at": "2027-03-02T10:00:00Z"}
    assert award.value == Decimal("1.49")
    award = imply(per_order, shop="s", customer_id="c", scope="order", ref="o-1", stage="regular", turn=1,
                  granted_at=T, order_net=Decimal("99.99"), points_base=Decimal("80.00"))
    assert award.params["points"] == 120 and award.value is None
    fixed = reward("thanks", "points", trigger="event", points=50)
    award = imply(fixed, shop="s", customer_id="c", scope="event", ref="e-1", stage="regular", turn=1, granted_at=T)
    assert award.params == {"points": 50} and award.value is None


def test_other_types_keep_their_params_and_value():
    gift = reward("apology", "gift", trigger="event", description="a gift", value="5.00")
    award = imply(gift, shop="s", customer_id="c", scope="event", ref="e-1", stage=None, turn=1, granted_at=T)
    assert award.params == {"description": "a gift", "value": "5.00"} and award.value == Decimal("5.00")
    tag = imply(reward("t", "tag", tag="ladder-regular"), shop="s", customer_id="c", scope="stage",
                ref=("regular", 1), stage="regular", turn=1, granted_at=T)
    assert tag.params == {"tag": "ladder-regular"} and tag.value is None


def test_historical_before_live_from():
    r = reward("t", "discount", percent=10)
    kwargs = {"shop": "s", "customer_id": "c", "scope": "stage", "ref": ("a", 1), "stage": "a", "turn": 1,
              "granted_at": T}
    assert imply(r, live_from=datetime(2026, 4, 1, tzinfo=UTC), **kwargs).historical is True
    assert imply(r, live_from=T, **kwargs).historical is False
    assert imply(r, **kwargs).historical is False


def test_a_privilege_held_when_the_shop_goes_live_is_not_historical():
    tag = reward("t", "tag", tag="x")
    kwargs = {"shop": "s", "customer_id": "c", "scope": "stage", "ref": ("a", 1), "stage": "a", "turn": 1,
              "granted_at": T}
    live = datetime(2026, 4, 1, tzinfo=UTC)
    assert imply(tag, live_from=live, **kwargs).historical is False  # held now: delivered at go-live
    assert imply(tag, live_from=live, ended_at=live, **kwargs).historical is False  # ended after: delivered, ended
    assert imply(tag, live_from=live, ended_at=live - timedelta(days=1), **kwargs).historical is True


def _award(ref: str, points: int = 10):
    r = reward("pts", "points", trigger="order", points_per_unit="1")
    return imply(r, shop="s", customer_id="c", scope="order", ref=ref, stage="regular", turn=1, granted_at=T,
                 order_net=Decimal(points))


def test_reconcile_all_cases():
    keep = _award("o-keep")
    new = _award("o-new")
    changed = _award("o-changed", points=6)
    regrant = _award("o-regrant")
    recorded = [
        {"key": keep.key, "status": "delivered", "params": dict(keep.params), "value": None},
        {"key": changed.key, "status": "delivered", "params": {"points": 10}, "value": None},
        {"key": regrant.key, "status": "reversed", "params": dict(regrant.params)},
        {"key": "s/c/pts/order/o-gone", "status": "due", "params": {"points": 3}},
        {"key": "s/c/pts/order/o-old", "status": "reversed", "params": {"points": 3}},
    ]
    plan = reconcile([new, keep, changed, regrant], recorded)
    assert [a.key for a in plan.grant] == [new.key, regrant.key]
    assert [r["key"] for r in plan.reverse] == ["s/c/pts/order/o-gone"]
    assert [a.key for a in plan.update] == [changed.key]
    assert plan.update[0].params["points"] == 6
    assert [a.key for a in plan.keep] == [keep.key]
    assert plan.changed


def test_reconcile_is_idempotent_and_accepts_objects():
    awards = [_award("o-2"), _award("o-1")]

    class Row:
        def __init__(self, award):
            self.key, self.status, self.params, self.value = award.key, "historical", dict(award.params), award.value

    plan = reconcile(awards, [Row(a) for a in awards])
    assert not plan.changed and [a.key for a in plan.keep] == sorted(a.key for a in awards)


def test_reconcile_value_change_is_an_update():
    award = replace(_award("o-1"), value=Decimal("1.00"))
    plan = reconcile([award], [{"key": award.key, "status": "due", "params": dict(award.params), "value": "2.00"}])
    assert [a.key for a in plan.update] == [award.key]
    plan = reconcile([award], [{"key": award.key, "status": "due", "params": dict(award.params), "value": "1.00"}])
    assert [a.key for a in plan.keep] == [award.key]


def test_reconcile_params_stored_as_json_text():
    award = _award("o-1")
    plan = reconcile([award], [{"key": award.key, "status": "due", "params": '{"points": 10}'}])
    assert plan.keep == (award,)


def test_reconcile_plan_order_is_deterministic():
    awards = [_award(f"o-{i}") for i in (5, 3, 9, 1)]
    assert [a.key for a in reconcile(awards, []).grant] == sorted(a.key for a in awards)
    assert [a.key for a in reconcile(list(reversed(awards)), []).grant] == sorted(a.key for a in awards)
