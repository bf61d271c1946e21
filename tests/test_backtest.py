"""``ladder backtest``: a candidate programme replayed over history next to a baseline.

The figures are checked against independent sources: the awards live processing recorded in the
database (the same fold, so a candidate equal to the shop's version reproduces them), customers
designed to sit on a known stage, and the report's own invariants (matrix sums, ordering).
"""
from __future__ import annotations

import csv
import io
import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from loyalty_ladder import backtest as bt
from loyalty_ladder import rulefile, store
from loyalty_ladder.cli import main

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
FASHION = ROOT / "rules" / "examples" / "fashion-shop"
DEFAULT_TEXT = (RULES / "ladder.yaml").read_text()
T0 = datetime(2026, 1, 5, 10, tzinfo=UTC)


# ------------------------------------------------------------------ histories
def order(cid: str, n: int, at: datetime, total: str = "80.00", codes: tuple[str, ...] = ()) -> dict:
    return {"id": f"{cid}-o{n}", "type": "order_paid", "customer_id": cid, "occurred_at": at.isoformat(),
            "order": {"id": f"{cid}-o{n}", "total": total, "currency": "EUR", "discount_codes": list(codes)}}


def created(cid: str, at: datetime) -> dict:
    return {"id": f"{cid}-c", "type": "customer_created", "customer_id": cid, "occurred_at": at.isoformat(),
            "customer": {"email": f"{cid}@example.com", "accepts_marketing": True}}


def customer(cid: str, orders: int, start: datetime = T0, gap_days: int = 35) -> list[dict]:
    """A customer who signs up and then buys ``orders`` times, ``gap_days`` apart."""
    out = [created(cid, start)]
    out += [order(cid, n, start + timedelta(days=1 + n * gap_days)) for n in range(orders)]
    return out


def designed() -> list[dict]:
    """Customers with 0..5 orders a month apart (potential, first purchase, regular, …), 3 each."""
    events = []
    for orders in range(6):
        for k in range(3):
            events += customer(f"k{orders}-{k}", orders)
    return events


def varied(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    events = []
    for c in range(n):
        cid = f"v{c:04d}"
        start = T0 + timedelta(days=rng.randrange(60))
        events.append(created(cid, start))
        t = start
        for k in range(rng.randint(0, 7)):
            t += timedelta(days=rng.randrange(3, 70))
            events.append(order(cid, k, t, f"{rng.randint(15, 400)}.00", ("SALE",) if rng.random() < 0.3 else ()))
        if rng.random() < 0.15:
            events.append({"id": f"{cid}-ref", "type": "referral", "customer_id": cid,
                           "occurred_at": (t + timedelta(hours=5)).isoformat(), "referred_customer_id": "friend"})
        if rng.random() < 0.1 and k > 0:
            events.append({"id": f"{cid}-rf", "type": "order_refunded", "customer_id": cid,
                           "occurred_at": (t + timedelta(days=2)).isoformat(), "order": {"id": f"{cid}-o0"},
                           "refund": {"id": f"{cid}-r", "amount": "10.00"}})
    return events


def write(path: Path, events: list[dict], grouped: bool = False) -> Path:
    if not grouped:
        events = sorted(events, key=lambda e: (e["occurred_at"], e["id"]))
    else:
        events = sorted(events, key=lambda e: e["customer_id"])  # stable: each customer's order kept
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def run(path: Path, candidate: Path = RULES, baseline: Path = RULES, jobs: int = 1, **kw) -> dict:
    history = bt.FileHistory(str(path))
    history.prepare()
    try:
        return bt.backtest(history, shop="default", baseline=bt.directory_baseline(rulefile.load_programme(baseline),
                                                                                  str(baseline)),
                           candidate=rulefile.load_programme(candidate), jobs=jobs, **kw)
    finally:
        history.close()


def thank_you_programme(tmp_path: Path) -> Path:
    """The default programme with one more stage reward: a 5.00 code for every regular."""
    path = tmp_path / "bonus.yaml"
    path.write_text(DEFAULT_TEXT + """
  - id: thank-you-regulars
    name: A thank-you to every regular
    type: discount
    on: {stage: regular}
    params: {amount: "5.00", expires_days: 30}
""")
    return path


def off_diagonal(doc: dict) -> int:
    return sum(n for b, row in doc["movement"].items() for c, n in row.items() if b != c)


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return {"LADDER_DATABASE_URL": f"sqlite:///{tmp_path / 'none' / 'ladder.db'}", "LADDER_RULES": str(RULES)}


def cli(*args, env, input=None):
    return CliRunner().invoke(main, ["backtest", *args], env=env, input=input, catch_exceptions=False)


# ------------------------------------------------------------------ the figures
def test_the_candidate_equal_to_the_baseline_gives_a_diagonal_matrix_and_no_one_worse_off(tmp_path):
    doc = run(write(tmp_path / "h.jsonl", varied(120)))
    assert doc["customers"] == 120 and doc["failures"]["count"] == 0
    assert off_diagonal(doc) == 0
    assert sum(row[b] for b, row in doc["movement"].items()) == 120
    assert all(r["baseline"] == r["candidate"] for r in doc["stages"].values())
    assert all(r["baseline"] == r["candidate"] for r in doc["rewards"].values())
    assert doc["cost"]["change"] == {"face_value": "0.00", "cost": "0.00"}
    assert doc["worse_off"] == {"count": 0, "reasons": dict.fromkeys(bt.tally.REASONS, 0), "privileges_lost": {},
                                "examples": []}


def test_designed_customers_land_on_their_stages_and_a_stricter_candidate_moves_them_down(tmp_path):
    stricter = tmp_path / "stricter.yaml"
    # regular needs four orders instead of three: the 3-order customers stay at first purchase
    stricter.write_text(DEFAULT_TEXT.replace("- {fact: orders_count, gte: 3}", "- {fact: orders_count, gte: 4}"))
    assert rulefile.load_programme(stricter).version != rulefile.load_programme(RULES).version
    doc = run(write(tmp_path / "h.jsonl", designed()), candidate=stricter)
    stages = {s: (r["baseline"], r["candidate"]) for s, r in doc["stages"].items() if r["baseline"] or r["candidate"]}
    # 0 orders: potential; 1-2: first purchase; 3-5: regular (advocate needs a referral or 500 profit)
    assert stages == {"potential": (3, 3), "first_purchase": (6, 9), "regular": (9, 6)}
    assert doc["movement"]["regular"]["first_purchase"] == 3 and off_diagonal(doc) == 3
    worse = doc["worse_off"]
    # the 3-order customers are a stage lower; everyone with 3 orders or more earns no points on
    # their third (points have a value: 0.01 each), so they are worse off in face value too
    assert worse["count"] == 9 and worse["reasons"]["lower_stage"] == 3 and worse["reasons"]["lower_face_value"] == 9
    assert [e["customer_id"] for e in worse["examples"]][:3] == ["k3-0", "k3-1", "k3-2"]
    example = worse["examples"][0]
    assert example["baseline"]["stage"] == "regular" and example["candidate"]["stage"] == "first_purchase"
    assert example["privileges_lost"] == ["tag ladder-regular"]
    assert worse["privileges_lost"] == {"tag ladder-regular": 3}


def test_at_most_ten_examples_worst_first_and_the_same_with_two_workers_and_any_file_order(tmp_path):
    events = varied(300, seed=3)
    one = run(write(tmp_path / "a.jsonl", events), candidate=FASHION)
    two = run(write(tmp_path / "b.jsonl", events, grouped=True), candidate=FASHION, jobs=2)
    assert one["history"]["customers"] == two["history"]["customers"] == 300
    one.pop("history"), two.pop("history")
    assert one == two
    examples = one["worse_off"]["examples"]
    assert len(examples) == 10 < one["worse_off"]["count"]
    keys = [(-len(e["reasons"]), -(Decimal(e["baseline"]["face_value"]) - Decimal(e["candidate"]["face_value"])),
             e["customer_id"]) for e in examples]
    assert keys == sorted(keys)


def test_awards_per_reward_with_face_values(tmp_path):
    # second-order is a fixed 10.00 discount on reaching first purchase; one per customer with an order
    doc = run(write(tmp_path / "h.jsonl", designed()))
    second = doc["rewards"]["second-order"]
    assert second["type"] == "discount"
    assert second["baseline"] == {"count": 15, "customers": 15, "value": "150.00", "without_value": 0}
    welcome = doc["rewards"]["welcome"]["baseline"]
    assert welcome["count"] == 18 and welcome["without_value"] == 18  # a percentage: no face value
    assert Decimal(doc["cost"]["baseline"]["face_value"]) == sum(
        Decimal(r["baseline"]["value"]) for r in doc["rewards"].values())


def test_an_activation_preview_counts_what_happens_at_its_instant(tmp_path):
    bonus = thank_you_programme(tmp_path)
    at = T0 + timedelta(days=400)
    doc = run(write(tmp_path / "h.jsonl", designed()), candidate=bonus, candidate_from=at)
    assert doc["as_of"] == at.isoformat().replace("+00:00", "Z")
    assert doc["candidate"]["from"] == doc["as_of"]
    preview = doc["preview"]
    # the 9 regulars get the new stage reward at the activation; nobody climbs or lapses then
    assert preview["granted"] == {"awards": 9, "customers": 9, "value": "45.00", "rewards": {"thank-you-regulars": 9}}
    assert preview["climb"] == 0 and preview["ended"] == 0
    assert preview["deliveries"] == 9  # an events file has no go-live time: nothing is historical
    assert doc["rewards"]["thank-you-regulars"]["baseline"]["count"] == 0


def test_a_preview_needs_a_stage_map_for_a_dropped_stage(tmp_path):
    fewer = tmp_path / "fewer.yaml"
    fewer.write_text(DEFAULT_TEXT.replace("advocate", "champion"))  # advocate dropped, champion new
    with pytest.raises(Exception) as refused:
        run(write(tmp_path / "h.jsonl", designed()), candidate=fewer, candidate_from=T0 + timedelta(days=300))
    assert "drops the stage(s) advocate" in str(refused.value)


# ------------------------------------------------------------------ the database as history
ON_EVERY_BACKEND = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)


@pytest.fixture
def recorded(service):
    """A shop whose history went through live processing, with a manual stage and a shop turn
    (every customer processed after it, as the sweep would)."""
    now = datetime.now(UTC)
    start = now - timedelta(days=100)
    events = []
    for orders in range(5):
        for k in range(2):
            events += customer(f"d{orders}-{k}", orders, start=start, gap_days=20)
    for i in range(0, len(events), 200):
        service.accept_events("default", events[i:i + 200])
    service.adjust("default", "d1-0", "set_stage", author="ann", reason="a friend of the shop", stage="regular")
    service.start_shop_turn("default", author="ann", reason="new collection")
    for cid in sorted({e["customer_id"] for e in events}):  # the sweep's work, done now
        service.process_customer("default", cid)
    return service


@ON_EVERY_BACKEND
def test_over_the_ledger_the_shops_version_reproduces_the_recorded_awards(recorded):
    service = recorded
    history = bt.DatabaseHistory(service.db, "default")
    history.prepare()
    timeline = service.timeline("default")
    doc = bt.backtest(history, shop="default", baseline=bt.recorded_baseline(timeline, "default"),
                      candidate=timeline.last.programme, now=datetime.now(UTC))
    assert doc["history"]["source"] == "database" and doc["customers"] == 10
    assert off_diagonal(doc) == 0 and doc["failures"]["count"] == 0
    a = store.awards
    with service.db.connect() as conn:
        rows = conn.execute(sa.select(a.c.reward_id, a.c.value).where(a.c.status != "reversed")).all()
        stages = dict(conn.execute(sa.select(store.customers.c.stage, sa.func.count())
                                   .group_by(store.customers.c.stage)).all())
    recorded_awards: dict[str, tuple[int, Decimal]] = {}
    for reward_id, value in rows:  # money is stored as text: summed here
        count, total = recorded_awards.get(reward_id, (0, Decimal("0.00")))
        recorded_awards[reward_id] = (count + 1, total + Decimal(value or 0))
    replayed = {rid: (r["baseline"]["count"], Decimal(r["baseline"]["value"])) for rid, r in doc["rewards"].items()
                if r["baseline"]["count"]}
    assert replayed == recorded_awards
    assert {s: r["baseline"] for s, r in doc["stages"].items() if r["baseline"]} == stages
    # the manual stage is in the ledger: d1-0 (one order) is a regular, as recorded
    assert stages["regular"] == 5
    # the shop turn is a shop input: every customer on the ladder is in turn 2, a new turn's
    # stage rewards granted again (the free service twice for each regular); a privilege is one
    # holding across the turns (the regular tag once each)
    assert doc["rewards"]["free-express"]["baseline"]["count"] == 10
    assert doc["rewards"]["tag-regular"]["baseline"]["count"] == 5


@ON_EVERY_BACKEND
def test_the_cli_over_the_ledger_names_the_recorded_timeline(recorded, tmp_path):
    env = {"LADDER_DATABASE_URL": recorded.settings.database_url, "LADDER_RULES": str(RULES)}
    result = CliRunner().invoke(main, ["backtest", "--rules", str(FASHION), "--format", "json"], env=env,
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    version = rulefile.load_programme(RULES).version
    assert doc["baseline"]["versions"] == [version]
    assert doc["baseline"]["description"] == f"the recorded timeline of shop 'default': {version}"
    assert doc["history"]["note"].startswith("the shop's ledger")
    assert sum(sum(row.values()) for row in doc["movement"].values()) == 10
    unknown = CliRunner().invoke(main, ["backtest", "--rules", str(FASHION), "--shop", "nope"], env=env)
    assert unknown.exit_code == 3 and "unknown shop 'nope'" in unknown.stderr


# ------------------------------------------------------------------ the command
def test_the_cli_prints_a_table_writes_json_and_csv(tmp_path, cli_env):
    path = write(tmp_path / "h.jsonl", designed())
    table = cli("--rules", str(RULES), "--history", str(path), env=cli_env)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    header = lines.index("Stage movement (rows: baseline stage, columns: candidate stage; customers)")
    assert lines[header + 1].split() == ["baseline", "\\", "candidate", "(none)", "potential", "visitor",
                                         "first_purchase", "regular", "advocate"]
    assert lines[header + 6].split() == ["first_purchase", "0", "0", "0", "6", "0", "0"]
    assert "replaying: 100% (18/18 customers" in table.stderr
    assert "not grouped by customer" in table.stderr
    assert "shop 'default' has no recorded timeline" in table.stdout

    out = tmp_path / "report.json"
    as_json = cli("--rules", str(FASHION), "--history", str(path), "--format", "json", "--out", str(out), env=cli_env)
    assert as_json.exit_code == 0 and as_json.stdout == ""
    doc = json.loads(out.read_text())
    assert {"movement", "stages", "subgroups", "rewards", "cost", "worse_off"} <= set(doc)

    as_csv = cli("--rules", str(FASHION), "--history", str(path), "--format", "csv", env=cli_env)
    rows = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert rows[0] == ["section", "key", "column", "value"]
    movement = {(k, c): int(v) for s, k, c, v in rows[1:] if s == "movement"}
    assert movement == {(b, c): n for b, row in doc["movement"].items() for c, n in row.items()}


def test_standard_input_is_spilled_and_gives_the_same_report(tmp_path, cli_env):
    path = write(tmp_path / "h.jsonl", designed())
    from_file = cli("--rules", str(FASHION), "--history", str(path), "--format", "json", env=cli_env)
    from_stdin = cli("--rules", str(FASHION), "--history", "-", "--format", "json", env=cli_env,
                     input=path.read_text())
    a, b = json.loads(from_file.stdout), json.loads(from_stdin.stdout)
    assert b["history"]["name"] == "<stdin>"
    a.pop("history"), b.pop("history")
    assert a == b


def test_an_invalid_event_leaves_its_customer_out_with_the_reason_and_exits_1(tmp_path, cli_env):
    events = designed()
    bad = next(e for e in events if e["id"] == "k2-1-o1")
    del bad["order"]["total"]
    path = write(tmp_path / "h.jsonl", events)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if '"k2-1-o1"' in text)
    result = cli("--rules", str(RULES), "--history", str(path), "--format", "json", env=cli_env)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["customers"] == 17
    assert doc["failures"] == {"count": 1, "examples": [{"customer_id": "k2-1", "reason":
                               f"invalid events: {path}:{line}: order.total: Missing data for required field."}]}
    assert "1 customer(s) could not be replayed" in result.stderr


def test_a_line_that_is_not_an_event_stops_before_replaying(tmp_path, cli_env):
    path = write(tmp_path / "h.jsonl", designed())
    lines = len(path.read_text().splitlines())
    path.write_text(path.read_text() + "{not json\n[1]\n" + "9" * 5000 + "\n")
    result = cli("--rules", str(RULES), "--history", str(path), env=cli_env)
    assert result.exit_code == 1 and result.stdout == ""
    assert "cannot be read as events: nothing was replayed" in result.stderr
    assert f"{path}:{lines + 1}: invalid JSON" in result.stderr
    assert f"{path}:{lines + 2}: expected one event object" in result.stderr
    assert f"{path}:{lines + 3}: invalid JSON: Exceeds the limit" in result.stderr


def test_admin_events_and_other_currencies_in_a_file_are_refused_per_customer(tmp_path, cli_env):
    events = customer("x", 2) + customer("y", 1)
    events[1]["order"]["currency"] = "USD"
    events.append({"id": "adm", "type": "stage_set", "customer_id": "y", "occurred_at": T0.isoformat(),
                   "adjustment": {"author": "a", "reason": "b", "stage": "regular"}})
    doc = json.loads(cli("--rules", str(RULES), "--history", str(write(tmp_path / "h.jsonl", events)),
                         "--format", "json", env=cli_env).stdout)
    reasons = {f["customer_id"]: f["reason"] for f in doc["failures"]["examples"]}
    assert "currency USD differs from the programme's EUR" in reasons["x"]
    assert "stage_set" in reasons["y"] and doc["customers"] == 0


def test_a_stage_the_baseline_lacks_is_compared_on_the_candidates_ladder(tmp_path):
    """A candidate with a stage in between: a customer on it is below the baseline's regular,
    one who reaches regular is not (positions are compared on one ladder, not index by index)."""
    silver = tmp_path / "silver.yaml"
    text = DEFAULT_TEXT.replace("- {fact: orders_count, gte: 3}", "- {fact: orders_count, gte: 4}")
    marker = "  # Retain: buys from us steadily"
    assert marker in text
    silver.write_text(text.replace(marker, """  - id: silver
    name: Silver
    when: {fact: orders_count, gte: 3}

""" + marker))
    doc = run(write(tmp_path / "h.jsonl", designed()), candidate=silver)
    assert list(doc["movement"]["regular"]) == ["(none)", "potential", "visitor", "first_purchase", "silver",
                                                "regular", "advocate"]
    assert doc["movement"]["regular"]["silver"] == 3 and doc["movement"]["regular"]["regular"] == 6
    assert doc["worse_off"]["reasons"]["lower_stage"] == 3
    assert [e["customer_id"] for e in doc["worse_off"]["examples"]][:3] == ["k3-0", "k3-1", "k3-2"]


def test_bad_options_are_clear_errors(tmp_path, cli_env):
    path = write(tmp_path / "h.jsonl", designed())
    usd = tmp_path / "usd.yaml"
    usd.write_text(DEFAULT_TEXT.replace("currency: EUR", "currency: USD"))
    other = cli("--rules", str(usd), "--history", str(path), env=cli_env)
    assert other.exit_code == 1 and "is in USD but the shop's programme is in EUR" in other.stderr
    mapped = cli("--rules", str(FASHION), "--history", str(path), "--stage-map", "a=b", env=cli_env)
    assert mapped.exit_code == 1 and "--stage-map needs --from" in mapped.stderr
    missing = cli("--rules", str(FASHION), "--history", str(tmp_path / "nope.jsonl"), env=cli_env)
    assert missing.exit_code == 1 and "cannot read the history" in missing.stderr
    nowhere = cli("--rules", str(FASHION), "--history", str(path), "--out", str(tmp_path / "no" / "r.json"),
                  env=cli_env)
    assert nowhere.exit_code == 2 and "does not exist" in nowhere.stderr
    unwritable = cli("--rules", str(FASHION), "--history", str(path), "--out", "/proc/report.json", env=cli_env)
    assert unwritable.exit_code == 2 and "cannot write /proc/report.json" in unwritable.stderr
    shop = cli("--rules", str(FASHION), "--history", str(path), "--shop", "nope", env=cli_env)
    assert shop.exit_code == 3 and "unknown shop 'nope'" in shop.stderr
    early = cli("--rules", str(FASHION), "--history", str(path), "--from", "2027-01-01T00:00:00Z",
                "--as-of", "2026-06-01T00:00:00Z", env=cli_env)
    assert early.exit_code == 1 and "--as-of is before --from" in early.stderr
    (tmp_path / "empty.jsonl").write_text("\n")
    empty = cli("--rules", str(FASHION), "--history", str(tmp_path / "empty.jsonl"), env=cli_env)
    assert empty.exit_code == 1 and "empty.jsonl holds no event: nothing to backtest" in empty.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("stages: []\n")
    invalid = cli("--rules", str(broken), "--history", str(path), env=cli_env)
    assert invalid.exit_code == 1 and f"{broken}:1:9: 'stages' must be a non-empty list" in invalid.stderr


def test_a_file_not_grouped_by_customer_is_spilled_and_read_back_one_customer_at_a_time(tmp_path):
    events = designed()
    grouped = bt.FileHistory(str(write(tmp_path / "g.jsonl", events, grouped=True)))
    scattered = bt.FileHistory(str(write(tmp_path / "s.jsonl", events)))
    for h in (grouped, scattered):
        h.prepare()
    try:
        assert grouped.scan.grouped and not scattered.scan.grouped
        assert grouped._spill is None and scattered._spill is not None and scattered._spill.exists()
        assert grouped.scan.customers == scattered.scan.customers == 18
        assert grouped.scan.events == scattered.scan.events == len(events)
        seen = scattered.customers()
        first = next(seen)  # a generator: one customer read back, not the whole file
        assert first.id == "k0-0" and len(first.items) == 1
        ids = [first.id, *(c.id for c in seen)]
        assert ids == sorted(ids) and len(ids) == 18
    finally:
        scattered.close()
    assert scattered._spill is None


def test_a_preview_over_the_ledger_queues_no_delivery_before_the_shop_goes_live(service, tmp_path):
    """The ledger's go-live time is a fold input: what the activation would grant before it is
    historical, so nothing would be delivered."""
    now = datetime.now(UTC)
    events = [e for orders in (3, 4) for e in customer(f"g{orders}", orders, start=now - timedelta(days=120),
                                                        gap_days=25)]
    service.import_events("default", events, live_from=now + timedelta(days=400))
    bonus = thank_you_programme(tmp_path)
    history = bt.DatabaseHistory(service.db, "default")
    history.prepare()
    timeline = service.timeline("default")
    doc = bt.backtest(history, shop="default", baseline=bt.recorded_baseline(timeline, "default"),
                      candidate=rulefile.load_programme(bonus), candidate_from=now + timedelta(days=30), now=now)
    assert doc["preview"]["granted"]["awards"] == 2  # both regulars
    assert doc["preview"]["deliveries"] == 0
