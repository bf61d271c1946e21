"""Secrets never printed: URLs masked in what the commands print, known secrets masked in every
log line — checked on the real `ladder serve` and `ladder worker` with a PostgreSQL and a Redis
URL that carry passwords."""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from loyalty_ladder import redact
from loyalty_ladder.redact import mask_text, mask_url

from .conftest import ADMIN_TOKEN

ROOT = Path(__file__).resolve().parent.parent
LADDER = str(Path(sys.executable).parent / "ladder")
DB_PASSWORD = "db-pw-Zq81x"
REDIS_PASSWORD = "redis-pw-Kk29v"
SMTP_PASSWORD = "smtp-pw-Ut55e"
TOKEN = "admin-token-Hh72w-long"


def test_mask_url():
    assert mask_url("postgresql+psycopg://ladder:s3cr%40t@db.example:5432/ladder") == (
        "postgresql+psycopg://ladder:***@db.example:5432/ladder")
    assert mask_url("redis://:hunter22@cache:6379/0") == "redis://:***@cache:6379/0"
    assert mask_url("rediss://default:hunter22@cache/1") == "rediss://default:***@cache/1"
    assert mask_url("smtp://ladder:hunter22@mail:587?from=a@b.example&starttls=1") == (
        "smtp://ladder:***@mail:587?from=a@b.example&starttls=1")
    for unchanged in ("sqlite:///ladder.db", "redis://cache:6379/0", "postgresql://u@h/d", "sqlite:///x"):
        assert mask_url(unchanged) == unchanged
    assert mask_url(None) == ""


def test_mask_text_masks_url_passwords_and_known_secrets():
    text = "cannot open 'postgresql://u:pw123@h/d' nor redis://:pw456@r:6379 with token abcdef"
    assert mask_text(text, ["abcdef"]) == "cannot open 'postgresql://u:***@h/d' nor redis://:***@r:6379 with token ***"


def test_a_log_record_with_the_admin_token_or_a_shop_secret_is_masked(app, caplog):
    """create_app installed the filter: every record, whatever logger and handler, is masked."""
    shop_secret = "shop-webhook-secret-9"
    redact.install(shops=[type("Shop", (), {"webhook_secret": shop_secret, "settings": {"access_token": "shpat_77x"}})()])
    log = logging.getLogger("loyalty_ladder.somewhere")
    with caplog.at_level(logging.INFO):
        log.info("token is %s and secret %s", ADMIN_TOKEN, shop_secret)
        log.warning("shopify said no to shpat_77x")
        try:
            raise RuntimeError(f"failed with Bearer {ADMIN_TOKEN}")
        except RuntimeError:
            log.exception("boom")
    assert ADMIN_TOKEN not in caplog.text and shop_secret not in caplog.text and "shpat_77x" not in caplog.text
    assert "token is *** and secret ***" in caplog.text and "Bearer ***" in caplog.text
    assert all(ADMIN_TOKEN not in r.getMessage() for r in caplog.records)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_briefly(args: list[str], env: dict[str, str], cwd: Path, ready: str, seconds: float = 3.0) -> str:
    """Run a long-running command until it printed ``ready`` (plus ``seconds``), then stop it; all it printed."""
    proc = subprocess.Popen([LADDER, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and ready not in "".join(out):
            time.sleep(0.05)
        time.sleep(seconds)  # let it work (and log) for a while
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
    return "".join(out)


@pytest.fixture
def secret_env(tmp_path, database_url, redis_url):
    """The environment of a command: a PostgreSQL and a Redis URL with passwords, an SMTP URL
    with one, an admin token."""
    db = make_url(database_url).set(password=DB_PASSWORD).render_as_string(hide_password=False)
    queue = redis_url.replace("://", f"://:{REDIS_PASSWORD}@", 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LADDER_")}
    env.update(LADDER_DATABASE_URL=db, LADDER_QUEUE_URL=queue, LADDER_ADMIN_TOKEN=TOKEN,
               LADDER_RULES=str(ROOT / "rules"),
               LADDER_SMTP_URL=f"smtp://ladder:{SMTP_PASSWORD}@127.0.0.1:1?from=loyalty@shop.example")
    assert DB_PASSWORD in db and REDIS_PASSWORD in queue
    return env


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
@pytest.mark.parametrize("command", ["worker", "serve"])
def test_serve_and_worker_never_print_a_password(backend, secret_env, tmp_path, command):
    args = ["worker"] if command == "worker" else ["serve", "--port", str(_free_port())]
    ready = "loyalty-ladder worker" if command == "worker" else "loyalty-ladder "
    printed = _run_briefly(args, secret_env, tmp_path, ready)
    assert "database postgresql+psycopg://" in printed, printed  # it said which database …
    for secret in (DB_PASSWORD, REDIS_PASSWORD, SMTP_PASSWORD, TOKEN):
        assert secret not in printed, (secret, printed)
    assert ":***@" in printed  # … with the password masked
    if command == "worker":
        assert "queue redis://:***@" in printed
