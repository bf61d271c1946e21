"""The explanation a shop admin reads: why a customer is in their stage, what is missing for the
next one in words and numbers, when they lapsed or will lapse, and every reward's fate.

Built from a folded state (:class:`~loyalty_ladder.ladder.LadderState`), the programme version
that decided it and the recorded awards; nothing here reads the database.  The document is dumped
by ``documents.EXPLANATION`` (``GET …/customers/<id>/explain``, ``ladder explain --format json``)
and :func:`render_text` writes it as the report ``ladder explain`` prints on a terminal.

**The condition tree.**  Every ``when`` is evaluated here node by node, with ``all``/``any``/
``not`` kept, on the facts snapshot of the state, with the engine's semantics: a comparison on an
absent fact is false and ``not`` negates that (two-valued logic); the operators are the ones
``factspec`` allows for the fact's kind (``contains`` for tags).  The engine stays the authority:
a tree whose result disagrees with the engine's ``holds`` is an :class:`EngineError`, never a
wrong explanation, and ``tests/test_explanations.py`` checks that the two agree on every
condition of the shipped programmes over generated facts.

**What is missing.**  ``not`` is pushed down to the comparisons (as the compiler does), and each
comparison that does not hold becomes a *gap*: the comparison that must hold (the negated one
under a ``not``), the customer's current value, and for numbers how far they are from it
(``value − current`` for ``gte``, one more for ``gt`` on whole numbers; ``current − value`` for
``lte``/``lt``).  The alternatives of an ``any`` are ordered closest first: fewest gaps that
activity cannot close (a count that must come down), then fewest gaps, then the smallest gaps
relative to their literal.  ``missing`` is the closest way, ``alternatives`` every way (at most
:data:`MAX_WAYS`), and the words say "either … or …".

**Dates** are UTC days ("12 March 2027").  ``earliest_at`` is the latest of the current stage's
minimum stay and the instants the time facts of the closest way come true
(``days_since_first_order ≥ 30`` → 30 days after the first order).  A climb happens at a
wake-up (an event, the end of a minimum stay, the first instant of a month), so a condition that
only time makes true is acted on at the next of those.
"""
from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from typing import Any

from .errors import EngineError
from .factspec import FACTS
from .ladder import LadderState, next_month_start
from .programme import AllOf, AnyOf, Comparison, Condition, Not, Programme, Reward, Settings, Stage, condition_id
from .statuses import AwardStatus

#: the most alternative ways to the next stage listed (``alternatives``)
MAX_WAYS = 6

# ================================================================ words: values
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")
#: currencies written with a symbol before the amount; any other code is written before it ("CHF 40.00")
CURRENCY_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥", "INR": "₹"}
_CENT = Decimal("0.01")


def day(t: datetime) -> str:
    """A UTC day in words: ``12 March 2027``."""
    u = _utc(t)
    return f"{u.day} {_MONTHS[u.month - 1]} {u.year}"


def moment(t: datetime) -> str:
    """A UTC instant in words: the day, and the time when it is not midnight."""
    u = _utc(t)
    if (u.hour, u.minute, u.second, u.microsecond) == (0, 0, 0, 0):
        return day(u)
    return f"{day(u)}, {u:%H:%M} UTC"


def money(amount: Decimal | int, currency: str, rounding: str = ROUND_HALF_EVEN) -> str:
    """An amount with two decimals and the currency: ``€40.00``, ``-€5.50``, ``CHF 1,200.00``."""
    q = Decimal(amount).quantize(_CENT, rounding=rounding)
    sign = "-" if q < 0 else ""
    digits = f"{abs(q):,.2f}"
    symbol = CURRENCY_SYMBOLS.get(currency)
    return f"{sign}{symbol}{digits}" if symbol else f"{sign}{currency} {digits}"


def _plain(d: Decimal, places: int = 2) -> str:
    """A decimal without trailing zeros, at most ``places`` decimals (``4.5``, ``4.33``, ``60``)."""
    q = d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN).normalize()
    return format(q, "f")


def value_words(fact: str, value: Any, settings: Settings) -> str:
    """A fact's value as an admin reads it: money with the currency, ratios as percentages,
    times as days, booleans as yes/no, tags quoted; ``none`` for an absent fact."""
    if value is None:
        return "none"
    kind = FACTS[fact].kind if fact in FACTS else ""
    if kind == "money":
        return money(value, settings.currency)
    if kind == "ratio":
        return _plain(Decimal(value) * 100) + "%"
    if kind == "number":
        return _plain(Decimal(value))
    if kind == "bool":
        return "yes" if value else "no"
    if kind == "time" and isinstance(value, datetime):
        return moment(value)
    if kind == "tags":
        tags = sorted(value) if not isinstance(value, str) else [value]
        return ", ".join(f"'{t}'" for t in tags) if tags else "none"
    return str(value)


# ================================================================ words: facts
@dataclass(frozen=True)
class FactWords:
    """How a fact is named: ``label`` in a comparison ("orders ≥ 3"), ``one``/``many`` for a
    count ("1 more order"), ``more`` for money that adds up ("€40.00 more spend"), ``yes``/``no``
    for a boolean; ``grows``: activity only ever raises it (a gap that needs it lower cannot be
    closed by the customer, so such an alternative is never the closest)."""

    label: str
    one: str = ""
    many: str = ""
    more: str = ""
    yes: str = ""
    no: str = ""
    grows: bool = False


FACT_WORDS: dict[str, FactWords] = {
    "orders_count": FactWords("orders", "order", "orders", grows=True),
    "orders_12m": FactWords("orders in the last 12 months", "order in the last 12 months",
                            "orders in the last 12 months"),
    "net_spent": FactWords("net spend", more="spend", grows=True),
    "profit": FactWords("profit", more="profit", grows=True),
    "average_order_value": FactWords("average order value"),
    "outstanding_balance": FactWords("outstanding balance"),
    "first_order_at": FactWords("first order"),
    "last_order_at": FactWords("last order"),
    "days_since_last_order": FactWords("days since the last order"),
    "days_since_first_order": FactWords("days since the first order", grows=True),
    "days_known": FactWords("days since the customer was first seen", grows=True),
    "active_months_12m": FactWords("months with an order in the last 12 months",
                                   "month with an order in the last 12 months",
                                   "months with an order in the last 12 months"),
    "full_price_share": FactWords("full-price share"),
    "checkouts_started": FactWords("checkouts started", "started checkout", "started checkouts", grows=True),
    "referrals": FactWords("referrals", "referral", "referrals", grows=True),
    "complaints": FactWords("complaints", "complaint", "complaints", grows=True),
    "reviews_count": FactWords("reviews", "review", "reviews", grows=True),
    "average_rating": FactWords("average rating"),
    "refunds_count": FactWords("refunds", "refund", "refunds", grows=True),
    "accepts_marketing": FactWords("marketing consent", yes="marketing consent", no="no marketing consent"),
    "has_account": FactWords("customer account", yes="a customer account", no="no customer account"),
    "image_client": FactWords("image client", yes="being an image client", no="not being an image client"),
    "tags": FactWords("tags"),
}


def words_of(fact: str) -> FactWords:
    return FACT_WORDS.get(fact) or FactWords(fact.replace("_", " "))


_SYMBOL = {"eq": "=", "ne": "≠", "lt": "<", "lte": "≤", "gt": ">", "gte": "≥"}
_OP_WORDS = {"eq": "exactly", "ne": "other than", "lt": "less than", "lte": "at most", "gt": "more than",
             "gte": "at least"}
_TIME_WORDS = {"eq": "at", "ne": "not at", "lt": "before", "lte": "on or before", "gt": "after",
               "gte": "on or after"}
#: the operator that holds exactly when ``op`` does not (on a present fact); a tag that must go is
#: ``not_contains`` (no rule-file operator, only an explanation's)
NEGATED = {"eq": "ne", "ne": "eq", "lt": "gte", "gte": "lt", "lte": "gt", "gt": "lte",
           "contains": "not_contains", "not_contains": "contains"}


def value_pair(fact: str, value: Any, current: Any, settings: Settings) -> tuple[str, str]:
    """The literal and the current value in words, never written alike when they differ (a share
    of 0.59999 against 0.6 is "59.999%", not "60%")."""
    literal, now = value_words(fact, value, settings), value_words(fact, current, settings)
    kind = FACTS[fact].kind if fact in FACTS else ""
    if literal == now and current is not None and current != value and kind in ("money", "ratio", "number"):
        exact = Decimal(current) * (100 if kind == "ratio" else 1)
        text = format(exact.normalize(), "f")
        if kind == "money":
            symbol = CURRENCY_SYMBOLS.get(settings.currency)
            text = f"{symbol}{text}" if symbol else f"{settings.currency} {text}"
        now = text + ("%" if kind == "ratio" else "")
    return literal, now


def comparison_text(fact: str, op: str, value: Any, current: Any, settings: Settings) -> str:
    """A comparison as a line of the tree: ``orders ≥ 3 (now 2)``, ``tags contain 'vip' (now none)``."""
    w = words_of(fact)
    literal, now = value_pair(fact, value, current, settings)
    if op in ("contains", "not_contains"):
        verb = "contain" if op == "contains" else "do not contain"
        return f"{w.label} {verb} '{value}' (now {now})"
    return f"{w.label} {_SYMBOL.get(op, op)} {literal} (now {now})"


# ================================================================ the tree
_PY_OP: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt,
    "lte": operator.le, "gt": operator.gt, "gte": operator.ge,
}


def compare(fact: str, current: Any, op: str, value: Any) -> bool:
    """One comparison with the rule-file semantics: an absent fact makes it false; the operator
    must be one ``factspec`` allows for the fact's kind."""
    spec = FACTS.get(fact)
    if spec is None or op not in spec.ops:
        raise EngineError(f"cannot explain '{fact} {op}': not an operator of this fact", {"fact": fact, "op": op})
    if current is None:
        return False
    if op == "contains":
        return value in current
    return bool(_PY_OP[op](current, value))


def condition_tree(cond: Condition | None, facts: Mapping[str, Any], settings: Settings) -> dict[str, Any] | None:
    """The condition as a tree of nodes ``{kind, holds, text, children}`` (``all``/``any``/``not``;
    dumped as ``items``) and ``{kind: comparison, holds, fact, op, value, current, text}``; None
    for no condition (it always holds)."""
    if cond is None:
        return None
    if isinstance(cond, Comparison):
        current = facts.get(cond.fact)
        return {"kind": "comparison", "holds": compare(cond.fact, current, cond.op, cond.value),
                "fact": cond.fact, "op": cond.op, "value": cond.value, "current": current,
                "text": comparison_text(cond.fact, cond.op, cond.value, current, settings)}
    if isinstance(cond, Not):
        child = condition_tree(cond.item, facts, settings)
        assert child is not None
        return {"kind": "not", "holds": not child["holds"], "text": "not", "children": [child]}
    items = [condition_tree(item, facts, settings) for item in cond.items]
    if isinstance(cond, AllOf):
        return {"kind": "all", "holds": all(i["holds"] for i in items if i), "text": "all of", "children": items}
    if isinstance(cond, AnyOf):
        return {"kind": "any", "holds": any(i["holds"] for i in items if i), "text": "any of", "children": items}
    raise EngineError(f"unknown condition {cond!r}")


def tree_holds(tree: Mapping[str, Any] | None) -> bool:
    return True if tree is None else bool(tree["holds"])


# ================================================================ gaps
@dataclass(frozen=True)
class Gap:
    """A comparison that must hold and does not: ``fact op value`` (``op`` negated under a
    ``not``), with the customer's ``current`` value."""

    fact: str
    op: str
    value: Any
    current: Any


@dataclass(frozen=True)
class Either:
    """Alternative ways (each a tuple of needs, all of which must be met), closest first; none:
    the condition can never hold (an empty ``any``)."""

    options: tuple[tuple[Gap | Either, ...], ...]


Need = tuple[Gap | Either, ...]


def needs(cond: Condition | None, facts: Mapping[str, Any], negate: bool = False) -> Need:
    """What must change for ``cond`` (or, with ``negate``, its negation) to hold; ``()`` when it
    holds."""
    if cond is None:
        return () if not negate else (Either(()),)
    if isinstance(cond, Comparison):
        current = facts.get(cond.fact)
        holds = compare(cond.fact, current, cond.op, cond.value) != negate
        if holds:
            return ()
        return (Gap(cond.fact, NEGATED[cond.op] if negate else cond.op, cond.value, current),)
    if isinstance(cond, Not):
        return needs(cond.item, facts, not negate)
    children = [needs(item, facts, negate) for item in cond.items]
    if isinstance(cond, AllOf) != negate:  # all, or not(any): every part must hold
        return tuple(itertools.chain.from_iterable(children))
    if any(child == () for child in children):  # any, or not(all): one part is enough
        return ()
    options: list[Need] = []
    for child in children:
        if len(child) == 1 and isinstance(child[0], Either):
            options.extend(child[0].options)  # any of (any of …) is one choice
        else:
            options.append(child)
    if len(options) == 1:
        return options[0]
    return (Either(tuple(sorted(options, key=_cost))),)


_INT_KINDS = ("count", "days")
_NUMERIC_KINDS = ("count", "days", "money", "ratio", "number")


def gap_amount(gap: Gap) -> Any:
    """How far the current value is from the literal (see the module docstring); None where
    there is no number to give (an absent fact, ``eq``/``ne``, bools, tags, times)."""
    kind = FACTS[gap.fact].kind
    if gap.current is None or kind not in _NUMERIC_KINDS or gap.op not in ("gte", "gt", "lte", "lt"):
        return None
    step = 1 if kind in _INT_KINDS and gap.op in ("gt", "lt") else 0
    if gap.op in ("gte", "gt"):
        return gap.value - gap.current + step
    return gap.current - gap.value + step


def _hard(gap: Gap) -> bool:
    """A gap the customer's activity cannot close (a count that must come down)."""
    if gap.fact == "first_order_at":
        return gap.current is not None
    return words_of(gap.fact).grows and gap.current is not None and gap.op in ("lt", "lte", "eq")


def _relative(gap: Gap) -> Decimal:
    amount = gap_amount(gap)
    if amount is None or not gap.value:
        return Decimal(1)
    return min(Decimal(1), abs(Decimal(amount) / Decimal(gap.value)))


def _cost(need: Need) -> tuple[int, int, Decimal]:
    hard, count, relative = 0, 0, Decimal(0)
    for item in need:
        if isinstance(item, Either):
            if not item.options:
                return (1 << 30, 0, Decimal(0))
            h, c, r = _cost(item.options[0])
        else:
            h, c, r = int(_hard(item)), 1, _relative(item)
        hard, count, relative = hard + h, count + c, relative + r
    return (hard, count, relative)


def ways(need: Need, limit: int = MAX_WAYS) -> list[tuple[Gap, ...]]:
    """Every way to meet ``need`` as a flat list of gaps, closest first, at most ``limit``;
    ``[]`` when it can never be met."""
    out: list[tuple[Gap, ...]] = [()]
    for item in need:
        if isinstance(item, Gap):
            out = [way + (item,) for way in out]
            continue
        alternatives = [w for option in item.options for w in ways(option, limit * 4)]
        out = [way + alt for way in out for alt in alternatives][:limit * 4]
        if not out:
            return []
    return sorted(out, key=_cost)[:limit]


# ================================================================ words: gaps
def _plural(n: Any, w: FactWords) -> str:
    return w.one if n == 1 else w.many


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def gap_at(gap: Gap, facts: Mapping[str, Any], as_of: datetime) -> datetime | None:
    """The instant a gap comes true by time alone (``days_since_first_order ≥ 30``: 30 days
    after the first order), or the earliest instant an order can close it (``last_order_at ≥ T``);
    None otherwise.  ``days_known`` has no first-event time in the facts: the instant given is
    the latest it can be (the facts count whole days, so it may come up to a day sooner)."""
    if gap.op not in ("gte", "gt"):
        return None
    extra = 1 if gap.op == "gt" else 0
    if gap.fact in ("days_since_first_order", "days_since_last_order"):
        anchor = facts.get("first_order_at" if gap.fact == "days_since_first_order" else "last_order_at")
        if gap.current is None or anchor is None:
            return None
        return anchor + timedelta(days=gap.value + extra)
    if gap.fact == "days_known":
        if gap.current is None:
            return None
        return as_of + timedelta(days=gap.value + extra - gap.current)
    if gap.fact in ("last_order_at", "first_order_at") and isinstance(gap.value, datetime):
        if gap.fact == "first_order_at" and gap.current is not None:
            return None
        return max(gap.value, as_of)
    return None


def only_time(gap: Gap) -> bool:
    """Time alone closes this gap (no event needed)."""
    return (gap.fact in ("days_since_first_order", "days_since_last_order", "days_known")
            and gap.op in ("gte", "gt") and gap.current is not None)


def gap_text(gap: Gap, facts: Mapping[str, Any], settings: Settings, as_of: datetime) -> str:
    """A gap in words: ``1 more order``, ``€40.00 more spend``, ``30 days since the first order
    (on 12 March 2027, 12 more days)``, ``the tag 'vip'``."""
    w = words_of(gap.fact)
    kind = FACTS[gap.fact].kind
    op, value, current = gap.op, gap.value, gap.current
    amount = gap_amount(gap)
    literal, now = value_pair(gap.fact, value, current, settings)
    at = gap_at(gap, facts, as_of)
    if gap.fact in ("days_since_first_order", "days_since_last_order", "days_known") and op in ("gte", "gt"):
        span = _days(value) if op == "gte" else f"more than {_days(value)}"
        if gap.fact == "days_since_first_order":
            if current is None:
                return f"a first order, then {span}"
            return f"{span} since the first order (on {day(at)}, {_days(amount)} more)" if at else \
                f"{span} since the first order ({_days(amount)} more)"
        if gap.fact == "days_since_last_order":
            if current is None:
                return f"an order, then {span} without one"
            return f"{span} without an order (on {day(at)}, if no order comes before)" if at else \
                f"{span} without an order"
        if current is None:
            return f"{span} since the customer was first seen"
        return f"{span} since the customer was first seen (by {day(at)}, {_days(amount)} more)" if at else \
            f"{span} since the customer was first seen"
    if gap.fact == "days_since_last_order" and op in ("lte", "lt"):
        if current is None:
            return "an order"
        limit = f"at most {_days(value)}" if op == "lte" else f"less than {_days(value)}"
        return f"an order (the last one was {_days(current)} ago; {limit} allowed)"
    if kind == "count" and w.one:
        if op in ("gte", "gt") and amount is not None:
            return f"{amount} more {_plural(amount, w)}"
        if op in _OP_WORDS:
            words = {"lt": "fewer than", "lte": "no more than"}.get(op, _OP_WORDS[op])
            return f"{words} {value} {_plural(value, w)} (now {now})"
    if kind == "money" and w.more and op in ("gte", "gt") and amount is not None:
        needed = money(amount, settings.currency, rounding=ROUND_CEILING)
        return f"{needed} more {w.more}" if op == "gte" else f"more than {needed} more {w.more}"
    if kind == "bool":
        wanted = bool(value) if op == "eq" else not value
        phrase = w.yes if wanted else w.no
        if gap.fact == "image_client" and wanted:
            phrase += f" (the shop tag '{settings.image_client_tag}')"
        return phrase or f"{w.label}: {'yes' if wanted else 'no'}"
    if kind == "tags":
        return f"the tag '{value}'" if op == "contains" else f"not the tag '{value}'"
    if kind == "time" and isinstance(value, datetime):
        if gap.fact == "last_order_at" and op in ("gte", "gt"):
            return f"an order {_TIME_WORDS[op]} {moment(value)}"
        if gap.fact == "first_order_at" and current is None and op in ("gte", "gt", "lte", "lt"):
            return f"a first order {_TIME_WORDS[op]} {moment(value)}"
        return f"{w.label} {_TIME_WORDS.get(op, op)} {moment(value)} (now {now})"
    return f"{w.label} {_OP_WORDS.get(op, op)} {literal} (now {now})"


def _and(parts: Sequence[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def need_text(need: Need, facts: Mapping[str, Any], settings: Settings, as_of: datetime) -> str:
    """A need in words: ``1 more order and €40.00 more spend``, ``either 1 more referral or
    €200.00 more profit``; ``nothing`` when it is met."""
    parts = []
    for item in need:
        if isinstance(item, Gap):
            parts.append(gap_text(item, facts, settings, as_of))
        elif not item.options:
            parts.append("something that can never hold (an empty 'any')")
        else:
            options = [need_text(o, facts, settings, as_of) for o in item.options]
            options = [f"({o})" if len(opt) > 1 else o for o, opt in zip(options, item.options, strict=True)]
            parts.append("either " + ", ".join(options[:-1]) + " or " + options[-1])
    return _and(parts) or "nothing"


def missing_item(gap: Gap, facts: Mapping[str, Any], settings: Settings, as_of: datetime) -> dict[str, Any]:
    """A gap as the document's ``missing`` entry."""
    return {"fact": gap.fact, "op": gap.op, "value": gap.value, "current": gap.current, "gap": gap_amount(gap),
            "at": gap_at(gap, facts, as_of), "text": gap_text(gap, facts, settings, as_of)}


def reasons(cond: Condition | None, facts: Mapping[str, Any], settings: Settings,
            negate: bool = False) -> list[str]:
    """Why a condition that holds holds: the comparisons that make it true (the first true
    alternative of an ``any``), in the tree's words; ``not`` pushed down to them."""
    if cond is None:
        return []
    if isinstance(cond, Comparison):
        current = facts.get(cond.fact)
        if compare(cond.fact, current, cond.op, cond.value) == negate:
            return []
        if negate and current is None:
            return [f"no {words_of(cond.fact).label} yet"]
        return [comparison_text(cond.fact, NEGATED[cond.op] if negate else cond.op, cond.value, current, settings)]
    if isinstance(cond, Not):
        return reasons(cond.item, facts, settings, not negate)
    parts = [(item, reasons(item, facts, settings, negate)) for item in cond.items]
    if isinstance(cond, AllOf) != negate:
        return [r for _, rs in parts for r in rs]
    for item, rs in parts:
        if not needs(item, facts, negate):
            return rs
    return []


# ================================================================ the document
def passed_through(state: LadderState, stages: Sequence[str]) -> list[str]:
    """Which of ``stages`` the customer only passed through (left in the instant they entered)."""
    out = []
    for here, after in itertools.pairwise(state.history):
        if here.stage in stages and after.at == here.at and here.turn == after.turn and here.stage != after.stage:
            out.append(here.stage)
    return out


def _stage_of(programme: Programme, stage_id: str | None) -> Stage | None:
    if stage_id is None:
        return None
    try:
        return programme.stage(stage_id)
    except KeyError:  # a stage of another version (never the deciding one's, but say so rather than fail)
        return None


def _stage_name(programme: Programme, stage_id: str | None) -> str:
    stage = _stage_of(programme, stage_id)
    return f"{stage.name} ({stage.id})" if stage is not None and stage.name and stage.name != stage.id else str(stage_id)


def _turn_words(turn: int) -> str:
    return "the customer joined the ladder" if turn == 1 else f"turn {turn} started"


def _turn_start(state: LadderState) -> datetime | None:
    return next((h.at for h in state.history if h.turn == state.turn), None)


def _checked(tree: Mapping[str, Any] | None, cid: str, holds: frozenset[str]) -> None:
    if tree_holds(tree) != (cid in holds):
        raise EngineError(f"the explanation of {cid} disagrees with the rule engine",
                          {"condition": cid, "engine": cid in holds, "explanation": tree_holds(tree)})


def why_text(programme: Programme, state: LadderState, facts: Mapping[str, Any], holds: frozenset[str],
             as_of: datetime) -> str:
    """Why the customer is in their stage, in words."""
    excluded = getattr(state, "excluded", None)
    if state.stage is None:
        lead = "not on the ladder yet"
        if excluded:
            return f"{lead}: excluded from the programme ({excluded}), never evaluated"
        return lead
    stage = _stage_of(programme, state.stage)
    since = f" since {day(state.since)}" if state.since is not None else ""
    text = f"in stage {_stage_name(programme, state.stage)}{since}, turn {state.turn}"
    if state.lapsed:
        text += ", lapsed"
    if excluded:
        return f"{text}; excluded from the programme ({excluded}), so not evaluated: nothing moves, nothing is granted"
    if stage is None:
        return text
    if stage.when is None:
        return f"{text}; the stage has no condition: every customer we know of starts here" \
            if programme.stages and programme.stages[0].id == stage.id else f"{text}; the stage has no condition"
    if condition_id("stage", stage.id) in holds:
        return f"{text}; its condition holds: {_and(reasons(stage.when, facts, programme.settings))}"
    missing = need_text(needs(stage.when, facts), facts, programme.settings, as_of)
    return f"{text}; its condition no longer holds ({missing} is missing), but a stage once reached is kept"


def next_explanation(programme: Programme, state: LadderState, facts: Mapping[str, Any],
                     holds: frozenset[str], as_of: datetime) -> dict[str, Any] | None:
    """The next stage and what is missing for it, in words and numbers; None at the top."""
    step = state.next
    if step is None:
        return None
    settings = programme.settings
    stage = _stage_of(programme, step.stage)
    when = stage.when if stage is not None else None
    tree = condition_tree(when, facts, settings)
    _checked(tree, condition_id("stage", step.stage), holds)
    need = needs(when, facts)
    all_ways = ways(need)
    closest = all_ways[0] if all_ways else ()
    impossible = bool(need) and not all_ways
    current = _stage_of(programme, state.stage)
    stay_end = step.earliest_at
    dated = [(gap_at(g, facts, as_of), g) for g in closest]
    dated = [(t, g) for t, g in dated if t is not None]
    earliest: datetime | None = None
    because = ""
    if not state.lapsed and not impossible:
        candidates: list[tuple[datetime, str]] = []
        if stay_end is not None and current is not None:
            stay = f"when the {current.min_stay_days}-day minimum stay in {current.name or current.id} ends"
            candidates.append((stay_end, stay))
        candidates += [(t, gap_text(g, facts, settings, as_of)) for t, g in dated]
        if candidates:
            earliest, because = max(candidates, key=lambda c: c[0])
    name = _stage_name(programme, step.stage)
    if impossible:
        words = f"{name} cannot be reached: its condition can never hold"
    elif need:
        words = f"{name}: {need_text(need, facts, settings, as_of)}"
    else:
        words = f"{name}: nothing is missing"
    if state.lapsed:
        words += "; the customer is lapsed and climbs no further until an order starts a new turn"
        if current is not None and current.min_stay_days:
            words += (f", and the {current.min_stay_days}-day minimum stay in {current.name or current.id} "
                      "counts again from that order")
    elif earliest is not None and earliest > as_of:
        words += f"; earliest on {day(earliest)} ({because})" if need else f"; climbs on {day(earliest)} ({because})"
        time_gaps = [g for g in closest if only_time(g)]
        if closest and len(time_gaps) == len(closest) and earliest != stay_end and state.stage is not None:
            words += (f"; time alone makes it true, and a climb happens at a wake-up: the next event or "
                      f"{day(next_month_start(earliest))} at the latest")
    elif not need and not impossible:
        words += "; the customer climbs at the next wake-up"
        if state.next_wake_at is not None:
            words += f" ({moment(state.next_wake_at)} at the latest)"
    return {
        "stage": step.stage, "name": stage.name if stage is not None else step.stage,
        "holds": tree_holds(tree) if when is not None else True, "tree": tree,
        "missing": [missing_item(g, facts, settings, as_of) for g in closest],
        "alternatives": ([{"missing": [missing_item(g, facts, settings, as_of) for g in way],
                           "text": need_text(way, facts, settings, as_of)} for way in all_ways]
                         if len(all_ways) > 1 else []),
        "earliest_at": earliest, "text": words,
    }


def lapse_explanation(programme: Programme, state: LadderState, facts: Mapping[str, Any],
                      as_of: datetime) -> dict[str, Any]:
    """Why and when the customer lapsed, or when they will lapse without an order."""
    out: dict[str, Any] = {"lapsed": state.lapsed, "lapsed_at": None, "lapse_at": state.lapse_at,
                           "after_days": None, "anchor": None, "anchor_at": None}
    stage = _stage_of(programme, state.stage)
    if state.stage is None:
        return {**out, "text": "not on the ladder: there is nothing to lapse from"}
    name = _stage_name(programme, state.stage)
    days = stage.lapse_after_days if stage is not None else None
    out["after_days"] = days
    last_order = facts.get("last_order_at")
    turn_start = _turn_start(state)

    def anchor_of(deadline: datetime | None) -> None:
        if deadline is None or days is None:
            return
        anchor = deadline - timedelta(days=days)
        if last_order is not None and anchor == last_order:
            out.update(anchor="last_order", anchor_at=anchor)
        elif turn_start is not None and anchor == turn_start:
            out.update(anchor="turn_start", anchor_at=anchor)
        elif last_order is None:
            # the facts hold no time of the latest event: say what it counts from, not when
            out.update(anchor="last_event")

    def after() -> str:
        anchor_at = out["anchor_at"]
        if out["anchor"] == "last_order":
            return f"{_days(days)} after the last order on {day(anchor_at)}"
        if out["anchor"] == "turn_start":
            return f"{_days(days)} after {_turn_words(state.turn)} on {day(anchor_at)}"
        if out["anchor"] == "last_event":
            return f"{_days(days)} without an order in stage {name}, counted from the customer's latest event"
        return f"the {days}-day lapse deadline of stage {name}"

    if state.lapsed:
        lapsed_at = getattr(state, "lapsed_at", None)
        if lapsed_at is None and days is not None and last_order is not None:
            lapsed_at = max(last_order, turn_start or last_order) + timedelta(days=days)  # before the fold said
        out["lapsed_at"] = lapsed_at
        anchor_of(lapsed_at)
        when = f" on {day(lapsed_at)}" if lapsed_at is not None else ""
        if days is None:
            text = f"lapsed{when} in stage {name}"
        elif out["anchor"] == "last_order":
            text = f"lapsed{when}, {_days(days)} without an order after the last one on {day(out['anchor_at'])}"
        elif out["anchor"] == "turn_start":
            text = f"lapsed{when}, {_days(days)} without an order after {_turn_words(state.turn)} on {day(out['anchor_at'])}"
        else:
            text = f"lapsed{when}, {_days(days)} without an order in stage {name}"
        return {**out, "text": text + "; an order starts a new turn (the stage is kept)"}
    if days is None:
        return {**out, "text": f"stage {name} has no lapse deadline: the customer does not lapse in it"}
    if state.lapse_at is None:
        return {**out, "text": f"no lapse deadline now ({_days(days)} without an order in stage {name})"}
    anchor_of(state.lapse_at)
    return {**out, "text": f"lapses on {day(state.lapse_at)} if no order before: {after()}"}


_STATUS_WORDS: dict[str, str] = {
    AwardStatus.DUE: "not delivered yet",
    AwardStatus.SHADOW: "decided in shadow mode: recorded, never delivered",
    AwardStatus.DELIVERED: "delivered",
    AwardStatus.NEEDS_MANUAL_ACTION: "waiting for staff to carry it out",
    AwardStatus.FAILED: "its delivery failed",
    AwardStatus.HISTORICAL: "recorded only (before the shop went live), never delivered",
    AwardStatus.ENDED: "held, then ended",
}
_NOT_GIVEN = (AwardStatus.REVERSED, AwardStatus.WITHHELD)


def award_text(rec: Mapping[str, Any], currency: str) -> str:
    """One recorded award's fate in words, with its reason and the version that decided it."""
    status = str(rec.get("status"))
    reason = rec.get("reason") or "no reason recorded"
    version = f"version {rec['rule_version']}" if rec.get("rule_version") else "version not recorded"
    granted_at = rec.get("granted_at")
    granted = f" on {day(granted_at)}" if isinstance(granted_at, datetime) else ""
    worth = f", worth {money(rec['value'], currency)}" if rec.get("value") is not None else ""
    if status == AwardStatus.REVERSED:
        reversed_at = rec.get("reversed_at")
        when = f" on {day(reversed_at)}" if isinstance(reversed_at, datetime) else ""
        return f"reversed{when}: {reason} (granted{granted}{worth}; {version})"
    if status == AwardStatus.WITHHELD:
        return f"withheld: {reason} (decided{granted}; {version})"
    return f"granted{granted}{worth}, {_STATUS_WORDS.get(status, status)}: {reason} ({version})"


def withheld_because(reward: Reward, state: LadderState, holds: bool, facts: Mapping[str, Any] | None = None,
                     settings: Settings | None = None, as_of: datetime | None = None) -> str | None:
    """Why a reward of the programme has no award (yet)."""
    passed = passed_through(state, reward.trigger.stages) if reward.trigger.kind == "stage" else []
    if passed:
        return (f"passed through stage {', '.join(passed)} in the same moment; stage rewards are "
                "for customers who are in the stage at a wake-up")
    excluded = getattr(state, "excluded", None)
    if excluded:
        return f"the customer is excluded from the programme ({excluded})"
    if state.stage is None:
        return "the customer is not on the ladder yet"
    if reward.trigger.stages and state.stage not in reward.trigger.stages:
        return f"only for stages {', '.join(reward.trigger.stages)}; the customer is in {state.stage}"
    if reward.subgroups and state.subgroup not in reward.subgroups:
        return f"only for subgroups {', '.join(reward.subgroups)}; the customer is {state.subgroup}"
    if not holds:
        if facts is not None and settings is not None and as_of is not None:
            return f"its condition does not hold now: it needs {need_text(needs(reward.when, facts), facts, settings, as_of)}"
        return "its condition does not hold now"
    return {"order": "granted per counting order in its stages; none yet",
            "event": f"granted per '{reward.trigger.event}' event; none yet",
            "period": "granted at the start of each period while in its stages",
            "lapse": "granted when the customer lapses",
            "stage": "granted at the next wake-up in its stage"}.get(reward.trigger.kind)


def _fate(recs: Sequence[Mapping[str, Any]]) -> str:
    if any(str(r.get("status")) not in _NOT_GIVEN for r in recs):
        return "granted"
    if recs and all(str(r.get("status")) == AwardStatus.REVERSED for r in recs):
        return "reversed"
    return "withheld"


def _reward_text(title: str, fate: str, awards: Sequence[Mapping[str, Any]], because: str | None) -> str:
    if not awards:
        return f"{title}: not granted: {because}" if because else f"{title}: not granted"
    if len(awards) == 1:
        return f"{title}: {awards[0]['text']}"
    given = sum(1 for a in awards if str(a.get("status")) not in _NOT_GIVEN)
    undone = len(awards) - given
    counts = f"granted {given} time{'s' if given != 1 else ''}" if given else fate
    if undone:
        counts += f", {undone} reversed or withheld"
    return f"{title}: {counts}"


def _aware(t: Any) -> Any:
    return t.replace(tzinfo=UTC) if isinstance(t, datetime) and t.tzinfo is None else t


def _utc(t: datetime) -> datetime:
    return _aware(t).astimezone(UTC)


def reward_explanations(programme: Programme, state: LadderState, holds: frozenset[str],
                        by_condition: Mapping[str, list[Any]], recorded: Iterable[Mapping[str, Any]],
                        facts: Mapping[str, Any], as_of: datetime) -> list[dict[str, Any]]:
    """Every reward of the programme (and any recorded award of a reward it no longer has)
    granted, withheld or reversed, with the reason and the version of each award."""
    settings = programme.settings
    by_reward: dict[str, list[dict[str, Any]]] = {}
    for rec in recorded:
        granted_at = _aware(rec.get("granted_at"))
        if isinstance(granted_at, datetime) and granted_at > as_of:
            continue  # decided after the explanation's instant
        item = {**rec, "granted_at": granted_at, "reversed_at": _aware(rec.get("reversed_at"))}
        item["text"] = award_text(item, settings.currency)
        by_reward.setdefault(str(rec["reward_id"]), []).append(item)
    out = []
    for reward in programme.rewards:
        cid = condition_id("reward", reward.id)
        tree = condition_tree(reward.when, facts, settings)
        _checked(tree, cid, holds)
        awards = by_reward.pop(reward.id, [])
        because = None if awards else withheld_because(reward, state, cid in holds, facts, settings, as_of)
        fate = _fate(awards)
        title = f"{reward.name} ({reward.id}, {reward.type})" if reward.name else f"{reward.id} ({reward.type})"
        out.append({"reward": reward.id, "name": reward.name or reward.id, "type": reward.type,
                    "trigger": reward.trigger.kind, "in_programme": True, "condition_holds": cid in holds,
                    "condition": by_condition.get(cid, []), "tree": tree, "awards": awards, "fate": fate,
                    "withheld_because": because, "text": _reward_text(title, fate, awards, because)})
    for reward_id, awards in by_reward.items():
        fate = _fate(awards)
        title = f"{reward_id} (no longer in programme version {programme.version})"
        out.append({"reward": reward_id, "name": reward_id, "type": str(awards[0].get("type") or ""),
                    "trigger": None, "in_programme": False, "condition_holds": False, "condition": [],
                    "tree": None, "awards": awards, "fate": fate, "withheld_because": None,
                    "text": _reward_text(title, fate, awards, None)})
    return out


def explain_state(programme: Programme, compiled: Any, state: LadderState,
                  recorded: Sequence[Mapping[str, Any]], as_of: datetime) -> dict[str, Any]:
    """The explanation document (Python values; ``documents.EXPLANATION`` dumps it).

    ``compiled`` is the deciding version's evaluator (a ``CompiledProgramme``): its ``holds`` is
    the authority, its trace gives each condition's comparisons flat (``condition``, kept for
    clients of earlier releases); the trees say the same with ``all``/``any``/``not`` kept."""
    facts = state.facts
    settings = programme.settings
    evaluation = compiled.evaluate(facts, trace=True)
    holds = frozenset(evaluation.holds)
    by_condition: dict[str, list[Any]] = {}
    for entry in evaluation.trace:
        by_condition.setdefault(entry.condition, []).append(entry)
    stages = []
    for s in programme.stages:
        cid = condition_id("stage", s.id)
        tree = condition_tree(s.when, facts, settings)
        _checked(tree, cid, holds)
        stages.append({"stage": s.id, "name": s.name or s.id, "holds": cid in holds, "current": s.id == state.stage,
                       "condition": by_condition.get(cid, []), "tree": tree, "min_stay_days": s.min_stay_days,
                       "lapse_after_days": s.lapse_after_days})
    subgroups = []
    for g in programme.subgroups:
        cid = condition_id("subgroup", g.id)
        tree = condition_tree(g.when, facts, settings)
        _checked(tree, cid, holds)
        subgroups.append({"subgroup": g.id, "name": g.name or g.id, "holds": cid in holds,
                          "current": g.id == state.subgroup, "condition": by_condition.get(cid, []), "tree": tree})
    return {
        "stage": state.stage, "subgroup": state.subgroup, "lapsed": state.lapsed, "turn": state.turn,
        "since": state.since, "as_of": as_of, "rule_version": programme.version, "currency": settings.currency,
        "excluded": getattr(state, "excluded", None),
        "why": why_text(programme, state, facts, holds, as_of),
        "subgroup_why": _subgroup_why(programme, state, facts),
        "history": [{"stage": h.stage, "at": h.at, "turn": h.turn} for h in state.history],
        "stages": stages,
        "subgroups": subgroups,
        "next": next_explanation(programme, state, facts, holds, as_of),
        "lapse_at": state.lapse_at,
        "lapse": lapse_explanation(programme, state, facts, as_of),
        "rewards": reward_explanations(programme, state, holds, by_condition, recorded, facts, as_of),
    }


def _subgroup_why(programme: Programme, state: LadderState, facts: Mapping[str, Any]) -> str | None:
    if state.stage is None or state.subgroup is None:
        return None
    try:
        group = next(g for g in programme.subgroups if g.id == state.subgroup)
    except StopIteration:
        return None
    name = f"{group.name} ({group.id})" if group.name and group.name != group.id else group.id
    if group.when is None:
        return f"{name}: the catch-all, no earlier subgroup's condition holds"
    return f"{name}: the first whose condition holds, because {_and(reasons(group.when, facts, programme.settings))}"


# ================================================================ the report
def _tree_lines(tree: Mapping[str, Any] | None, indent: str) -> list[str]:
    if tree is None:
        return [f"{indent}(no condition: always holds)"]
    mark = "✓" if tree["holds"] else "✗"
    lines = [f"{indent}{mark} {tree['text']}"]
    for item in tree.get("children") or ():
        lines += _tree_lines(item, indent + "    ")
    return lines


def render_text(doc: Mapping[str, Any], shop: str | None = None, customer: str | None = None) -> str:
    """The explanation as the report ``ladder explain`` prints: the stage and why (its true
    tree), the next stage and what is missing, the lapse, and every reward's fate."""
    who = f"Customer {customer} of shop {shop}" if customer and shop else "Customer"
    lines = [f"{who}, as of {moment(doc['as_of'])} (programme version {doc['rule_version']})", ""]
    lines.append(f"Stage: {doc['why']}")
    current = next((s for s in doc["stages"] if s.get("current")), None)
    if current is not None and current.get("tree") is not None:
        lines += _tree_lines(current["tree"], "    ")
    if doc.get("subgroup_why"):
        lines.append(f"Subgroup: {doc['subgroup_why']}")
    nxt = doc.get("next")
    lines.append("")
    if nxt is None:
        lines.append("Next: none, the customer is at the top stage" if doc.get("stage") else "Next: none")
    else:
        lines.append(f"Next: {nxt['text']}")
        if nxt.get("tree") is not None:
            lines += _tree_lines(nxt["tree"], "    ")
        if len(nxt.get("alternatives") or ()) > 1:
            lines.append("    ways, closest first:")
            lines += [f"      - {alt['text']}" for alt in nxt["alternatives"]]
    lines.append("")
    lines.append(f"Lapse: {doc['lapse']['text']}")
    lines.append("")
    lines.append("Rewards:")
    for reward in doc["rewards"]:
        mark = {"granted": "✓", "reversed": "↺"}.get(reward["fate"], "–")
        lines.append(f"  {mark} {reward['text']}")
        if len(reward["awards"]) > 1:
            lines += [f"      {a['key']}: {a['text']}" for a in reward["awards"]]
    return "\n".join(lines) + "\n"
