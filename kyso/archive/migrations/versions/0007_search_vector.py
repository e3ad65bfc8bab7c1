"""PostgreSQL: a narrow search table with a stored tsvector (subject search at 1 M rows).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22

``documents_search`` (PostgreSQL only; SQLite keeps its FTS5 table ``documents_fts``) holds,
for every document, what a subject search needs and nothing more: ``id``, ``issued_date``,
``agency_id`` and ``subject_tsv`` = ``to_tsvector('simple', subject_folded)``, stored once
instead of being recomputed.  A trigger on ``documents`` keeps it in step (insert, update of
the three source columns, delete), whoever writes the rows (the catalogue, a bulk COPY).

Two indexes serve ``Catalog.search``:

* ``ix_documents_search_newest``: ``(issued_date DESC NULLS LAST, id DESC) INCLUDE
  (agency_id, subject_tsv)``, the order every search returns, with the columns a word query
  filters on: a query matching many documents walks it newest first, index only, and stops
  after the page and the capped count (measured with ``bench/archive.py`` at 1 M rows);
* ``ix_documents_search_agency_newest``: the same per agency, ``(agency_id, issued_date DESC
  NULLS LAST, id DESC) INCLUDE (subject_tsv)``, for a search within one agency's archive
  (what the API and the web pages ask);
* ``ix_documents_search_subject_tsv``: GIN over ``subject_tsv``, for words too rare to be
  found quickly that way.

The GIN expression index of 0001 (``ix_documents_subject_tsv``) is left in place.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _schema() -> str:
    """The current schema, quoted (the trigger function pins its search_path to it)."""
    bind = op.get_bind()
    name = bind.execute(sa.text("SELECT current_schema()")).scalar_one()
    return str(bind.dialect.identifier_preparer.quote(str(name)))


_SYNC_FUNCTION = """\
CREATE FUNCTION documents_search_sync() RETURNS trigger LANGUAGE plpgsql
SET search_path = @SCHEMA@, pg_catalog AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    DELETE FROM documents_search WHERE id = OLD.id;
    RETURN OLD;
  END IF;
  IF TG_OP = 'UPDATE' AND NEW.id <> OLD.id THEN
    DELETE FROM documents_search WHERE id = OLD.id;
  END IF;
  INSERT INTO documents_search (id, issued_date, agency_id, subject_tsv)
  VALUES (NEW.id, NEW.issued_date, NEW.agency_id,
          to_tsvector('simple'::regconfig, NEW.subject_folded))
  ON CONFLICT (id) DO UPDATE SET issued_date = EXCLUDED.issued_date,
    agency_id = EXCLUDED.agency_id, subject_tsv = EXCLUDED.subject_tsv;
  RETURN NEW;
END
$$"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    schema = _schema()
    op.execute(
        "CREATE TABLE documents_search ("
        " id integer PRIMARY KEY,"
        " issued_date date,"
        " agency_id varchar(35),"
        " subject_tsv tsvector NOT NULL)"
    )
    op.execute(
        "INSERT INTO documents_search (id, issued_date, agency_id, subject_tsv) "
        "SELECT id, issued_date, agency_id, to_tsvector('simple'::regconfig, subject_folded) "
        "FROM documents"
    )
    op.execute(
        "CREATE INDEX ix_documents_search_newest ON documents_search "
        "(issued_date DESC NULLS LAST, id DESC) INCLUDE (agency_id, subject_tsv)"
    )
    op.execute(
        "CREATE INDEX ix_documents_search_agency_newest ON documents_search "
        "(agency_id, issued_date DESC NULLS LAST, id DESC) INCLUDE (subject_tsv)"
    )
    op.execute(
        "CREATE INDEX ix_documents_search_subject_tsv ON documents_search USING gin (subject_tsv)"
    )
    # the schema is quoted by the dialect's identifier preparer
    op.execute(_SYNC_FUNCTION.replace("@SCHEMA@", schema))
    op.execute(
        "CREATE TRIGGER documents_search_sync "
        "AFTER INSERT OR DELETE OR UPDATE OF id, issued_date, agency_id, subject_folded "
        "ON documents FOR EACH ROW EXECUTE FUNCTION documents_search_sync()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER documents_search_sync ON documents")
    op.execute("DROP FUNCTION documents_search_sync()")
    op.execute("DROP TABLE documents_search")
