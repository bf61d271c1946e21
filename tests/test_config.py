"""Settings (defaults ← file ← environment ← flags) and the shops file."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from loyalty_ladder.adapters.shopify import ShopifyAdapter
from loyalty_ladder.config import Settings, default_queue_file, load_settings
from loyalty_ladder.errors import ConfigError
from loyalty_ladder.shop import DEFAULT_SHOP, ShopConfig
from loyalty_ladder.shops import load_shops

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    """An empty working directory: no ./rules, no ./config."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# ---------------------------------------------------------------- settings
def test_defaults_without_file_or_environment(cwd):
    s = load_settings(env={})
    assert s == Settings()
    assert s.database_url == "sqlite:///ladder.db"
    assert s.rules is None and s.shops_file is None and s.queue_url is None
    assert (s.host, s.port, s.log_level, s.auto_migrate) == ("127.0.0.1", 8000, "INFO", True)
    assert s.queue_poll_seconds <= 0.2  # the 1 s (p95) budget for applying an event
    assert s.config_file is None


def test_discovered_defaults_in_the_working_directory(cwd):
    (cwd / "rules").mkdir()
    write(cwd / "config" / "shops.yaml", "- {id: a, platform: generic}\n")
    write(cwd / "config" / "ladder.yaml", "port: 9000\n")
    s = load_settings(env={})
    assert s.rules == (cwd / "rules").resolve()
    assert s.shops_file == (cwd / "config" / "shops.yaml").resolve()
    assert s.config_file == (cwd / "config" / "ladder.yaml").resolve()
    assert s.port == 9000


def test_file_then_environment_then_overrides(cwd):
    write(cwd / "config" / "ladder.yaml", """\
        port: 9000
        host: 0.0.0.0
        log_level: debug
        auto_migrate: false
    """)
    env = {"LADDER_PORT": "9100", "LADDER_AUTO_MIGRATE": "1", "LADDER_ADMIN_TOKEN": "t0k"}
    s = load_settings(env=env, overrides={"port": 9200, "host": None})
    assert s.port == 9200  # flag wins over environment
    assert s.host == "0.0.0.0"  # a flag left unset (None) does not override
    assert s.auto_migrate is True  # environment wins over file
    assert s.log_level == "DEBUG"
    assert s.admin_token == "t0k"


def test_file_relative_paths_are_relative_to_the_file(cwd, tmp_path):
    conf_dir = tmp_path / "etc" / "ladder"
    path = write(conf_dir / "settings.yaml", """\
        rules: programme
        shops_file: ../shops.yaml
        database_url: sqlite:///data/ladder.db
        queue_url: sqlite:///data/queue.db
    """)
    s = load_settings(env={"LADDER_CONFIG": str(path)})
    assert s.config_file == path
    assert s.rules == conf_dir / "programme"
    assert s.shops_file == conf_dir / ".." / "shops.yaml"
    assert s.database_url == f"sqlite:///{conf_dir / 'data' / 'ladder.db'}"
    assert s.queue_url == f"sqlite:///{conf_dir / 'data' / 'queue.db'}"


def test_absolute_and_non_file_urls_in_the_file_are_kept(cwd, tmp_path):
    path = write(tmp_path / "s.yaml", """\
        database_url: postgresql+psycopg://u@db/ladder
        queue_url: redis://127.0.0.1:6379/0
        rules: /srv/rules
    """)
    s = load_settings(env={"LADDER_CONFIG": str(path)})
    assert s.database_url == "postgresql+psycopg://u@db/ladder"
    assert s.queue_url == "redis://127.0.0.1:6379/0"
    assert s.rules == Path("/srv/rules")


def test_environment_paths_are_relative_to_the_working_directory(cwd):
    s = load_settings(env={"LADDER_RULES": "my-rules", "LADDER_SHOPS_FILE": "x/shops.yaml"})
    assert s.rules == Path("my-rules")
    assert s.shops_file == Path("x/shops.yaml")


def test_null_rules_in_the_file_means_the_packaged_programme(cwd):
    (cwd / "rules").mkdir()
    write(cwd / "config" / "ladder.yaml", "rules: null\n")
    assert load_settings(env={}).rules is None


def test_empty_environment_values_count_as_unset(cwd):
    s = load_settings(env={"LADDER_PORT": "", "LADDER_ADMIN_TOKEN": ""})
    assert s.port == 8000 and s.admin_token is None


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("1", True), ("FALSE", False), ("0", False)])
def test_auto_migrate_from_the_environment(cwd, raw, expected):
    assert load_settings(env={"LADDER_AUTO_MIGRATE": raw}).auto_migrate is expected


def test_bad_environment_values_are_named(cwd):
    with pytest.raises(ConfigError) as info:
        load_settings(env={"LADDER_PORT": "eighty", "LADDER_AUTO_MIGRATE": "maybe"})
    message = str(info.value)
    assert "LADDER_PORT" in message and "'eighty'" in message and "integer" in message
    assert "LADDER_AUTO_MIGRATE" in message
    assert info.value.exit_code == 2


@pytest.mark.parametrize(("env", "needle"), [
    ({"LADDER_PORT": "70000"}, "between 1 and 65535"),
    ({"LADDER_LOG_LEVEL": "LOUD"}, "one of DEBUG"),
    ({"LADDER_QUEUE_URL": "amqp://x"}, "must start with"),
    ({"LADDER_DATABASE_URL": "not a url"}, "not a database URL"),
    ({"LADDER_QUEUE_POLL_SECONDS": "0"}, "more than 0"),
])
def test_invalid_values(cwd, env, needle):
    with pytest.raises(ConfigError, match=needle):
        load_settings(env=env)


def test_unknown_key_in_file_names_file_key_and_suggestion(cwd):
    path = write(cwd / "config" / "ladder.yaml", "prot: 9000\n")
    with pytest.raises(ConfigError) as info:
        load_settings(env={})
    message = str(info.value)
    assert str(path.relative_to(cwd)) in message
    assert "prot" in message and "did you mean 'port'" in message


def test_wrong_type_in_file(cwd):
    write(cwd / "config" / "ladder.yaml", "port: '9000'\nauto_migrate: sometimes\n")
    with pytest.raises(ConfigError) as info:
        load_settings(env={})
    assert "port" in str(info.value) and "auto_migrate" in str(info.value)
    assert set(info.value.errors) == {"port", "auto_migrate"}


def test_file_must_be_a_mapping_and_valid_yaml(cwd):
    write(cwd / "config" / "ladder.yaml", "- port\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_settings(env={})
    write(cwd / "config" / "ladder.yaml", "port: [9000\n")
    with pytest.raises(ConfigError, match=r"ladder\.yaml:\d+:\d+: invalid YAML"):
        load_settings(env={})


def test_missing_explicit_config_file(cwd):
    with pytest.raises(ConfigError, match="LADDER_CONFIG"):
        load_settings(env={"LADDER_CONFIG": "nowhere.yaml"})


def test_unknown_override_is_refused(cwd):
    with pytest.raises(ConfigError, match="did you mean 'port'"):
        load_settings(env={}, overrides={"prot": 1})


def test_bad_override_names_the_flag(cwd):
    with pytest.raises(ConfigError, match="--port"):
        load_settings(env={}, overrides={"port": "x"})


def test_repr_hides_secrets():
    s = Settings(admin_token="s3cret", smtp_url="smtp://u:pw@mail")
    assert "s3cret" not in repr(s) and "pw@" not in repr(s)


def test_default_queue_file():
    assert default_queue_file("sqlite:////var/lib/ladder/ladder.db") == Path("/var/lib/ladder/ladder-queue.db")
    assert default_queue_file("sqlite:///ladder.db") == Path("ladder-queue.db")
    assert default_queue_file("sqlite://") == Path("ladder-queue.db")
    assert default_queue_file("postgresql+psycopg://u@h/db") == Path("ladder-queue.db")


def test_example_settings_file_loads_and_matches_the_defaults(cwd):
    s = load_settings(env={"LADDER_CONFIG": str(ROOT / "config" / "ladder.example.yaml")})
    assert s == Settings(config_file=ROOT / "config" / "ladder.example.yaml")


# ---------------------------------------------------------------- shops
SHOPS = """\
- id: demo
  platform: shopify
  domain: demo.myshopify.com
  webhook_secret: env:DEMO_SECRET
  api_url: https://demo.myshopify.com
  access_token: env:DEMO_TOKEN
  timezone: Europe/Vilnius
  programme: rules/
- id: woo
  platform: woocommerce
  domain: https://woo.example.com
  webhook_secret: w
  api_url: https://woo.example.com
  consumer_key: ck
  consumer_secret: cs
  capabilities: [tags]
- id: plain
  platform: generic
"""


def test_no_shops_file_gives_the_default_generic_shop():
    assert load_shops(None) == {"default": DEFAULT_SHOP}
    assert DEFAULT_SHOP == ShopConfig(id="default", platform="generic")
    assert DEFAULT_SHOP.capabilities == ()


def test_shops_file(tmp_path):
    path = write(tmp_path / "conf" / "shops.yaml", SHOPS)
    shops = load_shops(path, env={"DEMO_SECRET": "hush", "DEMO_TOKEN": "shpat_1"})
    assert list(shops) == ["demo", "woo", "plain"]
    demo = shops["demo"]
    assert demo.webhook_secret == "hush" and demo.access_token == "shpat_1"
    assert demo.api_version == "2025-07"  # the adapter's default
    assert demo.settings == {"api_version": "2025-07", "access_token": "shpat_1"}
    assert demo.option("access_token") == "shpat_1" and demo.secret_settings == {"access_token"}
    assert demo.capabilities == ShopifyAdapter.capabilities
    assert demo.timezone == "Europe/Vilnius" and demo.zone.key == "Europe/Vilnius"
    assert demo.currency == "EUR" and demo.mode == "live" and not demo.shadow
    assert demo.programme == tmp_path / "conf" / "rules"
    assert "hush" not in repr(demo) and "shpat_1" not in repr(demo) and "2025-07" in repr(demo)
    woo = shops["woo"]
    assert woo.capabilities == ("tags",) and woo.option("api_version") is None
    assert woo.settings == {"consumer_key": "ck", "consumer_secret": "cs"}
    assert "'cs'" not in repr(woo) and "'ck'" not in repr(woo)
    assert shops["plain"] == ShopConfig(id="plain", platform="generic")


def test_missing_secret_variable_is_named(tmp_path):
    path = write(tmp_path / "shops.yaml", SHOPS)
    with pytest.raises(ConfigError) as info:
        load_shops(path, env={"DEMO_SECRET": "hush"})
    message = str(info.value)
    assert "DEMO_TOKEN" in message and "shop #1 (id 'demo')" in message and "access_token" in message
    assert str(path) in message


@pytest.mark.parametrize(("item", "key", "needle"), [
    ("{id: a, platform: shopify, domain: d, api_url: 'https://x', access_token: t}", "webhook_secret",
     "required for platform shopify"),
    ("{id: a, platform: woocommerce, domain: d, webhook_secret: s, api_url: 'https://x', consumer_key: k}",
     "consumer_secret", "required for platform woocommerce"),
    ("{id: a, platform: shopify, domain: d, webhook_secret: s}", "api_url", "required"),
    ("{id: A!, platform: generic}", "id", "lower-case"),
    ("{id: a, platform: magento}", "platform", "unknown platform 'magento'; known: generic, shopify, woocommerce"),
    ("{id: a, platform: generic, timezone: Mars/Olympus}", "timezone", "unknown time zone"),
    ("{id: a, platform: generic, currency: eur}", "currency", "ISO 4217"),
    ("{id: a, platform: generic, mode: dry}", "mode", "Must be one of"),
    ("{id: a, platform: woocommerce, domain: d, webhook_secret: s, mode: shadow, capabilities: [payment_terms]}",
     "capabilities", "has no capability 'payment_terms'"),
    ("{id: a, platform: generic, api_url: 'not a url'}", "api_url", "URL"),
    ("{id: a, platform: generic, webhok_secret: s}", "webhok_secret", "did you mean 'webhook_secret'"),
    # the platform's own keys come from its adapter: typos get a did-you-mean too …
    ("{id: a, platform: shopify, domain: d, webhook_secret: s, api_url: 'https://x', acess_token: t}",
     "acess_token", "did you mean 'access_token'"),
    # … and another platform's keys are unknown keys
    ("{id: a, platform: generic, access_token: t}", "access_token", "unknown key"),
    ("{id: a, platform: shopify, domain: d, webhook_secret: s, api_url: 'https://x'}", "access_token",
     "required for platform shopify (unless mode: shadow)"),
    ("{id: a, platform: woocommerce, domain: d, webhook_secret: s, api_url: 'https://x', consumer_key: '', consumer_secret: c}",
     "consumer_key", "must not be empty"),
    ("{platform: generic}", "id", "required"),
])
def test_invalid_shop(tmp_path, item, key, needle):
    path = write(tmp_path / "shops.yaml", f"- {{id: ok, platform: generic}}\n- {item}\n")
    with pytest.raises(ConfigError) as info:
        load_shops(path, env={})
    assert "shop #2" in str(info.value)
    assert key in info.value.errors
    assert needle in str(info.value)


def test_platform_secrets_resolve_from_the_environment(tmp_path):
    path = write(tmp_path / "shops.yaml", "- {id: w, platform: woocommerce, domain: d, webhook_secret: s,"
                 " api_url: 'https://w.example', consumer_key: 'env:WOO_CK', consumer_secret: 'env:WOO_CS'}\n")
    shop = load_shops(path, env={"WOO_CK": "ck_live", "WOO_CS": "cs_live"})["w"]
    assert shop.option("consumer_key") == "ck_live" and shop.consumer_secret == "cs_live"
    with pytest.raises(ConfigError, match="WOO_CS is not set") as info:
        load_shops(path, env={"WOO_CK": "ck_live"})
    assert "consumer_secret" in info.value.errors


def test_shop_config_takes_platform_keys_as_keywords_and_hides_credentials():
    shop = ShopConfig(id="s", platform="shopify", access_token="shpat_x", api_version="2025-07")
    assert shop.settings == {"access_token": "shpat_x", "api_version": "2025-07"}
    assert shop.access_token == "shpat_x" and shop.option("missing", "d") == "d"
    assert "shpat_x" not in repr(shop)
    with pytest.raises(AttributeError):
        shop.no_such_key  # noqa: B018


def test_shadow_shop_needs_no_api_credentials(tmp_path):
    path = write(tmp_path / "shops.yaml", "- {id: s, platform: shopify, domain: d, webhook_secret: w, mode: shadow}\n")
    shop = load_shops(path, env={})["s"]
    assert shop.shadow and shop.api_url is None and shop.access_token is None


def test_duplicate_shop_ids(tmp_path):
    path = write(tmp_path / "shops.yaml", "- {id: a, platform: generic}\n- {id: a, platform: generic}\n")
    with pytest.raises(ConfigError, match="duplicate shop id"):
        load_shops(path, env={})


@pytest.mark.parametrize(("text", "needle"), [
    ("", "lists no shops"),
    ("id: a\n", "expected a list"),
    ("- just-a-string\n", "expected a mapping"),
])
def test_shops_file_shape(tmp_path, text, needle):
    with pytest.raises(ConfigError, match=needle):
        load_shops(write(tmp_path / "shops.yaml", text), env={})


def test_missing_shops_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_shops(tmp_path / "absent.yaml")


def test_example_shops_file_is_valid(tmp_path):
    env = {"DEMO_WEBHOOK_SECRET": "a", "DEMO_ACCESS_TOKEN": "b", "WOO_WEBHOOK_SECRET": "c",
           "WOO_CONSUMER_KEY": "d", "WOO_CONSUMER_SECRET": "e"}
    shops = load_shops(ROOT / "config" / "shops.example.yaml", env=env)
    assert {s.platform for s in shops.values()} == {"shopify", "woocommerce", "generic"}


def test_a_third_party_platform_registered_by_entry_point_is_accepted(tmp_path, monkeypatch):
    """The entry-point group is the way to add a platform: the shops file must accept it."""
    from loyalty_ladder import shops as config
    from loyalty_ladder.adapters.base import Adapter

    class Magento(Adapter):
        platform = "magento"
        capabilities = ("discount_codes",)

    monkeypatch.setattr(config, "_registered_adapters", lambda: {"magento": Magento})
    path = tmp_path / "shops.yaml"
    path.write_text("- {id: m, platform: magento, domain: m.example, webhook_secret: s}\n")
    shop = config.load_shops(path)["m"]
    assert shop.platform == "magento" and shop.capabilities == ("discount_codes",)
