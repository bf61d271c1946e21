"""Ladder benchmark: whole customers per second through facts + engine + ladder + reconcile.

Each customer has a generated history of 10 events over a year (account, checkout,
orders, a refund, a review, a complaint…), folded with the default programme
(``rules/``) as of the end of that year, then reconciled against the awards a previous
run recorded (the steady state of live processing).  The baseline, from the same run,
is the same fold with a pure-Python evaluator of the same conditions: the ratio shows
what the rule engine costs on top of the ladder itself.

Median of 3 interleaved runs.  Prints the figures and writes the "Ladder" section of
BENCHMARKS.md (between ``<!-- ladder:start -->`` and ``<!-- ladder:end -->``; other
sections are left alone).

    python bench/ladder.py [--customers 2000] [--runs 3] [--no-write]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from report import machine, write_section  # bench/report.py (the script's own folder)

from loyalty_ladder import rulefile
from loyalty_ladder.awards import reconcile
from loyalty_ladder.engine import TraceEntry, get_engine
from loyalty_ladder.events import Event, parse_event
from loyalty_ladder.ladder import fold
from loyalty_ladder.programme import AllOf, AnyOf, Comparison, Condition, Not, Programme

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2025, 1, 1, tzinfo=UTC)
AS_OF = datetime(2026, 1, 1, tzinfo=UTC)


# ------------------------------------------------------------------ histories
def history(rng: random.Random, cid: str) -> list[Event]:
    """Ten events of one customer over 2025, in random order (the fold sorts them)."""
    times = sorted(START + timedelta(seconds=rng.randrange(365 * 86400)) for _ in range(10))
    raw: list[dict[str, Any]] = [
        {"type": "customer_created", "customer": {"accepts_marketing": rng.random() < 0.5}},
        {"type": "checkout_started"},
    ]
    orders = rng.randint(3, 6)
    for n in range(orders):
        total = f"{rng.randint(20, 400)}.{rng.randint(0, 99):02d}"
        raw.append({"type": "order_paid", "order": {
            "id": f"{cid}-o{n}", "total": total, "currency": "EUR",
            "discount_codes": ["WELCOME"] if rng.random() < 0.3 else [],
            "lines": [{"sku": "A", "quantity": 1, "price": total, "cost": f"{rng.randint(5, 15)}.00"}]}})
    extras = [
        {"type": "order_refunded", "order": {"id": f"{cid}-o0"}, "refund": {"id": f"{cid}-r", "amount": "10.00"}},
        {"type": "review", "rating": rng.randint(1, 5)},
        {"type": "complaint", "reason": "late"},
        {"type": "referral", "referred_customer_id": f"{cid}-friend"},
        {"type": "checkout_started"},
    ]
    raw += extras[: 10 - len(raw)]
    events = [parse_event({"id": f"{cid}-e{i}", "customer_id": cid, "occurred_at": t.isoformat(), **body})
              for i, (t, body) in enumerate(zip(times, raw))]
    rng.shuffle(events)
    return events


# ------------------------------------------------------------------ baseline evaluator
@dataclass(frozen=True)
class _Evaluation:
    holds: frozenset[str]
    trace: tuple[Any, ...] = ()


class PythonEvaluator:
    """The same conditions evaluated in plain Python (absent facts false, ``not`` negates)."""

    def __init__(self, programme: Programme):
        self.items = [(f"{kind}:{item.id}", item.when)
                      for kind, items in (("stage", programme.stages), ("subgroup", programme.subgroups),
                                          ("reward", programme.rewards))
                      for item in items]

    def _test(self, cond: Condition, facts: Mapping[str, Any], cid: str, out: list | None) -> bool:
        if isinstance(cond, Comparison):
            current = facts.get(cond.fact)
            if current is None:
                result = False
            elif cond.op == "contains":
                result = cond.value in current
            else:
                result = {"eq": current == cond.value, "ne": current != cond.value, "lt": current < cond.value,
                          "lte": current <= cond.value, "gt": current > cond.value,
                          "gte": current >= cond.value}[cond.op]
            if out is not None:
                out.append(TraceEntry(cid, cond.fact, cond.op, cond.value, current, result))
            return result
        if isinstance(cond, Not):
            return not self._test(cond.item, facts, cid, out)
        results = [self._test(c, facts, cid, out) for c in cond.items]
        return all(results) if isinstance(cond, AllOf) else any(results) if isinstance(cond, AnyOf) else False

    def evaluate(self, facts: Mapping[str, Any], trace: bool = False) -> _Evaluation:
        out: list | None = [] if trace else None
        holds = frozenset(cid for cid, when in self.items if when is None or self._test(when, facts, cid, out))
        return _Evaluation(holds, tuple(out or ()))


# ------------------------------------------------------------------ runs
def one_run(programme: Programme, evaluator: Any, customers: list[tuple[str, list[Event]]],
            recorded: dict[str, list[dict[str, Any]]]) -> tuple[float, int]:
    awards = 0
    started = time.perf_counter()
    for cid, events in customers:
        state = fold(programme, evaluator, events, AS_OF, shop="bench", customer_id=cid)
        plan = reconcile(state.awards, recorded.get(cid, ()))
        awards += len(plan.keep) + len(plan.grant)
    elapsed = time.perf_counter() - started
    return len(customers) / elapsed, awards


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rules", default=str(ROOT / "rules"))
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)

    programme = rulefile.load_programme(args.rules)
    compiled = get_engine().compile(programme)
    baseline = PythonEvaluator(programme)
    rng = random.Random(20260302)
    customers = [(f"c{n}", history(rng, f"c{n}")) for n in range(args.customers)]
    # what a previous run recorded: the steady state, where reconcile mostly keeps
    recorded = {cid: [{"key": a.key, "status": "delivered", "params": dict(a.params), "value": a.value}
                      for a in fold(programme, baseline, evs, AS_OF, shop="bench", customer_id=cid).awards]
                for cid, evs in customers}

    engine_rates, python_rates = [], []
    awards = 0
    for _ in range(args.runs):  # interleaved, so drift hits both the same
        rate, awards = one_run(programme, compiled, customers, recorded)
        engine_rates.append(rate)
        python_rates.append(one_run(programme, baseline, customers, recorded)[0])
    engine_rate, python_rate = statistics.median(engine_rates), statistics.median(python_rates)
    ratio = engine_rate / python_rate

    text = f"""## Ladder

Whole customers per second through facts + engine + ladder + award reconcile
(`python bench/ladder.py`): {args.customers} generated customers with 10 events each over one
year, the default programme (`rules/`, version {programme.version}), folded as of the end of the
year and reconciled against previously recorded awards; median of {args.runs} interleaved runs.

| evaluator | customers/s |
|---|---:|
| durable_rules (the engine) | {engine_rate:,.0f} |
| pure-Python conditions (baseline, same run) | {python_rate:,.0f} |
| ratio engine / baseline | {ratio:.2f} |

{awards / len(customers):.1f} implied awards per customer. {machine()}.
"""
    print(text)
    if not args.no_write:
        write_section("ladder", text, ROOT / "BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
