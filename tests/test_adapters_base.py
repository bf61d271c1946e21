"""The adapter interface, its signature helpers, the registry and the generic adapter."""
from __future__ import annotations

import base64
import configparser
import hashlib
import hmac
import json
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import requests

from loyalty_ladder.adapters import registry
from loyalty_ladder.adapters.base import (
    Adapter,
    Delivery,
    DeliveryResult,
    Inbound,
    get_header,
    hmac_sha256_base64,
    normalise_domain,
    verify_hmac_base64,
)
from loyalty_ladder.adapters.generic import GenericAdapter
from loyalty_ladder.errors import BadRequest, ConfigError, DeliveryError, NotSupported, SignatureError
from loyalty_ladder.shop import ShopConfig

ROOT = Path(__file__).resolve().parent.parent
BODY = b'{"id": 820982911946154508, "email": "jon@example.com"}'


class TinyAdapter(Adapter):
    """The smallest complete adapter: signs like the platforms, delivers nothing."""

    platform = "tiny"
    capabilities = ("tags",)

    @classmethod
    def shop_hint(cls, headers):
        return get_header(headers, "X-Tiny-Shop")

    def verify(self, headers, body):
        if not verify_hmac_base64(get_header(headers, "X-Tiny-Hmac"), body, self.secrets):
            raise SignatureError("bad signature")

    def delivery_id(self, headers, body):
        return get_header(headers, "X-Tiny-Delivery")

    def topic(self, headers, body):
        return get_header(headers, "X-Tiny-Topic") or ""

    def parse(self, topic, headers, body):
        return Inbound(note=f"tiny ignores {topic}")

    def deliver(self, delivery):
        return DeliveryResult(external_id=f"tiny-{delivery.pk}")


@pytest.fixture(autouse=True)
def fresh_registry():
    registry.clear_cache()
    yield
    registry.clear_cache()


def shop(**kw) -> ShopConfig:
    return ShopConfig(**{"id": "tiny-1", "platform": "tiny", "domain": "tiny.example", "webhook_secret": "s3cret", **kw})


# ---------------------------------------------------------------- signatures
def test_hmac_is_the_base64_sha256_hmac_of_the_raw_body():
    expected = base64.b64encode(hmac.new(b"s3cret", BODY, hashlib.sha256).digest()).decode()
    assert hmac_sha256_base64("s3cret", BODY) == expected
    assert hmac_sha256_base64("s3cret", BODY + b" ") != expected


def test_verify_accepts_the_current_and_the_previous_secret_only():
    current, previous = hmac_sha256_base64("new", BODY), hmac_sha256_base64("old", BODY)
    assert verify_hmac_base64(current, BODY, ["new", "old"])
    assert verify_hmac_base64(previous, BODY, ["new", "old"])
    assert not verify_hmac_base64(previous, BODY, ["new", None])
    assert not verify_hmac_base64(hmac_sha256_base64("other", BODY), BODY, ["new", "old"])
    # the signature covers the exact bytes: re-serialised JSON is another body
    reencoded = json.dumps(json.loads(BODY), separators=(",", ":")).encode()
    assert reencoded != BODY and not verify_hmac_base64(current, reencoded, ["new"])


@pytest.mark.parametrize("header", [None, "", "not base64!", "@@@@", hmac_sha256_base64("new", BODY)[:-4]])
def test_verify_refuses_missing_malformed_or_truncated_signatures(header):
    assert not verify_hmac_base64(header, BODY, ["new"])


def test_verify_without_any_secret_refuses_everything():
    assert not verify_hmac_base64(hmac_sha256_base64("", BODY), BODY, [])
    assert not verify_hmac_base64(hmac_sha256_base64("", BODY), BODY, ["", None])


def test_verify_tolerates_surrounding_whitespace_in_the_header():
    assert verify_hmac_base64(" " + hmac_sha256_base64("k", BODY) + "\n", BODY, ["k"])


# ---------------------------------------------------------------- helpers
def test_get_header_is_case_insensitive_for_plain_dicts():
    headers = {"x-shopify-topic": "orders/paid", "Content-Type": "application/json"}
    assert get_header(headers, "X-Shopify-Topic") == "orders/paid"
    assert get_header(headers, "content-type") == "application/json"
    assert get_header(headers, "X-Missing") is None


@pytest.mark.parametrize("raw, normal", [
    ("Shop.Example.com", "shop.example.com"),
    ("https://Shop.example.com/", "shop.example.com"),
    ("http://example.com/wp/", "example.com/wp"),
    ("  demo.myshopify.com//", "demo.myshopify.com"),
    ("", None),
    (None, None),
])
def test_normalise_domain(raw, normal):
    assert normalise_domain(raw) == normal


# ---------------------------------------------------------------- the interface
def test_an_adapter_must_implement_every_abstract_method():
    class Half(Adapter):
        platform = "half"

        def verify(self, headers, body):
            return None

    with pytest.raises(TypeError, match="abstract"):
        Half(shop())  # type: ignore[abstract]


def test_defaults_of_the_interface():
    adapter = TinyAdapter(shop(previous_webhook_secret="old"))
    assert adapter.secrets == ["s3cret", "old"]
    assert TinyAdapter(shop(webhook_secret=None)).secrets == []
    assert adapter.is_ping({}, b"webhook_id=1") is False
    assert adapter.timeout == 10
    with pytest.raises(NotSupported, match="tiny"):
        list(adapter.sync(None, print))
    assert "s3cret" not in repr(adapter)


def test_the_session_is_the_given_one_or_made_once_on_first_use():
    given = requests.Session()
    assert TinyAdapter(shop(), session=given).session is given
    adapter = TinyAdapter(shop(), timeout=2.5)
    assert adapter._session is None  # inbound work never builds one
    assert adapter.session is adapter.session and isinstance(adapter.session, requests.Session)
    assert adapter.timeout == 2.5


def test_a_complete_adapter_verifies_and_delivers():
    adapter = TinyAdapter(shop())
    signed = {"x-tiny-hmac": hmac_sha256_base64("s3cret", BODY)}
    adapter.verify(signed, BODY)
    with pytest.raises(SignatureError):
        adapter.verify({"x-tiny-hmac": hmac_sha256_base64("wrong", BODY)}, BODY)
    delivery = Delivery(pk=7, action="grant", award={"key": "k"}, customer={"customer_id": "c"})
    assert delivery.external_id is None and delivery.attempt == 1
    assert adapter.deliver(delivery) == DeliveryResult(external_id="tiny-7")


def test_inbound_empty_means_nothing_to_do():
    assert Inbound().empty and Inbound(note="pending order").empty
    assert not Inbound(events=({"id": "e"},)).empty
    assert not Inbound(links=(("guest:1", "42"),)).empty
    assert not Inbound(redact_customer="42").empty
    assert not Inbound(redact_shop=True).empty
    assert not Inbound(data_request="42").empty


def test_not_supported_is_a_delivery_error_that_needs_a_person():
    error = NotSupported("gift cards are not carried by this platform")
    assert isinstance(error, DeliveryError)
    assert error.code == "needs_manual_action"


# ---------------------------------------------------------------- registry
def entry_point(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=registry.GROUP)


def use_entry_points(monkeypatch, *eps: EntryPoint) -> list[int]:
    calls: list[int] = []

    def fake():
        calls.append(1)
        return list(eps)

    monkeypatch.setattr(registry, "_entry_points", fake)
    return calls


def test_adapters_come_from_the_entry_point_group_and_are_cached(monkeypatch):
    calls = use_entry_points(monkeypatch,
                             entry_point("generic", "loyalty_ladder.adapters.generic:GenericAdapter"),
                             entry_point("tiny", f"{__name__}:TinyAdapter"))
    assert registry.load_adapters() == {"generic": GenericAdapter, "tiny": TinyAdapter}
    assert registry.load_adapters() == {"generic": GenericAdapter, "tiny": TinyAdapter}
    assert len(calls) == 1
    adapter = registry.adapter_for(shop())
    assert isinstance(adapter, TinyAdapter) and adapter.shop.id == "tiny-1"
    session = requests.Session()
    assert registry.adapter_for(shop(), session=session).session is session
    registry.clear_cache()
    registry.load_adapters()
    assert len(calls) == 2


def test_an_empty_group_falls_back_to_the_builtin_adapters(monkeypatch):
    use_entry_points(monkeypatch)
    adapters, errors = registry.load_adapters(), registry.load_errors()
    assert adapters["generic"] is GenericAdapter
    # every built-in is either loaded or reported (the platform modules may be absent in a checkout)
    assert set(adapters) | set(errors) == set(registry.BUILTIN)
    for platform, cls in adapters.items():
        assert cls.platform == platform


def test_the_builtin_fallback_matches_setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    declared = cfg.get("options.entry_points", registry.GROUP, fallback="")
    pairs = dict(line.replace(" ", "").split("=", 1) for line in declared.strip().splitlines() if line.strip())
    assert pairs == registry.BUILTIN


def test_an_unknown_platform_is_a_config_error(monkeypatch):
    use_entry_points(monkeypatch, entry_point("generic", "loyalty_ladder.adapters.generic:GenericAdapter"))
    with pytest.raises(ConfigError, match="no adapter for platform 'tiny'.*generic"):
        registry.adapter_for(shop())


@pytest.mark.parametrize("value, reason", [
    ("no_such_module_xyz:Adapter", "ModuleNotFoundError"),
    (f"{__name__}:shop", "not a subclass"),
    ("loyalty_ladder.adapters.generic:GenericAdapter", "platform is 'generic'"),
])
def test_a_broken_entry_point_disables_only_its_own_platform(monkeypatch, value, reason):
    use_entry_points(monkeypatch, entry_point("generic", "loyalty_ladder.adapters.generic:GenericAdapter"),
                     entry_point("tiny", value))
    assert registry.load_adapters() == {"generic": GenericAdapter}
    assert reason in registry.load_errors()["tiny"]
    with pytest.raises(ConfigError, match=reason):
        registry.adapter_for(shop())
    assert isinstance(registry.adapter_for(ShopConfig(id="default", platform="generic")), GenericAdapter)


def test_two_distributions_claiming_one_platform_is_an_error_unless_identical(monkeypatch):
    same = entry_point("tiny", f"{__name__}:TinyAdapter")
    use_entry_points(monkeypatch, same, same)
    assert registry.load_adapters() == {"tiny": TinyAdapter}
    registry.clear_cache()
    use_entry_points(monkeypatch, same, entry_point("tiny", "elsewhere:TinyAdapter"))
    assert registry.load_adapters() == {}
    with pytest.raises(ConfigError, match="two adapters register platform 'tiny'"):
        registry.adapter_class("tiny")


# ---------------------------------------------------------------- the generic adapter
GENERIC = ShopConfig(id="acme", platform="generic", domain="acme.example", webhook_secret="gen-secret")
EVENTS = [{"id": "e1", "type": "customer_created", "customer_id": "ana", "occurred_at": "2026-03-01T09:00:00Z"}]


def test_generic_adapter_identity_and_capabilities():
    assert GenericAdapter.platform == "generic" and GenericAdapter.capabilities == ()
    assert GenericAdapter.shop_hint({"x-ladder-shop": "acme.example"}) == "acme.example"
    assert GenericAdapter.shop_hint({}) is None


def test_generic_adapter_verifies_its_hmac_header():
    adapter = GenericAdapter(GENERIC)
    body = json.dumps(EVENTS).encode()
    adapter.verify({"X-Ladder-Hmac-Sha256": hmac_sha256_base64("gen-secret", body)}, body)
    with pytest.raises(SignatureError):
        adapter.verify({"X-Ladder-Hmac-Sha256": hmac_sha256_base64("gen-secret", body + b"\n")}, body)
    with pytest.raises(SignatureError):
        adapter.verify({}, body)


def test_a_generic_shop_without_a_secret_accepts_no_signed_webhook():
    adapter = GenericAdapter(ShopConfig(id="default", platform="generic"))
    with pytest.raises(SignatureError, match="events API"):
        adapter.verify({"X-Ladder-Hmac-Sha256": hmac_sha256_base64("", b"[]")}, b"[]")


def test_generic_delivery_id_and_topic():
    adapter = GenericAdapter(GENERIC)
    assert adapter.delivery_id({"X-Ladder-Delivery-Id": "d-1"}, b"[]") == "d-1"
    # without a header, the same body is the same delivery
    assert adapter.delivery_id({}, b"[1]") == adapter.delivery_id({}, b"[1]") != adapter.delivery_id({}, b"[2]")
    assert adapter.topic({}, b"") == "events"
    assert adapter.topic({"X-Ladder-Topic": "other"}, b"") == "other"


def test_generic_parse_takes_one_event_or_a_list():
    adapter = GenericAdapter(GENERIC)
    assert adapter.parse("events", {}, json.dumps(EVENTS).encode()) == Inbound(events=tuple(EVENTS))
    assert adapter.parse("events", {}, json.dumps(EVENTS[0]).encode()).events == tuple(EVENTS)


@pytest.mark.parametrize("body, topic, message", [
    (b"{not json", "events", "not valid JSON"),
    (b"\xff\xfe", "events", "not valid JSON"),
    (b"[]", "events", "non-empty"),
    (b'"text"', "events", "non-empty"),
    (json.dumps([{"id": "e1", "type": "nonsense"}]).encode(), "events", "invalid events"),
    (json.dumps(EVENTS).encode(), "orders/paid", "unknown generic topic"),
])
def test_generic_parse_refuses_what_the_events_api_refuses(body, topic, message):
    with pytest.raises(BadRequest, match=message):
        GenericAdapter(GENERIC).parse(topic, {}, body)


def test_generic_deliver_is_not_supported():
    delivery = Delivery(pk=1, action="grant", award={"key": "acme/ana/welcome/stage/potential/1"},
                        customer={"customer_id": "ana"})
    with pytest.raises(NotSupported, match="acme/ana/welcome"):
        GenericAdapter(GENERIC).deliver(delivery)


# ---------------------------------------------------------------- platform knowledge on the classes
def test_builtin_adapters_declare_what_the_core_used_to_special_case():
    from loyalty_ladder.adapters.shopify import ShopifyAdapter
    from loyalty_ladder.adapters.woocommerce import WooCommerceAdapter

    assert not GenericAdapter.serves_webhooks and not GenericAdapter.has_shop_api
    assert ShopifyAdapter.serves_webhooks and ShopifyAdapter.has_shop_api
    assert WooCommerceAdapter.serves_webhooks and WooCommerceAdapter.has_shop_api
    assert GenericAdapter.order_event_ids("1") == []
    assert ShopifyAdapter.order_event_ids("9") == ["shopify:order:9:placed", "shopify:order:9:paid",
                                                   "shopify:order:9:cancelled"]
    assert WooCommerceAdapter.order_event_ids("9") == ["woo:order:9:placed", "woo:order:9:paid",
                                                       "woo:order:9:cancelled"]
    assert ShopifyAdapter.secret_keys() == {"access_token"}
    assert WooCommerceAdapter.secret_keys() == {"consumer_key", "consumer_secret"}
    assert ShopifyAdapter.required_settings("live") == ("domain", "webhook_secret", "api_url", "access_token")
    assert ShopifyAdapter.required_settings("shadow") == ("domain", "webhook_secret")


def test_shops_are_matched_by_domain_and_generic_ones_without_a_domain_by_id():
    assert TinyAdapter.matches_shop(shop(domain="https://Tiny.example/"), "tiny.example")
    assert not TinyAdapter.matches_shop(shop(domain=None, id="tiny.example"), "tiny.example")
    assert not TinyAdapter.matches_shop(shop(), None)
    assert GenericAdapter.matches_shop(ShopConfig(id="default", platform="generic"), "default")
    assert GenericAdapter.matches_shop(GENERIC, "acme.example") and not GenericAdapter.matches_shop(GENERIC, "acme")
