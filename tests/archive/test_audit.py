"""The audit log: hash chain, RFC 3161 anchors from kyso's TSA, offline verification that
names the first broken link.  Tampering is done with raw SQL, as an intruder would."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from kyso.api.services import Services
from kyso.archive import audit
from kyso.archive.catalog import Catalog
from kyso.archive.metadata import DocumentMetadata
from kyso.archive.models import AuditEvent
from tests.archive.test_migrations import DATABASES, catalog_for


@pytest.fixture(params=DATABASES)
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    with catalog_for(request.param, tmp_path) as c:
        yield c


def _fill(catalog: Catalog, n: int = 3) -> None:
    for i in range(1, n + 1):
        doc = catalog.add_document(
            DocumentMetadata(
                organ_id="G06.01",
                code_number=i,
                code_notation="CV-BNV",
                issued_date=dt.date(2025, 2, i),
                type_name="Công văn",
                organ_name="Bộ Nội vụ",
                subject=f"Công văn số {i}",
            ),
            actor="vanthu",
        )
        catalog.add_version(doc, "draft", f"k{i}", hashlib.sha256(b"%d" % i).hexdigest(), i, "cv")


def _sql(catalog: Catalog, statement: str, **params: object) -> None:
    with catalog.engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def test_an_untouched_chain_verifies(catalog: Catalog, dev_services: Services) -> None:
    roots = [dev_services.pki.root_cert]
    empty = catalog.verify_audit(roots)
    assert empty.ok and empty.events == 0
    assert catalog.anchor_audit(dev_services.tsa) is None  # nothing to anchor yet
    _fill(catalog)
    assert catalog.anchor_audit(dev_services.tsa) == 6
    _fill(catalog, 1)
    assert catalog.anchor_audit(dev_services.tsa) == 8
    result = catalog.verify_audit(roots, require_anchor=True)
    assert result.ok, [p.message("en") for p in result.problems]
    assert (result.events, result.anchors, result.head_seq) == (8, 2, 8)
    assert result.last_anchor_time is not None
    with catalog.session() as s:
        events = list(s.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq)))
    assert events[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))


def test_require_anchor(catalog: Catalog, dev_services: Services) -> None:
    _fill(catalog, 1)
    result = catalog.verify_audit([dev_services.pki.root_cert], require_anchor=True)
    assert not result.ok
    assert result.first_broken is not None
    assert result.first_broken.code == "archive.audit.broken.no_anchor"


def test_an_altered_row_is_named(catalog: Catalog, dev_services: Services) -> None:
    _fill(catalog)
    catalog.anchor_audit(dev_services.tsa)
    _sql(catalog, "UPDATE audit_events SET details_json = :d WHERE seq = 3", d='{"kind":"sealed"}')
    result = catalog.verify_audit([dev_services.pki.root_cert])
    assert not result.ok
    broken = result.first_broken
    assert broken is not None and (broken.kind, broken.seq) == ("altered", 3)
    assert "3" in broken.message("vi") and "altered" in broken.message("en")


def test_a_consistently_rewritten_tail_is_caught_by_the_anchor(
    catalog: Catalog, dev_services: Services
) -> None:
    _fill(catalog)
    catalog.anchor_audit(dev_services.tsa)
    # the intruder edits event 4 and recomputes every hash after it
    with catalog.session() as s:
        events = list(s.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq)))
        prev = events[2].hash
        for e in events[3:]:
            if e.seq == 4:
                e.actor = "intruder"
            e.prev_hash = prev
            e.hash = audit.event_hash(
                seq=e.seq,
                at=e.at,
                actor=e.actor,
                action=e.action,
                subject=e.subject,
                details_json=e.details_json,
                prev_hash=prev,
            )
            prev = e.hash
    result = catalog.verify_audit([dev_services.pki.root_cert])
    assert [p.kind for p in result.problems] == ["anchor_mismatch"]
    assert result.first_broken is not None and result.first_broken.seq == 6


def test_a_deleted_row_is_found(catalog: Catalog, dev_services: Services) -> None:
    _fill(catalog)
    catalog.anchor_audit(dev_services.tsa)
    _sql(catalog, "DELETE FROM audit_events WHERE seq = 2")
    result = catalog.verify_audit([dev_services.pki.root_cert])
    broken = result.first_broken
    assert broken is not None and (broken.kind, broken.seq) == ("missing", 2)
    assert broken.params == {"next": 3}


def test_deleting_the_anchored_tail_is_found(catalog: Catalog, dev_services: Services) -> None:
    _fill(catalog)
    catalog.anchor_audit(dev_services.tsa)
    _sql(catalog, "DELETE FROM audit_events WHERE seq >= 5")
    result = catalog.verify_audit([dev_services.pki.root_cert])
    broken = result.first_broken
    assert broken is not None and (broken.kind, broken.seq) == ("missing", 6)
    assert broken.code == "archive.audit.broken.anchored_missing"


def test_a_tampered_anchor_token_is_found(catalog: Catalog, dev_services: Services) -> None:
    _fill(catalog)
    catalog.anchor_audit(dev_services.tsa)
    with catalog.engine.connect() as conn:
        token = bytes(conn.execute(sa.text("SELECT tsa_token FROM audit_anchors")).scalar_one())
    tampered = token[:-1] + bytes([token[-1] ^ 0x01])  # a bit of the signature value
    _sql(catalog, "UPDATE audit_anchors SET tsa_token = :t", t=tampered)
    result = catalog.verify_audit([dev_services.pki.root_cert])
    broken = result.first_broken
    assert broken is not None and (broken.kind, broken.seq) == ("anchor_token", 6)
    assert "signature" in broken.params["detail"]
    _sql(catalog, "UPDATE audit_anchors SET tsa_token = :t", t=b"\x30\x03garbage")
    assert catalog.verify_audit([dev_services.pki.root_cert]).first_broken is not None


def test_a_token_over_another_hash_is_found(catalog: Catalog, dev_services: Services) -> None:
    _fill(catalog)
    catalog.anchor_audit(dev_services.tsa)
    _sql(catalog, "UPDATE audit_anchors SET head_hash = :h", h="ab" * 32)
    kinds = {p.kind for p in catalog.verify_audit([dev_services.pki.root_cert]).problems}
    assert kinds == {"anchor_mismatch", "anchor_token"}


def test_an_untrusted_tsa_is_refused(catalog: Catalog, dev_services: Services) -> None:
    _fill(catalog, 1)
    catalog.anchor_audit(dev_services.tsa)
    result = catalog.verify_audit([])  # trust nothing
    broken = result.first_broken
    assert broken is not None and broken.kind == "anchor_token"
    assert "not trusted" in broken.params["detail"]


# -- the head, read once per transaction ----------------------------------------------------------


def _chain_ok(catalog: Catalog) -> list[AuditEvent]:
    with catalog.session() as s:
        events = list(s.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq)))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
    assert all(audit._row_hash(e) == e.hash for e in events)
    return events


def test_events_of_one_transaction_read_the_head_once(catalog: Catalog) -> None:
    _fill(catalog, 1)
    statements: list[str] = []

    def seen(_c: object, _cur: object, statement: str, *_: object) -> None:
        statements.append(statement)

    sa.event.listen(catalog.engine, "before_cursor_execute", seen)
    try:
        with catalog.session(write=True) as s:
            events = [audit.append(s, "a", "test.event", f"thing:{i}", {"i": i}) for i in range(3)]
    finally:
        sa.event.remove(catalog.engine, "before_cursor_execute", seen)
    head_reads = [q for q in statements if "FROM audit_events" in q]
    locks = [q for q in statements if "pg_advisory_xact_lock" in q]
    inserts = [q for q in statements if q.startswith("INSERT INTO audit_events")]
    assert len(head_reads) == 1 and len(inserts) == 3
    assert len(locks) == (1 if catalog.dialect == "postgresql" else 0)
    assert [e.seq for e in events] == [3, 4, 5]
    chain = _chain_ok(catalog)
    assert [e.hash for e in chain[2:]] == [e.hash for e in events]
    assert catalog.verify_audit([]).ok


def test_the_head_is_read_again_in_the_next_transaction(catalog: Catalog) -> None:
    """One Session over several transactions: another writer appends in between, and the
    session's next event chains from that writer's, not from its own last one."""
    with catalog._sessions() as mine:
        audit.append(mine, "a", "test.first", "x")
        mine.commit()
        with catalog.session(write=True) as other:
            audit.append(other, "b", "test.other", "y")
        mine.connection()  # a new transaction
        if catalog.dialect == "sqlite":
            mine.connection().exec_driver_sql("BEGIN IMMEDIATE")
        third = audit.append(mine, "a", "test.third", "z")
        mine.commit()
    assert third.seq == 3
    events = _chain_ok(catalog)
    assert [e.action for e in events] == ["test.first", "test.other", "test.third"]


def test_a_rolled_back_savepoint_is_not_chained_from(catalog: Catalog) -> None:
    with catalog.session(write=True) as s:
        audit.append(s, "a", "test.kept", "x")
        nested = s.begin_nested()
        audit.append(s, "a", "test.undone", "y")
        nested.rollback()
        last = audit.append(s, "a", "test.after", "z")
    assert last.seq == 2
    events = _chain_ok(catalog)
    assert [e.action for e in events] == ["test.kept", "test.after"]


def test_concurrent_transactions_never_fork_the_chain(catalog: Catalog) -> None:
    """Writers appending several events each, at the same moment: the first event's lock (the
    advisory lock on PostgreSQL, the write lock on SQLite) holds the others off until its
    transaction ends, so events chained from memory stay on the one chain."""
    import threading
    import time

    start = threading.Barrier(4, timeout=30)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            start.wait()
            with catalog.session(write=True) as s:
                for i in range(3):
                    audit.append(s, f"w{n}", "test.concurrent", f"writer:{n}", {"i": i})
                    time.sleep(0.02)  # the others are waiting now
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    events = _chain_ok(catalog)
    assert len(events) == 12
    # each transaction's events are consecutive: none slipped in between
    runs = [e.actor for e in events]
    assert all(runs[i] == runs[i - i % 3] for i in range(12)), runs
    assert catalog.verify_audit([]).ok
