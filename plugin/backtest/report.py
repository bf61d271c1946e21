"""The backtest report: a JSON document built from a merged tally, and its table and CSV forms.

JSON keys (the public shape, documented in README.md "Backtest"): ``movement`` (baseline stage
→ candidate stage → customers), ``stages``, ``subgroups``, ``rewards``, ``cost``, ``worse_off``,
with ``preview`` for a candidate from ``--from`` and ``failures`` for customers that could not be
replayed; ``shop``, ``as_of``, ``currency``, ``history``, ``baseline``, ``candidate`` say what
was compared.  Money is a decimal string with two places.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..clock import iso
from ..programme import Programme
from .tally import NONE, REASONS, SIDES, Tally

CENT = Decimal("0.01")
#: what face value means today (the economics work refines the cost per reward type)
COST_BASIS = ("face value: a fixed discount's amount, points' worth, a gift's value; a percentage "
              "discount, a tag, VIP service or payment terms has none until used")


def money(value: Decimal) -> str:
    return str(Decimal(value).quantize(CENT))


@dataclass(frozen=True)
class Meta:
    """What was compared, for the report's header."""

    shop: str
    as_of: datetime
    currency: str
    history: dict[str, Any]
    baseline: dict[str, Any]
    candidate: dict[str, Any]
    baseline_programme: Programme
    candidate_programme: Programme
    preview_at: datetime | None = None
    warnings: tuple[str, ...] = ()


def _stage_order(meta: Meta) -> tuple[list[str], list[str]]:
    rows = [NONE, *(s.id for s in meta.baseline_programme.stages)]
    cols = [NONE, *(s.id for s in meta.candidate_programme.stages)]
    return rows, cols


def document(tally: Tally, meta: Meta) -> dict[str, Any]:
    rows, cols = _stage_order(meta)
    # a stage id no longer in the programme of the as-of time (a dropped stage's customers): its own row
    for b, c in tally.movement:
        if b not in rows:
            rows.append(b)
        if c not in cols:
            cols.append(c)
    movement = {b: {c: tally.movement.get((b, c), 0) for c in cols} for b in rows}
    every_stage = [*rows, *(c for c in cols if c not in rows)]
    stages = {s: {"baseline": tally.stages.get(("baseline", s), 0), "candidate": tally.stages.get(("candidate", s), 0),
                  "baseline_lapsed": tally.lapsed.get(("baseline", s), 0),
                  "candidate_lapsed": tally.lapsed.get(("candidate", s), 0)} for s in every_stage}
    subgroups: dict[str, dict[str, dict[str, int]]] = {}
    groups = [*(g.id for g in meta.baseline_programme.subgroups),
              *(g.id for g in meta.candidate_programme.subgroups)]
    for side, stage, group in sorted(tally.subgroups, key=lambda k: (every_stage.index(k[1]) if k[1] in every_stage
                                                                      else len(every_stage), k[1],
                                                                      groups.index(k[2]) if k[2] in groups else 99, k[2])):
        row = subgroups.setdefault(stage, {}).setdefault(group, {"baseline": 0, "candidate": 0})
        row[side] = tally.subgroups[(side, stage, group)]
    reward_ids = [*(r.id for r in meta.baseline_programme.rewards),
                  *(r.id for r in meta.candidate_programme.rewards)]
    reward_ids += sorted({rid for _side, rid in tally.rewards} - set(reward_ids))
    rewards: dict[str, Any] = {}
    # the type as the programmes define it (the candidate's when both have the id)
    types = {r.id: r.type for r in (*meta.baseline_programme.rewards, *meta.candidate_programme.rewards)}
    for rid in dict.fromkeys(reward_ids):
        if not any((side, rid) in tally.rewards for side in SIDES):
            continue
        entry: dict[str, Any] = {"type": types.get(rid) or tally.reward_types.get(rid)}
        for side in SIDES:
            count, customers, value, cost, unvalued = tally.rewards.get((side, rid), [0, 0, Decimal(0), Decimal(0), 0])
            entry[side] = {"count": count, "customers": customers, "value": money(value), "without_value": unvalued}
        rewards[rid] = entry
    n = tally.customers or 1
    cost = {"currency": meta.currency, "basis": COST_BASIS}
    for side in SIDES:
        cost[side] = {"awards": tally.awards.get(side, 0), "face_value": money(tally.value[side]),
                      "cost": money(tally.cost[side]), "per_customer": money(tally.value[side] / n)}
    cost["change"] = {"face_value": money(tally.value["candidate"] - tally.value["baseline"]),
                      "cost": money(tally.cost["candidate"] - tally.cost["baseline"])}
    worse_off = {"count": tally.worse_off, "reasons": {r: tally.worse.get(r, 0) for r in REASONS},
                 "privileges_lost": dict(sorted(tally.lost.items(), key=lambda kv: (-kv[1], kv[0]))),
                 "examples": [_example(e[3]) for e in tally.examples]}
    doc: dict[str, Any] = {
        "shop": meta.shop, "as_of": iso(meta.as_of), "currency": meta.currency, "history": meta.history,
        "baseline": meta.baseline, "candidate": meta.candidate, "customers": tally.customers,
        "movement": movement, "stages": stages, "subgroups": subgroups, "rewards": rewards, "cost": cost,
        "worse_off": worse_off,
    }
    if meta.preview_at is not None:
        p = tally.preview
        doc["preview"] = {"at": iso(meta.preview_at), "climb": p.get("climb", 0), "lapse": p.get("lapse", 0),
                          "granted": {"awards": p.get("granted", 0), "customers": p.get("customers_granted", 0),
                                      "value": money(tally.preview_value), "rewards": dict(sorted(tally.preview_rewards.items()))},
                          "ended": p.get("ended", 0), "deliveries": p.get("deliveries", 0)}
    doc["failures"] = {"count": tally.failed,
                       "examples": [{"customer_id": cid, "reason": why} for cid, why in tally.failures]}
    doc["warnings"] = list(meta.warnings)
    return doc


def _example(example: dict[str, Any]) -> dict[str, Any]:
    out = dict(example)
    for side in SIDES:
        out[side] = {**example[side], "face_value": money(example[side]["face_value"])}
    return out


# ------------------------------------------------------------------ table
def _grid(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(c) for c in header], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(_numeric(r[i]) for r in cells[1:]) for i in range(len(header))]
    out = []
    for n, r in enumerate(cells):
        out.append("  ".join(c.rjust(widths[i]) if numeric[i] else c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def _numeric(text: str) -> bool:
    return bool(text) and text.lstrip("+-").replace(".", "", 1).isdigit()


def table(doc: dict[str, Any]) -> str:
    """The report for a terminal."""
    lines = [f"Backtest of shop '{doc['shop']}' as of {doc['as_of']} ({doc['currency']})",
             (f"  history:   {doc['history']['name']} — {doc['history']['customers']} customers, "
             f"{doc['history']['events']} events ({doc['history']['note']})"),
             f"  baseline:  {doc['baseline']['description']}",
             f"  candidate: {doc['candidate']['description']}", ""]
    cols = list(next(iter(doc["movement"].values())).keys()) if doc["movement"] else []
    lines.append("Stage movement (rows: baseline stage, columns: candidate stage; customers)")
    lines += _grid(["baseline \\ candidate", *cols],
                   [[b, *(row[c] for c in cols)] for b, row in doc["movement"].items()])
    lines += ["", "Customers per stage"]
    lines += _grid(["stage", "baseline", "candidate", "change", "lapsed (b)", "lapsed (c)"],
                   [[s, r["baseline"], r["candidate"], f"{r['candidate'] - r['baseline']:+d}", r["baseline_lapsed"],
                     r["candidate_lapsed"]] for s, r in doc["stages"].items() if r["baseline"] or r["candidate"]])
    lines += ["", "Customers per stage and subgroup"]
    lines += _grid(["stage", "subgroup", "baseline", "candidate"],
                   [[stage, group, r["baseline"], r["candidate"]]
                    for stage, groups in doc["subgroups"].items() for group, r in groups.items()])
    lines += ["", f"Awards per reward (face value in {doc['currency']})"]
    lines += _grid(["reward", "type", "awards (b)", "value (b)", "awards (c)", "value (c)"],
                   [[rid, r["type"], r["baseline"]["count"], r["baseline"]["value"], r["candidate"]["count"],
                     r["candidate"]["value"]] for rid, r in doc["rewards"].items()])
    cost = doc["cost"]
    lines += ["", (f"Face value of all awards: baseline {cost['baseline']['face_value']}, candidate "
                  f"{cost['candidate']['face_value']} {doc['currency']} (change {cost['change']['face_value']}; "
                  f"per customer {cost['baseline']['per_customer']} → {cost['candidate']['per_customer']})"),
              f"  ({cost['basis']})"]
    worse = doc["worse_off"]
    lines += ["", f"Customers worse off under the candidate: {worse['count']}"]
    for reason, count in worse["reasons"].items():
        lines.append(f"  {reason.replace('_', ' ')}: {count}")
        if reason == "privilege_lost" and worse["privileges_lost"]:
            lines.append("    " + ", ".join(f"{what}: {n}" for what, n in worse["privileges_lost"].items()))
    for e in worse["examples"]:
        b, c = e["baseline"], e["candidate"]
        lines.append(f"  {e['customer_id']}: {', '.join(r.replace('_', ' ') for r in e['reasons'])} — "
                     f"{_side_text(b)} → {_side_text(c)}")
    if "preview" in doc:
        p = doc["preview"]
        lines += ["", f"At the activation {p['at']} (what the candidate does then and the baseline does not)",
                  (f"  climb: {p['climb']} customers; lapse: {p['lapse']}; granted: {p['granted']['awards']} awards to "
                  f"{p['granted']['customers']} customers (face value {p['granted']['value']}); privileges ended: "
                  f"{p['ended']}; deliveries queued in a live shop: {p['deliveries']}")]
    if doc["failures"]["count"]:
        lines += ["", f"Customers left out (could not be replayed): {doc['failures']['count']}"]
        lines += [f"  {f['customer_id']}: {f['reason']}" for f in doc["failures"]["examples"]]
    if doc["warnings"]:
        lines += ["", "Warnings about the candidate programme"] + [f"  {w}" for w in doc["warnings"]]
    return "\n".join(lines) + "\n"


def _side_text(side: dict[str, Any]) -> str:
    stage = side["stage"] or "no stage"
    return f"{stage}{' (lapsed)' if side['lapsed'] else ''}, {side['face_value']}"


# ------------------------------------------------------------------ csv
def to_csv(doc: dict[str, Any]) -> str:
    """One tidy table for spreadsheets: ``section, key, column, value`` (pivot it as you like)."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["section", "key", "column", "value"])
    for b, row in doc["movement"].items():
        for c, n in row.items():
            out.writerow(["movement", b, c, n])
    for stage, row in doc["stages"].items():
        for column, n in row.items():
            out.writerow(["stages", stage, column, n])
    for stage, groups in doc["subgroups"].items():
        for group, row in groups.items():
            for column, n in row.items():
                out.writerow(["subgroups", f"{stage}/{group}", column, n])
    for rid, r in doc["rewards"].items():
        for side in ("baseline", "candidate"):
            for column, v in r[side].items():
                out.writerow(["rewards", rid, f"{side}_{column}", v])
    cost = doc["cost"]
    for side in ("baseline", "candidate", "change"):
        for column, v in cost[side].items():
            out.writerow(["cost", side, column, v])
    out.writerow(["worse_off", "all", "count", doc["worse_off"]["count"]])
    for reason, n in doc["worse_off"]["reasons"].items():
        out.writerow(["worse_off", reason, "count", n])
    for what, n in doc["worse_off"]["privileges_lost"].items():
        out.writerow(["privileges_lost", what, "count", n])
    for e in doc["worse_off"]["examples"]:
        out.writerow(["worse_off_example", e["customer_id"], "reasons", " ".join(e["reasons"])])
    if "preview" in doc:
        p = doc["preview"]
        for column in ("climb", "lapse", "ended", "deliveries"):
            out.writerow(["preview", p["at"], column, p[column]])
        for column in ("awards", "customers", "value"):
            out.writerow(["preview", p["at"], f"granted_{column}", p["granted"][column]])
    out.writerow(["failures", "all", "count", doc["failures"]["count"]])
    return buf.getvalue()
