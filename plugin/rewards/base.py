"""What a reward type is: the one place that knows everything about one kind of reward.

Before this package a reward type lived in six to eight modules that switched on its name (the
rule-file schemas, award resolution, the ladder, the outbox, notifications, every adapter).  A
:class:`RewardType` gathers those answers, and the core asks it instead:

* the rule file: :attr:`~RewardType.params_schema`, :meth:`~RewardType.rule_defaults`,
  :meth:`~RewardType.trigger_problems`;
* the award: :meth:`~RewardType.resolve` (params and value), :meth:`~RewardType.implied`,
  :meth:`~RewardType.cost`;
* delivery: :meth:`~RewardType.capability` (what the shop must be able to do; adapters dispatch on
  it, never on the type's name), :attr:`~RewardType.customer_field` (what the shop keeps on the
  customer beside the award);
* the announcement: :meth:`~RewardType.is_promotional`, :attr:`~RewardType.emailed`,
  :attr:`~RewardType.notice_only`, :attr:`~RewardType.templates`.

This module imports nothing of the core beyond the rule-file field modules, so the rule-file
package, the awards, the outbox and the adapters may all import it.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from marshmallow import Schema

from loyalty_ladder.programme import Reward, Trigger
from loyalty_ladder.rulewords import Choice, RuleSchema

__all__ = [
    "CENT", "NOTIFY_KINDS", "AwardContext", "Kind", "ParamsSchema", "RewardType", "decimal_or_none", "iso",
    "jsonable", "params_of",
]

CENT = Decimal("0.01")
#: what ``notify:`` may say in any reward's params
NOTIFY_KINDS = ("promotional", "transactional")


class Kind(StrEnum):
    """Grants and privileges end differently (docs/rules.md, "Reward types and their params")."""

    #: earned once (a code, points, a gift); only reversed if the history that earned it is undone
    GRANT = "grant"
    #: held while its conditions hold (a stage tag, VIP, payment terms, relationship pricing),
    #: then ended; ending is delivered to the shop and is not a reversal
    PRIVILEGE = "privilege"


class ParamsSchema(RuleSchema):
    """Base of every type's params schema: keys every reward type accepts.

    ``notify`` says whether telling the customer is marketing (needs their consent) or a
    transactional notice of what they earned.  Unknown keys raise, like every rule-file schema.
    """

    notify = Choice(NOTIFY_KINDS)


# ------------------------------------------------------------------ value helpers
def iso(value: datetime) -> str:
    """ISO 8601 with ``Z``, as award params carry times."""
    return value.isoformat().replace("+00:00", "Z")


def decimal_or_none(value: Any) -> Decimal | None:
    """A finite ``Decimal`` of a number or numeric text; None for anything else (and booleans)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = Decimal(str(value))
    except InvalidOperation:
        return None
    return out if out.is_finite() else None


def jsonable(value: Any) -> Any:
    """Award params as JSON keeps them: decimals as text, times as ISO 8601 with ``Z``."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def params_of(award: Any) -> dict[str, Any]:
    """The params of an award row, document or :class:`~loyalty_ladder.awards.ImpliedAward`
    (some database drivers hand JSON back as text)."""
    params = award.get("params") if isinstance(award, Mapping) else getattr(award, "params", None)
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except ValueError:
            return {}
    return dict(params) if isinstance(params, Mapping) else {}


def _field(award: Any, name: str) -> Any:
    return award.get(name) if isinstance(award, Mapping) else getattr(award, name, None)


@dataclass(frozen=True)
class AwardContext:
    """Everything a type may use to resolve one award of a reward."""

    reward: Reward  # the reward as the programme states it (params with rule-file defaults)
    key: str  # the award key: deterministic codes derive from it
    granted_at: datetime
    order_net: Decimal | None = None  # net total of the order an order-triggered award is for
    currency: str | None = None  # the programme's currency; None when the caller does not say
    #: the part of that order that earns points (no tax, gift cards or part paid with points);
    #: None when the fold's semantics predate it (points then use ``order_net``)
    points_base: Decimal | None = None
    #: what one point is worth under the version that decided the award (None: no value)
    point_value: Decimal | None = None


# ------------------------------------------------------------------ the type
class RewardType:
    """One reward type.  Subclass it, set the class attributes, override what differs.

    The defaults describe a plain grant whose params are handed over as written: no shop
    capability (so on a shop platform it needs manual action), e-mailed, announced as an *offer*
    (promotional: only to customers with marketing consent) unless the type says it announces
    something already earned (:attr:`promotional` false) or its params say ``notify:``, valued at
    its ``value``/``amount``/``cost``/``max_amount``.
    Instances are stateless; the registry holds one per type.
    """

    #: the ``type:`` of rule files; ``[a-z][a-z0-9_]*``
    name: ClassVar[str]
    kind: ClassVar[Kind]
    #: implied by the core itself, never named by a rule file (a points redemption)
    internal: ClassVar[bool] = False
    #: delivered by being recorded here (points credited to the ledger kept by loyalty-ladder):
    #: no shop API call and no staff, on every platform
    kept_here: ClassVar[bool] = False
    #: a notice-only type that, with no notification channel, is ``withheld`` rather than handed
    #: to staff (a reminder nobody can send is not work for anyone)
    withheld_without_channel: ClassVar[bool] = False
    #: a privilege paused while the customer lapsed and restored at their next turn (semantics 4):
    #: VIP service and payment terms, not a stage tag (segmentation follows the stage)
    suspended_while_lapsed: ClassVar[bool] = False
    #: validates (and fills the defaults of) the rule file's ``params``; subclass :class:`ParamsSchema`
    params_schema: ClassVar[type[Schema]] = ParamsSchema
    #: the shop capability (``discount_codes``, ``tags`` …) that delivers it; None: no shop API can
    #: (staff hand it over: ``needs_manual_action``).  :meth:`capability` may refine it per award
    requires: ClassVar[str | None] = None
    #: the key of the delivery's customer document (``Delivery.customer``) the shop keeps on the
    #: customer beside this award (a Shopify customer metafield, WooCommerce customer meta): each
    #: delivery of the award, grant or revoke, writes the document's current value there, or
    #: removes it when the value is null.  None: the award carries no customer field
    customer_field: ClassVar[str | None] = None
    #: whether the customer is told by e-mail (stage tags are segmentation, not a gift: no)
    emailed: ClassVar[bool] = True
    #: the notice *is* the reward (a greeting): with a notification channel it needs no grant job
    notice_only: ClassVar[bool] = False
    #: a directory laid out like ``plugin/templates`` (``email/<lang>/<name>.txt|.html``) with this
    #: type's own e-mail templates; without them (or for a missing language) the core's apply
    templates: ClassVar[Path | None] = None
    #: whether a notice of it is marketing by default (an offer: a discount, a greeting, a free
    #: service …) — it then needs the customer's consent and carries an unsubscribe link; false for
    #: a notice of what the customer already earned (points, a privilege granted or ended, a gift,
    #: debt forgiven).  True unless a type says otherwise, so an unknown type never mails without consent
    promotional: ClassVar[bool] = True
    #: the params keys whose value (first found) is the award's money value (:meth:`resolve`)
    value_keys: ClassVar[tuple[str, ...]] = ("value", "amount", "cost", "max_amount")

    def __repr__(self) -> str:
        return f"<reward type {self.name} ({self.kind})>"

    # ------------------------------------------------------------ the rule file
    def rule_defaults(self, params: dict[str, Any], reward_id: str) -> dict[str, Any]:
        """Defaults that depend on the reward itself (not expressible in the schema), filled in
        when the rule file is read, so they are part of the programme version.  ``params`` are
        the schema-loaded ones; return them (changed or not)."""
        return params

    def trigger_problems(self, params: Mapping[str, Any], trigger: Trigger) -> dict[str, str]:
        """Problems of params that only show beside the reward's trigger: ``{param key: message}``
        (reported at that key).  Empty when the combination is fine."""
        return {}

    # ------------------------------------------------------------ the award
    def resolve(self, ctx: AwardContext) -> tuple[dict[str, Any], Decimal | None]:
        """The concrete, JSON-friendly params of one award and its money value (None: unknown).

        ``expires_days`` becomes ``expires_at`` (``granted_at`` + days) for every type; the rest
        is :meth:`award_params`.
        """
        params = dict(ctx.reward.params)
        expires_days = params.pop("expires_days", None)
        out, value = self.award_params(params, ctx)
        if expires_days is not None:
            out["expires_at"] = iso(ctx.granted_at + timedelta(days=int(expires_days)))
        return jsonable(out), value

    def award_params(self, params: dict[str, Any], ctx: AwardContext) -> tuple[dict[str, Any], Decimal | None]:
        """The award's params from the rule's (``expires_days`` already taken out) and its value.
        Default: the params as written, valued at the first of :attr:`value_keys` given."""
        for name in self.value_keys:
            found = decimal_or_none(params.get(name))
            if found is not None:
                return dict(params), found.quantize(CENT)
        return dict(params), None

    def implied(self, params: Mapping[str, Any]) -> bool:
        """Whether an award that resolved to ``params`` is implied at all (points computed from
        an order refunded in full come to nothing: such an award is reversed, not left due)."""
        return True

    def cost(self, award: Any) -> Decimal | None:
        """The money the shop gives away by ``award`` (a row, document or implied award), as far
        as it is known today: the award's face value where it has one, else None (a percentage
        discount is worth nothing until used; a tag or payment terms cost nothing directly).

        A first approximation: the economics work will refine it (redemption rates, margins,
        the cost of a service), per type, here.
        """
        return decimal_or_none(_field(award, "value"))

    # ------------------------------------------------------------ delivery
    def capability(self, params: Mapping[str, Any]) -> str | None:
        """The shop capability that delivers an award with these params, or None when no shop
        API can.  The outbox puts an award whose shop lacks it to ``needs_manual_action`` at once;
        adapters look their handler up by it."""
        return self.requires

    # ------------------------------------------------------------ the announcement
    def is_promotional(self, award: Mapping[str, Any], first_stage: str | None = None) -> bool:
        """Whether a notice of ``award`` is marketing (needs consent): what its params say
        (``notify: promotional|transactional``), else :meth:`promotional_by_default`."""
        said = str(params_of(award).get("notify", "")).strip().lower()
        if said in NOTIFY_KINDS:
            return said == "promotional"
        return self.promotional_by_default(award, first_stage)

    def promotional_by_default(self, award: Mapping[str, Any], first_stage: str | None) -> bool:
        """Whether a notice is marketing when the params do not say; ``first_stage`` is the
        customer's first stage on the ladder (for a type that tells offers by where they are given).
        Default: :attr:`promotional`, whatever the stage or trigger."""
        return self.promotional


class UnregisteredType(RewardType):
    """Stands in for a type no longer registered (an award outlives a plugin's uninstall): a plain
    grant with no capability, so it is recorded, announced and handed to staff as before."""

    kind = Kind.GRANT

    def __init__(self, name: str):
        self.name = name  # type: ignore[misc]  # per instance: the name it stands in for
