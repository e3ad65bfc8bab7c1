"""Alembic environment of the archive catalogue.

Run programmatically: :meth:`kyso.archive.catalog.Catalog.migrate` builds the
:class:`alembic.config.Config` in code and hands its open connection over in
``config.attributes["connection"]``; no ``alembic.ini`` is needed.  For ad-hoc use with the
alembic CLI, ``sqlalchemy.url`` in the config is used instead.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from kyso.archive.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
