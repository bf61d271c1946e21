"""An activation through the service, end to end on the database: nothing decided before it is
reversed or re-valued, privileges the new version drops end (and are not reversed), and what
follows is decided by the new version."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from loyalty_ladder import rulefile, store

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = (ROOT / "rules" / "ladder.yaml").read_text(encoding="utf-8")
TAG_BLOCK = """  - id: tag-first-purchase
    type: tag
    on: {stage: first_purchase}
    params: {tag: ladder-first-purchase}
"""


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def events_of(customer: str, t: datetime, gap: timedelta = timedelta(days=1)) -> list[dict]:
    return [{"id": f"{customer}-new", "type": "customer_created", "customer_id": customer, "occurred_at": iso(t),
             "customer": {"email": f"{customer}@example.com", "accepts_marketing": True}},
            {"id": f"{customer}-o1", "type": "order_paid", "customer_id": customer, "occurred_at": iso(t + gap),
             "order": {"id": f"{customer}-o1", "total": "80.00", "currency": "EUR"}}]


def awards_of(service, customer: str) -> dict[str, dict]:
    with service.db.connect() as conn:
        return {r.key: dict(r._mapping) for r in conn.execute(
            sa.select(store.awards).where(store.awards.c.customer_id == customer))}


def test_an_activation_keeps_the_past_ends_dropped_privileges_and_decides_what_follows(service):
    now = datetime.now(UTC)
    service.bootstrap_programmes()
    old = service.programme("default")[0].version
    service.accept_events("default", events_of("c1", now - timedelta(days=10)))
    before = awards_of(service, "c1")
    assert {a["reward_id"] for a in before.values()} >= {"welcome", "second-order", "tag-first-purchase"}

    text = DEFAULT.replace(TAG_BLOCK, "").replace('amount: "10.00", minimum_order', 'amount: "15.00", minimum_order')
    new = rulefile.load_text(text).version
    service.activate_programme("default", rulefile.load_texts({"ladder.yaml": text}, "test"), author="ann",
                               files={"ladder.yaml": text}, source="test")
    service.process_customer("default", "c1", as_of=datetime.now(UTC) + timedelta(seconds=1))
    after = awards_of(service, "c1")
    assert set(after) == set(before)
    for key, award in after.items():
        was = before[key]
        if award["reward_id"] == "tag-first-purchase":
            assert award["status"] == "ended" and award["reason"] == f"ended: version {new} no longer grants it"
            assert award["rule_version"] == old
            continue
        assert (award["status"], award["params"], award["value"], award["rule_version"]) == \
            (was["status"], was["params"], was["value"], old), key
    assert service.customer_view("default", "c1")["rule_version"] == new

    # a customer whose history starts after the activation is decided by the new version
    service.accept_events("default", events_of("c2", datetime.now(UTC), timedelta(seconds=1)))
    service.process_customer("default", "c2", as_of=datetime.now(UTC) + timedelta(days=2))
    second = {a["reward_id"]: a for a in awards_of(service, "c2").values()}
    assert "tag-first-purchase" not in second
    assert second["second-order"]["params"]["amount"] == "15.00" and second["second-order"]["rule_version"] == new
