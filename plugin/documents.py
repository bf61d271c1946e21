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
    status = fields.String(metadata={"enum": ["due", "delivered", "needs_manual_action", "failed", "withheld",
                                              "reversed", "historical"]})
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
    rule_version = fields.String(allow_none=True)
    pending_events = fields.Integer(metadata={"description": "accepted events not applied yet (set-aside ones excluded)"})
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


class StageExplanationSchema(Schema):
    stage = fields.String()
    holds = fields.Boolean()
    condition = fields.List(fields.Nested(ComparisonSchema))
    min_stay_days = fields.Integer(allow_none=True)
    lapse_after_days = fields.Integer(allow_none=True)


class SubgroupExplanationSchema(Schema):
    subgroup = fields.String()
    holds = fields.Boolean()
    condition = fields.List(fields.Nested(ComparisonSchema))


class AwardFateSchema(Schema):
    key = fields.String()
    status = fields.String()
    reason = fields.String(allow_none=True)


class RewardExplanationSchema(Schema):
    reward = fields.String()
    type = fields.String()
    trigger = fields.String()
    condition_holds = fields.Boolean()
    condition = fields.List(fields.Nested(ComparisonSchema))
    awards = fields.List(fields.Nested(AwardFateSchema))
    withheld_because = fields.String(allow_none=True)


class ExplanationSchema(Schema):
    """Why a customer is where they are: ``GET …/customers/<customer_id>/explain``."""

    stage = fields.String(allow_none=True)
    subgroup = fields.String(allow_none=True)
    lapsed = fields.Boolean()
    turn = fields.Integer()
    as_of = Time()
    rule_version = fields.String()
    why = fields.String()
    history = fields.List(fields.Nested(TransitionSchema))
    stages = fields.List(fields.Nested(StageExplanationSchema))
    subgroups = fields.List(fields.Nested(SubgroupExplanationSchema))
    next = fields.Nested(NextSchema, allow_none=True)
    lapse_at = Time()
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


class CustomerDataSchema(Schema):
    """Everything stored about a customer (``ladder customer-data``, a shop's data request)."""

    customer = fields.Nested(CustomerDocumentSchema)
    events = fields.List(fields.Nested(LedgerEntrySchema))


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


class ErrorSchema(Schema):
    """Every error: ``{code, message, errors}`` with the HTTP status."""

    code = fields.String()
    message = fields.String()
    errors = fields.Dict()


AWARD = AwardSchema()
CUSTOMER = CustomerDocumentSchema()
EXPLANATION = ExplanationSchema()
SIMULATION = SimulationSchema()
CUSTOMER_DATA = CustomerDataSchema()
ACCEPT_RESULT = AcceptResultSchema()
INBOX_ROW = InboxRowSchema()
DELIVERY_ROW = DeliveryRowSchema()
