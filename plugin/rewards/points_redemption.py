"""``points_redemption``: points a customer spent, paid out as money in the shop.

Not a type a rule file names (:attr:`~.base.RewardType.internal`): the fold implies one award of
it for each ``points_redeemed`` event of the customer's ledger (``POST …/points/redemptions``,
``ladder points redeem``), keyed ``{shop}/{customer}/points/redemption/{redemption id}``.  Its
params are resolved when the redemption is made and stored in the event, so they never change:

* ``points`` — the points spent;
* ``value`` and ``currency`` — their money value: ``points`` × the point value of the programme
  version active at the instant of the redemption;
* ``redemption`` — the redemption's id (the caller's idempotency key);
* ``code`` — a one-time code derived from the award key, for a shop that delivers the value as
  a code instead of store credit.

The shop receives the value by the ``store_credit`` capability (Shopify: store credit; where a
shop has none, a one-time code; WooCommerce: a one-time coupon).  A redemption already made is
never taken back: nothing in a later history un-implies it.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from .base import CENT, AwardContext, Kind, RewardType, decimal_or_none
from .discount import discount_code

#: the prefix of a redemption's one-time code
CODE_PREFIX = "POINTS"


class PointsRedemption(RewardType):
    """A grant of money the customer already earned: transactional, never marketing."""

    name = "points_redemption"
    kind = Kind.GRANT
    internal = True
    requires = "store_credit"
    promotional = False  # the customer's own points paid out
    value_keys = ("value",)

    def award_params(self, params: dict[str, Any], ctx: AwardContext) -> tuple[dict[str, Any], Decimal | None]:
        value = decimal_or_none(params.get("value"))
        out = dict(params)
        out["code"] = discount_code(CODE_PREFIX, ctx.key)
        return out, value.quantize(CENT) if value is not None else None
