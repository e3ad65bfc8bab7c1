"""The catalogue's schema comes from Alembic, on SQLite and on the real PostgreSQL server.

PostgreSQL tests read ``KYSO_TEST_POSTGRES_URL`` (set by ``.ci/run``) and fail when it is
missing; each test works in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from kyso.archive.catalog import Catalog
from kyso.archive.models import Base

DATABASES = ["sqlite", "postgresql"]


def postgres_url() -> str:
    url = os.environ.get("KYSO_TEST_POSTGRES_URL")
    if not url:
        pytest.fail("KYSO_TEST_POSTGRES_URL is not set (run the tests through .ci/run)")
    return url


@contextmanager
def catalog_for(kind: str, tmp_path: Path, *, migrate: bool = True) -> Iterator[Catalog]:
    """A catalogue on an empty database of ``kind`` (sqlite file, or a fresh PG schema)."""
    if kind == "sqlite":
        catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
        try:
            if migrate:
                catalog.migrate()
            yield catalog
        finally:
            catalog.close()
        return
    url = postgres_url()
    schema = f"kyso_test_{uuid.uuid4().hex[:12]}"
    admin = Catalog(url).engine
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    catalog = Catalog(url, schema=schema)
    try:
        if migrate:
            catalog.migrate()
        yield catalog
    finally:
        catalog.close()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _head(catalog: Catalog) -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(catalog.alembic_config()).get_current_head()
    assert head is not None
    return head


@pytest.mark.parametrize("kind", DATABASES)
def test_upgrade_from_empty_creates_every_table(kind: str, tmp_path: Path) -> None:
    with catalog_for(kind, tmp_path, migrate=False) as catalog:
        assert catalog.revision() is None
        catalog.migrate()
        assert catalog.revision() == _head(catalog)
        catalog.migrate()  # idempotent
        tables = set(sa.inspect(catalog.engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        assert "alembic_version" in tables
        if kind == "sqlite":
            assert "documents_fts" in tables
        else:
            # the tables were created in the test's own schema, not in public
            schema = catalog.engine.connect().execute(sa.text("SELECT current_schema()")).scalar()
            assert schema is not None and schema.startswith("kyso_test_")
            indexes = {i["name"] for i in sa.inspect(catalog.engine).get_indexes("documents")}
            assert "ix_documents_subject_tsv" in indexes


@pytest.mark.parametrize("kind", DATABASES)
def test_the_migration_matches_the_models(kind: str, tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    def include(obj: object, name: str | None, type_: str, *_: object) -> bool:
        # search structures live only in the migration (FTS5 table, GIN expression index)
        # search structures live only in the migrations (FTS5 table, GIN expression index,
        # the PostgreSQL DESC NULLS LAST index of 0005)
        if (name or "").startswith(
            ("documents_fts", "ix_documents_subject_tsv", "ix_documents_issued_date_desc")
        ):
            return False
        # the service's tables (accounts, jobs, workflow, exchange) are compared with their
        # own models by their own modules' tests
        return type_ != "table" or name in Base.metadata.tables

    with catalog_for(kind, tmp_path) as catalog, catalog.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": include}
        )
        diff = compare_metadata(context, Base.metadata)
        assert diff == []


@pytest.mark.parametrize("kind", DATABASES)
def test_downgrade_to_base_and_up_again(kind: str, tmp_path: Path) -> None:
    from alembic import command

    with catalog_for(kind, tmp_path) as catalog:
        config = catalog.alembic_config()
        with catalog.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "base")
        assert catalog.revision() is None
        assert "documents" not in sa.inspect(catalog.engine).get_table_names()
        catalog.migrate()
        assert catalog.revision() == _head(catalog)
