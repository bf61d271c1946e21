"""The public documents, one marshmallow schema each: what the HTTP API returns (and
``/openapi.json`` describes), what the CLI prints, and what adapters, templates and the outgoing
webhook receive.  One spelling of every key: an award's reward id is ``reward``, everywhere.

Schemas only *dump* (Python values → JSON): money and other decimals as strings, times as
ISO 8601 with ``Z``.  Views hand them plain mappings or objects with Python values.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from marshmallow import Schema, fields

from .clock import iso
from .jsonable import to_jsonable
from .statuses import AwardStatus


class Time(fields.Field):
    """An instant as ISO 8601 UTC with ``Z``; a stored snapshot's string passes unchanged."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("metadata", {}).update({"type": "string", "format": "date-time"})
        super().__init__(allow_none=True, **kwargs)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        return iso(value) if isinstance(value, datetime) else str(value)


class Json(fields.Field):
    """Any JSON value built from Python values (Decimal → string, datetime → ISO, set → list)."""

    def __init__(self, **kwargs: Any):
        super().__init__(allow_none=True, **kwargs)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return to_jsonable(value)


class DecimalString(fields.Field):
    """A decimal amount as a string (``"120.00"``), never a float."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("metadata", {}).update({"type": "string", "format": "decimal", "example": "10.00"})
        super().__init__(allow_none=True, **kwargs)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else str(value)


def _facts() -> fields.Dict:
    return fields.Dict(keys=fields.String(), values=Json(),
                       metadata={"description": "every fact of the vocabulary; null = absent"})


class TransitionSchema(Schema):
    """One step of the customer's history: entered ``stage`` at ``at`` in ``turn``."""

    stage = fields.String()
    at = Time()
    turn = fields.Integer()


class MissingSchema(Schema):
    """A comparison that does not hold yet on the way to the next stage."""

    fact = fields.String()
    op = fields.String()
    value = Json()
    current = Json()


class NextSchema(Schema):
    """The next stage and what is missing for it; ``earliest_at`` respects the minimum stay."""

    stage = fields.String()
    missing = fields.List(fields.Nested(MissingSchema))
    earliest_at = Time()


class AwardSchema(Schema):
    """An award: a reward decided for a customer, under its deterministic key."""

    key = fields.String(metadata={"description": "the deterministic award key"})
    reward = fields.String(attribute="reward_id", metadata={"description": "the reward's id in the rule file"})
    type = fields.String()
    status = fields.String(metadata={"enum": [str(s) for s in AwardStatus]})
    reason = fields.String(allow_none=True)
    rule_version = fields.String(allow_none=True)
    customer_id = fields.String()
    scope = fields.String(allow_none=True)
    scope_ref = fields.String(allow_none=True)
    stage = fields.String(allow_none=True)
    turn = fields.Integer(allow_none=True)
    granted_at = Time()
    value = DecimalString()
    params = fields.Dict(keys=fields.String(), values=Json())
    reversed_at = Time()
    done_by = fields.String(allow_none=True, metadata={"description": "staff who carried it out by hand (the worklist)"})
    done_at = Time(metadata={"description": "when staff marked it done"})
    done_note = fields.String(allow_none=True, metadata={"description": "what staff did, in their words"})


class SetAsideEventSchema(Schema):
    """An event set aside because the customer's fold or save failed with it."""

    id = fields.String()
    reason = fields.String(allow_none=True)
    at = Time()


class ProcessingFailureSchema(Schema):
    """Why processing a customer keeps failing (reset by the next success)."""

    failures = fields.Integer()
    error = fields.String(allow_none=True)
    retry_at = Time()


class PointsBatchSchema(Schema):
    key = fields.String(metadata={"description": "the points award's key (or the manual adjustment's event id)"})
    points = fields.Integer(metadata={"description": "the batch's points after clawbacks"})
    remaining = fields.Integer(metadata={"description": "what is left to spend"})
    earned_at = Time()
    expires_at = Time(metadata={"description": "null: never expires"})


class PointsSchema(Schema):
    """The customer's points ledger (``loyalty_ladder.points``)."""

    balance = fields.Integer(metadata={"description": "points to spend now (never negative)"})
    value = DecimalString(metadata={
        "description": "the balance in money at the point value of the active version (null: points have no value)"})
    currency = fields.String(allow_none=True)
    point_value = DecimalString()
    debt = fields.Integer(metadata={"description": "points taken back that no batch could cover; paid by new earnings first"})
    redeemed = fields.Integer(metadata={"description": "points spent in all"})
    batches = fields.List(fields.Nested(PointsBatchSchema), metadata={
        "description": "batches with points left, first-expiring-first (the order they are spent in)"})


class PrivilegeSchema(Schema):
    """A privilege of the customer (a stage tag, VIP service, payment terms), held or not."""

    key = fields.String()
    reward = fields.String()
    type = fields.String()
    status = fields.String(metadata={"enum": [str(s) for s in AwardStatus], "description": (
        "due/delivered/needs_manual_action/failed: held; suspended: held but paused (lapsed); "
        "ended: held, then left; historical: ended before the shop went live; shadow: a shadow-mode shop")})
    since = Time(metadata={"description": "when its holding started"})
    reason = fields.String(allow_none=True)
    tag = fields.String(metadata={"description": "the shop tag it carries, if any"})
    level = fields.String(metadata={"description": "VIP service: its level"})
    priority = fields.Integer(metadata={"description": "VIP service: its priority (1 = highest)"})
    net_days = fields.Integer(metadata={"description": "payment terms: days to pay"})
    credit_limit = DecimalString(metadata={"description": "payment terms: the credit limit"})


class PointsAwardSchema(Schema):
    key = fields.String()
    status = fields.String(allow_none=True, metadata={"description": "null: not processed yet (the queue will)"})
    reason = fields.String(allow_none=True)


class PointsInputSchema(Schema):
    """A redemption or a manual points adjustment as stored, with the customer's points after it."""

    id = fields.String(allow_none=True, metadata={"description": "the redemption's id (null for an adjustment)"})
    event_id = fields.String(metadata={"description": "the event in the customer's ledger"})
    type = fields.String(metadata={"description": "points_redeemed | points_adjusted"})
    customer_id = fields.String()
    points = fields.Integer(metadata={"description": "points spent (a redemption), added or removed (an adjustment)"})
    value = DecimalString(metadata={"description": "a redemption's value: points × the point value then"})
    currency = fields.String(allow_none=True)
    at = Time()
    author = fields.String()
    reason = fields.String()
    expires_days = fields.Integer(allow_none=True)
    duplicate = fields.Boolean(metadata={"description": "the same id (idempotency key) again: the stored result"})
    balance_before = fields.Integer(allow_none=True, metadata={"description": "null for a duplicate"})
    award = fields.Nested(PointsAwardSchema, allow_none=True, metadata={
        "description": "the award that pays a redemption out in the shop"})
    points_now = fields.Nested(PointsSchema, allow_none=True, data_key="points_after", metadata={
        "description": "the customer's points after it"})


class VipManagerSchema(Schema):
    """A VIP customer's personal manager, as the shops file's ``vip_managers`` names them."""

    id = fields.String()
    name = fields.String()
    email = fields.String(allow_none=True)


class VipSchema(Schema):
    """VIP service the customer holds now: the deciding award's level and priority, and their
    personal manager (null: the shop lists none)."""

    level = fields.String(allow_none=True)
    priority = fields.Integer(metadata={"description": "1 = highest"})
    manager = fields.Nested(VipManagerSchema, allow_none=True)


class CustomerDocumentSchema(Schema):
    """Where a customer stands: ``GET /api/v1/shops/<shop>/customers/<customer_id>``."""

    shop = fields.String()
    customer_id = fields.String()
    stage = fields.String(allow_none=True)
    subgroup = fields.String(allow_none=True)
    lapsed = fields.Boolean()
    turn = fields.Integer()
    since = Time()
    history = fields.List(fields.Nested(TransitionSchema))
    facts = _facts()
    rewards = fields.List(fields.Nested(AwardSchema))
    next = fields.Nested(NextSchema, allow_none=True)
    lapse_at = Time()
    points = fields.Nested(PointsSchema, allow_none=True, metadata={"description": "null: the customer never had points"})
    privileges = fields.List(fields.Nested(PrivilegeSchema), metadata={
        "description": "the customer's privileges and their status (also among rewards, as awards)"})
    rule_version = fields.String(allow_none=True)
    pending_events = fields.Integer(metadata={"description": "accepted events not applied yet (set-aside ones excluded)"})
    vip = fields.Nested(VipSchema, allow_none=True, metadata={
        "description": "the VIP service the customer holds now, with their personal manager; null: not a VIP"})
    set_aside_events = fields.List(fields.Nested(SetAsideEventSchema), metadata={
        "description": "events that made this customer's processing fail, never folded (poison isolation)"})
    processing_failure = fields.Nested(ProcessingFailureSchema, allow_none=True, metadata={
        "description": "the customer's processing failures in a row, the last error and the next try; null when fine"})


class ComparisonSchema(Schema):
    """One comparison of a condition, with the customer's current value and its result."""

    fact = fields.String()
    op = fields.String()
    value = Json()
    current = Json()
    result = fields.Boolean()


class ConditionNodeSchema(Schema):
    """One node of a condition tree, ``all``/``any``/``not`` kept: ``holds`` is the node's own
    result (a false comparison under a true ``any`` is false, its ``any`` true)."""

    kind = fields.String(metadata={"enum": ["all", "any", "not", "comparison"]})
    holds = fields.Boolean()
    text = fields.String(metadata={"description": "the node in words: 'all of', 'any of', 'not', or the "
                                                  "comparison with the current value ('orders ≥ 3 (now 2)')"})
    # "children" in the Python value: a dict's own .items would stand in for a missing key
    items = fields.List(fields.Nested(lambda: ConditionNodeSchema()), attribute="children", data_key="items", metadata={
        "description": "all / any: the parts; not: the one part it negates (absent on comparisons)"})
    fact = fields.String(metadata={"description": "comparisons only"})
    op = fields.String(metadata={"description": "comparisons only: eq, ne, lt, lte, gt, gte, contains"})
    value = Json(metadata={"description": "comparisons only: the literal of the rule file"})
    current = Json(metadata={"description": "comparisons only: the customer's value (null: absent)"})


def _tree() -> fields.Nested:
    return fields.Nested(ConditionNodeSchema, allow_none=True,
                         metadata={"description": "the condition as a tree; null: no condition (always holds)"})


class StageExplanationSchema(Schema):
    stage = fields.String()
    name = fields.String()
    holds = fields.Boolean(metadata={"description": "the stage's condition holds on the facts now"})
    current = fields.Boolean(metadata={"description": "the customer's stage"})
    condition = fields.List(fields.Nested(ComparisonSchema), metadata={
        "description": "every comparison of the condition, flat (see tree for all / any / not)"})
    tree = _tree()
    min_stay_days = fields.Integer(allow_none=True)
    lapse_after_days = fields.Integer(allow_none=True)


class SubgroupExplanationSchema(Schema):
    subgroup = fields.String()
    name = fields.String()
    holds = fields.Boolean()
    current = fields.Boolean(metadata={"description": "the customer's subgroup (the first that holds)"})
    condition = fields.List(fields.Nested(ComparisonSchema))
    tree = _tree()


class MissingExplanationSchema(MissingSchema):
    """A comparison that must hold for the next stage and does not, with the gap in numbers and words."""

    op = fields.String(metadata={"description": "the operator that must hold (negated under a not; a tag "
                                                "that must go is not_contains)"})
    gap = Json(metadata={"description": "how far from it: value − current for gte (one more for gt on whole "
                                        "numbers), current − value for lte / lt; money in the programme "
                                        "currency; null where there is no number (absent fact, eq, bool, tag, time)"})
    at = Time(metadata={"description": "when time alone makes it true (days since the first order ≥ 30: 30 days "
                                       "after it), or the earliest an order can; else null"})
    text = fields.String(metadata={"description": "in words: '1 more order', '€40.00 more spend'"})


class WaySchema(Schema):
    """One way to the next stage (a choice for each any)."""

    missing = fields.List(fields.Nested(MissingExplanationSchema))
    text = fields.String()


class NextExplanationSchema(Schema):
    """The next stage, what is missing for it (the closest way; every way under ``alternatives``)
    and the earliest date it can be reached."""

    stage = fields.String()
    name = fields.String()
    holds = fields.Boolean(metadata={"description": "its condition holds on the facts now"})
    tree = _tree()
    missing = fields.List(fields.Nested(MissingExplanationSchema), metadata={
        "description": "the closest way: every comparison still to meet"})
    alternatives = fields.List(fields.Nested(WaySchema), metadata={
        "description": "every way when an any offers several, closest first (at most 6); else empty"})
    earliest_at = Time(metadata={"description": "the latest of the minimum stay's end and the dates time facts "
                                                "come true; null while lapsed (an order must start a new turn first)"})
    text = fields.String(metadata={"description": "'Regular (regular): 1 more order; earliest on 13 February 2026 "
                                                  "(…)'"})


class LapseExplanationSchema(Schema):
    """Why and when the customer lapsed, or when they will."""

    lapsed = fields.Boolean()
    lapsed_at = Time(metadata={"description": "when the customer lapsed (null: not lapsed)"})
    lapse_at = Time(metadata={"description": "when the customer lapses without an order before (null: lapsed, "
                                             "or the stage has no lapse)"})
    after_days = fields.Integer(allow_none=True, metadata={"description": "the stage's lapse_after_days"})
    anchor = fields.String(allow_none=True, metadata={
        "enum": ["last_order", "turn_start", "last_event", None],
        "description": "what the deadline counts from"})
    anchor_at = Time(metadata={"description": "the last order or the turn's start it counts from (null for "
                                              "last_event, whose time the facts do not hold)"})
    text = fields.String()


class AwardFateSchema(Schema):
    key = fields.String()
    status = fields.String()
    reason = fields.String(allow_none=True)
    rule_version = fields.String(allow_none=True, metadata={"description": "the programme version that decided it"})
    granted_at = Time()
    value = DecimalString()
    reversed_at = Time()
    text = fields.String(metadata={"description": "its fate in words, with the reason and the version"})


class RewardExplanationSchema(Schema):
    reward = fields.String()
    name = fields.String()
    type = fields.String()
    trigger = fields.String(allow_none=True)
    in_programme = fields.Boolean(metadata={"description": "false: recorded awards of a reward the version in "
                                                           "force no longer has"})
    fate = fields.String(metadata={"enum": ["granted", "withheld", "reversed"]})
    condition_holds = fields.Boolean()
    condition = fields.List(fields.Nested(ComparisonSchema))
    tree = _tree()
    awards = fields.List(fields.Nested(AwardFateSchema))
    withheld_because = fields.String(allow_none=True, metadata={"description": "why there is no award (yet)"})
    text = fields.String()


class ExplanationSchema(Schema):
    """Why a customer is where they are: ``GET …/customers/<customer_id>/explain``."""

    stage = fields.String(allow_none=True)
    subgroup = fields.String(allow_none=True)
    lapsed = fields.Boolean()
    turn = fields.Integer()
    since = Time()
    as_of = Time()
    rule_version = fields.String(metadata={"description": "the programme version in force at as_of"})
    currency = fields.String(metadata={"description": "the programme currency of every amount"})
    excluded = fields.String(allow_none=True, metadata={
        "description": "why the shop's exclusions leave the customer out (null: evaluated)"})
    why = fields.String(metadata={"description": "the stage and why, in words"})
    subgroup_why = fields.String(allow_none=True)
    history = fields.List(fields.Nested(TransitionSchema))
    stages = fields.List(fields.Nested(StageExplanationSchema))
    subgroups = fields.List(fields.Nested(SubgroupExplanationSchema))
    next = fields.Nested(NextExplanationSchema, allow_none=True, metadata={"description": "null at the top stage"})
    lapse_at = Time()
    lapse = fields.Nested(LapseExplanationSchema)
    rewards = fields.List(fields.Nested(RewardExplanationSchema))


class SimulatedCustomerSchema(CustomerDocumentSchema):
    """A customer as ``ladder simulate`` computes them (nothing stored), with ``--trace`` its explanation."""

    class Meta:
        exclude = ("pending_events",)

    explain = fields.Nested(ExplanationSchema)


class SimulationSchema(Schema):
    """The output of ``ladder simulate``."""

    as_of = Time()
    rule_version = fields.String()
    customers = fields.Dict(keys=fields.String(), values=fields.Nested(SimulatedCustomerSchema))


class AcceptResultSchema(Schema):
    """``POST /api/v1/shops/<shop>/events``: what was stored."""

    accepted = fields.Integer(metadata={"description": "new events stored"})
    duplicates = fields.Integer(metadata={"description": "events already known with the same content"})
    customers = fields.List(fields.String(), metadata={"description": "customers with new events"})


class LedgerEntrySchema(Schema):
    received_at = Time()
    source = fields.String()
    event = fields.Dict(attribute="body", metadata={"description": "the event as stored"})


class VipAssignmentSchema(Schema):
    """A VIP customer's stored manager assignment (the manager as the shops file names them now)."""

    manager_id = fields.String()
    assigned_at = Time()
    manager = fields.Nested(VipManagerSchema, allow_none=True,
                            metadata={"description": "null: no longer in the shop's vip_managers"})


class CustomerDataSchema(Schema):
    """Everything stored about a customer (``ladder customer-data``, a shop's data request)."""

    customer = fields.Nested(CustomerDocumentSchema)
    events = fields.List(fields.Nested(LedgerEntrySchema))
    vip_assignment = fields.Nested(VipAssignmentSchema, allow_none=True,
                                   metadata={"description": "their personal manager as stored; null: none"})


class WebhookResultSchema(Schema):
    """``POST /webhooks/<platform>``."""

    status = fields.String(metadata={"enum": ["accepted", "duplicate", "ping"]})


class FailureCountsSchema(Schema):
    """Failures of the last 24 hours, and the count above which ``/healthz`` says ``degraded``."""

    inbox_failed_24h = fields.Integer(metadata={"description": "inbox rows that failed in the last 24 h"})
    deliveries_failed_24h = fields.Integer(metadata={"description": "deliveries that failed in the last 24 h"})
    threshold = fields.Integer(metadata={"description": "degraded when either count is above this"})


class HealthSchema(Schema):
    """``GET /healthz``."""

    status = fields.String(metadata={"enum": ["ok", "degraded"]})
    database = fields.String()
    version = fields.String()
    failures = fields.Nested(FailureCountsSchema, metadata={"description": "absent when the database is down"})


class InboxRowSchema(Schema):
    """One received webhook as an operator sees it (``GET …/inbox``, ``ladder inbox list``): no
    body and no headers, which carry the customer's personal data."""

    pk = fields.Integer(metadata={"description": "the row's id (``ladder inbox retry PK``)"})
    platform = fields.String()
    shop = fields.String(attribute="shop_id", allow_none=True)
    topic = fields.String(allow_none=True)
    delivery_id = fields.String(allow_none=True, metadata={"description": "the platform's delivery id"})
    status = fields.String(metadata={"enum": ["received", "processed", "ignored", "failed"]})
    error = fields.String(allow_none=True, metadata={"description": "why it failed or was ignored"})
    received_at = Time()
    processed_at = Time()


class InboxPageSchema(Schema):
    """A page of inbox rows, newest first; ``next_before`` fetches the next page (null: no more)."""

    items = fields.List(fields.Nested(InboxRowSchema))
    limit = fields.Integer()
    next_before = fields.Integer(allow_none=True, metadata={"description": "pass as ?before= for the next page"})


class DeliveryRowSchema(Schema):
    """One outbox job as an operator sees it (``GET …/deliveries``, ``ladder deliveries list``)."""

    pk = fields.Integer(metadata={"description": "the row's id (``ladder deliveries retry PK``)"})
    shop = fields.String(attribute="shop_id")
    customer_id = fields.String()
    award_key = fields.String()
    action = fields.String(metadata={"enum": ["grant", "revoke", "notify"]})
    channel = fields.String(allow_none=True, metadata={"enum": ["email", "webhook", None]})
    status = fields.String(metadata={"enum": ["pending", "delivered", "failed", "needs_manual_action", "shadow",
                                              "cancelled"]})
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    external_id = fields.String(allow_none=True, metadata={"description": "the shop's id of what was created"})
    created_at = Time()
    updated_at = Time()
    next_attempt_at = Time()
    delivered_at = Time()


class DeliveryPageSchema(Schema):
    """A page of deliveries, newest first; ``next_before`` fetches the next page (null: no more)."""

    items = fields.List(fields.Nested(DeliveryRowSchema))
    limit = fields.Integer()
    next_before = fields.Integer(allow_none=True, metadata={"description": "pass as ?before= for the next page"})


class AwardRowSchema(Schema):
    """One award as staff see it in the worklist (``GET …/awards``, ``ladder awards list``)."""

    pk = fields.Integer(metadata={"description": "the award's row id (``POST …/awards/<pk>/done``)"})
    shop = fields.String(attribute="shop_id")
    customer_id = fields.String()
    key = fields.String()
    reward_id = fields.String()
    type = fields.String()
    stage = fields.String(allow_none=True)
    status = fields.String(metadata={"enum": [str(s) for s in AwardStatus]})
    reason = fields.String(allow_none=True)
    params = Json()
    value = DecimalString()
    rule_version = fields.String()
    granted_at = Time()
    updated_at = Time()
    done_by = fields.String(allow_none=True, metadata={"description": "who carried it out by hand"})
    done_at = Time(metadata={"description": "when it was marked done"})
    done_note = fields.String(allow_none=True, metadata={"description": "what was done, in their words"})


class AwardPageSchema(Schema):
    """A page of awards, newest first; ``next_before`` fetches the next page (null: no more)."""

    items = fields.List(fields.Nested(AwardRowSchema))
    limit = fields.Integer()
    next_before = fields.Integer(allow_none=True, metadata={"description": "pass as ?before= for the next page"})


class ErrorSchema(Schema):
    """Every error: ``{code, message, errors}`` with the HTTP status."""

    code = fields.String()
    message = fields.String()
    errors = fields.Dict()


AWARD = AwardSchema()
CUSTOMER = CustomerDocumentSchema()
POINTS_INPUT = PointsInputSchema()
EXPLANATION = ExplanationSchema()
SIMULATION = SimulationSchema()
CUSTOMER_DATA = CustomerDataSchema()
ACCEPT_RESULT = AcceptResultSchema()
INBOX_ROW = InboxRowSchema()
DELIVERY_ROW = DeliveryRowSchema()
AWARD_ROW = AwardRowSchema()


# ---------------------------------------------------------------- seeing customers (lists, stats)
class CustomerSummarySchema(Schema):
    """A customer in a listing (``GET …/customers``, ``ladder customers``): where they stand,
    without history, facts or rewards (those are in the customer document)."""

    customer_id = fields.String()
    email = fields.String(allow_none=True)
    stage = fields.String(allow_none=True, metadata={"description": "null: not on the ladder yet"})
    subgroup = fields.String(allow_none=True)
    lapsed = fields.Boolean()
    turn = fields.Integer()
    since = Time(metadata={"description": "when the customer entered the current stage"})
    rule_version = fields.String(allow_none=True)
    next_wake_at = Time(metadata={"description": "the next instant the fold looks at this customer again"})
    updated_at = Time(metadata={"description": "when the customer was last processed"})


class CustomerPageSchema(Schema):
    """A page of customers in ``customer_id`` order; ``next_cursor`` fetches the next (null: no more)."""

    items = fields.List(fields.Nested(CustomerSummarySchema))
    limit = fields.Integer()
    next_cursor = fields.String(allow_none=True, metadata={"description": "pass as ?cursor= for the next page"})


class StageCountSchema(Schema):
    stage = fields.String(allow_none=True, metadata={"description": "null: not on the ladder yet"})
    subgroup = fields.String(allow_none=True)
    lapsed = fields.Boolean()
    count = fields.Integer()


class CustomerCountsSchema(Schema):
    total = fields.Integer()
    on_ladder = fields.Integer(metadata={"description": "customers in a stage"})
    lapsed = fields.Integer()
    by_stage = fields.List(fields.Nested(StageCountSchema), metadata={
        "description": "one entry per stage × subgroup × lapsed present, in the programme's stage order"})


class RewardCountSchema(Schema):
    reward = fields.String()
    status = fields.String()
    count = fields.Integer()


class AwardCountsSchema(Schema):
    total = fields.Integer()
    by_status = fields.Dict(keys=fields.String(), values=fields.Integer(),
                            metadata={"description": "every award status, 0 included"})
    by_reward = fields.List(fields.Nested(RewardCountSchema),
                            metadata={"description": "one entry per reward id × status present"})


class ShopStatsSchema(Schema):
    """A shop's counts: ``GET /api/v1/shops/<shop>/stats``, ``ladder stats``."""

    shop = fields.String()
    as_of = Time()
    programme_version = fields.String(allow_none=True, metadata={"description": "the programme version active now"})
    customers = fields.Nested(CustomerCountsSchema)
    awards = fields.Nested(AwardCountsSchema)


CUSTOMER_SUMMARY = CustomerSummarySchema()
CUSTOMER_PAGE = CustomerPageSchema()
SHOP_STATS = ShopStatsSchema()


# ---------------------------------------------------------------- manual inputs and the audit log
class AdjustmentDataSchema(Schema):
    """Who made a manual adjustment and why, and its data by type (``stage`` and ``force`` of a
    ``stage_set``, ``reward`` of a ``reward_granted``, ``award_key`` of a ``reward_revoked``)."""

    author = fields.String()
    reason = fields.String()
    stage = fields.String()
    force = fields.Boolean()
    reward = fields.String()
    award_key = fields.String()


class AdjustmentEventSchema(Schema):
    """A manual adjustment as stored in the customer's ledger (``POST …/adjustments``, ``ladder
    adjust``): an event of the generic format with its deterministic id."""

    id = fields.String(metadata={"description": "the deterministic event id (admin-…)"})
    type = fields.String(metadata={"enum": ["stage_set", "turn_started", "reward_granted", "reward_revoked"]})
    customer_id = fields.String(metadata={"description": "the account the adjustment is for (a guest id resolves to it)"})
    occurred_at = Time(metadata={"description": "when it takes effect: when it was made"})
    adjustment = fields.Nested(AdjustmentDataSchema)


class ShopTurnSchema(Schema):
    """An admin turn of a shop (``POST …/turns``, ``ladder turn start``): every customer on the
    ladder starts a new turn at ``occurred_at``."""

    id = fields.String(attribute="event_id", metadata={"description": "the deterministic id (turn-…)"})
    occurred_at = Time()
    author = fields.String()
    reason = fields.String()
    customers_due = fields.Integer(metadata={"description": "customers made due for a wake-up by this request "
                                                            "(0 for a duplicate)"})


class ExclusionsSchema(Schema):
    """A shop's exclusions (``GET|PUT …/exclusions``, ``ladder exclusions``): customers with one of
    ``tags`` or an e-mail matching one of the shell patterns ``emails`` are never evaluated, from
    ``since`` on.  ``id``, ``since``, ``author`` and ``reason`` are null when there never were any."""

    tags = fields.List(fields.String())
    emails = fields.List(fields.String(), metadata={"description": "shell patterns, case-insensitive: *@myshop.example"})
    id = fields.String(attribute="event_id", allow_none=True, metadata={"description": "the list's id (exclusions-…)"})
    since = Time()
    author = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    unchanged = fields.Boolean(metadata={"description": "PUT: the list equals the one in force; nothing stored"})
    customers_due = fields.Integer(metadata={"description": "PUT: customers made due for a wake-up"})


class AuditEntrySchema(Schema):
    """One admin action (``GET …/audit``, ``ladder audit``): who did what, on what, when and why."""

    id = fields.Integer(attribute="pk")
    at = Time()
    shop = fields.String(attribute="shop_id", allow_none=True)
    author = fields.String()
    action = fields.String(metadata={"description": "turn_started, stage_set, customer_turn_started, reward_granted, "
                                                    "reward_revoked, exclusions_set, inbox_retried, delivery_retried, "
                                                    "programme_activated, shop_went_live, shop_went_shadow"})
    target = fields.String(allow_none=True, metadata={"description": "what it acted on: a customer, a row, a version"})
    reason = fields.String(allow_none=True)
    detail = fields.Dict(keys=fields.String(), values=Json())


class AuditPageSchema(Schema):
    """A page of audit entries, newest first; ``next_cursor`` fetches the next page (null: no more)."""

    items = fields.List(fields.Nested(AuditEntrySchema))
    limit = fields.Integer()
    next_cursor = fields.String(allow_none=True, metadata={"description": "pass as ?cursor= for the next page"})


ADJUSTMENT_EVENT = AdjustmentEventSchema()
SHOP_TURN = ShopTurnSchema()
EXCLUSIONS = ExclusionsSchema()
AUDIT_ENTRY = AuditEntrySchema()


# ---------------------------------------------------------------- programme versions
class ProgrammeActivationSchema(Schema):
    """One activation of a shop's timeline: ``version`` decides every wake-up from
    ``active_from`` (null: from the beginning) until the next activation."""

    id = fields.Integer(attribute="pk")
    version = fields.String(metadata={"description": "the programme version (hash of the normalised programme)"})
    active_from = Time(metadata={"description": "null: from the beginning (the shop's first version)"})
    stage_map = fields.Dict(keys=fields.String(), values=fields.String(),
                            metadata={"description": "dropped stage id → the stage its customers move to"})
    author = fields.String()
    reason = fields.String(allow_none=True)
    created_at = Time()
    status = fields.String(metadata={"enum": ["active", "scheduled", "past", "replaced"],
                                     "description": "active: decides now; scheduled: from a later instant; past: "
                                                    "decided before; replaced: a later activation for the same "
                                                    "instant, or of the version already in force, makes it moot"})


class StoredVersionSchema(Schema):
    """A stored programme version (its rule files are kept; ``ladder rules show VERSION``)."""

    version = fields.String()
    source = fields.String(metadata={"description": "where it was read from: a directory, a file, or api"})
    author = fields.String(allow_none=True)
    stored_at = Time(attribute="created_at")
    activated = fields.Boolean(metadata={"description": "part of this shop's timeline"})


class SemanticsSchema(Schema):
    """The fold's semantics (the release's meaning of facts and rewards) from an instant on."""

    version = fields.Integer()
    active_from = Time(metadata={"description": "null: from the beginning"})
    meaning = fields.String()


class ProgrammeTimelineSchema(Schema):
    """A shop's programme versions (``GET …/programme``, ``ladder rules list --json``)."""

    shop = fields.String()
    active = fields.String(allow_none=True, metadata={"description": "the version deciding now"})
    serving = fields.String(allow_none=True, metadata={
        "description": "the version the answering process decides with now: every web and queue process "
                       "follows `active` within seconds"})
    activations = fields.List(fields.Nested(ProgrammeActivationSchema), metadata={"description": "timeline order"})
    versions = fields.List(fields.Nested(StoredVersionSchema), metadata={"description": "oldest first"})
    semantics = fields.List(fields.Nested(SemanticsSchema))


class ProgrammeActivatedSchema(Schema):
    """What an activation did (``POST …/programme``, ``ladder rules activate``)."""

    shop = fields.String()
    version = fields.String()
    changed = fields.Boolean(metadata={"description": "false: that version is already in force, nothing changed"})
    activation = fields.Nested(ProgrammeActivationSchema, allow_none=True,
                               metadata={"description": "the new activation; null when nothing changed"})
    previous = fields.String(allow_none=True, metadata={"description": "the version it follows at that instant"})
    customers = fields.Integer(metadata={"description": "customers on the ladder, re-decided at the activation"})


PROGRAMME_TIMELINE = ProgrammeTimelineSchema()
PROGRAMME_ACTIVATED = ProgrammeActivatedSchema()
