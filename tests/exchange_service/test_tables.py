"""Migration 0006 creates exactly the tables kyso.api.exchange declares (SQLite, PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from kyso.api import exchange
from kyso.archive.models import Base
from tests.api.service_helpers import catalog_on


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_migration_matches_the_tables(kind: str, tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    combined = sa.MetaData(naming_convention=exchange.metadata.naming_convention)
    for table in (*Base.metadata.tables.values(), *exchange.metadata.tables.values()):
        table.to_metadata(combined)
    mine = set(exchange.metadata.tables)

    def include(obj: object, name: str | None, type_: str, *_: object) -> bool:
        table = getattr(obj, "table", obj)
        table_name = name if type_ == "table" else getattr(table, "name", None)
        return table_name in mine

    with catalog_on(kind, tmp_path) as catalog:
        with catalog.engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": include}
            )
            assert compare_metadata(context, combined) == []
        assert mine <= set(sa.inspect(catalog.engine).get_table_names())
        from alembic import command

        config = catalog.alembic_config()
        with catalog.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0005")
        assert not mine & set(sa.inspect(catalog.engine).get_table_names())
        catalog.migrate()
        assert mine <= set(sa.inspect(catalog.engine).get_table_names())
