"""Exports: a case file as PDF (mục lục văn bản) + Appendix VI XML, and BagIt packages that an
independent checker (hashlib only, in a child process without kyso) accepts.

The tests build the archive on SQLite; one package round trip runs on PostgreSQL too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from kyso.api.services import Services
from kyso.archive.catalog import Catalog
from kyso.archive.errors import StorageError
from kyso.archive.export import (
    ExportError,
    check_package,
    export_case_file,
    export_package,
)
from kyso.archive.metadata import CaseFileMetadata, DocumentMetadata, Recipient
from kyso.archive.models import AuditEvent
from kyso.archive.storage import LocalStore
from tests.archive.test_migrations import catalog_for

FILE_CODE = "000.00.31.H37.2025.05-VP"

# A checker that knows nothing of kyso: hash every file of manifest-sha256.txt.
INDEPENDENT_CHECKER = r"""
import hashlib, pathlib, sys
bag = pathlib.Path(sys.argv[1])
bad = 0
for line in (bag / "manifest-sha256.txt").read_text("utf-8").splitlines():
    digest, rel = line.split(None, 1)
    data = (bag / rel).read_bytes()
    if hashlib.sha256(data).hexdigest() != digest:
        print("BAD", rel)
        bad += 1
sys.exit(1 if bad else 0)
"""


def _pdf(text: str, pages: int = 1) -> bytes:
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    c = canvas.Canvas(buffer, invariant=True)
    for page in range(pages):
        c.drawString(72, 720, f"{text} p{page + 1}")
        c.showPage()
    c.save()
    return buffer.getvalue()


@dataclass
class Archive:
    catalog: Catalog
    store: LocalStore
    case_id: int
    doc_ids: list[int]
    objects: dict[tuple[int, int], bytes]  # (document, seq) → bytes


def _put(store: LocalStore, data: bytes) -> tuple[str, str, int]:
    obj = store.put(io.BytesIO(data))
    return obj.key, obj.sha256, obj.size


def build_archive(catalog: Catalog, store: LocalStore) -> Archive:
    case_id = catalog.add_case(
        CaseFileMetadata(
            organ_id="000.00.31.H37",
            file_catalog=2025,
            file_notation="05-VP",
            title="Hồ sơ chuyển đổi số năm 2025 của quận Long Biên",
            maintenance="Vĩnh viễn",
            rights="Hạn chế",
            creator="Văn phòng HĐND và UBND quận",
            start_date=dt.date(2025, 3, 5),
            end_date=dt.date(2025, 6, 30),
            description="Kế hoạch, quyết định và báo cáo về chuyển đổi số",
        ),
        actor="vanthu",
    )
    specs = [
        (
            "Quyết định",
            15,
            "QĐ-UBND",
            dt.date(2025, 3, 5),
            "Quyết định phê duyệt kế hoạch chuyển đổi số năm 2025",
            3,
        ),
        (
            "Công văn",
            27,
            "UBND-VP",
            dt.date(2025, 4, 2),
            "Về việc triển khai chữ ký số cho cán bộ, công chức",
            2,
        ),
        (
            "Báo cáo",
            31,
            "BC-UBND",
            dt.date(2025, 6, 30),
            "Báo cáo kết quả thực hiện sáu tháng đầu năm",
            4,
        ),
    ]
    doc_ids: list[int] = []
    objects: dict[tuple[int, int], bytes] = {}
    for ordinal, (kind, number, symbol, date, subject, pages) in enumerate(specs, start=1):
        doc_id = catalog.add_document(
            DocumentMetadata(
                organ_id="000.00.31.H37",
                code_number=number,
                code_notation=symbol,
                issued_date=date,
                type_name=kind,
                organ_name="Ủy ban nhân dân quận Long Biên",
                subject=subject,
                signer_position="Chủ tịch",
                signer_full_name="Nguyễn Văn An",
                to=[Recipient("Sở Nội vụ", "H37.02")],
                page_amount=pages,
                doc_ordinal=ordinal,
                urgency="Khẩn" if ordinal == 1 else None,
            ),
            case=FILE_CODE,
            actor="vanthu",
        )
        doc_ids.append(doc_id)
        for seq, version_kind in enumerate(("draft", "person_signed", "sealed"), start=1):
            data = _pdf(f"{symbol} {version_kind}", pages)
            key, digest, size = _put(store, data)
            version_id = catalog.add_version(doc_id, version_kind, key, digest, size, "vanthu")
            objects[(doc_id, seq)] = data
            if version_kind == "sealed":
                catalog.add_report(
                    version_id,
                    {
                        "indication": "TOTAL_PASSED",
                        "sub_indication": None,
                        "signatures": [{"signer": "Nguyễn Văn An", "level": "PAdES-B-T"}],
                    },
                    actor="verifier",
                )
    # an unrelated document in between, whose audit events must be redacted in the excerpt
    catalog.add_document(
        DocumentMetadata(
            organ_id="000.00.31.H37",
            code_number=99,
            code_notation="TB-UBND",
            issued_date=dt.date(2025, 5, 1),
            type_name="Thông báo",
            organ_name="Ủy ban nhân dân quận Long Biên",
            subject="Thông báo bí mật không được xuất",
        ),
        actor="other",
    )
    return Archive(catalog, store, case_id, doc_ids, objects)


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    store = LocalStore(tmp_path / "store")
    with catalog_for("sqlite", tmp_path) as catalog:
        yield build_archive(catalog, store)


def independent_check(bag: Path) -> subprocess.CompletedProcess[str]:
    """Run the hashlib-only checker in a child Python that cannot import kyso."""
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", INDEPENDENT_CHECKER, str(bag)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=bag.parent,
        env={"PATH": os.environ.get("PATH", "")},
        check=False,
    )


def flip_byte(path: Path, offset: int = 200) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# -- the case file as PDF + XML -------------------------------------------------------------------


def test_case_file_exports_a_valid_vietnamese_pdf_and_appendix_vi_xml(
    archive: Archive, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    pdf_path, xml_path = export_case_file(
        archive.catalog, archive.store, FILE_CODE, out, actor="luutru", locale="vi"
    )
    assert pdf_path.parent == out and xml_path.parent == out
    assert sorted(p.name for p in out.iterdir()) == sorted([pdf_path.name, xml_path.name])

    qpdf = subprocess.run(["qpdf", "--check", str(pdf_path)], capture_output=True, text=True)
    assert qpdf.returncode == 0, qpdf.stdout + qpdf.stderr
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf_path), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "MỤC LỤC VĂN BẢN" in text
    assert "Trích yếu nội dung" in text
    assert "Vĩnh viễn" in text
    for number in ("15/QĐ-UBND", "27/UBND-VP", "31/BC-UBND"):
        assert number in text
    assert "99/TB-UBND" not in text  # not in the case
    assert "3 văn bản, tổng cộng 9 trang" in text

    root = ET.parse(xml_path).getroot()
    assert root.tag == "CaseFile"
    assert root.findtext("FileCode/OrganId") == "000.00.31.H37"
    assert root.findtext("FileCode/FileCatalog") == "2025"
    assert root.findtext("FileCode/FileNotation") == "05-VP"
    assert root.findtext("Title") == "Hồ sơ chuyển đổi số năm 2025 của quận Long Biên"
    assert root.findtext("Maintenance") == "Vĩnh viễn"
    assert root.findtext("Rights") == "Hạn chế"
    assert root.findtext("Language") == "Tiếng Việt"
    assert root.findtext("StartDate") == "2025-03-05"
    assert root.findtext("EndDate") == "2025-06-30"
    assert root.findtext("DocTotal") == "3"
    assert root.findtext("PageTotal") == "9"
    docs = root.findall("Documents/Document")
    assert [d.findtext("CodeNumber") for d in docs] == ["15", "27", "31"]
    first = docs[0]
    assert first.findtext("CodeNotation") == "QĐ-UBND"
    assert first.findtext("TypeName") == "Quyết định"
    assert first.findtext("IssuedDate") == "2025-03-05"
    assert first.findtext("SignerInfo/FullName") == "Nguyễn Văn An"
    assert first.findtext("To/Organ/OrganId") == "H37.02"
    assert first.findtext("Priority/Urgency") == "Khẩn"
    assert first.findtext("PageAmount") == "3"
    assert len(first.findall("Versions/Version")) == 3
    # the reads were logged in the access history
    history = archive.catalog.access_history(archive.doc_ids[0])
    assert any(e.actor == "luutru" and e.purpose == "export.case_file" for e in history)


def test_case_file_listing_in_english(archive: Archive, tmp_path: Path) -> None:
    pdf_path, _ = export_case_file(
        archive.catalog, archive.store, archive.case_id, tmp_path, locale="en"
    )
    text = subprocess.run(
        ["pdftotext", str(pdf_path), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "LIST OF DOCUMENTS" in text
    assert "Quyết định phê duyệt" in text  # the data itself stays Vietnamese


# -- BagIt packages -------------------------------------------------------------------------------


def test_bagit_package_is_complete_and_checks_without_kyso(
    archive: Archive, tmp_path: Path
) -> None:
    bag = tmp_path / "goi-05-VP"
    summary = export_package(archive.catalog, archive.store, FILE_CODE, bag, actor="luutru")
    assert summary.fmt == "bagit" and summary.path == bag
    assert (summary.documents, summary.versions, summary.reports) == (3, 9, 3)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".goi")]  # no temp left

    assert (bag / "bagit.txt").read_text() == (
        "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
    )
    info = dict(
        line.split(": ", 1) for line in (bag / "bag-info.txt").read_text("utf-8").splitlines()
    )
    files = [p for p in (bag / "data").rglob("*") if p.is_file()]
    assert info["Payload-Oxum"] == f"{sum(p.stat().st_size for p in files)}.{len(files)}"
    assert info["Source-Organization"] == "Văn phòng HĐND và UBND quận"
    assert info["External-Identifier"] == FILE_CODE
    assert info["Bagging-Date"] == dt.datetime.now(dt.UTC).date().isoformat()
    assert "External-Description" in info

    # every version, byte for byte
    for (doc_id, seq), data in archive.objects.items():
        matches = list((bag / "data" / "documents" / str(doc_id)).glob(f"{seq}-*.pdf"))
        assert len(matches) == 1 and matches[0].read_bytes() == data
    d0 = archive.doc_ids[0]
    assert (bag / f"data/documents/{d0}/3-sealed.pdf").exists()
    meta = json.loads((bag / f"data/metadata/{d0}.json").read_text("utf-8"))
    assert meta["code_notation"] == "QĐ-UBND" and len(meta["versions"]) == 3
    assert ET.parse(bag / f"data/metadata/{d0}.xml").getroot().findtext("CodeNumber") == "15"
    case_xml = ET.parse(bag / "data/metadata/case.xml").getroot()
    assert case_xml.findtext("DocTotal") == "3"
    report = json.loads((bag / f"data/reports/{d0}/3.json").read_text("utf-8"))
    assert report["reports"][0]["indication"] == "TOTAL_PASSED"
    assert report["reports"][0]["report"]["signatures"][0]["signer"] == "Nguyễn Văn An"

    # the audit excerpt: whole events about these documents, the others only as hashes
    lines = [json.loads(x) for x in (bag / "data/audit/excerpt.jsonl").read_text().splitlines()]
    seqs = [x["seq"] for x in lines]
    assert seqs == list(range(seqs[0], seqs[-1] + 1))
    assert any(x["action"] == "case.add" for x in lines if not x.get("redacted"))
    assert all(x["subject"].startswith(("document:", "case:")) for x in lines if "subject" in x)
    text = (bag / "data/audit/excerpt.jsonl").read_text("utf-8")
    assert "bí mật" not in text and "99/TB" not in text
    with archive.catalog.session() as s:
        stored = {e.seq: e.hash for e in s.query(AuditEvent)}
    assert all(stored[x["seq"]] == x["hash"] for x in lines)

    assert check_package(bag) == []
    result = independent_check(bag)
    assert result.returncode == 0, result.stdout + result.stderr
    # the tag manifest covers the tag files
    tags = (bag / "tagmanifest-sha256.txt").read_text().splitlines()
    assert {line.split()[1] for line in tags} == {
        "bagit.txt",
        "bag-info.txt",
        "manifest-sha256.txt",
    }


def test_a_flipped_byte_is_named_by_both_checkers(archive: Archive, tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    export_package(archive.catalog, archive.store, archive.doc_ids[:2], bag)
    victim = f"data/documents/{archive.doc_ids[1]}/2-person_signed.pdf"
    flip_byte(bag / victim)

    problems = check_package(bag)
    assert [(p.kind, p.path) for p in problems] == [("mismatch", victim)]
    assert victim in problems[0].message("vi") and "SHA-256" in problems[0].message("en")
    result = independent_check(bag)
    assert result.returncode == 1
    assert f"BAD {victim}" in result.stdout


def test_extra_missing_files_and_a_forged_audit_event_are_found(
    archive: Archive, tmp_path: Path
) -> None:
    bag = tmp_path / "bag"
    export_package(archive.catalog, archive.store, [archive.doc_ids[0]], bag)
    assert not (bag / "data/metadata/case.json").exists()  # a list of documents, not a case
    (bag / "data/extra.txt").write_text("x")
    os.remove(bag / f"data/metadata/{archive.doc_ids[0]}.xml")
    excerpt = bag / "data/audit/excerpt.jsonl"
    lines = [json.loads(x) for x in excerpt.read_text("utf-8").splitlines()]
    forged = next(x for x in lines if x.get("action") == "version.add")
    forged["actor"] = "ke-gian"
    excerpt.write_text(
        "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8"
    )
    found = {(p.kind, p.path) for p in check_package(bag)}
    assert ("unlisted", "data/extra.txt") in found
    assert ("missing", f"data/metadata/{archive.doc_ids[0]}.xml") in found
    assert ("mismatch", "data/audit/excerpt.jsonl") in found
    assert ("audit", "data/audit/excerpt.jsonl") in found
    assert ("oxum", "bag-info.txt") in found


def test_zip_package_round_trips(archive: Archive, tmp_path: Path) -> None:
    out = tmp_path / "hoso-05-VP.zip"
    summary = export_package(archive.catalog, archive.store, FILE_CODE, out, fmt="zip")
    assert summary.bag_name == "hoso-05-VP"
    assert check_package(out) == []
    with zipfile.ZipFile(out) as z:
        assert z.testzip() is None
        names = z.namelist()
        assert all(n.startswith("hoso-05-VP/") for n in names)
        for info in z.infolist():
            expected = (
                zipfile.ZIP_STORED if info.filename.endswith(".pdf") else zipfile.ZIP_DEFLATED
            )
            assert info.compress_type == expected, info.filename
        z.extractall(tmp_path / "unzipped")
    bag = tmp_path / "unzipped" / "hoso-05-VP"
    assert check_package(bag) == []
    assert independent_check(bag).returncode == 0
    for (doc_id, seq), data in archive.objects.items():
        (match,) = (bag / "data" / "documents" / str(doc_id)).glob(f"{seq}-*.pdf")
        assert hashlib.sha256(match.read_bytes()).digest() == hashlib.sha256(data).digest()

    # a changed entry inside the ZIP is named too
    victim = f"data/documents/{archive.doc_ids[0]}/1-draft.pdf"
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(out) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith(victim):
                data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
            dst.writestr(info, data)
    assert [(p.kind, p.path) for p in check_package(tampered)] == [("mismatch", victim)]


def test_a_corrupt_stored_version_stops_the_export_and_leaves_nothing(
    archive: Archive, tmp_path: Path
) -> None:
    data = archive.objects[(archive.doc_ids[0], 2)]
    key = f"sha256/{hashlib.sha256(data).hexdigest()[:2]}/{hashlib.sha256(data).hexdigest()}"
    flip_byte(archive.store.root / key)
    out = tmp_path / "exports"
    out.mkdir()
    for fmt, name in (("bagit", "bag"), ("zip", "bag.zip")):
        with pytest.raises((ExportError, StorageError)):
            export_package(archive.catalog, archive.store, FILE_CODE, out / name, fmt=fmt)  # type: ignore[arg-type]
    assert list(out.iterdir()) == []


def test_existing_target_and_bad_format_are_refused(archive: Archive, tmp_path: Path) -> None:
    (tmp_path / "bag").mkdir()
    with pytest.raises(ExportError) as exc:
        export_package(archive.catalog, archive.store, FILE_CODE, tmp_path / "bag")
    assert exc.value.code == "archive.export.exists"
    with pytest.raises(ExportError):
        export_package(archive.catalog, archive.store, FILE_CODE, tmp_path / "x", fmt="tar")  # type: ignore[arg-type]
    with pytest.raises(ExportError):
        export_package(archive.catalog, archive.store, [], tmp_path / "y")


def test_package_round_trip_on_postgresql(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    with catalog_for("postgresql", tmp_path) as catalog:
        archive = build_archive(catalog, store)
        bag = tmp_path / "pg-bag"
        summary = export_package(catalog, store, FILE_CODE, bag)
        assert summary.versions == 9
        assert check_package(bag) == []
        assert independent_check(bag).returncode == 0
        _, xml_path = export_case_file(catalog, store, FILE_CODE, tmp_path / "pg-case")
        root = ET.parse(xml_path).getroot()
        assert (root.findtext("DocTotal"), root.findtext("PageTotal")) == ("3", "9")
        assert len(archive.doc_ids) == 3
    shutil.rmtree(bag)


def test_the_package_carries_the_anchor_that_seals_its_audit_excerpt(
    archive: Archive, tmp_path: Path, dev_services: Services
) -> None:
    """Once the chain is anchored, the excerpt runs on to the anchor and the token is in the
    package: openssl checks the token over the excerpt's last hash, check_package the links."""
    from cryptography.hazmat.primitives.serialization import Encoding

    # an event about another record after the case's events, then the anchor
    archive.catalog.add_case(
        CaseFileMetadata(
            organ_id="000.00.31.H37",
            file_catalog=2025,
            file_notation="09-TC",
            title="Hồ sơ khác",
            maintenance="10 năm",
            rights="Công khai",
            language="Tiếng Việt",
        ),
        actor="vanthu",
    )
    anchored_seq = archive.catalog.anchor_audit(dev_services.tsa)
    assert anchored_seq is not None
    bag = tmp_path / "goi"
    export_package(archive.catalog, archive.store, FILE_CODE, bag, actor="luutru")

    lines = [json.loads(x) for x in (bag / "data/audit/excerpt.jsonl").read_text().splitlines()]
    assert lines[-1]["seq"] == anchored_seq and lines[-1].get("redacted")
    anchors = json.loads((bag / "data/audit/anchors.json").read_text())
    assert [(a["seq"], a["hash"]) for a in anchors] == [(anchored_seq, lines[-1]["hash"])]
    assert check_package(bag) == []
    assert independent_check(bag).returncode == 0

    root = tmp_path / "root.pem"
    root.write_bytes(dev_services.pki.root_cert.public_bytes(Encoding.PEM))
    token = bag / "data/audit" / anchors[0]["token"]
    proc = subprocess.run(
        ["openssl", "ts", "-verify", "-digest", anchors[0]["hash"], "-in", str(token),
         "-token_in", "-CAfile", str(root)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert "Verification: OK" in proc.stdout, proc.stdout + proc.stderr

    # an anchor that names another hash, and a token swapped for another, are both found
    forged = [{**anchors[0], "hash": lines[-2]["hash"]}]
    (bag / "data/audit/anchors.json").chmod(0o644)
    (bag / "data/audit/anchors.json").write_text(json.dumps(forged))
    assert "anchor_mismatch" in " ".join(p.code for p in check_package(bag))
    (bag / "data/audit/anchors.json").write_text(json.dumps(anchors))
    token.chmod(0o644)
    token.write_bytes(b"\x30\x03\x02\x01\x00")
    assert "anchor_token" in " ".join(p.code for p in check_package(bag))
