"""Alembic migrations of the archive catalogue (run through ``Catalog.migrate()``)."""
