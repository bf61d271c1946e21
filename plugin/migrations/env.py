"""Alembic environment for loyalty-ladder.

Programmatic use (the normal case): :func:`loyalty_ladder.store.upgrade` builds the Config in
code and passes an open connection in ``config.attributes["connection"]``; this file then runs
the migrations on that connection, inside the caller's transaction.

Command-line use (writing new migrations): ``alembic -c plugin/migrations/alembic.ini …``;
the database is ``sqlalchemy.url`` from that file if set, else the ``LADDER_*`` settings.
"""
from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from loyalty_ladder.store import make_engine, metadata

config = context.config
target_metadata = metadata

# Only the command line configures logging; an application calling upgrade() keeps its own.
if config.config_file_name is not None and "connection" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from loyalty_ladder.config import load_settings

    return load_settings().database_url


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode recreates tables for later migrations.
        render_as_batch=connection.dialect.name == "sqlite",
        # store.make_engine emits a real BEGIN on SQLite, so its DDL is transactional too.
        transactional_ddl=True,
        compare_type=True,
    )


def run_migrations_offline() -> None:
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_database_url())
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
