"""The document workflow as a library (kyso.api.workflow), with Principals of two agencies:
the order draft → person_signed → registered → sealed, roles, tenancy, the register's numbers
(per agency, per year, unique even under concurrent clerks; SQLite and PostgreSQL), two-phase
signing, and the migration of the workflow's tables."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.serialization import Encoding

from kyso.api import workflow
from kyso.api.principal import Principal
from kyso.api.problems import Problem
from kyso.api.services import Services
from kyso.archive.catalog import Catalog
from kyso.archive.metadata import DocumentMetadata
from kyso.archive.models import Base, Document
from kyso.certs import identity
from kyso.signer.register import read_register_fields, today_vn
from kyso.signer.verify import VerifyPolicy, verify
from tests.api.service_helpers import PIN, make_agency_with_users, make_user
from tests.conftest import make_settings
from tests.signer.helpers import make_pdf

A, B = "000.00.00.H41", "000.00.00.H42"


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Services:
    services = Services(
        make_settings(
            tmp_path_factory.mktemp("workflow"),
            ca_key_type="ec-p256",
            archive_verify_offline=True,
        )
    )
    services.ensure_pki()
    return services


@pytest.fixture(scope="module")
def users(services: Services) -> dict[str, dict[str, Principal]]:
    """Agencies A and B, one user per role each; A's official has a key, A has a seal key."""
    a = make_agency_with_users(services, A, seal_key=True, personal_key=True)
    b = make_agency_with_users(services, B, seal_key=True, personal_key=True)
    return {A: {r: p for r, (p, _) in a.items()}, B: {r: p for r, (p, _) in b.items()}}


@pytest.fixture(scope="module")
def pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pdf") / "du-thao.pdf"
    path.write_bytes(make_pdf(1))
    return path


def key_of(services: Services, principal: Principal) -> str:
    [ref] = services.accounts.keys_of(principal.user_id)
    return ref


def fresh_pdf(tmp_path: Path, n: int = 1) -> Path:
    """A draft with bytes of its own (the archive de-duplicates by content)."""
    path = tmp_path / f"draft-{uuid.uuid4().hex[:8]}.pdf"
    data = make_pdf(n)
    path.write_bytes(data + f"\n% {uuid.uuid4().hex}\n".encode())
    return path


META = {
    "type": "Quyết định",
    "subject": "Quyết định về việc phê duyệt kế hoạch chuyển đổi số năm 2026",
    "symbol": "QĐ-UBND",
    "place": "Hà Nội",
    "signer": "Nguyễn Văn An",
    "position": "Chủ tịch",
}


def upload(services: Services, who: Principal, tmp_path: Path, **extra: Any) -> int:
    return workflow.upload(services, who, fresh_pdf(tmp_path), {**META, **extra}).document_id


def signed(services: Services, users: dict[str, dict[str, Principal]], tmp_path: Path) -> int:
    official = users[A]["official"]
    doc = upload(services, official, tmp_path)
    workflow.sign_as_person(
        services, official, doc, key=key_of(services, official), pin=PIN, level="B-B"
    )
    return doc


def status(exc: pytest.ExceptionInfo[Problem]) -> tuple[int, str]:
    return exc.value.status, exc.value.slug


# -- the whole flow -----------------------------------------------------------------------------


def test_upload_sign_register_seal_verify_download(
    services: Services, users: dict[str, dict[str, Principal]], tmp_path: Path
) -> None:
    official, clerk = users[A]["official"], users[A]["clerk"]
    draft = fresh_pdf(tmp_path)
    first = workflow.upload(services, official, draft, META)
    assert first.created and first.kind == "draft" and first.version_seq == 1
    doc = first.document_id

    signed_ = workflow.sign_as_person(
        services, official, doc, key=key_of(services, official), pin=PIN
    )
    assert signed_.kind == "person_signed" and signed_.version_seq == 2
    assert signed_.indication is not None

    registered = workflow.register(services, clerk, doc)
    assert registered.kind == "registered"
    record = workflow.get_document(services, clerk, doc)
    assert record.code_notation == "QĐ-UBND"
    assert record.code_number is not None and int(record.code_number) >= 1
    assert record.issued_date == today_vn()
    assert record.document_id == (f"{A},{today_vn():%Y/%m/%d},{record.code_number}/QĐ-UBND")

    sealed = workflow.seal(services, clerk, doc)
    assert sealed.kind == "sealed" and sealed.version_seq == 4

    report = workflow.verify_document(services, users[A]["verifier"], doc)
    assert report["indication"] == "TOTAL_PASSED", report
    kinds = [s["signer"]["kind"] for s in report["signatures"] if s.get("kind") == "signature"]
    assert kinds == ["person", "organisation"]

    target = tmp_path / "out.pdf"
    version = workflow.download(services, users[A]["archivist"], doc, target)
    assert version.seq == 4
    assert hashlib.sha256(target.read_bytes()).hexdigest() == sealed.sha256
    number_line, date_line = read_register_fields(target)
    assert number_line == f"Số: {record.code_number}/QĐ-UBND"
    assert date_line is not None and date_line.startswith("Hà Nội, ngày ")

    # the same report, independently of the workflow
    again = verify(target, VerifyPolicy.from_services(services, offline=True)).to_dict()
    assert again["indication"] == "TOTAL_PASSED"

    # found by number and by a word with or without accents, only in its own agency
    hits = services.catalog.search(number=record.code_number, symbol="QĐ-UBND", tenant=A)
    assert doc in [d.id for d in hits.items]
    for words in ("chuyển đổi", "chuyen doi"):
        assert doc in [d.id for d in services.catalog.search(words, tenant=A).items]
        assert doc not in [d.id for d in services.catalog.search(words, tenant=B).items]

    extended = workflow.extend(services, users[A]["archivist"], doc, level="B-LTA")
    assert extended.kind == "ltv_extended" and extended.version_seq == 5

    # every step is in the audit log with the actor who did it
    actions = {(e["actor"], e["action"]) for e in _history(services, doc)}
    assert (official.actor, "document.add") in actions
    assert (official.actor, "version.add") in actions
    assert (clerk.actor, "document.register") in actions
    assert (clerk.actor, "version.add") in actions
    assert any(a.actor == users[A]["archivist"].actor for a in services.catalog.access_history(doc))


def _history(services: Services, doc: int) -> list[dict[str, str]]:
    from kyso.archive.models import AuditEvent

    subject = f"document:{doc}"
    with services.catalog.session() as s:
        rows = s.scalars(
            sa.select(AuditEvent).where(
                sa.or_(AuditEvent.subject == subject, AuditEvent.subject.like(subject + "/%"))
            )
        )
        return [{"actor": e.actor, "action": e.action} for e in rows]


# -- order and roles ----------------------------------------------------------------------------


def test_the_order_is_enforced(
    services: Services, users: dict[str, dict[str, Principal]], tmp_path: Path
) -> None:
    official, clerk = users[A]["official"], users[A]["clerk"]
    doc = upload(services, official, tmp_path)
    with pytest.raises(Problem) as exc:
        workflow.register(services, clerk, doc)
    assert status(exc) == (409, "conflict")
    with pytest.raises(Problem) as exc:
        workflow.seal(services, clerk, doc)
    assert status(exc) == (409, "conflict")
    workflow.sign_as_person(
        services, official, doc, key=key_of(services, official), pin=PIN, level="B-B"
    )
    with pytest.raises(Problem) as exc:  # signed once already
        workflow.sign_as_person(
            services, official, doc, key=key_of(services, official), pin=PIN, level="B-B"
        )
    assert status(exc) == (409, "conflict")
    with pytest.raises(Problem) as exc:  # Art. 32.2d: number and date before the seal
        workflow.seal(services, clerk, doc)
    assert status(exc) == (409, "conflict")


def test_roles(services: Services, users: dict[str, dict[str, Principal]], tmp_path: Path) -> None:
    a = users[A]
    doc = upload(services, a["official"], tmp_path)
    for role in ("clerk", "verifier", "archivist", "admin"):
        with pytest.raises(Problem) as exc:
            workflow.sign_as_person(services, a[role], doc, key="x", pin=PIN)
        assert status(exc) == (403, "forbidden"), role
    for role in ("verifier", "archivist", "admin"):
        with pytest.raises(Problem) as exc:
            workflow.upload(services, a[role], fresh_pdf(tmp_path), META)
        assert status(exc) == (403, "forbidden"), role
    for role in ("official", "verifier", "archivist", "admin"):
        for step in (workflow.register, workflow.seal):
            with pytest.raises(Problem) as exc:
                step(services, a[role], doc)
            assert status(exc) == (403, "forbidden"), (role, step)


def test_a_wrong_pin_signs_nothing(
    services: Services, users: dict[str, dict[str, Principal]], tmp_path: Path
) -> None:
    official = users[A]["official"]
    doc = upload(services, official, tmp_path)
    with pytest.raises(Problem) as exc:
        workflow.sign_as_person(
            services, official, doc, key=key_of(services, official), pin="000000"
        )
    assert exc.value.status == 403
    assert [v.kind for v in workflow.get_document(services, official, doc).versions] == ["draft"]


# -- tenancy ---------------------------------------------------------------------------------------


def test_another_agency_sees_nothing(
    services: Services, users: dict[str, dict[str, Principal]], tmp_path: Path
) -> None:
    doc = signed(services, users, tmp_path)
    b = users[B]
    attempts = [
        lambda: workflow.get_document(services, b["archivist"], doc),
        lambda: workflow.download(services, b["archivist"], doc, tmp_path / "x.pdf"),
        lambda: workflow.verify_document(services, b["verifier"], doc),
        lambda: workflow.register(services, b["clerk"], doc),
        lambda: workflow.seal(services, b["clerk"], doc),
        lambda: workflow.extend(services, b["archivist"], doc),
        lambda: workflow.sign_as_person(
            services, b["official"], doc, key=key_of(services, b["official"]), pin=PIN
        ),
        lambda: workflow.prepare_external(
            services, b["official"], doc, certificate=b"-----BEGIN CERTIFICATE-----"
        ),
    ]
    for attempt in attempts:
        with pytest.raises(Problem) as exc:
            attempt()
        assert status(exc) == (404, "not-found")
    unknown = 10_000_000
    with pytest.raises(Problem) as exc:
        workflow.get_document(services, b["archivist"], unknown)
    assert status(exc) == (404, "not-found")
    assert not (tmp_path / "x.pdf").exists()


def test_the_same_bytes_in_another_agency_are_a_record_of_its_own(
    services: Services, users: dict[str, dict[str, Principal]], tmp_path: Path
) -> None:
    draft = fresh_pdf(tmp_path)
    mine = workflow.upload(services, users[A]["official"], draft, META)
    again = workflow.upload(services, users[A]["official"], draft, META)
    assert again.document_id == mine.document_id and not again.created
    # agency B archiving the file it received from A gets its own record, not A's
    theirs = workflow.upload(services, users[B]["official"], draft, META)
    assert theirs.created and theirs.document_id != mine.document_id
    assert theirs.sha256 == mine.sha256
    with services.catalog.session() as s:
        owners = dict(
            s.execute(
                sa.select(Document.id, Document.agency_id).where(
                    Document.id.in_([mine.document_id, theirs.document_id])
                )
            ).all()
        )
    assert owners == {mine.document_id: A, theirs.document_id: B}
    # and each agency's repeat finds its own
    repeat = workflow.upload(services, users[B]["official"], draft, META)
    assert repeat.document_id == theirs.document_id and not repeat.created
    with pytest.raises(Problem) as exc:  # A still cannot see B's record
        workflow.get_document(services, users[A]["official"], theirs.document_id)
    assert status(exc) == (404, "not-found")


def test_metadata_errors_and_a_non_pdf(
    services: Services, users: dict[str, dict[str, Principal]], tmp_path: Path
) -> None:
    from kyso.archive.metadata import MetadataError
    from kyso.signer.errors import BadInputError

    official = users[A]["official"]
    with pytest.raises(MetadataError):
        workflow.upload(services, official, fresh_pdf(tmp_path), {"type": "Quyết định"})
    with pytest.raises(MetadataError):
        workflow.upload(services, official, fresh_pdf(tmp_path), {**META, "nonsense": "x"})
    with pytest.raises(MetadataError):  # numbers come from the register
        workflow.upload(services, official, fresh_pdf(tmp_path), {**META, "number": "5"})
    with pytest.raises(MetadataError):
        workflow.upload(services, official, fresh_pdf(tmp_path), {**META, "symbol": "qđ ubnd"})
    text = tmp_path / "note.pdf"
    text.write_text("không phải PDF")
    with pytest.raises(BadInputError):
        workflow.upload(services, official, text, META)


# -- the register -----------------------------------------------------------------------------


def test_numbers_follow_each_other_per_agency_and_restart_each_year(
    services: Services, users: dict[str, dict[str, Principal]], tmp_path: Path
) -> None:
    clerk = users[A]["clerk"]
    last_year = dt.date(today_vn().year - 1, 12, 30)
    first = signed(services, users, tmp_path)
    workflow.register(services, clerk, first, date=last_year)
    second = signed(services, users, tmp_path)
    workflow.register(services, clerk, second, date=last_year.isoformat())
    numbers = [workflow.get_document(services, clerk, d).code_number for d in (first, second)]
    assert numbers == ["01", "02"]  # nothing else was numbered in that year

    # a clerk may give a free number; one already given is refused, and the counter moves on
    third = signed(services, users, tmp_path)
    workflow.register(services, clerk, third, number=7, date=last_year)
    fourth = signed(services, users, tmp_path)
    with pytest.raises(Problem) as exc:
        workflow.register(services, clerk, fourth, number=2, date=last_year)
    assert status(exc) == (409, "conflict")
    workflow.register(services, clerk, fourth, date=last_year)
    assert workflow.get_document(services, clerk, fourth).code_number == "08"

    # the symbol may be given at the clerk's step instead of at upload
    fifth_official = users[A]["official"]
    fifth = workflow.upload(
        services, fifth_official, fresh_pdf(tmp_path), {**META, "symbol": None}
    ).document_id
    workflow.sign_as_person(
        services, fifth_official, fifth, key=key_of(services, fifth_official), pin=PIN, level="B-B"
    )
    from kyso.archive.metadata import MetadataError

    with pytest.raises(MetadataError):
        workflow.register(services, clerk, fifth, date=last_year)
    workflow.register(services, clerk, fifth, date=last_year, symbol="CV-UBND")
    record = workflow.get_document(services, clerk, fifth)
    assert (record.code_number, record.code_notation) == ("09", "CV-UBND")


def test_a_failed_registration_gives_its_number_back(
    services: Services,
    users: dict[str, dict[str, Principal]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clerk = users[B]["clerk"]
    official = users[B]["official"]
    two_years_ago = dt.date(today_vn().year - 2, 6, 1)
    doc = workflow.upload(services, official, fresh_pdf(tmp_path), META).document_id
    workflow.sign_as_person(
        services, official, doc, key=key_of(services, official), pin=PIN, level="B-B"
    )

    def broken(*args: Any, **kw: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(services.archive, "put", broken)
    with pytest.raises(OSError):
        workflow.register(services, clerk, doc, date=two_years_ago)
    monkeypatch.undo()
    assert workflow.register_plan(services, doc) == {
        "number": None,
        "symbol": "QĐ-UBND",
        "place": "Hà Nội",
        "issued_date": None,
        "state": "planned",
    }
    workflow.register(services, clerk, doc, date=two_years_ago)
    assert workflow.get_document(services, clerk, doc).code_number == "01"


# -- two-phase signing -----------------------------------------------------------------------------


def test_two_phase_signing_with_the_officials_token(
    services: Services, users: dict[str, dict[str, Principal]], tmp_path: Path
) -> None:
    official, clerk = users[A]["official"], users[A]["clerk"]
    token = services.pki.issue(
        kind="person",
        subject=identity.person_subject(
            "Trần Thị Bình", ids=["CCCD:001190000123"], title="Phó Chủ tịch"
        ),
        label=f"usb-token-{uuid.uuid4().hex[:6]}",
        key_type="ec-p256",
    )
    key = services.keys.resolve(token.key_uri)
    chain = b"".join(c.public_bytes(Encoding.PEM) for c in (key.certificate, *key.chain))
    doc = upload(services, official, tmp_path)
    prepared = workflow.prepare_external(services, official, doc, certificate=chain, level="B-T")
    body = prepared.as_dict()
    assert set(body) >= {"handle", "signed_attributes", "digest", "expires_at"}
    signature = key.sign(base64.b64decode(body["signed_attributes"]))

    # only the same user, on the same document, can complete it
    other = make_user(services, A, f"official2-{uuid.uuid4().hex[:4]}", ["official"])[0]
    for who, target in ((other, doc), (users[B]["official"], doc)):
        with pytest.raises(Problem) as exc:
            workflow.complete_external(
                services, who, target, handle=prepared.handle, signature=signature
            )
        assert status(exc) == (404, "not-found")
    with pytest.raises(Problem) as exc:
        workflow.complete_external(services, official, doc, handle="x" * 32, signature=signature)
    assert status(exc) == (404, "not-found")

    result = workflow.complete_external(
        services, official, doc, handle=prepared.handle, signature=signature
    )
    assert result.kind == "person_signed"
    # the number and date fields went in before the token's signature: the clerk can fill them
    workflow.register(services, clerk, doc)
    workflow.seal(services, clerk, doc)
    assert workflow.verify_document(services, clerk, doc)["indication"] == "TOTAL_PASSED"
    with pytest.raises(Problem) as exc:  # the handle is gone
        workflow.complete_external(
            services, official, doc, handle=prepared.handle, signature=signature
        )
    assert status(exc) == (404, "not-found")

    # a preparation is void once the document moved on (signed meanwhile with another key)
    moved = upload(services, official, tmp_path)
    stale = workflow.prepare_external(services, official, moved, certificate=chain, level="B-B")
    workflow.sign_as_person(
        services, official, moved, key=key_of(services, official), pin=PIN, level="B-B"
    )
    value = key.sign(stale.signed_attributes)
    with pytest.raises(Problem) as exc:
        workflow.complete_external(services, official, moved, handle=stale.handle, signature=value)
    assert status(exc) == (409, "conflict")
    with pytest.raises(Problem) as exc:
        workflow.complete_external(services, official, moved, handle=stale.handle, signature=value)
    assert status(exc) == (404, "not-found")
    assert not list(services.pending_dir().glob(f"{stale.handle}.*"))


# -- numbers under concurrency, SQLite and PostgreSQL -----------------------------------------


def postgres_url() -> str:
    import os

    url = os.environ.get("KYSO_TEST_POSTGRES_URL")
    if not url:
        pytest.fail("KYSO_TEST_POSTGRES_URL is not set (run the tests through .ci/run)")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    if request.param == "sqlite":
        catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
        catalog.migrate()
        yield catalog
        catalog.close()
        return
    url = postgres_url()
    schema = f"kyso_test_{uuid.uuid4().hex[:12]}"
    admin = Catalog(url).engine
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    catalog = Catalog(url, schema=schema)
    try:
        catalog.migrate()
        yield catalog
    finally:
        catalog.close()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_concurrent_clerks_never_share_a_number(catalog: Catalog) -> None:
    docs = [
        catalog.add_document(
            DocumentMetadata(
                organ_id=A,
                code_number=None,
                code_notation=None,
                issued_date=None,
                type_name="Công văn",
                organ_name="UBND",
                subject=f"Văn bản {n}",
            )
        )
        for n in range(24)
    ]
    given: dict[int, int] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def clerk(mine: list[int]) -> None:
        try:
            start.wait()
            for doc in mine:
                with catalog.session() as s:
                    given[doc] = workflow._reserve(
                        s,
                        agency=A,
                        document_id=doc,
                        number=None,
                        symbol="CV-UBND",
                        issued=dt.date(2026, 3, 1),
                        place=None,
                        actor="test",
                    )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=clerk, args=(docs[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(given.values()) == list(range(1, 25))
    # clerks giving the same number by hand at the same moment: one gets it, the others a 409
    racers = [
        catalog.add_document(
            DocumentMetadata(
                organ_id=A,
                code_number=None,
                code_notation=None,
                issued_date=None,
                type_name="Công văn",
                organ_name="UBND",
                subject=f"Văn bản gấp {n}",
            )
        )
        for n in range(6)
    ]
    outcomes: list[int | str] = []
    gate = threading.Barrier(len(racers))

    def by_hand(doc: int) -> None:
        gate.wait()
        try:
            outcomes.append(
                workflow.reserve_number(
                    catalog,
                    agency=A,
                    document_id=doc,
                    number=500,
                    symbol="CV-UBND",
                    issued=dt.date(2027, 3, 1),
                    place=None,
                    actor="test",
                )
            )
        except Problem as exc:
            outcomes.append(f"{exc.status} {exc.slug}")

    threads = [threading.Thread(target=by_hand, args=(d,)) for d in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(500) == 1
    assert outcomes.count("409 conflict") == len(racers) - 1

    # another agency and another year start again at 01
    extra = catalog.add_document(
        DocumentMetadata(
            organ_id=B,
            code_number=None,
            code_notation=None,
            issued_date=None,
            type_name="Công văn",
            organ_name="UBND",
            subject="Văn bản của B",
        )
    )
    with catalog.session() as s:
        assert (
            workflow._reserve(
                s,
                agency=B,
                document_id=extra,
                number=None,
                symbol="CV-UBND",
                issued=dt.date(2025, 3, 1),
                place=None,
                actor="test",
            )
            == 1
        )
    # the database itself refuses a number twice
    with pytest.raises(sa.exc.IntegrityError), catalog.session() as s:
        s.execute(
            workflow.register_numbers.insert().values(
                agency_id=A,
                year=2026,
                number=1,
                document_id=extra,
                symbol="X-Y",
                issued_date=dt.date(2026, 1, 1),
                state="issued",
                created_at=dt.datetime.now(dt.UTC),
                created_by="test",
            )
        )


def test_the_migration_matches_the_tables(catalog: Catalog) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    combined = sa.MetaData(naming_convention=workflow.metadata.naming_convention)
    for table in (*Base.metadata.tables.values(), *workflow.metadata.tables.values()):
        table.to_metadata(combined)
    mine = set(workflow.metadata.tables)

    def include(obj: object, name: str | None, type_: str, *_: object) -> bool:
        table = getattr(obj, "table", obj)
        table_name = name if type_ == "table" else getattr(table, "name", None)
        return table_name in mine

    with catalog.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": include}
        )
        assert compare_metadata(context, combined) == []
    assert mine <= set(sa.inspect(catalog.engine).get_table_names())
    assert Document.__tablename__ not in mine
