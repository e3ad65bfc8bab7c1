"""Decree 30/2020 Appendix VI metadata of documents and case files, and its validation.

The field names follow the standard (``OrganId``, ``CodeNumber``, ``CodeNotation``...), written
in snake case.  :meth:`DocumentMetadata.validate` checks lengths (Appendix VI string sizes), the
number and symbol syntax (the same rules as the clerk's step, :mod:`kyso.signer.register`) and
agency codes in both accepted forms: the older 13-character code (``000.00.00.G22``) and the
newer dotted code of Decision 20/2020 (``G06.01``, ``H37.02.02``, up to 35 characters).

Also here: :func:`fold`, the diacritics-insensitive form of Vietnamese text used for search
(``Quyết định`` → ``quyet dinh``).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass, field, fields
from typing import Any

from kyso.errors import KysoError

__all__ = [
    "DIRECTIONS",
    "SECRECY_LEVELS",
    "URGENCY_LEVELS",
    "CaseFileMetadata",
    "CatalogError",
    "DocumentMetadata",
    "MetadataError",
    "Recipient",
    "agency_code_form",
    "fold",
    "normalise_number",
    "parse_agency_code",
]


class CatalogError(KysoError):
    """A catalogue operation failed (base of the archive catalogue's errors)."""

    code = "archive.catalog.error"


class MetadataError(CatalogError):
    """A metadata field is missing, too long or badly formed (``params['field']`` names it)."""

    code = "archive.catalog.metadata.invalid"


# -- text folding ---------------------------------------------------------------------------------


def fold(text: str | None) -> str:
    """Lower case, without diacritics, ``đ`` → ``d``: what search compares."""
    if not text:
        return ""
    decomposed = unicodedata.normalize("NFD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    stripped = stripped.replace("đ", "d").replace("Đ", "D")
    return unicodedata.normalize("NFC", stripped).lower()


# -- agency codes ---------------------------------------------------------------------------------

AGENCY_CODE_MAX = 35
_LEGACY_CODE = re.compile(r"[0-9A-Z]{3}\.[0-9A-Z]{2}\.[0-9A-Z]{2}\.[0-9A-Z]{3}")
_DOTTED_CODE = re.compile(r"[0-9A-Z]+(?:\.[0-9A-Z]+)*")


def agency_code_form(code: str) -> str:
    """``"legacy"`` for a 13-character code (``000.00.00.G22``), ``"dotted"`` for the newer form."""
    return "legacy" if _LEGACY_CODE.fullmatch(code) else "dotted"


def parse_agency_code(value: str, field_name: str = "organ_id") -> str:
    """The agency code, trimmed, if it has one of the two accepted forms; MetadataError if not."""
    text = (value or "").strip()
    if not text:
        raise MetadataError("archive.catalog.metadata.required", field=field_name)
    if len(text) > AGENCY_CODE_MAX:
        raise MetadataError("archive.catalog.metadata.agency_code", field=field_name, value=text)
    if _LEGACY_CODE.fullmatch(text) or _DOTTED_CODE.fullmatch(text):
        return text
    raise MetadataError("archive.catalog.metadata.agency_code", field=field_name, value=text)


def normalise_number(value: int | str) -> str:
    """The document number as stored: at least two digits (``5`` → ``"05"``)."""
    from kyso.signer.register import RegisterError, parse_number

    try:
        return f"{parse_number(value):02d}"
    except RegisterError as e:
        raise MetadataError(e.code, field="code_number", **e.params) from e


def _normalise_symbol(value: str) -> str:
    from kyso.signer.register import RegisterError, parse_symbol

    try:
        return parse_symbol(value)
    except RegisterError as e:
        raise MetadataError(e.code, field="code_notation", **e.params) from e


# -- the metadata ---------------------------------------------------------------------------------

DIRECTIONS = ("outgoing", "incoming")
URGENCY_LEVELS = ("Thường", "Khẩn", "Thượng khẩn", "Hỏa tốc")
"""Độ khẩn [M]: the levels Decree 30 prints on documents."""
SECRECY_LEVELS = ("Thường", "Mật", "Tối mật", "Tuyệt mật")
"""Độ mật [M]: the levels of the Law on protection of state secrets."""

# Appendix VI string sizes (characters).
LENGTHS: dict[str, int] = {
    "document_id": 100,
    "organ_name": 200,
    "type_name": 100,
    "code_number": 11,
    "code_notation": 30,
    "subject": 500,
    "language": 100,
    "description": 500,
    "signer_position": 100,
    "signer_full_name": 50,
    "arrival_number": 11,
    "agency_id": AGENCY_CODE_MAX,
}
CASE_LENGTHS: dict[str, int] = {
    "file_notation": 20,
    "title": 1000,
    "maintenance": 30,
    "rights": 30,
    "creator": 200,
    "language": 100,
    "description": 500,
}


@dataclass(frozen=True)
class Recipient:
    """An addressee (``To``/``ToPlaces``): agency code (optional) and name."""

    organ_name: str
    organ_id: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"organ_id": self.organ_id, "organ_name": self.organ_name}


def _check_length(name: str, value: str | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        raise MetadataError(
            "archive.catalog.metadata.too_long", field=name, max=limit, length=len(value)
        )


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or value < 0):
        raise MetadataError("archive.catalog.metadata.negative", field=name, value=value)


@dataclass
class DocumentMetadata:
    """An outgoing or incoming document as Appendix VI describes it."""

    organ_id: str
    """OrganId of the issuing agency (13-character or dotted code)."""
    code_number: str | int | None
    """CodeNumber (số): None for a draft not yet registered."""
    code_notation: str | None
    """CodeNotation (ký hiệu), e.g. ``QĐ-UBND``."""
    issued_date: dt.date | None
    type_name: str
    """TypeName, e.g. ``Quyết định``, ``Công văn``."""
    organ_name: str
    subject: str
    """Subject (trích yếu)."""
    direction: str = "outgoing"
    document_id: str | None = None
    """The document's identifier (edXML ``DocumentId``); generated when number and date exist."""
    agency_id: str | None = None
    """The agency whose archive holds this record (tenancy); defaults to ``organ_id`` when
    outgoing."""
    language: str = "Tiếng Việt"
    page_amount: int | None = None
    description: str | None = None
    signer_position: str | None = None
    signer_full_name: str | None = None
    to: list[Recipient] = field(default_factory=list)
    urgency: str | None = None
    secrecy: str | None = None
    issued_amount: int | None = None
    due_date: dt.date | None = None
    doc_ordinal: int | None = None
    # incoming only
    arrival_date: dt.date | None = None
    arrival_number: str | None = None
    to_places: list[Recipient] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)

    def validate(self) -> DocumentMetadata:
        """Check every field and normalise number, symbol and codes; MetadataError on the first
        problem (its ``params['field']`` names the field)."""
        if self.direction not in DIRECTIONS:
            raise MetadataError(
                "archive.catalog.metadata.direction", field="direction", value=self.direction
            )
        self.organ_id = parse_agency_code(self.organ_id, "organ_id")
        if self.agency_id is not None:
            self.agency_id = parse_agency_code(self.agency_id, "agency_id")
        elif self.direction == "outgoing":
            self.agency_id = self.organ_id
        for name in ("type_name", "organ_name", "subject"):
            value = getattr(self, name)
            if not (value or "").strip():
                raise MetadataError("archive.catalog.metadata.required", field=name)
            setattr(self, name, unicodedata.normalize("NFC", value.strip()))
        if self.code_number is not None:
            self.code_number = normalise_number(self.code_number)
        if self.code_notation is not None:
            self.code_notation = _normalise_symbol(self.code_notation)
        if (self.code_number is None) != (self.code_notation is None):
            missing = "code_number" if self.code_number is None else "code_notation"
            raise MetadataError("archive.catalog.metadata.required", field=missing)
        if self.code_number is not None and self.issued_date is None:
            raise MetadataError("archive.catalog.metadata.required", field="issued_date")
        for name, limit in LENGTHS.items():
            value = getattr(self, name)
            _check_length(name, value if isinstance(value, str) else None, limit)
        for name in ("page_amount", "issued_amount", "doc_ordinal"):
            _check_positive(name, getattr(self, name))
        if self.urgency is not None and self.urgency not in URGENCY_LEVELS:
            raise MetadataError(
                "archive.catalog.metadata.choice",
                field="urgency",
                value=self.urgency,
                choices=", ".join(URGENCY_LEVELS),
            )
        if self.secrecy is not None and self.secrecy not in SECRECY_LEVELS:
            raise MetadataError(
                "archive.catalog.metadata.choice",
                field="secrecy",
                value=self.secrecy,
                choices=", ".join(SECRECY_LEVELS),
            )
        for group in (self.to, self.to_places):
            for rcpt in group:
                _check_length("to.organ_name", rcpt.organ_name, 200)
                if rcpt.organ_id is not None:
                    parse_agency_code(rcpt.organ_id, "to.organ_id")
        if self.direction == "outgoing" and (self.arrival_date or self.arrival_number):
            raise MetadataError("archive.catalog.metadata.incoming_only", field="arrival_date")
        if self.arrival_number is not None:
            self.arrival_number = normalise_number(self.arrival_number)
        if (
            self.due_date is not None
            and self.issued_date is not None
            and self.due_date < self.issued_date
        ):
            raise MetadataError("archive.catalog.metadata.due_before_issue", field="due_date")
        if self.document_id is None and self.code_number is not None and self.issued_date:
            self.document_id = (
                f"{self.organ_id},{self.issued_date:%Y/%m/%d},"
                f"{self.code_number}/{self.code_notation}"
            )
        return self

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dt.date):
                value = value.isoformat()
            elif isinstance(value, list):
                value = [v.as_dict() if isinstance(v, Recipient) else v for v in value]
            out[f.name] = value
        return out


@dataclass
class CaseFileMetadata:
    """A case file (hồ sơ): FileCode = OrganId + FileCatalog (year) + FileNotation."""

    organ_id: str
    file_catalog: int
    """FileCatalog: the year of the file list."""
    file_notation: str
    """FileNotation: the file's number/notation in the list (String 20)."""
    title: str
    maintenance: str
    """Thời hạn bảo quản: ``Vĩnh viễn`` or a number of years (``10 năm``)."""
    rights: str = "Hạn chế"
    """Chế độ sử dụng (access regime)."""
    creator: str | None = None
    language: str = "Tiếng Việt"
    start_date: dt.date | None = None
    end_date: dt.date | None = None
    description: str | None = None

    @property
    def file_code(self) -> str:
        return f"{self.organ_id}.{self.file_catalog}.{self.file_notation}"

    def validate(self) -> CaseFileMetadata:
        self.organ_id = parse_agency_code(self.organ_id, "organ_id")
        if not 1945 <= self.file_catalog <= 9999:
            raise MetadataError(
                "archive.catalog.metadata.year", field="file_catalog", value=self.file_catalog
            )
        for name in ("file_notation", "title", "maintenance", "rights"):
            value = getattr(self, name)
            if not (value or "").strip():
                raise MetadataError("archive.catalog.metadata.required", field=name)
            setattr(self, name, unicodedata.normalize("NFC", value.strip()))
        if any(c.isspace() for c in self.file_notation):
            raise MetadataError(
                "archive.catalog.metadata.file_notation",
                field="file_notation",
                value=self.file_notation,
            )
        for name, limit in CASE_LENGTHS.items():
            _check_length(name, getattr(self, name), limit)
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise MetadataError("archive.catalog.metadata.end_before_start", field="end_date")
        return self
