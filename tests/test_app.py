"""The Flask side: create_app and the LoyaltyLadder extension embedded in a shop's own app."""
from __future__ import annotations

import pytest
from flask import Flask

from loyalty_ladder.app import EXTENSION, LoyaltyLadder, create_app
from loyalty_ladder.errors import ConfigError

from .test_api import journey


def test_extension_embeds_under_a_prefix_beside_the_shops_own_routes(ladder_settings, auth):
    shop_app = Flask("shop")

    @shop_app.route("/")
    def home():
        return "the shop's own page"

    ext = LoyaltyLadder()
    ext.init_app(shop_app, settings=ladder_settings, url_prefix="/loyalty", immediate_queue=True)
    client = shop_app.test_client()
    assert client.get("/").get_data(as_text=True) == "the shop's own page"
    response = client.post("/loyalty/api/v1/shops/default/events", json=journey()[:3], headers=auth)
    assert response.status_code == 202
    doc = client.get("/loyalty/api/v1/shops/default/customers/c-1", headers=auth).get_json()
    assert doc["stage"] == "first_purchase"
    assert "/loyalty/api/v1/shops/{shop}/events" in client.get("/loyalty/openapi.json").get_json()["paths"]
    state = shop_app.extensions[EXTENSION]
    assert state.service.customer_view("default", "c-1")["stage"] == "first_purchase"


def test_create_app_refuses_to_start_without_an_admin_token(ladder_settings):
    import dataclasses

    with pytest.raises(ConfigError, match="LADDER_ADMIN_TOKEN"):
        create_app(dataclasses.replace(ladder_settings, admin_token=None))


def test_create_app_accepts_overrides_mapping(ladder_settings, monkeypatch):
    monkeypatch.setenv("LADDER_ADMIN_TOKEN", "from-env")
    app = create_app({"database_url": ladder_settings.database_url, "rules": str(ladder_settings.rules)})
    assert app.extensions[EXTENSION].settings.admin_token == "from-env"


def test_unexpected_errors_answer_json_500_without_traceback(ladder_settings, auth, monkeypatch):
    app = create_app(ladder_settings, immediate_queue=True)  # not testing mode: the 500 handler is on
    service = app.extensions[EXTENSION].service

    def boom(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(service, "customer", boom)
    response = app.test_client().get("/api/v1/shops/default/customers/c-1", headers=auth)
    assert response.status_code == 500
    assert response.get_json() == {"code": "internal_error",
                                   "message": "internal error; the details are in the server log", "errors": {}}
