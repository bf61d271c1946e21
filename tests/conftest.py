"""Shared fixtures: settings, app, client, service; hypothesis profiles; service gating.

PostgreSQL and Redis tests run when ``LADDER_TEST_POSTGRES_URL`` / ``LADDER_TEST_REDIS_URL``
are set. With ``LADDER_REQUIRE_SERVICES=1`` (set by .ci/run) a missing variable or an
unreachable server fails those tests instead of skipping them.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "test-admin-token"

settings.register_profile("dev", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
# CI: fixed example counts and derandomised, so a CI run takes the same time every time.
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def _require(var: str) -> str:
    url = os.environ.get(var)
    if not url:
        if os.environ.get("LADDER_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{var} is not set but LADDER_REQUIRE_SERVICES=1")
        pytest.skip(f"{var} not set")
    return url


@pytest.fixture
def postgres_url() -> str:
    return _require("LADDER_TEST_POSTGRES_URL")


@pytest.fixture
def redis_url() -> str:
    return _require("LADDER_TEST_REDIS_URL")


def _unreachable(what: str, exc: Exception) -> None:
    if os.environ.get("LADDER_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is not reachable: {exc}")
    pytest.skip(f"{what} not reachable: {exc}")


@pytest.fixture
def pg_url(postgres_url):
    """A fresh, empty schema in the PostgreSQL test database, first on the search path (tables,
    alembic_version and current_schema() all live there), dropped afterwards."""
    import uuid

    import sqlalchemy as sa

    schema = f"ladder_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        _unreachable(f"PostgreSQL at {postgres_url}", exc)
    try:
        yield sa.make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def pg_engine(pg_url):
    """A migrated engine on a throwaway PostgreSQL schema."""
    from loyalty_ladder import store

    engine = store.make_engine(pg_url)
    store.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path):
    """A migrated engine on a fresh SQLite file (in a directory the store must create)."""
    from loyalty_ladder import store

    engine = store.make_engine(f"sqlite:///{tmp_path / 'db' / 'ladder.db'}")
    store.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request):
    """The same migrated store on SQLite and on PostgreSQL."""
    return request.getfixturevalue("sqlite_engine" if request.param == "sqlite" else "pg_engine")


@pytest.fixture
def backend(request):
    """The database the app runs on: "sqlite" unless a test module parametrizes it."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def database_url(backend, tmp_path, request):
    """A fresh, empty database of the requested backend (PostgreSQL: a throwaway database)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'ladder.db'}"
        return
    import uuid

    import sqlalchemy as sa

    base = request.getfixturevalue("postgres_url")
    name = f"ladder_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        _unreachable(f"PostgreSQL at {base}", exc)
    url = sa.engine.make_url(base).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def ladder_settings(tmp_path, monkeypatch, database_url):
    """Settings on a fresh database, the default programme, one generic shop."""
    from loyalty_ladder.config import load_settings

    monkeypatch.chdir(tmp_path)  # no ./rules or ./config here: package defaults apply
    for name in list(os.environ):
        if name.startswith("LADDER_") and not name.startswith("LADDER_TEST_") and name != "LADDER_REQUIRE_SERVICES":
            monkeypatch.delenv(name)
    return load_settings(overrides={
        "database_url": database_url,
        "rules": str(ROOT / "rules"),
        "admin_token": ADMIN_TOKEN,
        "queue_url": f"sqlite:///{tmp_path / 'queue.db'}",
    })


@pytest.fixture
def app(ladder_settings):
    """The real app; events are processed synchronously (Huey immediate mode)."""
    from loyalty_ladder.app import create_app

    application = create_app(ladder_settings, immediate_queue=True)
    application.testing = True
    yield application
    application.extensions["loyalty_ladder"].service.db.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth():
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def service(app):
    from loyalty_ladder.app import EXTENSION

    return app.extensions[EXTENSION].service


def install_adapters(monkeypatch, *extra: tuple[str, str], only: bool = False):
    """Make the adapter registry see entry points ``(platform, "module:Class")`` besides the
    installed ones (or, with ``only``, instead of them), as if a distribution declared them.
    A generator for a fixture: ``yield from install_adapters(...)`` clears the cache around it."""
    from importlib.metadata import EntryPoint, entry_points

    from loyalty_ladder.adapters import registry

    installed = [] if only else list(entry_points(group=registry.GROUP))
    eps = [*installed, *(EntryPoint(name=name, value=value, group=registry.GROUP) for name, value in extra)]
    monkeypatch.setattr(registry, "_entry_points", lambda: eps)
    registry.clear_cache()
    yield
    registry.clear_cache()


def app_with_shops(ladder_settings, shops):
    """The real app (immediate queue, testing mode) on a service with these shops; a generator
    for a fixture: ``yield from app_with_shops(ladder_settings, SHOPS)``."""
    from loyalty_ladder.app import create_app
    from loyalty_ladder.service import LadderService

    service = LadderService(ladder_settings, shops=shops)
    application = create_app(ladder_settings, immediate_queue=True, service=service)
    application.testing = True
    yield application
    service.db.dispose()


def due_unless_expired(award, now=None) -> str:
    """The status a code not delivered yet has: ``expired`` once its validity (``expires_at``)
    passed — journeys of fixed dates earlier in the year have codes that expired by now — else
    ``due`` (fold semantics 4)."""
    from datetime import UTC, datetime

    expires = (award.get("params") or {}).get("expires_at")
    when = now or datetime.now(UTC)
    if expires and datetime.fromisoformat(expires) <= when:
        return "expired"
    return "due"
