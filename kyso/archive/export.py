"""Export from the archive: a case file as ``.pdf`` + ``.xml`` (Decree 30/2020 Appendix VI), and
archival packages (BagIt 1.0, RFC 8493) that can be checked and read without kyso.

Case file (:func:`export_case_file`)
    ``<FileCode>.pdf``: the listing of the case file (mục lục văn bản): the case's fields, then a
    table of its documents (ordinal, number/symbol, date, type, subject, author/agency, page
    count, notes), in Vietnamese (or English), set in KysoSerif so every diacritic prints and is
    searchable.  ``<FileCode>.xml``: the same in Appendix VI field names::

        <?xml version="1.0" encoding="UTF-8"?>
        <CaseFile schema="kyso-appendix-vi/1" exported="2025-03-05T10:20:30Z">
          <FileCode><OrganId/><FileCatalog/><FileNotation/></FileCode>
          <Title/> <Maintenance/> <Rights/> <Creator/> <Language/>
          <StartDate/> <EndDate/>            ISO 8601 dates, yyyy-mm-dd
          <DocTotal/> <PageTotal/>           computed from the documents listed
          <Description/>
          <Documents>
            <Document id="42">               one per document, in listing order
              <DocumentId/> <Direction/> <DocOrdinal/>
              <OrganId/> <OrganName/> <TypeName/> <CodeNumber/> <CodeNotation/>
              <IssuedDate/> <Subject/> <Language/> <PageAmount/> <Description/>
              <SignerInfo><Position/><FullName/></SignerInfo>
              <To><Organ><OrganId/><OrganName/></Organ>…</To>
              <Priority><Urgency/><Secrecy/></Priority>
              <IssuedAmount/> <DueDate/>
              <ArrivalDate/> <ArrivalNumber/> <ToPlaces>…</ToPlaces>     incoming only
              <TraceHeaderList><TraceHeader><Key>value</Key>…</TraceHeader></TraceHeaderList>
              <Versions><Version seq="1" kind="draft" sha256="…" size="…" created="…"/></Versions>
            </Document>
          </Documents>
        </CaseFile>

    An element whose value is unknown is left out (never written empty).  A ``PageAmount`` that
    is unknown counts as 0 in ``PageTotal``.

Package (:func:`export_package`), as a directory or a ZIP holding that one directory::

    <name>/bagit.txt                    BagIt-Version: 1.0, UTF-8
    <name>/bag-info.txt                 Source-Organization, Bagging-Date, Payload-Oxum,
                                        External-Description, External-Identifier,
                                        Bag-Software-Agent
    <name>/manifest-sha256.txt          "<sha256>  data/…" for every payload file
    <name>/tagmanifest-sha256.txt       the same for the three tag files above
    <name>/data/README.txt              this layout and how to check it, in Vietnamese and English
    <name>/data/documents/<id>/<seq>-<kind>.pdf      every version, as archived
    <name>/data/metadata/<id>.json|.xml              the document's Appendix VI metadata
    <name>/data/metadata/case.json|.xml              the case file (when a case is exported)
    <name>/data/reports/<id>/<seq>.json              the verification reports of a version
    <name>/data/audit/excerpt.jsonl                  the audit events about these documents
    <name>/data/audit/anchors.json, anchor-<n>.tsr   the RFC 3161 anchor that seals the excerpt

The audit excerpt is the contiguous stretch of the archive's hash chain from the first to the
last event about the exported documents (and case).  Events about them are written whole
(``seq, at, actor, action, subject, details_json, prev_hash, hash``); the events in between,
which concern other records, only as ``{seq, prev_hash, hash, redacted: true}``, so the links
can be followed without disclosing them.  An event's hash is the SHA-256 of the canonical JSON
(sorted keys, no spaces, UTF-8, non-ASCII unescaped) of ``{seq, at, actor, action, subject,
details, prev_hash}`` where ``details`` is the ``details_json`` string.  When the chain has
been anchored after the last of those events, the excerpt runs on (redacted) to the first such
anchor, and the anchor's RFC 3161 token is included: its message imprint is that event's hash,
so ``openssl ts -verify -digest <hash> -in anchor-<n>.tsr -token_in -CAfile <trusted root>``
proves the excerpt existed, unaltered, at the token's time.

Versions are streamed from the object store (never held whole in memory) and their SHA-256 is
checked against the catalogue while copying.  In a ZIP, PDFs are stored (``ZIP_STORED``: they
are compressed already and stay byte-identical), other files deflated.  Everything is written
atomically: a temporary directory or file beside the target, renamed onto it once complete.

:func:`check_package` checks a package (directory or ZIP) with the standard library only:
``bagit.txt``, both manifests, files present but not listed, ``Payload-Oxum``, and the audit
excerpt's hashes and links.  It is deliberately free of kyso imports, so it can be copied out.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

import sqlalchemy as sa

from kyso.archive.catalog import Catalog, NotFoundError
from kyso.archive.metadata import CatalogError
from kyso.archive.models import AuditAnchor, AuditEvent, CaseFile, Document, DocumentVersion
from kyso.archive.storage import ObjectStore

__all__ = [
    "ExportError",
    "PackageProblem",
    "PackageSummary",
    "case_file_xml",
    "check_package",
    "document_xml",
    "export_case_file",
    "export_package",
]

CHUNK = 1024 * 1024
SCHEMA = "kyso-appendix-vi/1"
FONT = "KysoSerif"
FONT_BOLD = "KysoSerif-Bold"


class ExportError(CatalogError):
    """An export could not be made (``params`` say why)."""

    code = "archive.export.error"


# -- reading the catalogue ------------------------------------------------------------------------


def _find_case(catalog: Catalog, case: int | str) -> CaseFile:
    with catalog.session() as s:
        found: CaseFile | None = None
        if isinstance(case, int):
            found = s.get(CaseFile, case)
        else:
            organ, _, notation = case.strip().rpartition(".")
            organ, _, year = organ.rpartition(".")
            if year.isdigit():
                found = s.scalars(
                    sa.select(CaseFile).where(
                        CaseFile.organ_id == organ,
                        CaseFile.file_catalog == int(year),
                        CaseFile.file_notation == notation,
                    )
                ).first()
        if found is None:
            raise NotFoundError("archive.catalog.case.not_found", case=str(case))
        return found


def _case_document_ids(catalog: Catalog, case_id: int) -> list[int]:
    with catalog.session() as s:
        return list(
            s.scalars(
                sa.select(Document.id)
                .where(Document.case_file_id == case_id)
                .order_by(
                    Document.doc_ordinal.asc().nulls_last(),
                    Document.issued_date.asc().nulls_last(),
                    Document.id,
                )
            )
        )


def _load(catalog: Catalog, ids: Iterable[int], actor: str, purpose: str) -> list[Document]:
    return [catalog.get(i, actor=actor, purpose=purpose) for i in ids]


def _date(value: dt.date | None) -> str | None:
    return None if value is None else value.isoformat()


def _stamp(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _safe_name(text: str) -> str:
    """A file-name-safe form of a FileCode (ASCII letters, digits, ``.-_``)."""
    folded = unicodedata.normalize("NFKD", text.replace("đ", "d").replace("Đ", "D"))
    ascii_text = folded.encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_text).strip("-.") or "export"


# -- metadata as JSON and XML ---------------------------------------------------------------------


def case_file_dict(case: CaseFile, docs: Sequence[Document]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "id": case.id,
        "file_code": case.file_code,
        "organ_id": case.organ_id,
        "file_catalog": case.file_catalog,
        "file_notation": case.file_notation,
        "title": case.title,
        "maintenance": case.maintenance,
        "rights": case.rights,
        "creator": case.creator,
        "language": case.language,
        "start_date": _date(case.start_date),
        "end_date": _date(case.end_date),
        "doc_total": len(docs),
        "page_total": sum(d.page_amount or 0 for d in docs),
        "description": case.description,
        "documents": [d.id for d in docs],
    }


def document_dict(doc: Document) -> dict[str, Any]:
    case = doc.case_file
    return {
        "schema": SCHEMA,
        "id": doc.id,
        "document_id": doc.document_id,
        "direction": doc.direction,
        "agency_id": doc.agency_id,
        "case_file": None if case is None else case.file_code,
        "doc_ordinal": doc.doc_ordinal,
        "organ_id": doc.organ_id,
        "organ_name": doc.organ_name,
        "type_name": doc.type_name,
        "code_number": doc.code_number,
        "code_notation": doc.code_notation,
        "issued_date": _date(doc.issued_date),
        "subject": doc.subject,
        "language": doc.language,
        "page_amount": doc.page_amount,
        "description": doc.description,
        "signer_position": doc.signer_position,
        "signer_full_name": doc.signer_full_name,
        "to": list(doc.recipients or []),
        "urgency": doc.urgency,
        "secrecy": doc.secrecy,
        "issued_amount": doc.issued_amount,
        "due_date": _date(doc.due_date),
        "arrival_date": _date(doc.arrival_date),
        "arrival_number": doc.arrival_number,
        "to_places": list(doc.to_places or []),
        "trace": list(doc.trace or []),
        "versions": [
            {
                "seq": v.seq,
                "kind": v.kind,
                "sha256": v.sha256,
                "size": v.size,
                "created_at": _stamp(v.created_at),
                "created_by": v.created_by,
                "file": f"data/documents/{doc.id}/{_version_name(v)}",
                "reports": [r.id for r in v.reports],
            }
            for v in doc.versions
        ],
    }


def _text(parent: ET.Element, tag: str, value: object) -> ET.Element | None:
    if value is None or value == "":
        return None
    child = ET.SubElement(parent, tag)
    child.text = str(value)
    return child


_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def _organs(parent: ET.Element, tag: str, organs: Iterable[Any]) -> None:
    items = [o for o in organs if isinstance(o, dict)]
    if not items:
        return
    group = ET.SubElement(parent, tag)
    for organ in items:
        node = ET.SubElement(group, "Organ")
        _text(node, "OrganId", organ.get("organ_id"))
        _text(node, "OrganName", organ.get("organ_name"))


def _document_element(doc: Document) -> ET.Element:
    el = ET.Element("Document", {"id": str(doc.id)})
    _text(el, "DocumentId", doc.document_id)
    _text(el, "Direction", doc.direction)
    _text(el, "DocOrdinal", doc.doc_ordinal)
    _text(el, "OrganId", doc.organ_id)
    _text(el, "OrganName", doc.organ_name)
    _text(el, "TypeName", doc.type_name)
    _text(el, "CodeNumber", doc.code_number)
    _text(el, "CodeNotation", doc.code_notation)
    _text(el, "IssuedDate", _date(doc.issued_date))
    _text(el, "Subject", doc.subject)
    _text(el, "Language", doc.language)
    _text(el, "PageAmount", doc.page_amount)
    _text(el, "Description", doc.description)
    if doc.signer_position or doc.signer_full_name:
        signer = ET.SubElement(el, "SignerInfo")
        _text(signer, "Position", doc.signer_position)
        _text(signer, "FullName", doc.signer_full_name)
    _organs(el, "To", doc.recipients or [])
    if doc.urgency or doc.secrecy:
        priority = ET.SubElement(el, "Priority")
        _text(priority, "Urgency", doc.urgency)
        _text(priority, "Secrecy", doc.secrecy)
    _text(el, "IssuedAmount", doc.issued_amount)
    _text(el, "DueDate", _date(doc.due_date))
    _text(el, "ArrivalDate", _date(doc.arrival_date))
    _text(el, "ArrivalNumber", doc.arrival_number)
    _organs(el, "ToPlaces", doc.to_places or [])
    trace = [t for t in (doc.trace or []) if isinstance(t, dict)]
    if trace:
        headers = ET.SubElement(el, "TraceHeaderList")
        for entry in trace:
            header = ET.SubElement(headers, "TraceHeader")
            for key, value in entry.items():
                name = str(key)
                if _XML_NAME.fullmatch(name) and not name.lower().startswith("xml"):
                    _text(
                        header,
                        name,
                        value
                        if not isinstance(value, (dict, list))
                        else json.dumps(value, ensure_ascii=False, sort_keys=True),
                    )
    if doc.versions:
        versions = ET.SubElement(el, "Versions")
        for v in doc.versions:
            attrs = {"seq": str(v.seq), "kind": v.kind, "sha256": v.sha256, "size": str(v.size)}
            created = _stamp(v.created_at)
            if created:
                attrs["created"] = created
            ET.SubElement(versions, "Version", attrs)
    return el


def _xml_bytes(root: ET.Element) -> bytes:
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n").encode("utf-8")


def document_xml(doc: Document) -> bytes:
    """The Appendix VI XML of one document (root ``<Document>``), UTF-8."""
    el = _document_element(doc)
    el.set("schema", SCHEMA)
    return _xml_bytes(el)


def case_file_xml(case: CaseFile, docs: Sequence[Document], *, exported: str) -> bytes:
    """The Appendix VI XML of a case file and its documents (see the module docstring)."""
    root = ET.Element("CaseFile", {"schema": SCHEMA, "exported": exported})
    code = ET.SubElement(root, "FileCode")
    _text(code, "OrganId", case.organ_id)
    _text(code, "FileCatalog", case.file_catalog)
    _text(code, "FileNotation", case.file_notation)
    _text(root, "Title", case.title)
    _text(root, "Maintenance", case.maintenance)
    _text(root, "Rights", case.rights)
    _text(root, "Creator", case.creator)
    _text(root, "Language", case.language)
    _text(root, "StartDate", _date(case.start_date))
    _text(root, "EndDate", _date(case.end_date))
    _text(root, "DocTotal", len(docs))
    _text(root, "PageTotal", sum(d.page_amount or 0 for d in docs))
    _text(root, "Description", case.description)
    listing = ET.SubElement(root, "Documents")
    for doc in docs:
        listing.append(_document_element(doc))
    return _xml_bytes(root)


# -- the listing as PDF ---------------------------------------------------------------------------


def _register_fonts() -> None:
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    from kyso.signer.fonts import serif_font_path

    registered = pdfmetrics.getRegisteredFontNames()
    if FONT not in registered:
        pdfmetrics.registerFont(TTFont(FONT, str(serif_font_path(False))))
    if FONT_BOLD not in registered:
        pdfmetrics.registerFont(TTFont(FONT_BOLD, str(serif_font_path(True))))
    for bold, italic, name in ((0, 0, FONT), (1, 0, FONT_BOLD), (0, 1, FONT), (1, 1, FONT_BOLD)):
        addMapping(FONT, bold, italic, name)


def _para_text(value: object) -> str:
    text = unicodedata.normalize("NFC", "" if value is None else str(value))
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn") else c for c in text)
    return escape(text)


def _listing_pdf(case: CaseFile, docs: Sequence[Document], locale: str, exported: str) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    from kyso.i18n import t

    def tr(key: str, **params: Any) -> str:
        return t(f"archive.export.listing.{key}", locale=locale, **params)

    _register_fonts()
    base = ParagraphStyle("kyso-export", fontName=FONT, fontSize=10, leading=12.5)
    cell = ParagraphStyle("cell", parent=base, fontSize=9, leading=11)
    head = ParagraphStyle("head", parent=cell, fontName=FONT_BOLD, alignment=1)
    title = ParagraphStyle(
        "title", parent=base, fontName=FONT_BOLD, fontSize=16, leading=20, alignment=1
    )
    sub = ParagraphStyle("sub", parent=base, fontSize=11, leading=14, alignment=1)

    buffer = io.BytesIO()
    pagesize = landscape(A4)
    doc_template = SimpleDocTemplate(
        buffer,
        pagesize=pagesize,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=15 * mm,
        title=f"{tr('title')} {case.file_code}",
        author=case.creator or case.organ_id,
        creator="kyso",
        lang="vi" if locale == "vi" else "en",
    )
    width = pagesize[0] - 30 * mm
    pages = sum(d.page_amount or 0 for d in docs)
    story: list[Any] = [
        Paragraph(_para_text(tr("title")), title),
        Paragraph(_para_text(case.title), sub),
        Spacer(1, 4 * mm),
    ]
    fields = [
        (tr("file_code"), case.file_code),
        (tr("maintenance"), case.maintenance),
        (tr("rights"), case.rights),
        (tr("creator"), case.creator),
        (tr("language"), case.language),
        (tr("period"), f"{_vn_date(case.start_date)} – {_vn_date(case.end_date)}"),
        (tr("totals"), tr("totals_value", docs=len(docs), pages=pages)),
        (tr("description"), case.description),
    ]
    info = Table(
        [[Paragraph(_para_text(k), cell), Paragraph(_para_text(v), cell)] for k, v in fields if v],
        colWidths=[width * 0.22, width * 0.78],
        hAlign="LEFT",
    )
    info.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
    story += [info, Spacer(1, 5 * mm)]

    columns = ["no", "number", "date", "type", "subject", "author", "pages", "notes"]
    shares = [0.05, 0.12, 0.09, 0.10, 0.32, 0.16, 0.06, 0.10]
    rows: list[list[Any]] = [[Paragraph(_para_text(tr(f"col.{c}")), head) for c in columns]]
    for index, d in enumerate(docs, start=1):
        number = f"{d.code_number}/{d.code_notation}" if d.code_number else "—"
        date = _vn_date(d.issued_date)
        values = [
            d.doc_ordinal or index,
            number,
            date,
            d.type_name,
            d.subject,
            d.organ_name,
            d.page_amount if d.page_amount is not None else "—",
            d.description or "",
        ]
        rows.append([Paragraph(_para_text(v), cell) for v in values])
    table = Table(rows, colWidths=[width * s for s in shares], repeatRows=1, hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.5, colors.black),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
            ]
        )
    )
    story += [table, Spacer(1, 4 * mm)]
    story.append(Paragraph(_para_text(tr("footer", docs=len(docs), pages=pages)), base))
    story.append(Paragraph(_para_text(tr("exported", at=exported)), cell))

    def page_number(canvas: Any, template: Any) -> None:
        canvas.saveState()
        canvas.setFont(FONT, 8)
        canvas.drawRightString(
            pagesize[0] - 15 * mm, 8 * mm, tr("page", page=canvas.getPageNumber())
        )
        canvas.restoreState()

    doc_template.build(story, onFirstPage=page_number, onLaterPages=page_number)
    return buffer.getvalue()


def _vn_date(value: dt.date | None) -> str:
    return value.strftime("%d/%m/%Y") if value else "—"


def _write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        Path(name).replace(target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def export_case_file(
    catalog: Catalog,
    store: ObjectStore | None,
    file_code_or_id: int | str,
    out_dir: Path | str,
    *,
    actor: str = "system",
    locale: str | None = None,
    now: dt.datetime | None = None,
) -> tuple[Path, Path]:
    """Write ``<FileCode>.pdf`` (the listing) and ``<FileCode>.xml`` (Appendix VI) into
    ``out_dir``; every document read is logged in the access history under ``actor``.

    ``store`` is not read today (page counts come from the catalogue's ``PageAmount``); it is
    taken so that counting pages of documents without one can be added without an API change.
    """
    from kyso.i18n import current_locale

    del store
    case = _find_case(catalog, file_code_or_id)
    docs = _load(catalog, _case_document_ids(catalog, case.id), actor, "export.case_file")
    exported = _stamp(now or dt.datetime.now(dt.UTC)) or ""
    loc = locale or current_locale()
    out = Path(out_dir)
    stem = _safe_name(case.file_code)
    pdf_path, xml_path = out / f"{stem}.pdf", out / f"{stem}.xml"
    pdf = _listing_pdf(case, docs, loc, exported)
    xml = case_file_xml(case, docs, exported=exported)
    _write_atomic(xml_path, xml)
    _write_atomic(pdf_path, pdf)
    return pdf_path, xml_path


# -- packages -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackageSummary:
    path: Path
    fmt: str
    documents: int
    versions: int
    reports: int
    audit_events: int
    payload_files: int
    payload_bytes: int
    bag_name: str


def _version_name(v: DocumentVersion) -> str:
    return f"{v.seq}-{v.kind}.pdf"


class _Sink:
    """Where the bag's files go: a directory or a ZIP; hashes what it writes."""

    def __init__(self) -> None:
        self.manifest: dict[str, str] = {}
        self.payload_bytes = 0

    def _open(self, rel: str, stored: bool) -> contextlib.AbstractContextManager[BinaryIO]:
        raise NotImplementedError

    def write_stream(self, rel: str, chunks: Iterable[bytes], *, stored: bool = False) -> str:
        digest = hashlib.sha256()
        size = 0
        with self._open(rel, stored) as out:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        hexdigest = digest.hexdigest()
        if rel.startswith("data/"):
            self.manifest[rel] = hexdigest
            self.payload_bytes += size
        return hexdigest

    def write(self, rel: str, data: bytes) -> str:
        return self.write_stream(rel, [data])


class _DirSink(_Sink):
    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    @contextlib.contextmanager
    def _open(self, rel: str, stored: bool) -> Iterator[BinaryIO]:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())


class _ZipSink(_Sink):
    def __init__(self, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__()
        self.archive = archive
        self.prefix = prefix

    @contextlib.contextmanager
    def _open(self, rel: str, stored: bool) -> Iterator[BinaryIO]:
        info = zipfile.ZipInfo(f"{self.prefix}/{rel}", date_time=_zip_time())
        info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        with self.archive.open(info, "w", force_zip64=True) as out:
            yield out  # type: ignore[misc]


def _zip_time() -> tuple[int, int, int, int, int, int]:
    now = dt.datetime.now(dt.UTC)
    return (max(now.year, 1980), now.month, now.day, now.hour, now.minute, now.second)


def _version_chunks(store: ObjectStore, version: DocumentVersion, doc_id: int) -> Iterator[bytes]:
    """The version's bytes from the store, checked against the catalogue's SHA-256 and size."""
    digest = hashlib.sha256()
    size = 0
    with store.open(version.object_key) as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            yield chunk
    if digest.hexdigest() != version.sha256 or size != version.size:
        raise ExportError(
            "archive.export.version_mismatch",
            document=doc_id,
            seq=version.seq,
            key=version.object_key,
        )


def _audit_excerpt(
    catalog: Catalog, doc_ids: Sequence[int], case_id: int | None
) -> tuple[list[dict[str, Any]], list[tuple[AuditAnchor, str]]]:
    """The excerpt's lines and the anchors that seal it: the first anchor at or after the last
    relevant event (the excerpt runs on to it, as redacted links), with the file name its
    token gets in the package."""
    ids = set(doc_ids)
    pattern = re.compile(r"document:(\d+)(?:/|$)")

    def relevant(subject: str) -> bool:
        match = pattern.match(subject)
        if match is not None:
            return int(match.group(1)) in ids
        return case_id is not None and subject == f"case:{case_id}"

    with catalog.session() as s:
        conditions: list[Any] = [AuditEvent.subject.like("document:%")]
        if case_id is not None:
            conditions.append(AuditEvent.subject == f"case:{case_id}")
        seqs = [
            seq
            for seq, subject in s.execute(
                sa.select(AuditEvent.seq, AuditEvent.subject).where(sa.or_(*conditions))
            )
            if relevant(subject)
        ]
        if not seqs:
            return [], []
        anchor = s.scalars(
            sa.select(AuditAnchor)
            .where(AuditAnchor.event_seq >= max(seqs))
            .order_by(AuditAnchor.event_seq, AuditAnchor.id)
            .limit(1)
        ).first()
        last = max(seqs) if anchor is None else anchor.event_seq
        lines: list[dict[str, Any]] = []
        rows = s.scalars(
            sa.select(AuditEvent)
            .where(AuditEvent.seq >= min(seqs), AuditEvent.seq <= last)
            .order_by(AuditEvent.seq)
        )
        for e in rows:
            if relevant(e.subject):
                lines.append(
                    {
                        "seq": e.seq,
                        "at": e.at,
                        "actor": e.actor,
                        "action": e.action,
                        "subject": e.subject,
                        "details_json": e.details_json,
                        "prev_hash": e.prev_hash,
                        "hash": e.hash,
                    }
                )
            else:
                lines.append(
                    {"seq": e.seq, "prev_hash": e.prev_hash, "hash": e.hash, "redacted": True}
                )
        anchors = [] if anchor is None else [(anchor, f"anchor-{anchor.id}.tsr")]
        return lines, anchors


README = """\
Gói lưu trữ BagIt 1.0 (RFC 8493) do kyso xuất / BagIt 1.0 archival package exported by kyso
=============================================================================================

Tiếng Việt
----------
documents/<id>/<seq>-<loại>.pdf   mọi phiên bản của văn bản <id> (bản nháp, đã ký, đã đóng dấu…)
metadata/<id>.json, <id>.xml      siêu dữ liệu văn bản theo Phụ lục VI Nghị định 30/2020
metadata/case.json, case.xml      hồ sơ (khi xuất cả hồ sơ)
reports/<id>/<seq>.json           các báo cáo kiểm tra chữ ký của phiên bản <seq>
audit/excerpt.jsonl               trích nhật ký kiểm toán (chuỗi băm) về các văn bản này

Kiểm tra: mỗi dòng của ../manifest-sha256.txt là "<SHA-256>  <đường dẫn>"; tính SHA-256 của
từng tệp và so sánh. Trong audit/excerpt.jsonl, mã băm của một sự kiện là SHA-256 của JSON
chuẩn tắc (khóa sắp xếp, không khoảng trắng, UTF-8) của {seq, at, actor, action, subject,
details (= chuỗi details_json), prev_hash}; prev_hash của mỗi dòng bằng hash của dòng trước.
Dòng "redacted" là sự kiện về hồ sơ khác: chỉ giữ mã băm để nối chuỗi.
audit/anchors.json cho biết dấu thời gian RFC 3161 (audit/anchor-<n>.tsr) niêm phong đoạn trích:
mã băm của sự kiện <seq> là dữ liệu được đóng dấu. Kiểm tra bằng OpenSSL:
  openssl ts -verify -digest <hash> -in anchor-<n>.tsr -token_in -CAfile <chứng thư gốc tin cậy>

English
-------
documents/<id>/<seq>-<kind>.pdf   every version of document <id> (draft, signed, sealed…)
metadata/<id>.json, <id>.xml      the document's metadata (Decree 30/2020 Appendix VI)
metadata/case.json, case.xml      the case file (when a whole case is exported)
reports/<id>/<seq>.json           the signature verification reports of version <seq>
audit/excerpt.jsonl               the audit-log excerpt (hash chain) about these documents

To check: each line of ../manifest-sha256.txt is "<SHA-256>  <path>"; hash every file and
compare. In audit/excerpt.jsonl an event's hash is the SHA-256 of the canonical JSON (sorted
keys, no spaces, UTF-8) of {seq, at, actor, action, subject, details (= the details_json
string), prev_hash}; each line's prev_hash equals the previous line's hash. "redacted" lines
are events about other records: only their hashes are kept, to link the chain.
audit/anchors.json names the RFC 3161 timestamp (audit/anchor-<n>.tsr) that seals the excerpt:
the hash of event <seq> is what was timestamped. To check it with OpenSSL:
  openssl ts -verify -digest <hash> -in anchor-<n>.tsr -token_in -CAfile <trusted root>
"""


def _resolve_selection(
    catalog: Catalog, selection: Sequence[int] | int | str
) -> tuple[CaseFile | None, list[int]]:
    if isinstance(selection, (int, str)):
        case = _find_case(catalog, selection)
        return case, _case_document_ids(catalog, case.id)
    ids = list(dict.fromkeys(int(i) for i in selection))
    if not ids:
        raise ExportError("archive.export.empty")
    return None, ids


def _write_bag(
    sink: _Sink,
    catalog: Catalog,
    store: ObjectStore,
    case: CaseFile | None,
    docs: Sequence[Document],
    *,
    source_organization: str,
    description: str,
    identifier: str,
    bagging_date: dt.date,
    exported: str,
) -> tuple[int, int, int]:
    versions = reports = 0
    sink.write("data/README.txt", README.encode("utf-8"))
    if case is not None:
        sink.write(
            "data/metadata/case.json",
            _json_bytes(case_file_dict(case, docs)),
        )
        sink.write("data/metadata/case.xml", case_file_xml(case, docs, exported=exported))
    for doc in docs:
        for version in doc.versions:
            sink.write_stream(
                f"data/documents/{doc.id}/{_version_name(version)}",
                _version_chunks(store, version, doc.id),
                stored=True,
            )
            versions += 1
            if version.reports:
                payload = {
                    "document": doc.id,
                    "version": version.seq,
                    "sha256": version.sha256,
                    "reports": [
                        {
                            "id": r.id,
                            "indication": r.indication,
                            "sub_indication": r.sub_indication,
                            "created_at": _stamp(r.created_at),
                            "created_by": r.created_by,
                            "report": json.loads(r.report_json),
                        }
                        for r in version.reports
                    ],
                }
                sink.write(f"data/reports/{doc.id}/{version.seq}.json", _json_bytes(payload))
                reports += len(version.reports)
        sink.write(f"data/metadata/{doc.id}.json", _json_bytes(document_dict(doc)))
        sink.write(f"data/metadata/{doc.id}.xml", document_xml(doc))
    excerpt, anchors = _audit_excerpt(
        catalog, [d.id for d in docs], None if case is None else case.id
    )
    sink.write(
        "data/audit/excerpt.jsonl",
        "".join(
            json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n" for line in excerpt
        ).encode("utf-8"),
    )
    if anchors:
        for anchor, name in anchors:
            sink.write(f"data/audit/{name}", bytes(anchor.tsa_token))
        sink.write(
            "data/audit/anchors.json",
            _json_bytes(
                [
                    {"seq": a.event_seq, "hash": a.head_hash, "token": name, "at": _stamp(a.at)}
                    for a, name in anchors
                ]
            ),
        )
    payload_files = len(sink.manifest)
    tags: dict[str, str] = {}
    tags["bagit.txt"] = sink.write(
        "bagit.txt", b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
    )
    info = [
        ("Source-Organization", source_organization),
        ("Bagging-Date", bagging_date.isoformat()),
        ("Payload-Oxum", f"{sink.payload_bytes}.{payload_files}"),
        ("External-Description", description),
        ("External-Identifier", identifier),
        ("Bag-Software-Agent", "kyso"),
    ]
    tags["bag-info.txt"] = sink.write(
        "bag-info.txt",
        "".join(f"{k}: {_one_line(v)}\n" for k, v in info).encode("utf-8"),
    )
    manifest = "".join(f"{h}  {p}\n" for p, h in sorted(sink.manifest.items()))
    tags["manifest-sha256.txt"] = sink.write("manifest-sha256.txt", manifest.encode("utf-8"))
    sink.write(
        "tagmanifest-sha256.txt",
        "".join(f"{h}  {p}\n" for p, h in sorted(tags.items())).encode("utf-8"),
    )
    return versions, reports, len(excerpt)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode("utf-8")


def export_package(
    catalog: Catalog,
    store: ObjectStore,
    selection: Sequence[int] | int | str,
    out_path: Path | str,
    *,
    fmt: Literal["bagit", "zip"] = "bagit",
    actor: str = "system",
    source_organization: str | None = None,
    now: dt.datetime | None = None,
) -> PackageSummary:
    """Write a BagIt package of the documents ``selection`` names: a list of document ids, or a
    case file (its id or FileCode) for all its documents with the case's metadata.

    ``fmt="bagit"``: ``out_path`` is the bag's directory (it must not exist); ``fmt="zip"``:
    ``out_path`` is a ZIP holding the bag's directory (named after the file, without
    ``.zip``).  Written atomically; ExportError if a version's bytes differ from the catalogue.
    """
    if fmt not in ("bagit", "zip"):
        raise ExportError("archive.export.format", fmt=fmt)
    target = Path(out_path)
    if target.exists():
        raise ExportError("archive.export.exists", path=str(target))
    case, ids = _resolve_selection(catalog, selection)
    docs = _load(catalog, ids, actor, "export.package")
    moment = now or dt.datetime.now(dt.UTC)
    exported = _stamp(moment) or ""
    if case is not None:
        identifier = case.file_code
        description = f"Hồ sơ {case.file_code}: {case.title}"
        organization = source_organization or case.creator or case.organ_id
    else:
        identifier = ",".join(d.document_id or str(d.id) for d in docs)
        description = "; ".join(
            f"{d.type_name} {d.code_number}/{d.code_notation}" if d.code_number else d.type_name
            for d in docs
        )
        organization = source_organization or (docs[0].organ_name if docs else "kyso")
    bag_name = target.name[:-4] if fmt == "zip" and target.name.endswith(".zip") else target.name
    target.parent.mkdir(parents=True, exist_ok=True)

    def write(sink: _Sink) -> tuple[int, int, int]:
        return _write_bag(
            sink,
            catalog,
            store,
            case,
            docs,
            source_organization=organization,
            description=description,
            identifier=identifier,
            bagging_date=moment.date(),
            exported=exported,
        )

    sink: _Sink
    if fmt == "bagit":
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            sink = _DirSink(tmp)
            counts = write(sink)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    else:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w+b") as raw:
                with zipfile.ZipFile(raw, "w", allowZip64=True) as archive:
                    sink = _ZipSink(archive, bag_name)
                    counts = write(sink)
                raw.flush()
                os.fsync(raw.fileno())
            Path(name).replace(target)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
    versions, reports, events = counts
    return PackageSummary(
        path=target,
        fmt=fmt,
        documents=len(docs),
        versions=versions,
        reports=reports,
        audit_events=events,
        payload_files=len(sink.manifest),
        payload_bytes=sink.payload_bytes,
        bag_name=bag_name,
    )


# -- checking a package (standard library only) ---------------------------------------------------


@dataclass(frozen=True)
class PackageProblem:
    """One thing wrong with a package; ``path`` is relative to the bag's directory."""

    kind: str
    """``bagit``, ``missing``, ``mismatch``, ``unlisted``, ``oxum``, ``audit``."""
    path: str
    code: str
    params: dict[str, Any] = field(default_factory=dict)

    def message(self, locale: str | None = None) -> str:
        from kyso.i18n import t

        return t(self.code, locale=locale, path=self.path, **self.params)


class _Reader:
    """The bag's files, from a directory or a ZIP with one top folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        self.prefix = ""
        if path.is_file():
            self.zip = zipfile.ZipFile(path)
            tops = {n.split("/", 1)[0] for n in self.zip.namelist()}
            self.prefix = (tops.pop() + "/") if len(tops) == 1 else ""

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()

    def files(self) -> list[str]:
        if self.zip is not None:
            return [
                n[len(self.prefix) :]
                for n in self.zip.namelist()
                if n.startswith(self.prefix) and not n.endswith("/")
            ]
        return [p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()]

    def exists(self, rel: str) -> bool:
        if self.zip is not None:
            try:
                self.zip.getinfo(self.prefix + rel)
            except KeyError:
                return False
            return True
        return (self.path / rel).is_file()

    @contextlib.contextmanager
    def open(self, rel: str) -> Iterator[BinaryIO]:
        if self.zip is not None:
            with self.zip.open(self.prefix + rel) as stream:
                yield stream  # type: ignore[misc]
        else:
            with (self.path / rel).open("rb") as stream:
                yield stream

    def sha256(self, rel: str) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        with self.open(rel) as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        return digest.hexdigest(), size

    def text(self, rel: str) -> str:
        return self.read(rel).decode("utf-8")

    def read(self, rel: str) -> bytes:
        with self.open(rel) as stream:
            return stream.read()


def _parse_manifest(text: str) -> list[tuple[str, str]]:
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        digest, _, rel = line.partition(" ")
        rel = rel.lstrip(" \t").replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")
        entries.append((digest.lower(), rel))
    return entries


def _event_hash(event: dict[str, Any]) -> str:
    payload = {
        "seq": event["seq"],
        "at": event["at"],
        "actor": event["actor"],
        "action": event["action"],
        "subject": event["subject"],
        "details": event["details_json"],
        "prev_hash": event["prev_hash"],
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_audit(reader: _Reader, rel: str) -> list[PackageProblem]:
    problems: list[PackageProblem] = []
    previous: dict[str, Any] | None = None
    for number, line in enumerate(reader.text(rel).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
            seq, prev_hash, own = int(event["seq"]), str(event["prev_hash"]), str(event["hash"])
            if not event.get("redacted") and _event_hash(event) != own:
                problems.append(
                    PackageProblem("audit", rel, "archive.export.check.audit_altered", {"seq": seq})
                )
        except (ValueError, KeyError, TypeError):
            problems.append(
                PackageProblem("audit", rel, "archive.export.check.audit_line", {"line": number})
            )
            previous = None
            continue
        if previous is not None and (seq != previous["seq"] + 1 or prev_hash != previous["hash"]):
            problems.append(
                PackageProblem("audit", rel, "archive.export.check.audit_link", {"seq": seq})
            )
        previous = {"seq": seq, "hash": own}
    return problems


def _check_anchors(reader: _Reader, excerpt: str, rel: str) -> list[PackageProblem]:
    """Each anchor names an event of the excerpt by its seq and hash, and its token (DER)
    carries that hash as its message imprint (``04 20 <hash>``). The token's signature is
    checked with ``openssl ts -verify`` against a trusted root: see data/README.txt."""
    problems: list[PackageProblem] = []
    hashes: dict[int, str] = {}
    for line in reader.text(excerpt).splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            event = json.loads(line)
            hashes[int(event["seq"])] = str(event["hash"])
    try:
        entries = json.loads(reader.text(rel))
        anchors = [(int(e["seq"]), str(e["hash"]), str(e["token"])) for e in entries]
    except (ValueError, KeyError, TypeError):
        return [PackageProblem("audit", rel, "archive.export.check.anchor_unreadable")]
    for seq, digest, token in anchors:
        path = f"data/audit/{token}"
        if hashes.get(seq) != digest:
            problems.append(
                PackageProblem("audit", rel, "archive.export.check.anchor_mismatch", {"seq": seq})
            )
            continue
        try:
            imprint = b"\x04\x20" + bytes.fromhex(digest)
            found = reader.exists(path) and imprint in reader.read(path)
        except ValueError:
            found = False
        if not found:
            problems.append(
                PackageProblem("audit", path, "archive.export.check.anchor_token", {"seq": seq})
            )
    return problems


def check_package(path: Path | str) -> list[PackageProblem]:
    """Every problem found in the package at ``path`` (a bag directory or a ZIP of one); an
    empty list means the package is complete and unaltered.  Standard library only."""
    problems: list[PackageProblem] = []
    try:
        reader = _Reader(Path(path))
    except (OSError, zipfile.BadZipFile) as e:
        return [
            PackageProblem(
                "bagit", str(path), "archive.export.check.unreadable", {"detail": type(e).__name__}
            )
        ]
    try:
        if not reader.exists("bagit.txt") or "BagIt-Version:" not in reader.text("bagit.txt"):
            problems.append(PackageProblem("bagit", "bagit.txt", "archive.export.check.bagit"))
        if not reader.exists("manifest-sha256.txt"):
            problems.append(
                PackageProblem("missing", "manifest-sha256.txt", "archive.export.check.missing")
            )
            return problems
        listed: set[str] = set()
        octets = 0
        for digest, rel in _parse_manifest(reader.text("manifest-sha256.txt")):
            listed.add(rel)
            if not reader.exists(rel):
                problems.append(PackageProblem("missing", rel, "archive.export.check.missing"))
                continue
            actual, size = reader.sha256(rel)
            octets += size
            if actual != digest:
                problems.append(PackageProblem("mismatch", rel, "archive.export.check.mismatch"))
        for rel in sorted(reader.files()):
            if rel.startswith("data/") and rel not in listed:
                problems.append(PackageProblem("unlisted", rel, "archive.export.check.unlisted"))
        if reader.exists("tagmanifest-sha256.txt"):
            for digest, rel in _parse_manifest(reader.text("tagmanifest-sha256.txt")):
                if not reader.exists(rel):
                    problems.append(PackageProblem("missing", rel, "archive.export.check.missing"))
                elif reader.sha256(rel)[0] != digest:
                    problems.append(
                        PackageProblem("mismatch", rel, "archive.export.check.mismatch")
                    )
        if reader.exists("bag-info.txt"):
            for line in reader.text("bag-info.txt").splitlines():
                name, _, value = line.partition(":")
                if name.strip() == "Payload-Oxum":
                    expected = f"{octets}.{len(listed)}"
                    if value.strip() != expected:
                        problems.append(
                            PackageProblem(
                                "oxum",
                                "bag-info.txt",
                                "archive.export.check.oxum",
                                {"declared": value.strip(), "actual": expected},
                            )
                        )
        if "data/audit/excerpt.jsonl" in listed and reader.exists("data/audit/excerpt.jsonl"):
            problems.extend(_check_audit(reader, "data/audit/excerpt.jsonl"))
            if "data/audit/anchors.json" in listed and reader.exists("data/audit/anchors.json"):
                problems.extend(
                    _check_anchors(reader, "data/audit/excerpt.jsonl", "data/audit/anchors.json")
                )
    finally:
        reader.close()
    return problems
