"""``ladder demo-data`` and :mod:`loyalty_ladder.demo_data`: valid, deterministic, streamed, realistic."""
from __future__ import annotations

import hashlib
import json
import tracemalloc
from collections import Counter, defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from loyalty_ladder import ladder, ledger, rulefile
from loyalty_ladder.cli import main
from loyalty_ladder.demo_data import HABIT_SHARES, HABITS, DemoShop, Stats, add_months, default_end, generate
from loyalty_ladder.engine import get_engine
from loyalty_ladder.events import id_problem, parse_event

ROOT = Path(__file__).resolve().parent.parent
END = datetime(2026, 3, 1, tzinfo=UTC)
START = datetime(2024, 3, 1, tzinfo=UTC)
D = Decimal


@pytest.fixture(scope="module")
def sample():
    """400 customers over the default 24 months: raw events and their parsed form."""
    raw = list(generate(400, seed=7, end=END))
    return raw, [parse_event(e) for e in raw]


def digest(lines) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def test_the_same_seed_and_end_give_the_same_bytes_another_seed_others():
    first = digest(DemoShop(300, seed=3, end=END).lines())
    assert digest(DemoShop(300, seed=3, end=END).lines()) == first
    assert digest(DemoShop(300, seed=4, end=END).lines()) != first
    assert digest(DemoShop(300, seed=3, end=datetime(2026, 3, 2, tzinfo=UTC)).lines()) != first


def test_lines_are_the_compact_json_of_the_events():
    shop = DemoShop(50, seed=2, months=6, end=END)
    lines = list(shop.lines())
    assert lines == [json.dumps(e, separators=(",", ":")) for e in shop.events()]
    assert all("\n" not in line and ": " not in line for line in lines)


def test_every_event_parses_and_the_events_api_would_take_it(sample):
    raw, parsed = sample
    assert len(parsed) == len(raw) > 4000
    programme = rulefile.load_programme(ROOT / "rules")
    labels = [str(i) for i in range(len(parsed))]
    ledger.check_acceptable(programme, parsed, END, labels)  # EUR, no manual adjustments, not in the future
    ledger.check_unique(parsed, labels)
    assert {e.order.currency for e in parsed if e.type in ("order_placed", "order_paid")} == {"EUR"}
    ids = [e.id for e in parsed]
    assert len(set(ids)) == len(ids)
    for event in parsed:
        for value in (event.id, event.customer_id, event.order_id, event.refund and event.refund.id,
                      event.referred_customer_id):
            assert value is None or id_problem(value) is None, value
        if event.customer is not None and event.customer.email is not None:
            assert event.customer.email.rsplit("@", 1)[1] in ("example.com", "example.org", "example.net")


def test_time_order_inside_the_window_and_nothing_at_or_after_the_end(sample):
    _, parsed = sample
    keys = [e.sort_key for e in parsed]
    assert keys == sorted(keys)
    assert START <= parsed[0].occurred_at and parsed[-1].occurred_at < END
    # a history ending mid-day: nothing at or after that instant either
    noon = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    last = parse_event(list(generate(200, months=2, end=noon))[-1])
    assert datetime(2026, 2, 25, tzinfo=UTC) < last.occurred_at < noon


def test_the_default_end_is_today_midnight_utc():
    now = datetime.now(UTC)
    assert DemoShop(1).end == default_end() == datetime(now.year, now.month, now.day, tzinfo=UTC)
    assert DemoShop(1).start == add_months(default_end(), -24)
    assert add_months(datetime(2026, 3, 31, 9, tzinfo=UTC), -1) == datetime(2026, 2, 28, 9, tzinfo=UTC)
    assert add_months(datetime(2024, 2, 29, tzinfo=UTC), -24) == datetime(2022, 2, 28, tzinfo=UTC)


def test_every_habit_is_there_in_about_its_share():
    habits = Counter(p.habit for p in DemoShop(3000, end=END).profiles())
    assert set(habits) == set(HABITS)
    for habit, share in HABIT_SHARES.items():
        assert abs(habits[habit] / 3000 - share) < 0.25 * share + 0.005, (habit, habits[habit])


def test_the_events_follow_the_habits(sample):
    raw, parsed = sample
    shop = DemoShop(400, seed=7, end=END)
    habit = {p.customer_id: p.habit for p in shop.profiles()}
    orders: dict[str, Counter] = defaultdict(Counter)
    coded: dict[str, list[bool]] = defaultdict(list)
    tags: dict[str, set] = defaultdict(set)
    for event in parsed:
        if event.type in ("order_placed", "order_paid") and event.order.total is not None:
            orders[habit[event.customer_id]][event.order.payment.method] += 1
            coded[habit[event.customer_id]].append(bool(event.order.discount_codes))
        if event.customer is not None and event.customer.tags:
            tags[habit[event.customer_id]].update(event.customer.tags)
    assert set(orders) == set(HABITS) - {"visitor"}  # visitors only sign up or start checkouts
    assert set(orders["b2b"]) == {"terms"} and "terms" not in orders["monthly"]
    assert sum(coded["discount_hunter"]) / len(coded["discount_hunter"]) > 0.8
    assert sum(coded["monthly"]) / len(coded["monthly"]) < 0.2
    assert not any(coded["image_client"])
    assert "image-client" in tags["image_client"] and tags["b2b"] == {"b2b", "wholesale"}
    per_customer = Counter(cid for cid, _ in {(e.customer_id, e.order.id) for e in parsed
                                              if e.type in ("order_placed", "order_paid")})
    assert max(n for cid, n in per_customer.items() if habit[cid] == "one_off") == 1
    assert min(n for cid, n in per_customer.items() if habit[cid] == "monthly" and shop.profile(
        int(cid[2:]) - 1).joined_at < datetime(2024, 9, 1, tzinfo=UTC)) >= 2
    kinds = Counter(e["type"] for e in raw)
    assert set(kinds) == {"customer_created", "customer_updated", "checkout_started", "order_placed", "order_paid",
                          "payment_received", "order_refunded", "order_cancelled", "referral", "complaint",
                          "review"}


def test_about_ten_orders_per_customer_with_a_season():
    stats = Stats()
    first_seen: dict[str, str] = {}
    for line in DemoShop(1500, seed=5, end=END).lines(stats):
        event = json.loads(line)
        if event["type"] in ("order_placed", "order_paid"):
            first_seen.setdefault(event["order"]["id"], event["occurred_at"][:7])
    by_month = Counter(first_seen.values())
    assert stats.customers == 1500 and stats.orders == len(first_seen)
    assert 9.0 <= stats.orders / 1500 <= 11.5, stats
    # the summer dip and the November/December peak of the second year (the base is there by then)
    assert by_month["2025-12"] > 1.5 * by_month["2025-08"]
    assert by_month["2025-11"] > by_month["2025-10"]


def test_referrals_name_an_earlier_customer_with_an_account(sample):
    _, parsed = sample
    created: dict[str, datetime] = {}
    referrals = []
    for event in parsed:
        if event.type == "customer_created":
            created[event.customer_id] = event.occurred_at
        elif event.type == "referral":
            referrals.append(event)
    assert len(referrals) >= 15
    for event in referrals:
        assert event.referred_customer_id != event.customer_id
        assert created[event.customer_id] < event.occurred_at  # the referrer was there first
        assert created[event.referred_customer_id] <= event.occurred_at
    counts = Counter(e.customer_id for e in referrals)
    assert max(counts.values()) >= 2  # ambassadors refer several


def test_refunds_never_exceed_the_order_total_and_most_fall_in_the_window(sample):
    _, parsed = sample
    orders = {}
    refunded: dict[str, Decimal] = defaultdict(Decimal)
    inside = outside = full = partial = 0
    for event in parsed:
        if event.type in ("order_placed", "order_paid") and event.order.id not in orders:
            orders[event.order.id] = event
        elif event.type == "order_refunded":
            order = orders[event.order.id]  # never a refund before its order
            assert order.customer_id == event.customer_id
            refunded[event.order.id] += event.refund.amount
            days = (event.occurred_at - order.occurred_at).days
            inside, outside = inside + (days < 30), outside + (days >= 30)
            full, partial = full + (event.refund.amount == order.order.total), partial + (
                event.refund.amount < order.order.total)
    assert all(amount <= orders[oid].order.total for oid, amount in refunded.items())
    assert inside > 3 * outside > 0 and full > 0 and partial > 0


def test_orders_carry_lines_shipping_and_the_tax_included_in_the_total(sample):
    _, parsed = sample
    created = [e.order for e in parsed if e.type in ("order_placed", "order_paid") and e.order.total is not None]
    assert all(o.tax is not None and o.tax < o.total and o.shipping is not None and o.shipping_cost is not None
               and o.lines and all(line.sku and line.price is not None for line in o.lines) for o in created)
    consumer = [o for o in created if o.payment.method != "terms"]
    for order in consumer:  # VAT is inside consumer prices: total × rate / (100 + rate), whole cents down
        rates = {rate for rate in (19, 20, 21, 22, 23)
                 if order.tax == (order.total * rate / (100 + rate)).quantize(D("0.01"), rounding="ROUND_DOWN")}
        assert rates, order
    assert any(o.tax == 0 for o in created if o.payment.method == "terms")  # reverse charge
    costs = Counter("lines" if all(line.cost is not None for line in o.lines) else
                    "order" if o.cost is not None else "margin" for o in consumer)
    assert set(costs) == {"lines", "order", "margin"} and costs["lines"] > 4 * (costs["order"] + costs["margin"])


def test_b2b_orders_on_terms_are_paid_some_late_some_not_yet(sample):
    _, parsed = sample
    terms = {}
    paid: dict[str, list] = defaultdict(list)
    cancelled = set()
    reduced: dict[str, Decimal] = defaultdict(Decimal)
    for event in parsed:
        if event.type == "order_placed" and event.order.payment.method == "terms":
            assert event.order.payment.due_at > event.occurred_at
            terms[event.order.id] = event
        elif event.type == "payment_received":
            assert event.order.id in terms
            paid[event.order.id].append(event)
        elif event.type == "order_cancelled":
            cancelled.add(event.order.id)
        elif event.type == "order_refunded" and event.order.id in terms:
            reduced[event.order.id] += event.refund.amount
    assert len(terms) > 100
    due_long_ago = [oid for oid, e in terms.items() if (END - e.order.payment.due_at).days > 90 and oid not in cancelled]
    settled = [oid for oid in due_long_ago if paid[oid]]
    assert len(settled) > 0.9 * len(due_long_ago)
    for oid in settled:
        assert sum(p.amount for p in paid[oid]) == terms[oid].order.total - reduced[oid]
    late = [oid for oid in settled if paid[oid][-1].occurred_at > terms[oid].order.payment.due_at]
    assert 0.1 * len(settled) < len(late) < 0.4 * len(settled)
    assert any(len(p) == 2 for p in paid.values())  # instalments


def _distribution(path: Path, events) -> Counter:
    programme = rulefile.load_programme(path)
    compiled = get_engine().compile(programme)
    by_customer = defaultdict(list)
    for event in events:
        by_customer[event.customer_id].append(event)
    return Counter((s.stage, s.subgroup, s.lapsed) for s in (
        ladder.fold(programme, compiled, evs, END, customer_id=cid) for cid, evs in by_customer.items()))


def test_the_default_programme_finds_every_stage_and_subgroup_and_the_fashion_shop_another_picture(sample):
    _, parsed = sample
    default = _distribution(ROOT / "rules", parsed)
    assert {stage for stage, _, _ in default} == {"potential", "visitor", "first_purchase", "regular", "advocate"}
    assert {subgroup for _, subgroup, _ in default} == {"profitable", "average", "unprofitable"}
    for stage in ("regular", "advocate"):
        assert {subgroup for s, subgroup, _ in default if s == stage} == {"profitable", "average", "unprofitable"}
    assert {stage for stage, _, lapsed in default if lapsed} >= {"potential", "first_purchase", "regular"}
    fashion = _distribution(ROOT / "rules" / "examples" / "fashion-shop", parsed)
    assert sum(fashion.values()) == sum(default.values()) == 400
    changed = sum(abs(fashion[key] - default[key]) for key in set(fashion) | set(default))
    assert changed > 60  # a visibly different picture of the same customers


def test_it_streams_month_by_month():
    shop = DemoShop(200, months=6, end=END)
    done: list[int] = []
    stream = shop.lines(on_month=lambda m, stats: done.append(m))
    first = json.loads(next(stream))
    assert done == [] and first["occurred_at"] < "2025-10-01"  # yielded before month 2 was generated
    seen_at_month_end = []
    for line in stream:
        if json.loads(line)["occurred_at"] >= "2025-10-01" and not seen_at_month_end:
            seen_at_month_end.append(list(done))
    assert seen_at_month_end == [[0]] and done == [0, 1, 2, 3, 4, 5]


def test_memory_stays_flat_however_long_the_history():
    def peak(months: int) -> tuple[int, int]:
        tracemalloc.start()
        try:
            count = sum(1 for _ in DemoShop(250, months=months, end=END).lines())
            return count, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    short_events, short_peak = peak(4)
    long_events, long_peak = peak(32)
    assert long_events > 4 * short_events
    assert long_peak < 2 * short_peak


# ------------------------------------------------------------------ the command
def run(*args: str):
    return CliRunner().invoke(main, ["demo-data", *args], catch_exceptions=False)


def test_the_command_writes_a_file_and_stdout_the_same_bytes(tmp_path):
    out = tmp_path / "demo.jsonl"
    to_file = run("--customers", "60", "--seed", "9", "--months", "3", "--end", "2026-03-01", "--out", str(out))
    assert to_file.exit_code == 0, to_file.output
    assert to_file.stdout == ""
    text = out.read_text(encoding="utf-8")
    expected = "".join(line + "\n" for line in DemoShop(60, seed=9, months=3, end=END).lines())
    assert text == expected
    assert not (tmp_path / "demo.jsonl.part").exists()
    lines = text.splitlines()
    events = [json.loads(line) for line in lines]
    orders = len({e["order"]["id"] for e in events if e["type"] in ("order_placed", "order_paid")})
    assert to_file.stderr == (
        f"demo-data: 60 customers, {len(lines):,} events, {orders:,} orders, {events[0]['occurred_at']} … "
        f"{events[-1]['occurred_at']} (seed 9, end 2026-03-01T00:00:00Z), written to {out} "
        f"({out.stat().st_size / 1e6:.1f} MB) in " + to_file.stderr.rsplit(" in ", 1)[1])
    to_stdout = run("--customers", "60", "--seed", "9", "--months", "3", "--end", "2026-03-01T00:00:00+00:00")
    assert to_stdout.exit_code == 0
    assert to_stdout.stdout == text  # nothing but the events on stdout
    assert "written to stdout" in to_stdout.stderr


def test_an_end_with_a_zone_is_an_instant():
    result = run("--customers", "5", "--months", "1", "--end", "2026-03-01T10:00:00+02:00")
    assert result.exit_code == 0
    assert "end 2026-03-01T08:00:00Z)" in result.stderr
    assert all(json.loads(line)["occurred_at"] < "2026-03-01T08:00:00Z" for line in result.stdout.splitlines())


@pytest.mark.parametrize(("args", "message"), [
    (["--customers", "0"], "Invalid value for '--customers': 0 is not in the range x>=1."),
    (["--customers", "-3"], "Invalid value for '--customers': -3 is not in the range x>=1."),
    (["--customers", "5", "--months", "0"], "Invalid value for '--months': 0 is not in the range x>=1."),
    (["--customers", "5", "--end", "2026-02-30"],
     "Invalid value for --end: '2026-02-30' is not a date (YYYY-MM-DD) or an ISO 8601 time with a zone"),
    (["--customers", "5", "--end", "soon"], "Invalid value for --end: 'soon' is not an ISO 8601 time"),
    (["--customers", "5", "--end", "2026-03-01T10:00:00"],
     "Invalid value for --end: '2026-03-01T10:00:00' has no time zone; add Z or +HH:MM"),
    (["--customers", "5", "--months", "700", "--end", "2000-01-01"],
     ("Invalid value for '--months' / '--end': 700 months before 2000-01-01T00:00:00Z is before 1970: use fewer "
      "months or a later end")),
])
def test_bad_parameters_exit_2_with_a_message(args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == f"Error: {message}"


def test_an_output_in_a_missing_directory_is_refused_before_anything_is_written(tmp_path):
    target = tmp_path / "nowhere" / "demo.jsonl"
    result = run("--customers", "5", "--out", str(target))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: Invalid value for --out: cannot write {target}: the directory {target.parent} does not exist")
    assert not target.parent.exists()
    folder = run("--customers", "5", "--out", str(tmp_path))
    assert folder.exit_code == 2
    assert folder.stderr.strip().splitlines()[-1] == (
        f"Error: Invalid value for --out: cannot write {tmp_path}: it is a directory")


def test_the_api_refuses_bad_arguments():
    with pytest.raises(ValueError, match="customers must be a whole number of at least 1"):
        DemoShop(0)
    with pytest.raises(ValueError, match="months must be a whole number of at least 1"):
        DemoShop(3, months=0)
    with pytest.raises(ValueError, match="end needs a time zone"):
        DemoShop(3, end=datetime(2026, 3, 1))
