"""The catalogue: Appendix VI validation, duplicate warnings, version chain, search, access log.

Every catalogue test runs on SQLite and on the PostgreSQL server of this machine.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from kyso.archive import catalog as catalog_module
from kyso.archive.catalog import Catalog, CatalogError, NotFoundError, VersionOrderError
from kyso.archive.metadata import (
    CaseFileMetadata,
    DocumentMetadata,
    MetadataError,
    Recipient,
    agency_code_form,
    fold,
    parse_agency_code,
)
from kyso.archive.models import AuditEvent
from kyso.i18n import catalogue
from tests.archive.test_migrations import DATABASES, catalog_for


@pytest.fixture(params=DATABASES)
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    with catalog_for(request.param, tmp_path) as c:
        yield c


def meta(**overrides: Any) -> DocumentMetadata:
    values: dict[str, Any] = {
        "organ_id": "000.00.31.H37",
        "code_number": 15,
        "code_notation": "QĐ-UBND",
        "issued_date": dt.date(2025, 3, 5),
        "type_name": "Quyết định",
        "organ_name": "Ủy ban nhân dân quận Long Biên",
        "subject": "Quyết định về việc phê duyệt kế hoạch chuyển đổi số năm 2025",
        "signer_position": "Chủ tịch",
        "signer_full_name": "Nguyễn Văn An",
        "to": [Recipient("Sở Nội vụ", "H37.02")],
        "page_amount": 3,
    }
    values.update(overrides)
    return DocumentMetadata(**values)


def digest(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


# -- metadata validation (no database) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "form"),
    [
        ("000.00.00.G22", "legacy"),
        ("000.00.31.H37", "legacy"),
        ("G06.01", "dotted"),
        ("H37.02.02", "dotted"),
        ("G22", "dotted"),
        ("A" * 3 + ".01" * 10, "dotted"),
    ],
)
def test_both_agency_code_forms_are_accepted(code: str, form: str) -> None:
    assert parse_agency_code(f" {code} ") == code
    assert agency_code_form(code) == form


@pytest.mark.parametrize(
    "code", ["", "g06.01", "G06..01", ".G06", "G06.", "G06 01", "G06-01", "G" * 36, "Đ01"]
)
def test_bad_agency_codes_are_refused(code: str) -> None:
    with pytest.raises(MetadataError) as err:
        parse_agency_code(code)
    assert err.value.code in catalogue()


def test_valid_metadata_is_normalised() -> None:
    m = meta(code_number="5", code_notation=" QĐ-UBND ").validate()
    assert m.code_number == "05"
    assert m.code_notation == "QĐ-UBND"
    assert m.agency_id == "000.00.31.H37"
    assert m.document_id == "000.00.31.H37,2025/03/05,05/QĐ-UBND"
    assert meta(organ_id="H37.02.02").validate().organ_id == "H37.02.02"


@pytest.mark.parametrize(
    ("overrides", "code", "field"),
    [
        ({"subject": "x" * 501}, "archive.catalog.metadata.too_long", "subject"),
        ({"type_name": "x" * 101}, "archive.catalog.metadata.too_long", "type_name"),
        ({"organ_name": "x" * 201}, "archive.catalog.metadata.too_long", "organ_name"),
        ({"signer_full_name": "x" * 51}, "archive.catalog.metadata.too_long", "signer_full_name"),
        ({"signer_position": "x" * 101}, "archive.catalog.metadata.too_long", "signer_position"),
        ({"description": "x" * 501}, "archive.catalog.metadata.too_long", "description"),
        ({"subject": "  "}, "archive.catalog.metadata.required", "subject"),
        ({"organ_id": "UBND LB"}, "archive.catalog.metadata.agency_code", "organ_id"),
        ({"code_number": "1a"}, "signer.register.number.invalid", "code_number"),
        ({"code_number": 0}, "signer.register.number.range", "code_number"),
        ({"code_notation": "QĐ UBND"}, "signer.register.symbol.space", "code_notation"),
        ({"code_notation": "qđ-ubnd"}, "signer.register.symbol.lowercase", "code_notation"),
        ({"code_notation": "QĐ"}, "signer.register.symbol.groups", "code_notation"),
        ({"code_notation": "QĐ-" + "A" * 30}, "signer.register.symbol.too_long", "code_notation"),
        ({"code_notation": None}, "archive.catalog.metadata.required", "code_notation"),
        ({"issued_date": None}, "archive.catalog.metadata.required", "issued_date"),
        ({"direction": "sideways"}, "archive.catalog.metadata.direction", "direction"),
        ({"urgency": "Gấp"}, "archive.catalog.metadata.choice", "urgency"),
        ({"secrecy": "Bí mật"}, "archive.catalog.metadata.choice", "secrecy"),
        ({"page_amount": -1}, "archive.catalog.metadata.negative", "page_amount"),
        ({"arrival_number": "3"}, "archive.catalog.metadata.incoming_only", "arrival_date"),
        (
            {"due_date": dt.date(2025, 1, 1)},
            "archive.catalog.metadata.due_before_issue",
            "due_date",
        ),
        (
            {"to": [Recipient("Sở", "so noi vu")]},
            "archive.catalog.metadata.agency_code",
            "to.organ_id",
        ),
    ],
)
def test_bad_metadata_names_the_field(overrides: dict[str, Any], code: str, field: str) -> None:
    with pytest.raises(MetadataError) as err:
        meta(**overrides).validate()
    assert err.value.code == code
    assert err.value.params["field"] == field
    assert code in catalogue()
    if code.startswith("archive."):
        assert field in err.value.message("vi")


def test_incoming_metadata_and_case_file_validation() -> None:
    m = meta(
        direction="incoming", agency_id="G06.01", arrival_date=dt.date(2025, 3, 6), arrival_number=7
    ).validate()
    assert m.arrival_number == "07" and m.agency_id == "G06.01"
    case = CaseFileMetadata("G06.01", 2025, "01-TCHC", "Hồ sơ chuyển đổi số", "Vĩnh viễn")
    assert case.validate().file_code == "G06.01.2025.01-TCHC"
    with pytest.raises(MetadataError) as err:
        dataclasses.replace(case, file_notation="x" * 21).validate()
    assert err.value.params["field"] == "file_notation"
    with pytest.raises(MetadataError):
        dataclasses.replace(case, file_catalog=1800).validate()


def test_fold_removes_vietnamese_diacritics() -> None:
    assert fold("Quyết định ĐƯỜNG Đê") == "quyet dinh duong de"
    assert fold("Quye\u0301t đi\u0323nh") == "quyet dinh"  # decomposed input too


# -- catalogue ------------------------------------------------------------------------------------


def test_duplicate_warnings(catalog: Catalog) -> None:
    first = catalog.add_document(meta(), actor="vanthu")
    assert catalog.duplicates(meta(code_number=16)) == []
    same_id = catalog.duplicates(meta())
    assert [(w.kind, w.existing_id) for w in same_id] == [("document_id", first)]
    # same number, symbol and agency, another day of the same year: warned
    later = catalog.duplicates(meta(issued_date=dt.date(2025, 11, 2)))
    assert [(w.kind, w.existing_id) for w in later] == [("number_symbol", first)]
    assert "15/QĐ-UBND" in later[0].message("vi") and "2025" in later[0].message("en")
    # next year the numbering restarts: no warning
    assert catalog.duplicates(meta(issued_date=dt.date(2026, 1, 2))) == []
    # another agency may have the same number and symbol
    assert catalog.duplicates(meta(organ_id="G06.01")) == []
    # adding anyway is allowed, and the audit event records the warning
    second = catalog.add_document(meta(issued_date=dt.date(2025, 11, 2)), actor="vanthu")
    with catalog.session() as s:
        event = s.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq.desc())).first()
        assert event is not None and event.subject == f"document:{second}"
        assert '"duplicates"' in event.details_json


def test_version_chain_with_reports(catalog: Catalog) -> None:
    doc = catalog.add_document(meta(), actor="chuyenvien")
    ids = []
    for n, (kind, actor) in enumerate(
        [
            ("draft", "chuyenvien"),
            ("draft", "chuyenvien"),
            ("person_signed", "chutich"),
            ("registered", "vanthu"),
            ("sealed", "vanthu"),
            ("ltv_extended", "system"),
            ("ltv_extended", "system"),
        ]
    ):
        ids.append(
            catalog.add_version(doc, kind, f"sha256/{digest(n)}", digest(n), 1000 + n, actor)
        )
    report = {"indication": "TOTAL_PASSED", "sub_indication": None, "signatures": []}
    rid = catalog.add_report(ids[4], report, actor="vanthu", report_object_key="r/1.json")
    catalog.add_report(ids[4], {"indication": "INDETERMINATE", "sub_indication": "TRY_LATER"})
    got = catalog.get(doc, actor="luutru", purpose="kiểm tra")
    assert [v.seq for v in got.versions] == [1, 2, 3, 4, 5, 6, 7]
    assert [v.kind for v in got.versions][2:5] == ["person_signed", "registered", "sealed"]
    sealed = got.versions[4]
    assert sealed.created_by == "vanthu" and sealed.sha256 == digest(4) and sealed.size == 1004
    assert [r.indication for r in sealed.reports] == ["TOTAL_PASSED", "INDETERMINATE"]
    assert sealed.reports[0].id == rid and sealed.reports[0].report_object_key == "r/1.json"
    assert sealed.reports[1].sub_indication == "TRY_LATER"
    # out of order, unknown kinds, bad digests
    for kind in ("draft", "person_signed", "sealed", "received"):
        with pytest.raises(VersionOrderError) as err:
            catalog.add_version(doc, kind, "k", digest(0), 1, "x")
        assert err.value.code == "archive.catalog.version.order"
    with pytest.raises(VersionOrderError):
        catalog.add_version(doc, "signed", "k", digest(0), 1, "x")
    with pytest.raises(CatalogError) as bad:
        catalog.add_version(doc, "ltv_extended", "k", "abc", 1, "x")
    assert bad.value.code == "archive.catalog.version.sha256"
    with pytest.raises(NotFoundError):
        catalog.add_version(9999, "draft", "k", digest(0), 1, "x")
    with pytest.raises(CatalogError):
        catalog.add_report(ids[0], {"indication": "MAYBE"})


def test_incoming_chain_starts_with_received(catalog: Catalog) -> None:
    doc = catalog.add_document(
        meta(
            direction="incoming",
            agency_id="G06.01",
            arrival_date=dt.date(2025, 3, 6),
            arrival_number=1,
        ),
        actor="vanthu",
    )
    with pytest.raises(VersionOrderError):
        catalog.add_version(doc, "draft", "k", digest(1), 1, "x")
    catalog.add_version(doc, "received", "k1", digest(1), 1, "vanthu")
    catalog.add_version(doc, "ltv_extended", "k2", digest(2), 2, "system")
    got = catalog.get(doc, actor="x")
    assert [v.kind for v in got.versions] == ["received", "ltv_extended"]
    assert got.arrival_number == "01" and got.direction == "incoming"


def test_get_logs_every_read(catalog: Catalog) -> None:
    doc = catalog.add_document(meta(), actor="vanthu")
    assert catalog.access_history(doc) == []
    catalog.get(doc, actor="luutru", purpose="tra cứu")
    catalog.get(doc, actor="thanhtra")
    catalog.log_access("luutru", document_id=doc, action="download")
    history = catalog.access_history(doc)
    assert [(e.actor, e.action, e.purpose) for e in history] == [
        ("luutru", "read", "tra cứu"),
        ("thanhtra", "read", None),
        ("luutru", "download", None),
    ]
    assert all(e.at is not None for e in history)
    with pytest.raises(NotFoundError):
        catalog.get(12345, actor="x")


def _seed(catalog: Catalog) -> dict[str, int]:
    case = catalog.add_case(
        CaseFileMetadata("000.00.31.H37", 2025, "05-VP", "Hồ sơ chuyển đổi số", "10 năm"),
        actor="luutru",
    )
    ids = {
        "qd": catalog.add_document(meta(), case=case, actor="vt"),
        "cv": catalog.add_document(
            meta(
                code_number=7,
                code_notation="UBND-VP",
                type_name="Công văn",
                issued_date=dt.date(2025, 1, 9),
                subject="Về việc triển khai đường dây nóng",
                signer_full_name="Trần Thị Bình",
            ),
            case="000.00.31.H37.2025.05-VP",
            actor="vt",
        ),
        "other": catalog.add_document(
            meta(
                organ_id="G06.01",
                code_number=2,
                code_notation="TB-BNV",
                type_name="Thông báo",
                issued_date=dt.date(2024, 12, 30),
                subject="Thông báo lịch nghỉ Tết",
                signer_full_name="Lê Văn Cường",
            ),
            actor="vt",
        ),
    }
    ids["case"] = case
    return ids


def _found(page: Any) -> list[int]:
    return [d.id for d in page.items]


def test_search_by_fields(catalog: Catalog) -> None:
    ids = _seed(catalog)
    assert catalog.search().total == 3
    assert catalog.search('"*)(:&|!').total == 3  # no word at all: no condition
    assert _found(catalog.search(number="15")) == [ids["qd"]]
    assert _found(catalog.search(number=7, symbol="ubnd-vp")) == [ids["cv"]]
    assert _found(catalog.search(agency="G06.01")) == [ids["other"]]
    assert _found(catalog.search(type="công văn")) == [ids["cv"]]
    assert _found(catalog.search(date_from=dt.date(2025, 1, 1))) == [ids["qd"], ids["cv"]]
    assert _found(catalog.search(date_to=dt.date(2025, 1, 9))) == [ids["cv"], ids["other"]]
    assert _found(catalog.search(signer="tran thi")) == [ids["cv"]]
    assert _found(catalog.search(signer="Lê Văn")) == [ids["other"]]
    assert _found(catalog.search(case=ids["case"])) == [ids["qd"], ids["cv"]]
    assert _found(catalog.search(case="000.00.31.H37.2025.05-VP", type="Quyết định")) == [ids["qd"]]
    with pytest.raises(NotFoundError):
        catalog.search(case="000.00.31.H37.2025.99")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("quyết định", ["qd"]),
        ("quyet dinh", ["qd"]),
        ("QUYET ĐỊNH", ["qd"]),
        ("chuyển đổi số", ["qd"]),
        ("chuyen doi so", ["qd"]),
        ("đường dây", ["cv"]),
        ("duong day nong", ["cv"]),
        ("tết", ["other"]),
        ("viec", ["qd", "cv"]),
        ("phe duy", ["qd"]),  # prefixes
        ("quyết định tết", []),
        ("'\"*) OR (", []),  # punctuation is not syntax; "or" is just a word
    ],
)
def test_search_subject_with_and_without_diacritics(
    catalog: Catalog, query: str, expected: list[str]
) -> None:
    ids = _seed(catalog)
    page = catalog.search(query)
    assert _found(page) == [ids[k] for k in expected]
    assert page.total == len(expected)


def test_pagination(catalog: Catalog) -> None:
    for n in range(1, 26):
        catalog.add_document(
            meta(
                code_number=n,
                issued_date=dt.date(2025, 1, n),
                subject=f"Quyết định số {n} về nhân sự",
            ),
            actor="vt",
        )
    first = catalog.search("quyet dinh nhan su", per_page=10)
    assert first.total == 25 and first.pages == 3 and len(first.items) == 10
    assert [d.code_number for d in first.items][:2] == ["25", "24"]
    third = catalog.search("quyet dinh nhan su", page=3, per_page=10)
    assert [d.code_number for d in third.items] == ["05", "04", "03", "02", "01"]
    seen = {d.id for p in (1, 2, 3) for d in catalog.search(page=p, per_page=10).items}
    assert len(seen) == 25
    assert catalog.search(page=4, per_page=10).items == []


def test_case_files(catalog: Catalog) -> None:
    case = CaseFileMetadata("G06.01", 2025, "01-TCHC", "Hồ sơ tổ chức", "Vĩnh viễn")
    cid = catalog.add_case(case, actor="luutru")
    with pytest.raises(CatalogError) as err:
        catalog.add_case(case, actor="luutru")
    assert err.value.code == "archive.catalog.case.exists"
    doc = catalog.add_document(meta(organ_id="G06.01"), case="G06.01.2025.01-TCHC", actor="vt")
    got = catalog.get(doc, actor="x")
    assert got.case_file is not None and got.case_file.id == cid
    assert got.case_file.file_code == "G06.01.2025.01-TCHC"
    assert got.case_file.maintenance == "Vĩnh viễn"


def test_every_change_is_audited_in_the_same_transaction(catalog: Catalog) -> None:
    doc = catalog.add_document(meta(), actor="vt")
    catalog.add_version(doc, "draft", "k", digest(1), 1, "cv")
    catalog.add_version(doc, "draft", "k", digest(2), 1, "cv")  # drafts may repeat
    with pytest.raises(VersionOrderError):  # refused: no version, no event
        catalog.add_version(doc, "received", "k", digest(3), 1, "cv")
    with catalog.session() as s:
        events = list(s.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq)))
    assert [(e.action, e.actor) for e in events] == [
        ("document.add", "vt"),
        ("version.add", "cv"),
        ("version.add", "cv"),
    ]
    assert catalog.verify_audit([]).events == 3


def test_concurrent_writers_keep_one_unbroken_audit_chain(catalog: Catalog) -> None:
    """Writers in parallel threads (as the API's thread pool runs them) each get their event
    appended: none fails on the chain's head, and the chain verifies."""
    from concurrent.futures import ThreadPoolExecutor

    def write(n: int) -> int:
        return catalog.add_document(meta(code_number=str(100 + n)), actor=f"writer-{n}")

    with ThreadPoolExecutor(max_workers=6) as pool:
        ids = list(pool.map(write, range(24)))
    assert len(set(ids)) == 24
    result = catalog.verify_audit([])
    assert result.events >= 24 and result.problems == []


# -- capped counting, PostgreSQL's narrow search table ---------------------------------------


def _many(
    catalog: Catalog, count: int, subject: str, *, first_day: int = 1, **extra: Any
) -> list[int]:
    """``count`` documents, one a day from January ``first_day`` 2025; their ids, oldest first."""
    return [
        catalog.add_document(
            meta(
                code_number=first_day + n,
                issued_date=dt.date(2025, 1, first_day + n),
                subject=f"{subject} {first_day + n}",
                **extra,
            ),
            actor="vt",
        )
        for n in range(count)
    ]


def test_totals_are_counted_up_to_a_cap(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_module, "COUNT_CAP", 5)
    monkeypatch.setattr(catalog_module, "RECENT_WINDOW", 6)
    old = _many(catalog, 3, "Báo cáo thiên tai", first_day=1)  # the oldest: outside the window
    common = _many(catalog, 12, "Quyết định về nhân sự", first_day=4)
    newest_first = common[::-1]
    # more matches than the cap: the total is a lower bound ("more than 5")
    first = catalog.search("nhân sự", per_page=3)
    assert _found(first) == newest_first[:3]
    assert (first.total, first.total_exact, first.has_next) == (5, False, True)
    second = catalog.search("nhan su", page=2, per_page=3)
    assert _found(second) == newest_first[3:6] and not second.total_exact
    # a page past the cap: counted up to that page and one more (here: all, so exact)
    third = catalog.search("nhan su", page=3, per_page=3)
    assert _found(third) == newest_first[6:9] and (third.total, third.total_exact) == (9, False)
    fourth = catalog.search("nhan su", page=4, per_page=3)
    assert _found(fourth) == newest_first[9:12]
    assert (fourth.total, fourth.total_exact, fourth.has_next) == (12, True, False)
    assert _found(catalog.search("nhan su", page=5, per_page=3)) == []
    # fewer matches than the cap: exact (on PostgreSQL the rare word's documents are all
    # older than the recent window, so they come from the GIN index)
    rare = catalog.search("thien tai", per_page=2)
    assert _found(rare) == old[::-1][:2]
    assert (rare.total, rare.total_exact, rare.has_next, rare.pages) == (3, True, True, 2)
    last = catalog.search("thien tai", page=2, per_page=2)
    assert _found(last) == [old[0]] and (last.total, last.total_exact) == (3, True)
    assert not last.has_next
    # every kind of query is capped, not only words
    dated = catalog.search(date_from=dt.date(2025, 1, 1), per_page=2)
    assert (dated.total, dated.total_exact) == (5, False)
    exact = catalog.search(date_from=dt.date(2025, 1, 13), per_page=2)  # 13 … 15 January
    assert (exact.total, exact.total_exact) == (3, True)
    # a word with another criterion takes the general path, capped as well
    mixed = catalog.search("nhan su", type="quyết định", per_page=2)
    assert _found(mixed) == newest_first[:2] and (mixed.total, mixed.total_exact) == (5, False)


def test_subject_search_within_one_agency(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog_module, "RECENT_WINDOW", 4)
    mine = _many(catalog, 3, "Kế hoạch chuyển đổi số", first_day=1, agency_id="000.00.31.H37")
    theirs = _many(catalog, 5, "Kế hoạch chuyển đổi số", first_day=10, agency_id="G06.01")
    page = catalog.search("chuyen doi so", tenant="000.00.31.H37")
    assert _found(page) == mine[::-1] and (page.total, page.total_exact) == (3, True)
    page = catalog.search("chuyển đổi", tenant="G06.01", per_page=2)
    assert _found(page) == theirs[::-1][:2] and page.total == 5
    assert _found(catalog.search("chuyen doi so", tenant="H40.01")) == []
    assert catalog.search("ke hoach").total == 8


def test_the_search_table_follows_the_documents(catalog: Catalog) -> None:
    """PostgreSQL: the trigger of migration 0007 keeps ``documents_search`` in step."""
    if catalog.dialect != "postgresql":
        assert "documents_search" not in sa.inspect(catalog.engine).get_table_names()
        return
    doc = catalog.add_document(meta(subject="Thông báo lịch nghỉ Tết"), actor="vt")
    assert _found(catalog.search("tet")) == [doc]
    with catalog.session() as s:
        s.execute(
            sa.text(
                "UPDATE documents SET subject_folded = 'thong bao lich truc', "
                "issued_date = DATE '2020-01-01' WHERE id = :id"
            ),
            {"id": doc},
        )
    assert _found(catalog.search("tet")) == []
    assert _found(catalog.search("lich truc")) == [doc]
    with catalog.session() as s:
        row = s.execute(
            sa.text("SELECT issued_date FROM documents_search WHERE id = :id"), {"id": doc}
        ).one()
        assert row.issued_date == dt.date(2020, 1, 1)
        s.execute(sa.text("DELETE FROM documents WHERE id = :id"), {"id": doc})
    with catalog.session() as s:
        assert s.scalar(sa.text("SELECT count(*) FROM documents_search")) == 0


def test_duplicate_warnings_in_one_statement(catalog: Catalog) -> None:
    """Both Appendix VI checks in one query: same id first, then same number and symbol in
    the year, each in id order; a document that is both is named once, as the same id."""
    first = catalog.add_document(meta(), actor="vanthu")
    second = catalog.add_document(meta(issued_date=dt.date(2025, 11, 2)), actor="vanthu")
    catalog.add_document(meta(organ_id="G06.01"), actor="vanthu")  # another agency
    statements: list[str] = []

    def seen(_c: object, _cur: object, statement: str, *_: object) -> None:
        statements.append(statement)

    sa.event.listen(catalog.engine, "before_cursor_execute", seen)
    try:
        both = catalog.duplicates(meta())
    finally:
        sa.event.remove(catalog.engine, "before_cursor_execute", seen)
    assert [(w.kind, w.existing_id) for w in both] == [
        ("document_id", first),
        ("number_symbol", second),
    ]
    assert len([q for q in statements if "FROM documents" in q]) == 1
    by_number = catalog.duplicates(meta(issued_date=dt.date(2025, 6, 1)))
    assert [(w.kind, w.existing_id) for w in by_number] == [
        ("number_symbol", first),
        ("number_symbol", second),
    ]
    assert catalog.duplicates(meta(code_number=None, code_notation=None)) == []


def test_first_version_of_a_new_document_reads_nothing_back(catalog: Catalog) -> None:
    """insert_document and insert_version in one transaction: no SELECT of the document just
    written nor of its (absent) versions, and the versions are numbered as before."""
    statements: list[str] = []

    def seen(_c: object, _cur: object, statement: str, *_: object) -> None:
        statements.append(statement)

    with catalog.session(write=True) as s:
        sa.event.listen(catalog.engine, "before_cursor_execute", seen)
        try:
            doc = catalog.insert_document(s, meta(), None, "vanthu", [])
            first = catalog.insert_version(s, doc, "draft", "k1", digest(1), 1, "cv")
            catalog.insert_report(s, first, {"indication": "TOTAL_PASSED"}, "cv", None)
            second = catalog.insert_version(s, doc, "person_signed", "k2", digest(2), 2, "cv")
        finally:
            sa.event.remove(catalog.engine, "before_cursor_execute", seen)
    reads = [q for q in statements if q.lstrip().upper().startswith("SELECT")]
    # the audit head (once), the lock (PostgreSQL), and the second version's last version
    assert len([q for q in reads if "FROM documents" in q]) == 1  # second version only
    assert not [q for q in reads if "FROM verification_reports" in q]
    assert len([q for q in reads if "FROM audit_events" in q]) == 1
    document = catalog.get(doc, actor="t")
    assert [(v.id, v.seq, v.kind) for v in document.versions] == [
        (first, 1, "draft"),
        (second, 2, "person_signed"),
    ]
    assert [r.indication for r in document.versions[0].reports] == ["TOTAL_PASSED"]
    assert catalog.verify_audit([]).ok
    # a document inserted in an earlier transaction is read (and ordered) as before
    with catalog.session(write=True) as s, pytest.raises(VersionOrderError):
        catalog.insert_version(s, doc, "draft", "k3", digest(3), 3, "cv")
