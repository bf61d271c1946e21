"""``deferred_payment``: payment terms, buy now and pay later."""
from __future__ import annotations

from decimal import Decimal

from loyalty_ladder.rulewords import Choice, Number

from .base import Kind, ParamsSchema, RewardType

NET_DAYS = (7, 15, 30, 45, 60, 90)


class DeferredPaymentParams(ParamsSchema):
    net_days = Choice(NET_DAYS, required=True)
    credit_limit = Number(required=True, low=Decimal(0), low_open=True)


class DeferredPayment(RewardType):
    """A privilege held while its conditions hold; needs the shop's ``payment_terms``.  The
    credit limit is not a cost (what is owed is still paid), so the award has no value."""

    name = "deferred_payment"
    kind = Kind.PRIVILEGE
    suspended_while_lapsed = True
    params_schema = DeferredPaymentParams
    promotional = False  # payment terms granted or ended: a privilege
    requires = "payment_terms"
