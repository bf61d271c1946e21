"""A platform the core has never heard of, added the way a third party would: an adapter class
registered in the ``loyalty_ladder.adapters`` entry-point group, declaring its own credential
keys.  Its shop validates from a shops file (typos and missing keys are clear errors, secrets come
from the environment), receives a signed webhook through the real app, and gets its award
delivered through the outbox to its own HTTP API (played by ``responses``)."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests
import responses
from marshmallow import fields
from responses import matchers

from loyalty_ladder.adapters import registry
from loyalty_ladder.adapters.base import (
    Adapter,
    AdapterSettings,
    Delivery,
    DeliveryResult,
    Inbound,
    get_header,
    hmac_sha256_base64,
    verify_hmac_base64,
)
from loyalty_ladder.adapters.http import send
from loyalty_ladder.errors import BadRequest, NotSupported, SignatureError
from loyalty_ladder.shops import load_shops

from .conftest import ADMIN_TOKEN, install_adapters

API = "https://api.bigshop.example"
PROMOTIONS = f"{API}/stores/s7x9/v3/promotions"
SECRET = "bigshop-webhook-secret"
API_KEY = "bk_live_123"


class BigShopSettings(AdapterSettings):
    api_key = fields.String(metadata={"secret": True, "required": "live"})
    store_hash = fields.String(metadata={"required": True})
    api_region = fields.String(load_default="eu")


class BigShopAdapter(Adapter):
    """A platform with its own keys: webhooks signed like Shopify's, coupons over a JSON API."""

    platform: ClassVar[str] = "bigshop"
    capabilities: ClassVar[tuple[str, ...]] = ("discount_codes",)
    settings_schema: ClassVar[type[AdapterSettings]] = BigShopSettings
    required_keys: ClassVar[tuple[str, ...]] = ("domain", "webhook_secret")
    live_required_keys: ClassVar[tuple[str, ...]] = ("api_url",)
    event_prefix: ClassVar[str] = "bigshop"

    @classmethod
    def shop_hint(cls, headers):
        return get_header(headers, "X-BigShop-Store")

    def verify(self, headers, body):
        if not verify_hmac_base64(get_header(headers, "X-BigShop-Hmac-Sha256"), body, self.secrets):
            raise SignatureError("bad X-BigShop-Hmac-Sha256")

    def delivery_id(self, headers, body):
        return get_header(headers, "X-BigShop-Delivery")

    def topic(self, headers, body):
        return get_header(headers, "X-BigShop-Topic") or ""

    def parse(self, topic, headers, body):
        if topic != "customer/created":
            return Inbound(note=f"bigshop topic {topic} not used")
        try:
            c = json.loads(body)
        except ValueError:
            raise BadRequest("not JSON") from None
        return Inbound(events=({"id": f"bigshop:customer:{c['id']}:created", "type": "customer_created",
                                "customer_id": str(c["id"]), "occurred_at": c["created_at"],
                                "customer": {"email": c["email"], "accepts_marketing": c["accepts_marketing"]}},))

    def deliver(self, delivery: Delivery) -> DeliveryResult:
        params = delivery.award.get("params") or {}
        if delivery.award.get("type") != "discount" or delivery.action != "grant":
            raise NotSupported("BigShop carries discount grants only")
        url = f"{self.shop.api_url}/stores/{self.shop.settings['store_hash']}/v3/promotions"
        response = send(self.session, "POST", url, who="BigShop", timeout=self.timeout,
                        json={"code": params["code"], "percent": str(params["percent"]),
                              "customer_id": delivery.customer.get("customer_id"),
                              "region": self.shop.option("api_region")},
                        headers={"X-Auth-Token": self.shop.option("api_key")})
        return DeliveryResult(external_id=str(response.json()["data"]["id"]), detail="promotion created")


@pytest.fixture(autouse=True)
def bigshop_registered(monkeypatch):
    """The installed adapters plus BigShop, as if its distribution declared the entry point."""
    yield from install_adapters(monkeypatch, ("bigshop", f"{__name__}:BigShopAdapter"))


def shops_file(tmp_path: Path, **changes: Any) -> Path:
    entry: dict[str, Any] = {"id": "big", "platform": "bigshop", "domain": "big.example", "webhook_secret": SECRET,
                             "api_url": API, "api_key": "env:BIGSHOP_API_KEY", "store_hash": "s7x9"}
    entry.update(changes)
    path = tmp_path / "shops.yaml"
    path.write_text(json.dumps([{k: v for k, v in entry.items() if v is not None}]))  # JSON is YAML
    return path


def test_the_shop_validates_with_the_adapters_own_keys(tmp_path):
    shop = load_shops(shops_file(tmp_path), env={"BIGSHOP_API_KEY": API_KEY})["big"]
    assert shop.settings == {"api_key": API_KEY, "store_hash": "s7x9", "api_region": "eu"}
    assert shop.option("api_key") == API_KEY and shop.capabilities == ("discount_codes",)
    assert API_KEY not in repr(shop) and "s7x9" in repr(shop)
    assert registry.adapter_for(shop).__class__ is BigShopAdapter


@pytest.mark.parametrize(("changes", "env", "key", "needle"), [
    ({"api_key": None, "api_kee": "x"}, {}, "api_kee", "unknown key (did you mean 'api_key'?)"),
    ({"store_hash": None}, {"BIGSHOP_API_KEY": API_KEY}, "store_hash", "required for platform bigshop"),
    ({"api_key": None}, {}, "api_key", "required for platform bigshop (unless mode: shadow)"),
    ({}, {}, "api_key", "environment variable BIGSHOP_API_KEY is not set"),
    ({"access_token": "t"}, {"BIGSHOP_API_KEY": API_KEY}, "access_token", "unknown key"),
])
def test_a_bad_entry_is_a_clear_error(tmp_path, changes, env, key, needle):
    from loyalty_ladder.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_shops(shops_file(tmp_path, **changes), env=env)
    assert key in info.value.errors and needle in str(info.value)
    assert "shop #1 (id 'big')" in str(info.value)


def test_shadow_mode_needs_no_api_key_but_still_the_store(tmp_path):
    shop = load_shops(shops_file(tmp_path, api_key=None, api_url=None, mode="shadow"), env={})["big"]
    assert shop.shadow and shop.option("api_key") is None and shop.settings["store_hash"] == "s7x9"


def test_the_adapter_declares_its_platform_knowledge():
    assert BigShopAdapter.order_event_ids("42") == [
        "bigshop:order:42:placed", "bigshop:order:42:paid", "bigshop:order:42:cancelled"]
    assert BigShopAdapter.secret_keys() == {"api_key"}
    assert BigShopAdapter.required_settings("shadow") == ("domain", "webhook_secret", "store_hash")
    assert BigShopAdapter.serves_webhooks and BigShopAdapter.has_shop_api


@pytest.fixture
def client(ladder_settings, tmp_path):
    from loyalty_ladder.app import create_app
    from loyalty_ladder.service import LadderService

    shops = load_shops(shops_file(tmp_path), env={"BIGSHOP_API_KEY": API_KEY})
    service = LadderService(ladder_settings, shops=shops)
    app = create_app(ladder_settings, immediate_queue=True, service=service)
    app.testing = True
    yield app.test_client()
    service.db.dispose()


def promotion_for_ana(request: requests.PreparedRequest) -> tuple[bool, str]:
    body = json.loads(request.body or b"{}")
    ok = (body.get("customer_id") == "7001" and body.get("percent") == "10" and body.get("region") == "eu"
          and str(body.get("code", "")).startswith("WELCOME"))
    return ok, "" if ok else f"not ana's welcome promotion: {body}"


def post_webhook(client, body: bytes, signature: str):
    return client.post("/webhooks/bigshop", data=body, headers={
        "Content-Type": "application/json", "X-BigShop-Store": "big.example", "X-BigShop-Topic": "customer/created",
        "X-BigShop-Delivery": "bd-1", "X-BigShop-Hmac-Sha256": signature})


@responses.activate(assert_all_requests_are_fired=True)
def test_a_signed_webhook_in_and_the_award_out_to_the_platforms_api(client):
    responses.post(PROMOTIONS, status=201, json={"data": {"id": 555}},
                   match=[matchers.header_matcher({"X-Auth-Token": API_KEY}), promotion_for_ana])
    # created yesterday: a welcome code of long ago would have expired unsent
    created = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    body = json.dumps({"id": 7001, "email": "ana@example.com", "created_at": created,
                       "accepts_marketing": True}).encode()

    assert post_webhook(client, body, hmac_sha256_base64("wrong", body)).status_code == 401
    response = post_webhook(client, body, hmac_sha256_base64(SECRET, body))
    assert response.status_code == 200 and response.get_json() == {"status": "accepted"}

    doc = client.get("/api/v1/shops/big/customers/7001", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).get_json()
    welcome = next(r for r in doc["rewards"] if r["reward"] == "welcome")
    assert welcome["status"] == "delivered"
    [call] = [c for c in responses.calls if c.request.url == PROMOTIONS]
    assert json.loads(call.request.body)["code"] == welcome["params"]["code"]
