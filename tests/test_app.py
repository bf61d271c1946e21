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


def _readme_embedding_example() -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Embedding in a Flask app"):]
    return section[section.index("```python") + len("```python"):section.index("```", section.index("```python") + 9)]


def test_the_readme_embedding_example_works_as_written(tmp_path, monkeypatch):
    """Run the README's code block itself, in an empty directory with no LADDER_* environment."""
    import os

    for name in [n for n in os.environ if n.startswith("LADDER_")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("SHOP_LOYALTY_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "shop_app"}
    exec(compile(_readme_embedding_example(), "README.md", "exec"), namespace)  # noqa: S102 - the README is ours
    app = namespace["app"]
    state = app.extensions[EXTENSION]
    assert state.settings.database_url == "sqlite:///loyalty.db"
    assert (tmp_path / "loyalty.db").exists()
    client = app.test_client()
    headers = {"Authorization": "Bearer change-me"}
    assert client.get("/loyalty/api/v1/shops/default/customers/c-1", headers=headers).status_code == 404
    assert client.get("/loyalty/api/v1/shops/default/customers/c-1").status_code == 401
    assert "/loyalty/api/v1/shops/{shop}/events" in client.get("/loyalty/openapi.json").get_json()["paths"]
    state.service.db.dispose()


def test_embedded_settings_come_from_app_config_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LADDER_ADMIN_TOKEN", "from-env")
    monkeypatch.setenv("LADDER_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    app = Flask("shop")
    app.config["LADDER_ADMIN_TOKEN"] = "from-app-config"
    LoyaltyLadder(app, immediate_queue=True)
    state = app.extensions[EXTENSION]
    assert state.settings.admin_token == "from-app-config"
    assert state.settings.database_url.endswith("env.db")
    client = app.test_client()
    assert client.get("/api/v1/shops/default/customers/x", headers={"Authorization": "Bearer from-env"}
                      ).status_code == 401
    assert client.get("/api/v1/shops/default/customers/x", headers={"Authorization": "Bearer from-app-config"}
                      ).status_code == 404
    state.service.db.dispose()


def test_without_a_token_anywhere_the_extension_names_where_to_set_one(tmp_path, monkeypatch):
    monkeypatch.delenv("LADDER_ADMIN_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r'app.config\["LADDER_ADMIN_TOKEN"\]'):
        LoyaltyLadder(Flask("shop"))
