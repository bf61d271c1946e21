"""A code upgrade is not retroactive: a database written by the previous release (0.1), upgraded
and re-folded by this one, keeps every award that reached a customer — none reversed, none
re-valued, each with the programme version that decided it.

``tests/fixtures/previous_release/ladder-0.1.sqlite`` was written by release 0.1's own code
(``make_db.py`` beside it says how); this test only copies it, opens it with this release (which
migrates it) and re-folds every customer.
"""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from loyalty_ladder import store
from loyalty_ladder.config import load_settings
from loyalty_ladder.service import LadderService
from loyalty_ladder.timeline import CURRENT_SEMANTICS

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "previous_release"
COMPARED = ("status", "params", "value", "rule_version", "reward_id", "scope", "scope_ref", "stage", "turn",
            "granted_at")


def _awards(db: sa.Engine) -> dict[str, dict]:
    with db.connect() as conn:
        return {r.key: {c: getattr(r, c) for c in COMPARED} for r in conn.execute(sa.select(store.awards))}


@pytest.fixture
def upgraded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "ladder.sqlite"
    shutil.copyfile(FIXTURE / "ladder-0.1.sqlite", path)
    raw = sa.create_engine(f"sqlite:///{path}")
    with raw.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0004"
        old_version = conn.execute(sa.text("SELECT active_version FROM shops")).scalar()
        before = {r.key: dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM awards"))}
    raw.dispose()
    settings = load_settings(overrides={"database_url": f"sqlite:///{path}", "rules": str(ROOT / "rules"),
                                        "admin_token": "t" * 24})
    service = LadderService(settings)
    yield service, old_version, before
    service.db.dispose()


def test_the_upgrade_puts_the_old_version_and_semantics_on_the_timeline(upgraded):
    service, old_version, _ = upgraded
    with service.db.connect() as conn:
        activations = conn.execute(sa.select(store.programme_activations)).all()
        semantics = conn.execute(sa.select(store.semantics_versions).order_by(store.semantics_versions.c.version)).all()
    assert [(a.shop_id, a.version, a.active_from) for a in activations] == [("default", old_version, None)]
    # one upgrade through four releases' semantics (1: versions on a timeline; 2: stage privileges
    # end when the customer leaves the stage; 3: points earn on the points base; 4: privileges as
    # holdings, suspension, expiry), each from the upgrade instant
    assert [s.version for s in semantics] == [0, 1, 2, 3, CURRENT_SEMANTICS] and CURRENT_SEMANTICS == 4
    assert semantics[0].active_from is None and None not in [s.active_from for s in semantics[1:]]
    with service.db.connect() as conn:  # the upgrade instant wakes every customer on the ladder
        wakes = conn.execute(sa.select(store.customers.c.next_wake_at).where(store.customers.c.stage.is_not(None))).all()
    assert wakes and all(w.next_wake_at <= semantics[1].active_from for w in wakes)
    timeline = service.programmes.timeline(service.db, service.shop("default"))
    assert [s.version for s in timeline.segments] == [old_version]
    assert timeline.semantics_at(datetime(2025, 1, 1).astimezone()) == 0


@pytest.mark.parametrize("later", [timedelta(0), timedelta(days=400)])
def test_refolding_after_the_upgrade_reverses_and_revalues_nothing_delivered(upgraded, later):
    service, old_version, before = upgraded
    meta = json.loads((FIXTURE / "ladder-0.1.json").read_text())
    written = datetime.fromisoformat(meta["written_at"])
    assert sum(1 for a in before.values() if a["status"] == "delivered") == meta["delivered_awards"] > 100
    with service.db.connect() as conn:
        customers = [r.customer_id for r in conn.execute(sa.select(store.customers.c.customer_id))]
    for customer_id in customers:
        service.process_customer("default", customer_id, as_of=written + later)
    after = _awards(service.db)
    changed, ended = {}, []
    with service.db.connect() as conn:
        stage_now = dict(conn.execute(sa.select(store.customers.c.customer_id, store.customers.c.stage)).all())
    for key, old in before.items():
        new = after[key]
        if new["status"] == "ended" and old["status"] == "delivered" and later and old["scope"] == "stage" \
                and old["type"] in ("tag", "vip_service", "deferred_payment") \
                and old["stage"] != stage_now[old["customer_id"]]:
            # semantics 2 from the upgrade on: a privilege of a stage the customer has left ends
            # (taken back in the shop, never reversed); before the upgrade nothing changes
            ended.append(key)
            continue
        if new["status"] != "delivered" or new["params"] != json.loads(old["params"]) \
                or str(new["value"]) != str(old["value"]) or new["rule_version"] != old["rule_version"]:
            changed[key] = (old, new)
    assert not changed, f"{len(changed)} delivered awards changed, e.g. {next(iter(changed.items()))}"
    assert bool(ended) == bool(later)  # folded past the upgrade instant: the left-behind tags end
    assert {a["rule_version"] for a in after.values()} == {old_version}
