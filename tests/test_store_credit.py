"""Points redemptions delivered to the shops (capability ``store_credit``).

Shopify: ``storeCreditAccountCredit`` on the customer, a one-time code where the shop has no store
credit, never a second credit on a retry.  WooCommerce: a one-time ``fixed_cart`` coupon, adopted on
a retry.  The adapters' ``deliver()`` is driven with award documents as the outbox hands them over,
against the fake shop (a real HTTP server that checks what it receives) or ``responses``.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import requests
import responses

from loyalty_ladder.adapters.base import Delivery
from loyalty_ladder.adapters.shopify import ShopifyAdapter
from loyalty_ladder.adapters.shopify.graphql import STORE_CREDIT_CREDIT
from loyalty_ladder.adapters.woocommerce import WooCommerceAdapter
from loyalty_ladder.errors import NotSupported, RateLimited, Rejected
from loyalty_ladder.identity import guest_id
from loyalty_ladder.rewards import registry as reward_types
from loyalty_ladder.shop import ShopConfig

from .fakeshop import FakeShop, graphql_calls

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
CUSTOMER = "207119551"
GID = f"gid://shopify/Customer/{CUSTOMER}"
CODE = "POINTS-1A2B3C4D"
KEY = f"shop/{CUSTOMER}/points/redemption/r1"
CREDIT = {"id": GID, "creditInput": {"creditAmount": {"amount": "2.50", "currencyCode": "EUR"}}}


def award(value: str = "2.50", currency: str = "EUR", customer_id: str = CUSTOMER, **params: Any) -> dict[str, Any]:
    return {"key": KEY, "reward": "points", "type": "points_redemption", "customer_id": customer_id,
            "params": {"points": 250, "value": value, "currency": currency, "redemption": "r1", "code": CODE,
                       **params},
            "value": value, "stage": None, "turn": 1}


def delivery(action: str = "grant", attempt: int = 1, email: str | None = "ana@example.com",
             **kwargs: Any) -> Delivery:
    doc = award(**kwargs)
    return Delivery(pk=7, action=action, award=doc, customer={"customer_id": doc["customer_id"], "email": email},
                    attempt=attempt)


def test_a_redemption_needs_the_store_credit_capability() -> None:
    assert reward_types.capability_of(award()) == "store_credit"
    assert "store_credit" in ShopifyAdapter.capabilities
    assert "store_credit" in WooCommerceAdapter.capabilities


# ================================================================ Shopify
@pytest.fixture
def fake():
    with FakeShop() as shop:
        yield shop


def shopify_adapter(url: str, token: str = "shpat_test", currency: str = "EUR") -> ShopifyAdapter:
    shop = ShopConfig(id="demo", platform="shopify", domain="demo.myshopify.com", webhook_secret="s",
                      api_url=url, api_version="2025-07", access_token=token, currency=currency)
    adapter = ShopifyAdapter(shop, timeout=5)
    adapter.now = lambda: NOW  # type: ignore[method-assign]
    return adapter


@pytest.fixture
def shopify(fake: FakeShop) -> ShopifyAdapter:
    return shopify_adapter(fake.url, fake.access_token)


CODE_VARIABLES = {"basicCodeDiscount": {
    "title": f"points {CODE}", "code": CODE, "startsAt": "2026-03-02T10:00:00Z", "usageLimit": 1,
    "appliesOncePerCustomer": True, "customerSelection": {"customers": {"add": [GID]}},
    "customerGets": {"value": {"discountAmount": {"amount": "2.50", "appliesOnEachItem": False}},
                     "items": {"all": True}}}}


def test_shopify_credits_the_customers_store_credit_once(fake: FakeShop, shopify: ShopifyAdapter) -> None:
    result = shopify.deliver(delivery())
    assert fake.names() == ["storeCreditAccountCredit"]
    assert graphql_calls(fake, "storeCreditAccountCredit") == [CREDIT]
    assert fake.store_credit_balance(CUSTOMER, "EUR") == Decimal("2.50")
    assert result.external_id.startswith("gid://shopify/StoreCreditAccountCreditTransaction/")
    assert result.detail == "store credit 2.50 EUR (250 points, redemption r1); balance 2.50 EUR"


def test_shopify_credits_add_up_per_redemption(fake: FakeShop, shopify: ShopifyAdapter) -> None:
    fake.store_credit[(GID, "EUR")] = Decimal("10.00")
    first = shopify.deliver(delivery())
    second = shopify.deliver(delivery(value="1.00"))
    assert fake.store_credit_balance(CUSTOMER, "EUR") == Decimal("13.50")
    assert first.external_id != second.external_id
    assert second.detail.endswith("balance 13.50 EUR")


@responses.activate(assert_all_requests_are_fired=True)
def test_shopify_sends_exactly_the_documented_mutation() -> None:
    api = "https://demo.myshopify.com"
    responses.post(f"{api}/admin/api/2025-07/graphql.json",
                   match=[responses.matchers.json_params_matcher({"query": STORE_CREDIT_CREDIT, "variables": CREDIT}),
                          responses.matchers.header_matcher({"X-Shopify-Access-Token": "shpat_real"})],
                   json={"data": {"storeCreditAccountCredit": {"storeCreditAccountTransaction": {
                       "id": "gid://shopify/StoreCreditAccountCreditTransaction/5", "amount": None,
                       "balanceAfterTransaction": None, "account": {"id": "gid://shopify/StoreCreditAccount/9"}},
                       "userErrors": []}}})
    result = shopify_adapter(api, "shpat_real").deliver(delivery())
    assert result.external_id == "gid://shopify/StoreCreditAccountCreditTransaction/5"
    assert result.detail == "store credit 2.50 EUR (250 points, redemption r1)"
    assert "storeCreditAccountCredit(id: $id, creditInput: $creditInput)" in STORE_CREDIT_CREDIT


def test_without_store_credit_the_value_is_a_one_time_code(fake: FakeShop, shopify: ShopifyAdapter) -> None:
    fake.store_credit_enabled = False
    result = shopify.deliver(delivery())
    assert fake.names() == ["storeCreditAccountCredit", "discountCodeBasicCreate"]
    assert graphql_calls(fake, "discountCodeBasicCreate") == [CODE_VARIABLES]
    assert fake.store_credit_balance(CUSTOMER, "EUR") == 0
    assert result.external_id.startswith("gid://shopify/DiscountCodeNode/")
    assert CODE in result.detail and "no store credit" in result.detail
    assert "not enabled" in result.detail  # Shopify's own words are kept


def test_a_currency_store_credit_does_not_take_is_a_code_too(fake: FakeShop, shopify: ShopifyAdapter) -> None:
    fake.store_credit_currencies = {"USD"}
    result = shopify.deliver(delivery())
    assert fake.names() == ["storeCreditAccountCredit", "discountCodeBasicCreate"]
    assert "currency provided is not currently supported" in result.detail


def test_no_code_in_another_currency_than_the_shops(fake: FakeShop) -> None:
    fake.store_credit_currencies = {"EUR"}
    adapter = shopify_adapter(fake.url, currency="EUR")
    with pytest.raises(NotSupported, match="a USD amount cannot be a code in a EUR shop"):
        adapter.deliver(delivery(currency="USD"))
    assert fake.names() == ["storeCreditAccountCredit"]


def test_other_refusals_fail_without_a_code(fake: FakeShop, shopify: ShopifyAdapter) -> None:
    fake.shopify_customers = {"1"}  # the customer was deleted in Shopify
    with pytest.raises(Rejected, match="Owner does not exist"):
        shopify.deliver(delivery())
    assert fake.names() == ["storeCreditAccountCredit"]


def test_a_lost_answer_is_never_credited_again(fake: FakeShop, shopify: ShopifyAdapter) -> None:
    """Shopify credited, its answer was lost: staff are asked to check, and a retry credits nothing."""
    fake.answer_lost = {"storeCreditAccountCredit"}
    with pytest.raises(NotSupported) as first:
        shopify.deliver(delivery())
    assert "check the customer's store credit in Shopify" in first.value.message
    assert "2.50 EUR" in first.value.message and GID in first.value.message
    fake.answer_lost = set()
    with pytest.raises(NotSupported, match="check the customer's store credit in Shopify"):
        shopify.deliver(delivery(attempt=2))
    assert fake.store_credit_balance(CUSTOMER, "EUR") == Decimal("2.50")
    assert fake.names() == ["storeCreditAccountCredit", "codeDiscountNodeByCode"]


@pytest.mark.parametrize("failure", [requests.exceptions.ReadTimeout("read timed out"),
                                     requests.exceptions.ConnectionError("reset")])
@responses.activate(assert_all_requests_are_fired=True)
def test_a_timeout_goes_to_staff_at_once(failure: Exception) -> None:
    api = "https://demo.myshopify.com"
    responses.post(f"{api}/admin/api/2025-07/graphql.json", body=failure)
    with pytest.raises(NotSupported, match="may or may not have been credited"):
        shopify_adapter(api).deliver(delivery())


@responses.activate(assert_all_requests_are_fired=True)
def test_a_rate_limited_first_attempt_is_retried_but_the_retry_never_credits(fake: FakeShop) -> None:
    api = "https://demo.myshopify.com"
    responses.post(f"{api}/admin/api/2025-07/graphql.json", status=429, headers={"Retry-After": "3"},
                   json={"errors": "Throttled"})
    with pytest.raises(RateLimited):
        shopify_adapter(api).deliver(delivery())
    responses.add_passthru(fake.url)
    with pytest.raises(NotSupported, match="attempt 2"):
        shopify_adapter(fake.url, fake.access_token).deliver(delivery(attempt=2))
    assert fake.names() == ["codeDiscountNodeByCode"]
    assert fake.store_credit_balance(CUSTOMER, "EUR") == 0


def test_a_retry_adopts_the_code_an_earlier_attempt_made(fake: FakeShop, shopify: ShopifyAdapter) -> None:
    fake.store_credit_enabled = False
    first = shopify.deliver(delivery())
    again = shopify.deliver(delivery(attempt=2))
    assert again.external_id == first.external_id
    assert "already created" in again.detail
    assert fake.names() == ["storeCreditAccountCredit", "discountCodeBasicCreate", "codeDiscountNodeByCode"]


def test_shopify_never_takes_a_redemption_back(fake: FakeShop, shopify: ShopifyAdapter) -> None:
    with pytest.raises(Rejected, match="a points redemption is never taken back"):
        shopify.deliver(delivery(action="revoke"))
    assert fake.calls == []


def test_a_customer_without_a_shopify_account_needs_a_person(fake: FakeShop, shopify: ShopifyAdapter) -> None:
    with pytest.raises(NotSupported, match="has no Shopify account: store credit needs manual action"):
        shopify.deliver(delivery(customer_id=guest_id("ana@example.com")))
    assert fake.calls == []


@pytest.mark.parametrize(("value", "currency", "needle"), [("0.00", "EUR", "no positive value"),
                                                             ("-1", "EUR", "no positive value"),
                                                             ("2.50", "eur", "no ISO 4217 currency")])
def test_a_redemption_without_a_creditable_value_is_refused(fake: FakeShop, shopify: ShopifyAdapter, value: str,
                                                            currency: str, needle: str) -> None:
    with pytest.raises(Rejected, match=needle):
        shopify.deliver(delivery(value=value, currency=currency))
    assert fake.calls == []


@pytest.mark.parametrize(("variables", "needle"), [
    ({"id": GID, "creditInput": {"creditAmount": {"amount": "2.50", "currencyCode": "eur"}}}, "CurrencyCode"),
    ({"id": GID, "creditInput": {"creditAmount": {"amount": "lots", "currencyCode": "EUR"}}}, "not a Decimal"),
    ({"id": GID, "creditInput": {"creditAmount": {"amount": "2.50"}}}, "creditInput must be"),
    ({"id": GID, "creditInput": {"amount": "2.50", "currencyCode": "EUR"}}, "creditInput must be"),
    ({"id": "207119551", "creditInput": CREDIT["creditInput"]}, "Invalid global id"),
    ({"id": GID}, "exactly id and creditInput"),
])
def test_the_fake_refuses_malformed_credits(fake: FakeShop, variables: dict[str, Any], needle: str) -> None:
    answer = requests.post(f"{fake.url}/admin/api/2025-07/graphql.json", timeout=5,
                           headers={"X-Shopify-Access-Token": fake.access_token},
                           json={"query": STORE_CREDIT_CREDIT, "variables": variables}).json()
    assert needle in answer["errors"][0]["message"]
    assert fake.store_credit == {}


def test_the_fake_refuses_a_non_positive_credit(fake: FakeShop) -> None:
    variables = {"id": GID, "creditInput": {"creditAmount": {"amount": "0", "currencyCode": "EUR"}}}
    answer = requests.post(f"{fake.url}/admin/api/2025-07/graphql.json", timeout=5,
                           headers={"X-Shopify-Access-Token": fake.access_token},
                           json={"query": STORE_CREDIT_CREDIT, "variables": variables}).json()
    assert answer["data"]["storeCreditAccountCredit"]["userErrors"][0]["code"] == "NEGATIVE_OR_ZERO_AMOUNT"
    assert fake.store_credit == {}


# ================================================================ WooCommerce
def woo_adapter(url: str, currency: str = "EUR") -> WooCommerceAdapter:
    shop = ShopConfig(id="woo", platform="woocommerce", domain="https://shop.example.com", webhook_secret="s",
                      api_url=url, consumer_key="ck_test", consumer_secret="cs_test", currency=currency)
    return WooCommerceAdapter(shop, timeout=5)


COUPON = {"code": CODE, "discount_type": "fixed_cart", "amount": "2.50", "individual_use": False,
          "usage_limit": 1, "usage_limit_per_user": 1, "email_restrictions": ["ana@example.com"],
          "description": f"loyalty-ladder {KEY}"}


def test_woocommerce_pays_a_redemption_as_a_one_time_coupon(fake: FakeShop) -> None:
    result = woo_adapter(fake.url).deliver(delivery())
    posted = [c for c in fake.calls if c.name == "POST /coupons"]
    assert [c.body for c in posted] == [COUPON]
    assert result.external_id == str(fake.coupons[CODE.lower()]["id"])
    assert result.detail == f"coupon {CODE} for 2.50 EUR (250 points, redemption r1)"


def test_woocommerce_retry_adopts_the_coupon_it_created(fake: FakeShop) -> None:
    adapter = woo_adapter(fake.url)
    first = adapter.deliver(delivery())
    again = adapter.deliver(delivery(attempt=2))  # the first answer was lost: the code exists
    assert again.external_id == first.external_id
    assert "(existed)" in again.detail
    assert [(c.name, c.status) for c in fake.calls] == [("POST /coupons", 200), ("POST /coupons", 400),
                                                       ("GET /coupons", 200)]
    assert len(fake.coupons) == 1


def test_woocommerce_never_takes_a_redemption_back(fake: FakeShop) -> None:
    with pytest.raises(Rejected, match="a points redemption is never taken back"):
        woo_adapter(fake.url).deliver(delivery(action="revoke"))
    assert fake.calls == []


@pytest.mark.parametrize(("kwargs", "error", "needle"), [
    ({"currency": "USD"}, NotSupported, "cannot be a coupon in a EUR shop"),
    ({"email": None}, NotSupported, "restricted to the customer's e-mail"),
    ({"value": "0"}, Rejected, "no positive value"),
    ({"code": ""}, Rejected, "no code"),
])
def test_woocommerce_redemptions_it_cannot_pay(fake: FakeShop, kwargs: dict[str, Any], error: type[Exception],
                                               needle: str) -> None:
    with pytest.raises(error, match=needle):
        woo_adapter(fake.url).deliver(delivery(**kwargs))
    assert fake.calls == []


@pytest.mark.parametrize(("change", "param"), [
    ({"amount": "-2.50"}, "amount"), ({"amount": 2.5}, "amount"), ({"usage_limit": 0}, "usage_limit"),
    ({"usage_limit_per_user": "1"}, "usage_limit_per_user"), ({"email_restrictions": ["ana"]}, "email_restrictions"),
    ({"discount_type": "store_credit"}, "discount_type"), ({"individual_use": "no"}, "individual_use"),
])
def test_the_fake_refuses_malformed_fixed_cart_coupons(fake: FakeShop, change: dict[str, Any], param: str) -> None:
    answer = requests.post(f"{fake.url}/wp-json/wc/v3/coupons", timeout=5, auth=("ck_test", "cs_test"),
                           data=json.dumps({**COUPON, **change}), headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert param in answer.json()["data"]["params"]
    assert fake.coupons == {}
