"""The vocabulary of customer facts that rule-file conditions may name.

Every fact has a kind, which fixes the type of the literal it may be compared
with and the operators allowed, and whether it can be *absent* (no value, e.g.
``days_since_last_order`` for a customer without orders).  Absent facts make
every comparison false; ``not`` negates that (two-valued logic).
"""
from __future__ import annotations

from dataclasses import dataclass

#: kinds of facts and the Python type of their values in a facts mapping
#: count -> int, money -> Decimal, ratio -> Decimal in [0, 1], days -> int,
#: number -> Decimal, bool -> bool, time -> aware datetime, tags -> frozenset[str]
KINDS = ("count", "money", "ratio", "days", "number", "bool", "time", "tags")

#: comparison operators in rule files
ORDER_OPS = ("eq", "ne", "lt", "lte", "gt", "gte")
EQUALITY_OPS = ("eq", "ne")
TAG_OPS = ("contains",)


@dataclass(frozen=True)
class FactSpec:
    name: str
    kind: str
    nullable: bool
    doc: str

    @property
    def ops(self) -> tuple[str, ...]:
        if self.kind == "tags":
            return TAG_OPS
        if self.kind == "bool":
            return EQUALITY_OPS
        return ORDER_OPS


def _spec(name: str, kind: str, doc: str, nullable: bool = False) -> FactSpec:
    return FactSpec(name=name, kind=kind, nullable=nullable, doc=doc)


FACTS: dict[str, FactSpec] = {
    s.name: s
    for s in (
        _spec("orders_count", "count", "orders placed or paid that still count (not fully refunded or cancelled)"),
        _spec("orders_12m", "count", "orders in the 365 days before the evaluation time"),
        _spec("net_spent", "money", "sales after discounts, refunds and cancellations, in the programme currency"),
        _spec("profit", "money", "net sales without the tax they include, minus cost of goods (lines, order cost, else the default margin) minus shipping subsidies"),
        _spec("average_order_value", "money", "net_spent / orders_count", nullable=True),
        _spec("outstanding_balance", "money", "amount of orders bought on payment terms not yet paid"),
        _spec("first_order_at", "time", "time of the first counting order", nullable=True),
        _spec("last_order_at", "time", "time of the latest counting order", nullable=True),
        _spec("days_since_last_order", "days", "whole days from the latest order to the evaluation time", nullable=True),
        _spec("days_since_first_order", "days", "whole days from the first order to the evaluation time", nullable=True),
        _spec("days_known", "days", "whole days from the customer's first event to the evaluation time", nullable=True),
        _spec("active_months_12m", "count", "distinct calendar months with an order in the last 12 months"),
        _spec("full_price_share", "ratio", "share of net spend on orders without discount codes or discounts (0..1)", nullable=True),
        _spec("checkouts_started", "count", "checkouts started"),
        _spec("referrals", "count", "customers this customer referred"),
        _spec("complaints", "count", "complaints received"),
        _spec("reviews_count", "count", "reviews written"),
        _spec("average_rating", "number", "mean review rating (1..5)", nullable=True),
        _spec("refunds_count", "count", "refunds received (partial or full)"),
        _spec("accepts_marketing", "bool", "the shop's marketing consent for this customer"),
        _spec("has_account", "bool", "a customer account exists (customer_created seen)"),
        _spec("image_client", "bool", "an image client: carries the programme's image_client_tag"),
        _spec("tags", "tags", "the customer's tags in the shop; compare with `contains`"),
    )
}

