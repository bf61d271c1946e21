"""A reward type the core has never heard of, added the way a plugin would: a ``RewardType``
defined and registered in this module only.  It is accepted in a rule file (and its wrong params
refused where written), resolved into awards by the real fold, planned through the outbox and
delivered to a shop adapter by its capability (``tags``), or put to ``needs_manual_action`` when
it has none; its own e-mail template is used.  Nothing outside this module knows its name."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import responses
import sqlalchemy as sa

from loyalty_ladder import rewards, store
from loyalty_ladder.errors import RuleFileError
from loyalty_ladder.notify import EmailRenderer, Notice
from loyalty_ladder.outbox import award_document
from loyalty_ladder.rewards import AwardContext, Kind, ParamsSchema, RewardType, registry
from loyalty_ladder.rulefile import load_programme
from loyalty_ladder.rulewords import Choice, Number, Text
from loyalty_ladder.service import LadderService
from loyalty_ladder.shop import ShopConfig

NOW = datetime.now(UTC).replace(microsecond=0)
GRAPHQL = "https://s.myshopify.com/admin/api/2025-07/graphql.json"
CUSTOMER_GID = "gid://shopify/Customer/7001"


class SampleBoxParams(ParamsSchema):
    size = Choice(("small", "large"), required=True)
    tag = Text(no_commas=True, load_default="sample-box")
    price = Number(low=Decimal(0), load_default=Decimal("4.50"))


class SampleBox(RewardType):
    """A grant the shop carries as a customer tag (its warehouse ships boxes to tagged customers)."""

    name = "sample_box"
    kind = Kind.GRANT
    params_schema = SampleBoxParams
    requires = "tags"

    def award_params(self, params: dict[str, Any], ctx: AwardContext) -> tuple[dict[str, Any], Decimal | None]:
        large = params["size"] == "large"
        price = Decimal(str(params.pop("price")))
        return {**params, "samples": 6 if large else 3}, (price * (2 if large else 1)).quantize(Decimal("0.01"))


class ThankYouCall(RewardType):
    """A privilege no shop API can carry: staff make the call."""

    name = "thank_you_call"
    kind = Kind.PRIVILEGE
    params_schema = ParamsSchema


@pytest.fixture
def sample_types(tmp_path: Path) -> Iterator[RewardType]:
    templates = tmp_path / "sample_templates"
    (templates / "email" / "en").mkdir(parents=True)
    (templates / "email" / "en" / "sample_box.txt").write_text(
        '{% extends "email/base.txt" %}\n{% block subject %}A {{ params.size }} box of {{ params.samples }}'
        '{% endblock %}\n{% block body %}Your box is on its way.{% endblock %}\n')
    (templates / "email" / "en" / "sample_box.html").write_text(
        '{% extends "email/base.html" %}\n{% block content %}<p>{{ params.samples }} samples</p>{% endblock %}\n')
    box = SampleBox()
    box.templates = templates  # type: ignore[misc]  # per instance: this test's directory
    registered = registry.register(box)
    registry.register(ThankYouCall)
    yield registered
    registry.unregister("sample_box")
    registry.unregister("thank_you_call")


def programme_dir(tmp_path: Path, box_params: str = "{size: large}") -> Path:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "ladder.yaml").write_text(f"""\
stages:
  - id: newcomer
  - id: regular
    when: {{fact: orders_count, gte: 2}}
rewards:
  - id: welcome-box
    type: sample_box
    on: {{stage: newcomer}}
    params: {box_params}
  - id: welcome-call
    type: thank_you_call
    on: {{stage: newcomer}}
""")
    return rules


# ------------------------------------------------------------------ the registry
def test_the_type_is_registered_and_leaves_the_builtins_alone(sample_types):
    assert registry.names()[:11] == ("discount", "tag", "points", "gift", "free_service", "vip_service",
                                     "deferred_payment", "debt_forgiveness", "greeting", "points_redemption",
                                     "points_reminder")
    assert registry.names()[11:] == ("sample_box", "thank_you_call")
    # the core's own type is not one a rule file may name
    assert "points_redemption" not in registry.rule_names() and "sample_box" in registry.rule_names()
    assert registry.get("sample_box") is sample_types and registry.get("sample_box").kind == "grant"
    assert registry.capability_of({"type": "sample_box", "params": {"size": "small"}}) == "tags"
    assert registry.capability_of({"type": "thank_you_call", "params": {}}) is None
    with pytest.raises(ValueError, match="already registered"):
        registry.register(SampleBox)


def test_builtin_types_declare_their_delivery_and_announcement():
    assert {t.name: t.capability({"tag": "x"}) for t in registry.types()} == {
        "discount": "discount_codes", "tag": "tags", "points": None, "gift": None, "free_service": None,
        "vip_service": "tags", "deferred_payment": "payment_terms", "debt_forgiveness": None, "greeting": None,
        "points_redemption": "store_credit", "points_reminder": None}
    assert registry.get("vip_service").capability({"level": "vip"}) == "customer_fields"
    assert [t.name for t in registry.types() if t.customer_field] == ["vip_service"]
    assert {t.name for t in registry.types() if t.kind == Kind.PRIVILEGE} == {"tag", "vip_service",
                                                                               "deferred_payment"}
    assert [t.name for t in registry.types() if not t.emailed] == ["tag"]
    assert [t.name for t in registry.types() if t.notice_only] == ["greeting", "points_reminder"]
    assert registry.get("debt_forgiveness").cost({"value": "100.00"}) == Decimal("100.00")
    assert registry.get("discount").cost({"value": None, "params": {"percent": "10"}}) is None


# ------------------------------------------------------------------ the rule file
def test_the_rule_file_accepts_it_with_its_defaults(sample_types, tmp_path):
    programme = load_programme(programme_dir(tmp_path))
    box = programme.reward("welcome-box")
    assert box.type == "sample_box" and dict(box.params) == {"size": "large", "tag": "sample-box", "price": "4.50"}
    assert programme.reward("welcome-call").params == {}


def test_wrong_params_are_refused_where_written(sample_types, tmp_path):
    with pytest.raises(RuleFileError) as info:
        load_programme(programme_dir(tmp_path, "{size: medium, tag: 'a,b', colour: red}"))
    where = tmp_path / "rules" / "ladder.yaml"
    assert [str(p) for p in info.value.problems] == [
        f"{where}:9:20: 'size' must be one of small, large, got 'medium'",
        f"{where}:9:33: 'tag' must not contain commas (shops separate tags with them), got 'a,b'",
        f"{where}:9:40: unknown key 'colour'; allowed: notify, size, tag, price",
    ]


def test_unregistered_it_is_an_unknown_type_again(tmp_path):
    with pytest.raises(RuleFileError) as info:
        load_programme(programme_dir(tmp_path))
    messages = [p.message for p in info.value.problems]
    assert messages[0] == "unknown reward type 'sample_box'; one of discount, tag, points, gift, free_service, " \
                          "vip_service, deferred_payment, debt_forgiveness, greeting"


# ------------------------------------------------------------------ fold, outbox, adapter
@pytest.fixture
def service(sample_types, ladder_settings, tmp_path):
    settings = dataclasses.replace(ladder_settings, rules=programme_dir(tmp_path))
    shops = {
        "s": ShopConfig(id="s", platform="shopify", domain="s.myshopify.com", webhook_secret="x",
                        api_url="https://s.myshopify.com", api_version="2025-07", access_token="shpat_x",
                        capabilities=("discount_codes", "tags")),
        "bare": ShopConfig(id="bare", platform="shopify", domain="bare.myshopify.com", webhook_secret="x",
                           api_url="https://bare.myshopify.com", api_version="2025-07", access_token="shpat_y",
                           capabilities=("discount_codes",)),
    }
    made = LadderService(settings, shops=shops)
    yield made
    made.db.dispose()


def customer_created(service: LadderService, shop: str) -> None:
    service.accept_events(shop, {"id": "e1", "type": "customer_created", "customer_id": "7001",
                                 "occurred_at": (NOW - timedelta(days=1)).isoformat(),
                                 "customer": {"email": "ana@example.com", "accepts_marketing": False}})


def rows(service: LadderService, shop: str) -> dict[str, dict[str, Any]]:
    """Each reward's award with its grant delivery."""
    d, a = store.deliveries, store.awards
    with service.db.connect() as conn:
        found = conn.execute(sa.select(a, d.c.pk.label("grant_pk"), d.c.status.label("grant_status"),
                                       d.c.last_error, d.c.external_id)
                             .join(d, sa.and_(d.c.award_key == a.c.key, d.c.action == "grant"))
                             .where(a.c.shop_id == shop)).mappings()
        return {r["reward_id"]: dict(r) for r in found}


def tags_add(request) -> tuple[bool, str]:
    body = json.loads(request.body)
    ok = "tagsAdd" in body["query"] and body["variables"] == {"id": CUSTOMER_GID, "tags": ["sample-box"]}
    return ok, "" if ok else f"not the sample box tag: {body}"


@responses.activate(assert_all_requests_are_fired=True)
def test_fold_plan_and_delivery_by_capability(service):
    customer_created(service, "s")
    awards = rows(service, "s")
    box, call = awards["welcome-box"], awards["welcome-call"]
    assert box["type"] == "sample_box" and box["params"] == {"size": "large", "tag": "sample-box", "samples": 6}
    assert Decimal(str(box["value"])) == Decimal("9.00")
    assert (box["status"], box["grant_status"]) == ("due", "pending")

    responses.post(GRAPHQL, match=[tags_add], json={"data": {"tagsAdd": {"node": {"id": CUSTOMER_GID},
                                                                         "userErrors": []}}})
    service.run_delivery(box["grant_pk"])
    service.run_delivery(call["grant_pk"])
    awards = rows(service, "s")
    assert (awards["welcome-box"]["status"], awards["welcome-box"]["external_id"]) == ("delivered", CUSTOMER_GID)
    # no capability: the adapter has nothing to carry it with, so staff hand it over
    assert awards["welcome-call"]["status"] == awards["welcome-call"]["grant_status"] == "needs_manual_action"
    assert "thank_you_call reward needs manual action in Shopify" in awards["welcome-call"]["last_error"]


def test_a_shop_without_the_capability_needs_manual_action_at_once(service):
    customer_created(service, "bare")
    box = rows(service, "bare")["welcome-box"]
    assert box["status"] == box["grant_status"] == "needs_manual_action"
    assert box["last_error"].startswith("sample_box needs the shop capability 'tags', which shop 'bare'")


def test_its_own_email_template(service):
    customer_created(service, "s")
    award = rows(service, "s")["welcome-box"]
    notice = Notice(channel="email", event="award.granted", event_id="ev-1", shop_id="s",
                    award=award_document(award), customer={"customer_id": "7001", "locale": "en"})
    rendered = EmailRenderer().render(notice, service.shops["s"])
    assert rendered.subject == "A large box of 6" and "Your box is on its way." in rendered.text
    assert "6 samples" in rendered.html
    # a language it brings no template for: that language's generic one, as for the built-ins
    german = EmailRenderer().render(dataclasses.replace(notice, customer={"locale": "de"}), service.shops["s"])
    assert german.subject == "Eine Prämie für Sie: Welcome box" and german.locale == "de"
    # a type without templates: the generic one
    call = award_document(rows(service, "s")["welcome-call"])
    generic = EmailRenderer().render(dataclasses.replace(notice, award=call), service.shops["s"])
    assert generic.subject == "A reward for you: Welcome call"


def test_resolution_through_the_registry_is_what_awards_use(sample_types, tmp_path):
    from loyalty_ladder.awards import imply

    reward = load_programme(programme_dir(tmp_path, "{size: small, price: '2.00'}")).reward("welcome-box")
    award = imply(reward, shop="s", customer_id="c", scope="stage", ref=("newcomer", 1), stage="newcomer", turn=1,
                  granted_at=NOW)
    assert award.params == {"size": "small", "tag": "sample-box", "samples": 3} and award.value == Decimal("2.00")
    assert rewards.get("sample_box").cost(award) == Decimal("2.00")
