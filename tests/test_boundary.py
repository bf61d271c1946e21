"""HTTP and CLI hygiene at the boundary: 405 says Allow, ids follow one rule in events and URLs,
duplicate JSON keys are refused, read-only commands never create a database and name (masked)
the one they read, a missing PostgreSQL driver names the extra, a command needs only the secrets
of the shops it touches, and a shops file without ``default`` says so at start."""
from __future__ import annotations

import json
import sys

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from loyalty_ladder import store
from loyalty_ladder.app import create_app
from loyalty_ladder.cli import main
from loyalty_ladder.errors import ConfigError
from loyalty_ladder.events import id_problem
from loyalty_ladder.shops import default_shop_note, load_shops, require_secrets

from .conftest import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
EVENT = {"id": "e1", "type": "customer_created", "customer_id": "ana", "occurred_at": "2026-03-01T09:00:00Z"}


def stored_events(service) -> int:
    with service.db.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(store.events)).scalar()


# ------------------------------------------------------------------ HTTP
def test_405_names_the_allowed_methods_in_the_json_error_shape(client):
    answer = client.get("/api/v1/shops/default/events", headers=AUTH)
    assert answer.status_code == 405
    assert "POST" in answer.headers["Allow"]
    assert set(answer.get_json()) == {"code", "message", "errors"} and answer.get_json()["code"] == "method_not_allowed"


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("id", "a/b", "Must not contain '/'."),
    ("customer_id", "ana/1", "Must not contain '/'."),
    ("customer_id", "   ", "Must not be blank."),
    ("id", "e\x01", "Must not contain control characters."),
    ("customer_id", "ana\u0085", "Must not contain control characters."),
])
def test_ids_that_could_never_be_fetched_are_refused(client, service, field, value, problem):
    answer = client.post("/api/v1/shops/default/events", json={**EVENT, field: value}, headers=AUTH)
    assert answer.status_code == 400
    assert problem in json.dumps(answer.get_json()["errors"])
    assert stored_events(service) == 0


def test_an_order_id_follows_the_same_rule(client):
    order = {**EVENT, "type": "order_paid", "order": {"id": "o/1", "total": "10.00", "currency": "EUR"}}
    answer = client.post("/api/v1/shops/default/events", json=order, headers=AUTH)
    assert answer.status_code == 400 and "order" in answer.get_json()["errors"]["0"]


def test_ordinary_ids_pass():
    assert all(id_problem(v) is None for v in ("ana", "a b", "shopify:order:1:paid", "guest:0a1b", "ü-1"))


@pytest.mark.parametrize("path", ["/api/v1/shops/default/customers/%20%20", "/api/v1/shops/default/customers/a%01",
                                  "/api/v1/shops/%09/inbox"])
def test_ids_in_the_url_follow_the_rule_too(client, path):
    answer = client.get(path, headers=AUTH)
    assert answer.status_code == 400 and answer.get_json()["code"] == "bad_request"


def test_duplicate_json_keys_are_refused(client, service):
    body = '{"id": "e1", "id": "e2", "type": "customer_created", "customer_id": "ana", ' \
           '"occurred_at": "2026-03-01T09:00:00Z"}'
    answer = client.post("/api/v1/shops/default/events", data=body, content_type="application/json", headers=AUTH)
    assert answer.status_code == 400
    assert "repeats the key 'id'" in answer.get_json()["message"]
    assert stored_events(service) == 0
    nested = '[{"id": "e1", "type": "customer_created", "customer_id": "ana", "occurred_at": "2026-03-01T09:00:00Z",' \
             ' "customer": {"email": "a@example.com", "email": "b@example.com"}}]'
    answer = client.post("/api/v1/shops/default/events", data=nested, content_type="application/json", headers=AUTH)
    assert answer.status_code == 400 and stored_events(service) == 0
    malformed = client.post("/api/v1/shops/default/events", data="{", content_type="application/json", headers=AUTH)
    assert malformed.status_code == 400 and malformed.get_json()["message"] == "the body is not valid JSON"


# ------------------------------------------------------------------ CLI: databases
def cli(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def bare_dir(tmp_path, monkeypatch):
    """A directory without a database, rules or settings, and no LADDER_* variables."""
    import os

    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("LADDER_") and not name.startswith("LADDER_TEST_") and name != "LADDER_REQUIRE_SERVICES":
            monkeypatch.delenv(name)
    return tmp_path


@pytest.mark.parametrize("args", [("explain", "default", "ana"), ("customer-data", "default", "ana"),
                                  ("inbox", "list"), ("inbox-export",), ("deliveries", "list")])
def test_read_only_commands_never_create_a_database(bare_dir, args):
    result = cli(*args)
    assert result.exit_code == 3, result.output
    assert "no database at ladder.db" in result.stderr
    assert "reading database sqlite:///ladder.db" in result.stderr
    assert not (bare_dir / "ladder.db").exists()


def test_the_database_a_command_reads_is_printed_with_the_password_masked(bare_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # the postgres extra is not installed
    result = cli("inbox", "list", env={"LADDER_DATABASE_URL": "postgresql+psycopg://ladder:hunter2@db.example/ladder"})
    assert "hunter2" not in result.output
    assert "reading database postgresql+psycopg://ladder:***@db.example/ladder" in result.stderr
    assert result.exit_code == 2
    assert "pip install 'loyalty-ladder[postgres]'" in result.stderr
    assert "Traceback" not in result.output


def test_a_missing_postgres_driver_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigError, match=r"needs the Python module 'psycopg'.*pip install 'loyalty-ladder\[postgres\]'"):
        store.make_engine("postgresql+psycopg://ladder:hunter2@db.example/ladder")


# ------------------------------------------------------------------ shops: secrets per shop, default
SHOPS = [
    {"id": "alpha", "platform": "generic", "domain": "alpha.example", "webhook_secret": "env:ALPHA_SECRET"},
    {"id": "beta", "platform": "generic", "domain": "beta.example", "webhook_secret": "env:BETA_SECRET"},
]


@pytest.fixture
def shops_path(tmp_path):
    path = tmp_path / "shops.yaml"
    path.write_text(yaml.safe_dump(SHOPS))
    return path


def test_a_command_needs_only_the_secrets_of_the_shops_it_touches(shops_path):
    shops = load_shops(shops_path, env={"ALPHA_SECRET": "a-secret"}, lazy=True)
    assert list(shops) == ["alpha", "beta"]
    assert shops["alpha"].webhook_secret == "a-secret"
    with pytest.raises(ConfigError, match=r"shop #2 \(id 'beta'\): webhook_secret: environment variable BETA_SECRET"):
        shops["beta"]
    with pytest.raises(ConfigError, match="BETA_SECRET is not set"):
        require_secrets(shops)  # what serve / worker do at start
    with pytest.raises(ConfigError, match="BETA_SECRET is not set"):
        load_shops(shops_path, env={"ALPHA_SECRET": "a-secret"})  # eager, as before


def test_the_cli_touches_one_shop_and_the_server_all(ladder_settings, shops_path, monkeypatch):
    from dataclasses import replace

    monkeypatch.setenv("ALPHA_SECRET", "a-secret")
    monkeypatch.delenv("BETA_SECRET", raising=False)
    settings = replace(ladder_settings, shops_file=shops_path)
    with pytest.raises(ConfigError, match="BETA_SECRET is not set"):
        create_app(settings, immediate_queue=True)
    env = {"LADDER_DATABASE_URL": settings.database_url, "LADDER_SHOPS_FILE": str(shops_path),
           "LADDER_RULES": str(settings.rules)}
    result = cli("explain", "alpha", "nobody", env=env)  # the database exists now (create_app made it)
    assert "BETA_SECRET" not in result.output
    assert result.exit_code == 3 and "nobody" in result.stderr  # not found, not a settings error


def test_a_shops_file_without_default_says_so():
    assert default_shop_note({"default": object()}) is None
    assert default_shop_note({"a": object(), "b": object()}) == (
        "shops file lists no 'default' shop: the generic events API answers only for: a, b")
