"""The exchange service: outbox, inbox, delivery between agencies and kyso instances, status
messages and receipts (issue 7), on top of the :mod:`kyso.exchange` library.

Each public function takes ``services`` (and, for what a user does, the caller's
:class:`Principal`) first, like :mod:`kyso.api.workflow`.

Sending (``send``): a sealed, registered document of the caller's agency becomes one edXML
message (header from the catalogue's metadata, the PDF and any attachments), signed with the
agency's key, archived in the object store, and queued once per recipient
(``exchange_outgoing``).  ``deliver`` hands one queued message over: to ``receive`` in this
process when the recipient is an agency of this instance, else by HTTP POST to the peer's
endpoint (``exchange_peers``).  The answer to a document is the recipient's signed status
message (01 arrived or 02 rejected), recorded in the sender's status history and archived
(non-repudiation of receipt).  Failures worth retrying (connection refused, timeouts, 5xx)
are retried with exponential backoff until ``KYSO_EXCHANGE_MAX_ATTEMPTS``, then the message
is ``dead`` (visible in the outbox; ``requeue`` sends it again).

Receiving (``receive``): the XML signature (trust roots and the sender's known certificates:
a configured peer's, or a local agency's seal certificate), the attachments' digests, the
metadata, then every PDF signature (``kyso.signer.verify``).  Accepted: the PDF is filed as an
incoming document of the recipient agency (ArrivalDate, ArrivalNumber from its incoming
register, TraceHeaderList) with its verification report, and 01 is answered; rejected: 02
with the reasons, nothing filed.  A message is recorded once per (recipient, dedup key): a
document already accepted from that sender under that DocumentId is answered with the first
answer, never filed twice.

Later statuses (``set_status``: 03, 04, 05, 06, 15, 16) are signed by the receiving agency and
travel back to the sender through the same queue (local call, or POST to the peer's
``/status``).  ``recall`` sends a BussinessDocType 1 message; the receiving side answers 13
and the clerk may agree (15) or refuse (16).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import os
import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import httpx
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kyso.api.principal import Principal
from kyso.api.problems import Problem
from kyso.archive import audit
from kyso.archive.metadata import DocumentMetadata, MetadataError, Recipient, parse_agency_code
from kyso.archive.models import NAMING, Document, DocumentVersion
from kyso.errors import KysoError
from kyso.exchange.codes import BusinessDocType, StatusCode
from kyso.exchange.edxml import (
    VN_TZ,
    Attachment,
    Business,
    EdxmlMessage,
    Organ,
    ReceivedAttachment,
    ResponseFor,
    TraceHeader,
    header_from_metadata,
    metadata_from_header,
    parse_edxml,
    write_edxml,
)
from kyso.exchange.errors import MalformedMessage, UnsupportedMetadata
from kyso.exchange.status import ParsedStatus, StatusMessage, build_status, parse_status
from kyso.i18n import t
from kyso.signer.verify.model import Reason

if TYPE_CHECKING:
    from kyso.api.jobs import ItemContext
    from kyso.api.services import Services
    from kyso.certs.keys import KeyHandle

__all__ = [
    "ExchangeSettings",
    "Received",
    "accept_status",
    "add_peer",
    "deliver",
    "exchange_settings",
    "history",
    "inbox",
    "job_deliver",
    "list_peers",
    "outbox",
    "recall",
    "receive",
    "requeue",
    "retry_due",
    "send",
    "set_status",
    "start_retry_loop",
]

log = logging.getLogger(__name__)

# -- settings ---------------------------------------------------------------------------------


class ExchangeSettings(BaseSettings):
    """``KYSO_EXCHANGE_…``: delivery between instances."""

    model_config = SettingsConfigDict(
        env_prefix="KYSO_EXCHANGE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    max_attempts: int = Field(8, ge=1, description="Delivery attempts before a message is dead.")
    backoff: float = Field(10.0, gt=0, description="Seconds before the first retry (doubled).")
    backoff_max: float = Field(3600.0, gt=0, description="Longest wait between two attempts.")
    timeout: float = Field(60.0, gt=0, description="Seconds to wait for a peer's answer.")
    lease: float = Field(
        600.0, gt=0, description="A message 'sending' for longer was abandoned: try again."
    )
    dispatch: Literal["thread", "none"] = Field(
        "thread",
        description="Deliver right after sending in a background thread (and retry due "
        "messages in the API process, see start_retry_loop), or only when retry_due runs "
        "(beat / 'kyso exchange deliver').",
    )
    retry_interval: float = Field(
        30.0, ge=0, description="Seconds between two retry_due runs of start_retry_loop (0: off)."
    )
    accept_indeterminate: bool = Field(
        False,
        description="File a document whose PDF signatures verify as INDETERMINATE (default: "
        "only TOTAL_PASSED; anything else is answered 02).",
    )
    max_message_bytes: int = Field(
        200 * 1024 * 1024, gt=0, description="Largest edXML message the inbox accepts."
    )
    inbox_rate_limit: int = Field(
        120,
        ge=0,
        description="Messages a minute the peer inbox (POST /api/v1/exchange/inbox and "
        "/status, no account) takes from one client address; more are answered 429 with "
        "Retry-After, which a sending kyso retries later (0: no limit).",
    )
    client_cert: Path | None = Field(None, description="mTLS: this instance's client cert (PEM).")
    client_key: Path | None = Field(None, description="mTLS: the client certificate's key (PEM).")
    ca_bundle: Path | None = Field(None, description="CA bundle for peers' HTTPS endpoints.")


def exchange_settings(services: Services) -> ExchangeSettings:
    """The exchange settings of ``services`` (read from the environment once; tests may put
    their own in ``services.__dict__['exchange_settings']``)."""
    found = services.__dict__.get("exchange_settings")
    if not isinstance(found, ExchangeSettings):
        found = ExchangeSettings()
        services.__dict__["exchange_settings"] = found
    return found


# -- tables (migration 0006) --------------------------------------------------------------------

metadata = sa.MetaData(naming_convention=NAMING)

peers = sa.Table(
    "exchange_peers",
    metadata,
    sa.Column("code", sa.String(35), primary_key=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("endpoint", sa.String(500), nullable=False),
    sa.Column("certificates", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)

outgoing = sa.Table(
    "exchange_outgoing",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("agency_id", sa.String(35), nullable=False),
    sa.Column("recipient", sa.String(35), nullable=False),
    sa.Column("edxml_document_id", sa.String(200), nullable=False),
    sa.Column(
        "document_id", sa.Integer, sa.ForeignKey("documents.id", ondelete="RESTRICT"), nullable=True
    ),
    sa.Column("version_seq", sa.Integer, nullable=True),
    sa.Column("incoming_id", sa.Integer, nullable=True),
    sa.Column("business_type", sa.Integer, nullable=False),
    sa.Column("status_code", sa.String(2), nullable=True),
    sa.Column("object_key", sa.String(100), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("answer_code", sa.String(2), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind IN ('document', 'status')", name="kind"),
    sa.CheckConstraint(
        "state IN ('queued', 'sending', 'delivered', 'failed', 'dead')", name="state"
    ),
    sa.Index("ix_exchange_outgoing_agency_id", "agency_id"),
    sa.Index("ix_exchange_outgoing_state_next", "state", "next_attempt_at"),
    sa.Index("ix_exchange_outgoing_edxml_document_id", "edxml_document_id"),
)

incoming = sa.Table(
    "exchange_incoming",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("agency_id", sa.String(35), nullable=False),
    sa.Column("sender", sa.String(35), nullable=False),
    sa.Column("edxml_document_id", sa.String(200), nullable=False),
    sa.Column("business_type", sa.Integer, nullable=False),
    sa.Column("dedup_key", sa.String(400), nullable=False),
    sa.Column("message_sha256", sa.String(64), nullable=False),
    sa.Column("object_key", sa.String(100), nullable=True),
    sa.Column(
        "document_id", sa.Integer, sa.ForeignKey("documents.id", ondelete="RESTRICT"), nullable=True
    ),
    sa.Column("accepted", sa.Boolean, nullable=False),
    sa.Column("verdict", sa.JSON, nullable=False),
    sa.Column("attachments", sa.JSON, nullable=True),  # migration 0008
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("answer_key", sa.String(100), nullable=False),
    sa.Column("answer_code", sa.String(2), nullable=False),
    sa.Column("via", sa.String(20), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("agency_id", "dedup_key"),
    sa.Index("ix_exchange_incoming_edxml_document_id", "edxml_document_id"),
)

statuses = sa.Table(
    "exchange_statuses",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("owner", sa.String(35), nullable=False),
    sa.Column("edxml_document_id", sa.String(200), nullable=False),
    sa.Column("agency", sa.String(35), nullable=False),
    sa.Column("code", sa.String(2), nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("verdict", sa.String(40), nullable=True),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("stated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("object_key", sa.String(100), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("outgoing_id", sa.Integer, nullable=True),
    sa.Column("incoming_id", sa.Integer, nullable=True),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("owner", "sha256"),
    sa.Index("ix_exchange_statuses_doc_agency", "edxml_document_id", "agency"),
)

arrivals = sa.Table(
    "exchange_arrivals",
    metadata,
    sa.Column("agency_id", sa.String(35), primary_key=True),
    sa.Column("year", sa.Integer, primary_key=True),
    sa.Column("last_number", sa.Integer, nullable=False),
)

CLERKS = ("clerk",)
READERS = ("clerk", "archivist", "official", "verifier", "admin")
SETTABLE = (
    StatusCode.ACCEPTED,
    StatusCode.ASSIGNED,
    StatusCode.IN_PROGRESS,
    StatusCode.COMPLETED,
    StatusCode.AGREE,
    StatusCode.REFUSE,
)
SENDABLE_KINDS = ("sealed", "ltv_extended")
"""A document travels once the agency has sealed it (Decree 30 Art. 15.3, 32.2d)."""
_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _iso(value: dt.datetime | None) -> str | None:
    aware = _aware(value)
    return aware.isoformat() if aware is not None else None


def _require(principal: Principal, roles: tuple[str, ...]) -> None:
    if not principal.has(*roles):
        raise Problem(403, "forbidden", t("exchange_service.forbidden", roles=", ".join(roles)))


def system_actor(agency: str) -> str:
    """The audit actor of what the exchange does by itself for ``agency`` (answers 01/02/13,
    delivery)."""
    return f"system:exchange@{agency}"


def _system_clerk(agency: str) -> Principal:
    """The agency's automatic clerk: answers arrivals with the agency's seal key."""
    return Principal(
        user_id=0,
        username="exchange",
        agency=agency,
        roles=frozenset(CLERKS),
        via="system",
        full_name="kyso exchange",
    )


def _agency_key(services: Services, principal: Principal) -> KeyHandle:
    from kyso.api.accounts import open_agency_key

    return open_agency_key(services, principal)


def _is_local(services: Services, code: str) -> bool:
    from kyso.api.accounts import AccountNotFound

    try:
        services.accounts.get_agency(code)
    except (AccountNotFound, LookupError):
        return False
    return True


def _agency_name(services: Services, code: str) -> str | None:
    try:
        return services.accounts.get_agency(code).name
    except (KysoError, LookupError):
        with services.catalog.session() as s:
            name = s.scalar(sa.select(peers.c.name).where(peers.c.code == code))
        return str(name) if name else None


def _store_bytes(services: Services, data: bytes | Path, content_type: str) -> tuple[str, str, int]:
    """Archive ``data`` in the object store (content-addressed, with the archive's retention):
    (key, sha256, size)."""
    source: Any = data if isinstance(data, Path) else io.BytesIO(data)
    stored = services.store.put(
        source, retention=services.archive.retention(), content_type=content_type
    )
    return stored.key, stored.sha256, stored.size


def _read_object(services: Services, key: str) -> bytes:
    with services.store.open(key) as fh:
        return fh.read()


# -- peers --------------------------------------------------------------------------------------


def _load_pem(text: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(text.encode())
    except ValueError as exc:
        raise Problem(422, "validation", t("exchange_service.peer.bad_certificate")) from exc
    if not certs:
        raise Problem(422, "validation", t("exchange_service.peer.bad_certificate"))
    return certs


def _check_code(code: str, field_name: str = "agency") -> str:
    try:
        return parse_agency_code(code, field_name)
    except MetadataError as exc:
        raise Problem(422, "validation", exc.message()) from exc


def add_peer(
    services: Services,
    code: str,
    endpoint: str,
    certificates_pem: str,
    *,
    name: str | None = None,
    enabled: bool = True,
    actor: str,
) -> dict[str, Any]:
    """Configure (or reconfigure) the agency ``code`` served by another instance: the base URL
    of its exchange API (``…/api/v1/exchange``) and the certificates its messages are signed
    with.  Audited."""
    code = _check_code(code)
    if not endpoint.startswith(("http://", "https://")):
        raise Problem(422, "validation", t("exchange_service.peer.bad_endpoint", url=endpoint))
    certs = _load_pem(certificates_pem)
    pem = "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)
    now = _utcnow()
    values = {
        "name": name,
        "endpoint": endpoint.rstrip("/"),
        "certificates": pem,
        "enabled": enabled,
        "updated_at": now,
        "updated_by": actor,
    }
    with services.catalog.session(write=True) as s:
        exists = s.scalar(sa.select(peers.c.code).where(peers.c.code == code))
        if exists is None:
            s.execute(peers.insert().values(code=code, created_at=now, **values))
        else:
            s.execute(peers.update().where(peers.c.code == code).values(**values))
        audit.append(
            s,
            actor,
            "exchange.peer.set",
            f"peer:{code}",
            {
                "endpoint": values["endpoint"],
                "enabled": enabled,
                "certificates": [c.fingerprint(_SHA256()).hex() for c in certs],
            },
        )
    return {"code": code, "name": name, "endpoint": values["endpoint"], "enabled": enabled}


def _SHA256() -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def list_peers(services: Services) -> list[dict[str, Any]]:
    with services.catalog.session() as s:
        rows = s.execute(sa.select(peers).order_by(peers.c.code)).mappings().all()
    result = []
    for row in rows:
        certs = x509.load_pem_x509_certificates(row["certificates"].encode())
        result.append(
            {
                "code": row["code"],
                "name": row["name"],
                "endpoint": row["endpoint"],
                "enabled": row["enabled"],
                "certificates": [
                    {
                        "subject": c.subject.rfc4514_string(),
                        "sha256": c.fingerprint(_SHA256()).hex(),
                    }
                    for c in certs
                ],
            }
        )
    return result


def _peer(services: Services, code: str) -> Mapping[str, Any] | None:
    with services.catalog.session() as s:
        row = s.execute(sa.select(peers).where(peers.c.code == code)).mappings().first()
    return dict(row) if row is not None and row["enabled"] else None


class _KnownCertificates(Mapping[str, Sequence[x509.Certificate]]):
    """The certificates each sending agency signs with, looked up when asked: a configured
    peer's, else a local agency's seal certificate (and its intermediates)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._cache: dict[str, list[x509.Certificate]] = {}

    def __getitem__(self, code: str) -> Sequence[x509.Certificate]:
        if code not in self._cache:
            found = self._lookup(code)
            if found is None:
                raise KeyError(code)
            self._cache[code] = found
        return self._cache[code]

    def _lookup(self, code: str) -> list[x509.Certificate] | None:
        peer = _peer(self.services, code)
        if peer is not None:
            return x509.load_pem_x509_certificates(peer["certificates"].encode())
        if _is_local(self.services, code):
            ref = self.services.accounts.agency_key(code)
            if ref is None:
                return None
            return [self.services.keys.resolve(ref).certificate]
        return None

    def __iter__(self) -> Iterator[str]:
        return iter(self._cache)

    def __len__(self) -> int:
        return len(self._cache)


def _trust_roots(services: Services) -> list[x509.Certificate]:
    from kyso.certs.trust import PRESETS

    return list(services.trust_store(*PRESETS).certificates)


# -- sending ------------------------------------------------------------------------------------


def _not_found(what: str, ident: object) -> Problem:
    return Problem(404, "not-found", t(f"exchange_service.not_found.{what}", id=str(ident)))


def _metadata_of(doc: Document) -> DocumentMetadata:
    """The catalogue record as metadata (what ``header_from_metadata`` maps)."""
    return DocumentMetadata(
        organ_id=doc.organ_id,
        code_number=doc.code_number,
        code_notation=doc.code_notation,
        issued_date=doc.issued_date,
        type_name=doc.type_name,
        organ_name=doc.organ_name,
        subject=doc.subject,
        direction=doc.direction,
        document_id=doc.document_id,
        agency_id=doc.agency_id,
        language=doc.language,
        page_amount=doc.page_amount,
        description=doc.description,
        signer_position=doc.signer_position,
        signer_full_name=doc.signer_full_name,
        to=[Recipient(r.get("organ_name") or "", r.get("organ_id")) for r in doc.recipients or []],
        urgency=doc.urgency,
        secrecy=doc.secrecy,
        issued_amount=doc.issued_amount,
        due_date=doc.due_date,
        doc_ordinal=doc.doc_ordinal,
        to_places=[Recipient(r.get("organ_name") or "") for r in doc.to_places or []],
    )


@dataclass(frozen=True)
class _Source:
    document_id: int
    version_seq: int
    kind: str
    meta: DocumentMetadata


def _sendable(services: Services, principal: Principal, document_id: int) -> _Source:
    with services.catalog.session() as s:
        doc = s.get(Document, document_id)
        if doc is None or doc.agency_id != principal.agency:
            raise _not_found("document", document_id)
        last = s.execute(
            sa.select(DocumentVersion.kind, DocumentVersion.seq)
            .where(DocumentVersion.document_id == document_id)
            .order_by(DocumentVersion.seq.desc())
            .limit(1)
        ).first()
        if doc.direction != "outgoing" or last is None or last.kind not in SENDABLE_KINDS:
            raise Problem(
                409,
                "conflict",
                t("exchange_service.send.not_sealed", kind=last.kind if last else "-"),
            )
        meta = _metadata_of(doc)
    return _Source(document_id, last.seq, last.kind, meta)


def _recipient_organs(
    services: Services, principal: Principal, recipients: Sequence[str]
) -> list[Organ]:
    if not recipients:
        raise Problem(422, "validation", t("exchange_service.send.no_recipient"))
    organs: list[Organ] = []
    for raw in dict.fromkeys(recipients):
        code = _check_code(raw, "recipients")
        if code == principal.agency:
            raise Problem(422, "validation", t("exchange_service.send.to_self"))
        if not _is_local(services, code) and _peer(services, code) is None:
            raise Problem(
                422, "validation", t("exchange_service.send.unknown_recipient", code=code)
            )
        organs.append(Organ(organ_id=code, organ_name=_agency_name(services, code) or code))
    return organs


@contextmanager
def _workspace() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kyso-exchange-") as tmp:
        yield Path(tmp)


def _pdf_name(meta: DocumentMetadata) -> str:
    import re
    import unicodedata

    base = f"{meta.code_number}-{meta.code_notation}"
    ascii_name = unicodedata.normalize("NFKD", base.replace("Đ", "D").replace("đ", "d"))
    ascii_name = ascii_name.encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_name).strip("-") + ".pdf"


def _build(
    services: Services,
    principal: Principal,
    source: _Source,
    organs: Sequence[Organ],
    *,
    business: Business,
    attachments: Sequence[Attachment],
    with_document: bool,
    work: Path,
) -> Path:
    """The signed edXML message in a file of ``work``."""
    key = _agency_key(services, principal)
    try:
        header = header_from_metadata(
            source.meta,
            to=organs,
            sender=Organ(
                organ_id=source.meta.organ_id,
                organ_name=_agency_name(services, principal.agency) or source.meta.organ_name,
            ),
        )
    except UnsupportedMetadata as exc:
        raise Problem(409, "conflict", exc.message()) from exc
    files: list[Attachment] = []
    if with_document:
        pdf = work / "document.pdf"
        services.archive.get(
            source.document_id,
            pdf,
            version=source.version_seq,
            actor=principal.actor,
            purpose="exchange",
        )
        files.append(
            Attachment(name=_pdf_name(source.meta), path=pdf, description=source.meta.subject)
        )
        files.extend(attachments)
    target = work / "message.edxml"
    with target.open("wb") as out:
        try:
            write_edxml(out, header, files, signing_key=key, business=business)
        except UnsupportedMetadata as exc:
            raise Problem(409, "conflict", exc.message()) from exc
    return target


def _queue(
    services: Services,
    *,
    kind: str,
    agency: str,
    recipients: Sequence[str],
    edxml_document_id: str,
    key: str,
    sha256: str,
    size: int,
    actor: str,
    business_type: int = 0,
    document_id: int | None = None,
    version_seq: int | None = None,
    incoming_id: int | None = None,
    status_code: str | None = None,
) -> list[int]:
    ids: list[int] = []
    now = _utcnow()
    with services.catalog.session(write=True) as s:
        for recipient in recipients:
            new_id = s.execute(
                outgoing.insert()
                .values(
                    kind=kind,
                    agency_id=agency,
                    recipient=recipient,
                    edxml_document_id=edxml_document_id,
                    document_id=document_id,
                    version_seq=version_seq,
                    incoming_id=incoming_id,
                    business_type=business_type,
                    status_code=status_code,
                    object_key=key,
                    sha256=sha256,
                    size=size,
                    state="queued",
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                    created_by=actor,
                )
                .returning(outgoing.c.id)
            ).scalar_one()
            ids.append(int(new_id))
            audit.append(
                s,
                actor,
                "exchange.queue",
                f"exchange:outgoing:{new_id}",
                {
                    "kind": kind,
                    "recipient": recipient,
                    "document": edxml_document_id,
                    "business_type": business_type,
                    "status_code": status_code,
                    "object_key": key,
                    "sha256": sha256,
                },
            )
    return ids


MAX_ATTACHMENTS = 20
"""Files sent with one document, besides the document itself."""


def _is_pdf(item: Attachment | ReceivedAttachment) -> bool:
    return item.content_type == "application/pdf" or item.name.lower().endswith(".pdf")


def _sealed_attachments(
    services: Services,
    principal: Principal,
    source: _Source,
    attachments: Sequence[Attachment],
    work: Path,
) -> list[Attachment]:
    """The attachments as they travel: a PDF without a signature gets the agency's signature
    with the document's number and symbol (Decree 30/2020, Appendix I; the receiving kyso
    verifies every PDF and refuses an unsigned one); a signed PDF or another file (a
    spreadsheet, a text document) goes as it is."""
    from kyso.api.workflow import seal_attachment
    from kyso.signer.errors import BadInputError
    from kyso.signer.register import number_text

    files: list[Attachment] = []
    stamp = number_text(source.meta.code_number or "", source.meta.code_notation or "")
    for index, item in enumerate(attachments):
        if not _is_pdf(item):
            files.append(item)
            continue
        plain = work / f"attachment-{index}.pdf"
        with item.open() as fh, plain.open("wb") as out:
            shutil.copyfileobj(fh, out)
        sealed = work / f"attachment-{index}-sealed.pdf"
        try:
            seal_attachment(services, principal, plain, sealed, stamp)
        except BadInputError as exc:
            # named as the clerk knows it, not by the temporary file it was copied to
            detail = t(exc.code, **{**exc.params, "path": item.name})
            raise Problem(422, "validation", detail) from exc
        files.append(
            Attachment(
                name=item.name,
                path=sealed,
                content_type="application/pdf",
                description=item.description,
            )
        )
    return files


def send(
    services: Services,
    principal: Principal,
    document_id: int,
    recipients: Sequence[str],
    *,
    attachments: Sequence[Attachment] = (),
    business: BusinessDocType = BusinessDocType.NEW,
    reason: str | None = None,
) -> list[dict[str, Any]]:
    """Send the caller agency's sealed, registered document ``document_id`` to each agency of
    ``recipients`` (clerks).  ``business`` UPDATE or REPLACE resend a document the recipients
    already have (with ``reason``).  One signed edXML message is archived; one delivery is
    queued per recipient and dispatched.  Returns the outgoing messages."""
    _require(principal, CLERKS)
    if business is BusinessDocType.RECALL:
        raise Problem(422, "validation", t("exchange_service.send.use_recall"))
    source = _sendable(services, principal, document_id)
    organs = _recipient_organs(services, principal, recipients)
    if len(attachments) > MAX_ATTACHMENTS:
        raise Problem(422, "validation", t("exchange_service.send.too_many", max=MAX_ATTACHMENTS))
    with _workspace() as work:
        files = _sealed_attachments(services, principal, source, attachments, work)
        path = _build(
            services,
            principal,
            source,
            organs,
            business=Business(doc_type=business, reason=reason),
            attachments=files,
            with_document=True,
            work=work,
        )
        key, sha256, size = _store_bytes(services, path, "application/xml")
    assert source.meta.document_id is not None
    ids = _queue(
        services,
        kind="document",
        agency=principal.agency,
        recipients=[o.organ_id for o in organs],
        edxml_document_id=source.meta.document_id,
        key=key,
        sha256=sha256,
        size=size,
        actor=principal.actor,
        business_type=int(business),
        document_id=document_id,
        version_seq=source.version_seq,
    )
    dispatch(services, ids)
    return [message(services, principal, i) for i in ids]


def recall(
    services: Services, principal: Principal, outgoing_id: int, *, reason: str | None = None
) -> dict[str, Any]:
    """Withdraw a sent document from one recipient (BussinessDocType 1): a recall message is
    queued to it; its answer (13, then 15 or 16) joins the status history.  A message not yet
    delivered is simply not delivered any more."""
    _require(principal, CLERKS)
    row = _outgoing_row(services, principal, outgoing_id)
    if row["kind"] != "document" or row["business_type"] == int(BusinessDocType.RECALL):
        raise Problem(409, "conflict", t("exchange_service.recall.not_a_document"))
    if row["state"] in ("queued", "dead") and row["delivered_at"] is None:
        with services.catalog.session(write=True) as s:
            done = s.execute(
                outgoing.update()
                .where(outgoing.c.id == outgoing_id, outgoing.c.state.in_(("queued", "dead")))
                .values(state="failed", last_error="recalled", next_attempt_at=None)
            ).rowcount  # type: ignore[attr-defined]
            if done:
                audit.append(
                    s,
                    principal.actor,
                    "exchange.recall",
                    f"exchange:outgoing:{outgoing_id}",
                    {"delivered": False, "reason": reason},
                )
        if done:
            return message(services, principal, outgoing_id)
        row = _outgoing_row(services, principal, outgoing_id)  # it moved on meanwhile
    if row["state"] == "sending":
        raise Problem(409, "conflict", t("exchange_service.recall.sending"))
    if row["delivered_at"] is None:
        raise Problem(409, "conflict", t("exchange_service.recall.not_delivered"))
    if row["document_id"] is None:
        raise Problem(409, "conflict", t("exchange_service.recall.not_a_document"))
    with services.catalog.session() as s:
        doc = s.get(Document, row["document_id"])
        assert doc is not None
        source = _Source(row["document_id"], row["version_seq"], "sealed", _metadata_of(doc))
    organ = Organ(
        organ_id=row["recipient"],
        organ_name=_agency_name(services, row["recipient"]) or row["recipient"],
    )
    with _workspace() as work:
        path = _build(
            services,
            principal,
            source,
            [organ],
            business=Business(doc_type=BusinessDocType.RECALL, reason=reason),
            attachments=(),
            with_document=False,
            work=work,
        )
        key, sha256, size = _store_bytes(services, path, "application/xml")
    [new_id] = _queue(
        services,
        kind="document",
        agency=principal.agency,
        recipients=[row["recipient"]],
        edxml_document_id=row["edxml_document_id"],
        key=key,
        sha256=sha256,
        size=size,
        actor=principal.actor,
        business_type=int(BusinessDocType.RECALL),
        document_id=row["document_id"],
        version_seq=row["version_seq"],
    )
    with services.catalog.session(write=True) as s:
        audit.append(
            s,
            principal.actor,
            "exchange.recall",
            f"exchange:outgoing:{outgoing_id}",
            {"delivered": True, "recall_message": new_id, "reason": reason},
        )
    dispatch(services, [new_id])
    return message(services, principal, new_id)


# -- dispatching and delivery -------------------------------------------------------------------

_pool_lock = threading.Lock()


def _pool(services: Services) -> ThreadPoolExecutor:
    with _pool_lock:
        pool = services.__dict__.get("exchange_pool")
        if not isinstance(pool, ThreadPoolExecutor):
            pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="kyso-exchange")
            services.__dict__["exchange_pool"] = pool
        return pool


def dispatch(services: Services, ids: Sequence[int]) -> None:
    """Start delivering the messages ``ids`` now (KYSO_EXCHANGE_DISPATCH=thread: a background
    thread of this process), else leave them to ``retry_due`` (beat)."""
    if exchange_settings(services).dispatch == "none" or not ids:
        return
    pool = _pool(services)
    for message_id in ids:
        pool.submit(_deliver_logged, services, message_id)


def _deliver_logged(services: Services, message_id: int) -> None:
    try:
        deliver(services, message_id)
    except Exception:  # a background thread: log, the message stays queued for retry_due
        log.exception("exchange: delivering message %s failed", message_id)


class _Transient(Exception):
    """Worth trying again later (peer unreachable, timeout, 5xx)."""


class _Permanent(Exception):
    """The peer refused the message for good (4xx)."""


def _claim(services: Services, message_id: int, *, force: bool) -> Mapping[str, Any] | None:
    """Take the message for one attempt (a conditional update: two workers never send the
    same message at once); None when it is not due or not deliverable."""
    settings = exchange_settings(services)
    now = _utcnow()
    due = sa.or_(outgoing.c.next_attempt_at.is_(None), outgoing.c.next_attempt_at <= now)
    claimable = sa.or_(
        sa.and_(outgoing.c.state == "queued", sa.true() if force else due),
        sa.and_(outgoing.c.state == "sending", outgoing.c.next_attempt_at <= now),
    )
    with services.catalog.session(write=True) as s:
        taken = s.execute(
            outgoing.update()
            .where(outgoing.c.id == message_id, claimable)
            .values(
                state="sending",
                attempts=outgoing.c.attempts + 1,
                next_attempt_at=now + dt.timedelta(seconds=settings.lease),
            )
        ).rowcount  # type: ignore[attr-defined]
        if not taken:
            return None
        return dict(
            s.execute(sa.select(outgoing).where(outgoing.c.id == message_id)).mappings().one()
        )


def _backoff(settings: ExchangeSettings, attempts: int) -> float:
    return float(min(settings.backoff * (2 ** max(attempts - 1, 0)), settings.backoff_max))


def _finish(
    services: Services,
    row: Mapping[str, Any],
    state: str,
    *,
    error: str | None = None,
    answer_code: str | None = None,
) -> dict[str, Any]:
    settings = exchange_settings(services)
    now = _utcnow()
    values: dict[str, Any] = {"state": state, "last_error": error}
    if state == "delivered":
        values.update(delivered_at=now, next_attempt_at=None, answer_code=answer_code)
    elif state == "queued":
        if row["attempts"] >= settings.max_attempts:
            values["state"] = state = "dead"
            values["next_attempt_at"] = None
        else:
            values["next_attempt_at"] = now + dt.timedelta(
                seconds=_backoff(settings, row["attempts"])
            )
    else:
        values["next_attempt_at"] = None
    actor = system_actor(row["agency_id"])
    with services.catalog.session(write=True) as s:
        s.execute(
            outgoing.update()
            .where(outgoing.c.id == row["id"], outgoing.c.state == "sending")
            .values(**values)
        )
        audit.append(
            s,
            actor,
            f"exchange.deliver.{state}",
            f"exchange:outgoing:{row['id']}",
            {
                "recipient": row["recipient"],
                "attempt": row["attempts"],
                "error": error,
                "answer_code": answer_code,
            },
        )
    return {"id": row["id"], "state": state, "attempts": row["attempts"], "error": error}


def _tls_context(settings: ExchangeSettings) -> ssl.SSLContext:
    """The TLS context towards peers: the system's CAs or ``CA_BUNDLE``, and the client
    certificate for mTLS.  Built here, not with httpx's ``verify=<path>`` / ``cert=`` (both
    deprecated; with a CA path, httpx 0.28 returns before loading the client certificate,
    so mTLS through a private CA silently sent none)."""
    if settings.ca_bundle is not None:
        bundle = Path(settings.ca_bundle)
        if bundle.is_dir():
            context = ssl.create_default_context(capath=str(bundle))
        else:
            context = ssl.create_default_context(cafile=str(bundle))
    else:
        context = ssl.create_default_context()
    if settings.client_cert is not None:
        context.load_cert_chain(
            str(settings.client_cert),
            str(settings.client_key) if settings.client_key is not None else None,
        )
    return context


def _post(services: Services, url: str, data: bytes, *, params: dict[str, str]) -> bytes:
    settings = exchange_settings(services)
    try:
        context = _tls_context(settings)
    except (OSError, ssl.SSLError) as exc:
        raise _Transient(f"TLS configuration: {exc}") from exc
    try:
        with httpx.Client(timeout=settings.timeout, verify=context) as client:
            reply = client.post(
                url, content=data, params=params, headers={"Content-Type": "application/xml"}
            )
    except httpx.TransportError as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc
    if reply.status_code in _TRANSIENT_HTTP:
        raise _Transient(f"HTTP {reply.status_code}: {reply.text[:500]}")
    if reply.status_code >= 400:
        raise _Permanent(f"HTTP {reply.status_code}: {reply.text[:1000]}")
    return reply.content


def deliver(services: Services, message_id: int, *, force: bool = False) -> dict[str, Any]:
    """One delivery attempt of outgoing message ``message_id`` (if due, or ``force``): local
    recipient → :func:`receive` / :func:`accept_status` here; remote → POST to the peer.
    Safe to call twice: a message being sent or delivered is left alone, and the receiving
    side answers a repeated message with its first answer."""
    row = _claim(services, message_id, force=force)
    if row is None:
        with services.catalog.session() as s:
            current = s.execute(
                sa.select(outgoing.c.state, outgoing.c.attempts).where(outgoing.c.id == message_id)
            ).first()
        if current is None:
            raise _not_found("message", message_id)
        return {"id": message_id, "state": current.state, "attempts": current.attempts}
    data = _read_object(services, row["object_key"])
    recipient = row["recipient"]
    try:
        if _is_local(services, recipient):
            if row["kind"] == "document":
                answer = receive(services, data, via="local", recipient=recipient).answer
            else:
                accept_status(services, data, via="local")
                answer = None
        else:
            peer = _peer(services, recipient)
            if peer is None:
                raise _Permanent(t("exchange_service.deliver.no_route", code=recipient))
            path = "inbox" if row["kind"] == "document" else "status"
            answer = _post(services, f"{peer['endpoint']}/{path}", data, params={"to": recipient})
            if row["kind"] == "status":
                answer = None
    except _Transient as exc:
        return _finish(services, row, "queued", error=str(exc))
    except _Permanent as exc:
        return _finish(services, row, "failed", error=str(exc))
    except Problem as exc:
        state = "queued" if exc.status >= 500 or exc.status == 409 else "failed"
        return _finish(services, row, state, error=f"{exc.slug}: {exc.detail}")
    except (KysoError, sa.exc.OperationalError, OSError) as exc:
        return _finish(services, row, "queued", error=f"{type(exc).__name__}: {exc}")
    code: str | None = None
    if answer is not None:
        try:
            recorded = accept_status(
                services, answer, via="answer", outgoing_id=row["id"], expected=row
            )
            code = recorded["code"]
        except (Problem, KysoError) as exc:
            detail = exc.detail if isinstance(exc, Problem) else exc.message()
            return _finish(services, row, "failed", error=f"receipt: {detail}")
    return _finish(services, row, "delivered", answer_code=code)


def retry_due(services: Services, *, limit: int = 100) -> list[dict[str, Any]]:
    """Deliver every message that is due (queued with its wait over, or abandoned while being
    sent): what beat runs every minute or so."""
    now = _utcnow()
    with services.catalog.session() as s:
        ids = s.scalars(
            sa.select(outgoing.c.id)
            .where(
                sa.or_(
                    sa.and_(
                        outgoing.c.state == "queued",
                        sa.or_(
                            outgoing.c.next_attempt_at.is_(None),
                            outgoing.c.next_attempt_at <= now,
                        ),
                    ),
                    sa.and_(outgoing.c.state == "sending", outgoing.c.next_attempt_at <= now),
                )
            )
            .order_by(outgoing.c.id)
            .limit(limit)
        ).all()
    return [deliver(services, int(i)) for i in ids]


def requeue(services: Services, principal: Principal, outgoing_id: int) -> dict[str, Any]:
    """Send a dead (or failed) message again from its first attempt (clerks)."""
    _require(principal, CLERKS)
    row = _outgoing_row(services, principal, outgoing_id)
    if row["state"] not in ("dead", "failed") or row["last_error"] == "recalled":
        raise Problem(409, "conflict", t("exchange_service.requeue.state", state=row["state"]))
    with services.catalog.session(write=True) as s:
        s.execute(
            outgoing.update()
            .where(outgoing.c.id == outgoing_id)
            .values(state="queued", attempts=0, next_attempt_at=_utcnow(), last_error=None)
        )
        audit.append(s, principal.actor, "exchange.requeue", f"exchange:outgoing:{outgoing_id}", {})
    dispatch(services, [outgoing_id])
    return message(services, principal, outgoing_id)


def start_retry_loop(services: Services) -> Callable[[], None]:
    """Run :func:`retry_due` every ``KYSO_EXCHANGE_RETRY_INTERVAL`` seconds in a daemon thread
    of this process (the API process without Celery beat); returns the function that stops
    it.  Nothing runs with ``KYSO_EXCHANGE_DISPATCH=none`` or an interval of 0."""
    settings = exchange_settings(services)
    stop = threading.Event()
    if settings.dispatch == "none" or settings.retry_interval <= 0:
        return stop.set

    def loop() -> None:
        while not stop.wait(settings.retry_interval):
            try:
                retry_due(services)
            except Exception:  # a database hiccup: the next round tries again
                log.exception("exchange: retry round failed")

    threading.Thread(target=loop, name="kyso-exchange-retry", daemon=True).start()
    return stop.set


def job_deliver(ctx: ItemContext) -> dict[str, Any]:
    """The ``deliver`` job kind: one message (``message_id``), or every due message (none
    given: the beat entry)."""
    message_id = ctx.params.get("message_id")
    if message_id is None:
        results = retry_due(ctx.services)
        return {
            "attempted": len(results),
            "delivered": sum(1 for r in results if r["state"] == "delivered"),
        }
    return deliver(ctx.services, int(message_id))


# -- receiving ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """What :func:`receive` answers: the signed status message and what it recorded."""

    answer: bytes
    code: str
    incoming_id: int
    document_id: int | None
    created: bool
    """False when this message (or this document from this sender) was already received."""


def _recipient_of(services: Services, header_to: Sequence[Organ], wanted: str | None) -> str:
    codes = [o.organ_id for o in header_to]
    if wanted is not None:
        wanted = _check_code(wanted, "to")
        if wanted not in codes:
            raise Problem(
                422, "validation", t("exchange_service.receive.not_addressed", code=wanted)
            )
        if not _is_local(services, wanted):
            raise _not_found("agency", wanted)
        return wanted
    local = [c for c in codes if _is_local(services, c)]
    if not local:
        raise _not_found("agency", ", ".join(codes))
    if len(local) > 1:
        raise Problem(422, "validation", t("exchange_service.receive.which_recipient"))
    return local[0]


def _existing_answer(services: Services, agency: str, keys: Sequence[str]) -> Received | None:
    with services.catalog.session() as s:
        row = (
            s.execute(
                sa.select(incoming)
                .where(incoming.c.agency_id == agency, incoming.c.dedup_key.in_(list(keys)))
                .order_by(incoming.c.id)
                .limit(1)
            )
            .mappings()
            .first()
        )
    if row is None:
        return None
    return Received(
        answer=_read_object(services, row["answer_key"]),
        code=row["answer_code"],
        incoming_id=row["id"],
        document_id=row["document_id"],
        created=False,
    )


def _verify_pdfs(
    services: Services, message: EdxmlMessage
) -> tuple[list[Reason], dict[str, dict[str, Any]]]:
    """Every PDF attachment's signatures (kyso.signer.verify, kyso's trust): the reasons to
    reject and each PDF's report by content id."""
    from kyso.signer.verify import VerifyPolicy, verify

    settings = exchange_settings(services)
    policy = VerifyPolicy.from_services(services, offline=services.settings.archive_verify_offline)
    reasons: list[Reason] = []
    reports: dict[str, dict[str, Any]] = {}
    for item in message.attachments:
        if not _is_pdf(item):
            continue
        try:
            report = verify(item.path, policy).to_dict()
        except KysoError as exc:
            reasons.append(
                Reason(
                    "exchange_service.reason.pdf_unreadable",
                    {"name": item.name, "detail": exc.message()},
                )
            )
            continue
        reports[item.content_id] = report
        indication = report.get("indication")
        ok = indication == "TOTAL_PASSED" or (
            settings.accept_indeterminate and indication == "INDETERMINATE"
        )
        if not report.get("signatures"):
            ok = False
        if not ok:
            reasons.append(
                Reason(
                    "exchange_service.reason.pdf_signature",
                    {
                        "name": item.name,
                        "indication": str(indication),
                        "sub_indication": str(report.get("sub_indication") or "-"),
                    },
                )
            )
    return reasons, reports


def _next_arrival(s: Any, agency: str, year: int) -> int:
    """The next number of ``agency``'s incoming register for ``year`` (from 1 each year): the
    counter row is created if missing (``ON CONFLICT DO NOTHING``, so two first arrivals do
    not collide), then incremented with ``UPDATE … RETURNING`` (the row lock serialises
    concurrent arrivals on PostgreSQL; SQLite serialises writers)."""
    values = {"agency_id": agency, "year": year, "last_number": 0}
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        s.execute(pg_insert(arrivals).values(**values).on_conflict_do_nothing())
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        s.execute(sqlite_insert(arrivals).values(**values).on_conflict_do_nothing())
    number = s.execute(
        arrivals.update()
        .where(arrivals.c.agency_id == agency, arrivals.c.year == year)
        .values(last_number=arrivals.c.last_number + 1)
        .returning(arrivals.c.last_number)
    ).scalar_one()
    return int(number)


def _status_for(
    message: EdxmlMessage,
    recipient: Organ,
    code: StatusCode,
    *,
    reasons: Sequence[Reason] = (),
    description: str | None = None,
    verdict: str | None = None,
    digests: Sequence[str] = (),
) -> StatusMessage:
    header = message.header
    return StatusMessage(
        response_for=ResponseFor(
            organ_id=header.from_organ.organ_id,
            code=f"{header.code_number}/{header.code_notation}",
            promulgation_date=header.promulgation_date,
            document_id=header.document_id,
        ),
        from_organ=recipient,
        status_code=code,
        timestamp=_utcnow(),
        document_sha256=tuple(digests)
        or tuple(a.sha256 for a in message.attachments)
        or (message.message_sha256,),
        description=description,
        message_sha256=message.message_sha256,
        verdict=verdict,
        reasons=tuple(_text_params(r) for r in reasons),
    )


def _text_params(reason: Reason) -> Reason:
    return Reason(reason.code, {k: str(v) for k, v in reason.params.items()})


def _reasons_text(reasons: Sequence[Reason]) -> str:
    return "; ".join(r.message() for r in reasons)[:2000]


def receive(
    services: Services,
    data: bytes | Path,
    *,
    via: str,
    recipient: str | None = None,
) -> Received:
    """Receive an edXML message for ``recipient`` (an agency of this instance; default: the
    one local agency it is addressed to) and answer it (see the module's docstring).  A
    message that is not edXML at all raises ``Problem`` 422 (nothing to answer)."""
    raw = data if isinstance(data, bytes) else Path(data).read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    if recipient is not None:
        found = _existing_answer(services, recipient, [f"message|{sha}"])
        if found is not None:
            return found
    try:
        message = parse_edxml(
            raw,
            trust_roots=_trust_roots(services),
            sender_certificates=_KnownCertificates(services),
            revocation_mode="soft-fail",
        )
    except MalformedMessage as exc:
        raise Problem(422, "validation", exc.message(), code=exc.code) from exc
    with message:
        return _receive_parsed(services, message, raw, via=via, recipient=recipient)


def _receive_parsed(
    services: Services,
    message: EdxmlMessage,
    raw: bytes,
    *,
    via: str,
    recipient: str | None,
) -> Received:
    header = message.header
    agency = _recipient_of(services, header.to, recipient)
    sender = header.from_organ.organ_id
    business = message.business.doc_type if message.business else BusinessDocType.NEW
    sha = message.message_sha256
    accepted_key = f"document|{sender}|{header.document_id}|{int(business)}"
    if business in (BusinessDocType.NEW, BusinessDocType.RECALL):
        keys = [accepted_key, f"message|{sha}"]
    else:
        keys = [f"message|{sha}"]
    found = _existing_answer(services, agency, keys)
    if found is not None:
        return found
    actor = system_actor(agency)
    key = _agency_key(services, _system_clerk(agency))  # no key: 409, the sender retries later
    me = Organ(organ_id=agency, organ_name=_agency_name(services, agency) or agency)

    reasons = list(message.verdict.reasons)
    reports: dict[str, dict[str, Any]] = {}
    original: Mapping[str, Any] | None = None
    if not reasons and business is BusinessDocType.RECALL:
        original = _accepted_incoming(services, agency, sender, header.document_id)
        if original is None:
            reasons.append(
                Reason("exchange_service.reason.recall_unknown", {"document": header.document_id})
            )
    elif not reasons:
        pdf_reasons, reports = _verify_pdfs(services, message)
        reasons.extend(pdf_reasons)
        if not reports and not pdf_reasons:
            reasons.append(Reason("exchange_service.reason.no_document", {}))
    accepted = not reasons
    now_vn = dt.datetime.now(VN_TZ)
    main = next((a for a in message.attachments if a.content_id in reports), None)

    if accepted and business is BusinessDocType.RECALL:
        assert original is not None
        code = StatusCode.WITHDRAWN
        status = _status_for(
            message,
            me,
            code,
            description=t("exchange_service.answer.recall"),
            digests=[original["version_sha256"]] if original.get("version_sha256") else (),
        )
    elif accepted:
        code = StatusCode.ARRIVED
        assert main is not None
        status = _status_for(
            message,
            me,
            code,
            verdict="TOTAL_PASSED",
            description=t("exchange_service.answer.arrived"),
        )
    else:
        code = StatusCode.REJECTED
        status = _status_for(
            message,
            me,
            code,
            reasons=reasons,
            verdict="TOTAL_FAILED",
            description=_reasons_text(reasons),
        )
    try:
        answer = build_status(status, signing_key=key)
    except UnsupportedMetadata as exc:
        # the sender's header cannot even be answered (e.g. an invalid agency code)
        raise Problem(422, "validation", exc.message(), code=exc.code) from exc
    answer_key, answer_sha, _ = _store_bytes(services, answer, "application/xml")
    # The message is archived when its signature ties it to a known agency; what anybody
    # could have posted is answered and recorded, not kept (no storage for strangers).
    authenticated = message.signed and not any(
        r.code.startswith(("exchange.reason.signature", "exchange.reason.certificate"))
        or r.code in ("exchange.reason.sender_unknown", "exchange.reason.signer_not_sender")
        for r in message.verdict.reasons
    )
    message_key = _store_bytes(services, raw, "application/xml")[0] if authenticated else None
    pdf_key = report_key = None
    if accepted and main is not None:
        pdf_key, _, _ = _store_bytes(services, main.path, "application/pdf")
        report_bytes = json.dumps(
            reports[main.content_id], ensure_ascii=False, sort_keys=True, indent=1
        ).encode()
        report_key, _, _ = _store_bytes(services, report_bytes, "application/json")
    files: list[dict[str, Any]] | None = None
    if accepted and business is not BusinessDocType.RECALL:
        files = _keep_attachments(services, message, main, pdf_key, reports)
    verdict_json = {
        "accepted": accepted,
        "signed": message.signed,
        "reasons": [_text_params(r).to_dict() for r in reasons],
        "reports": {
            cid: {"indication": r.get("indication"), "sub_indication": r.get("sub_indication")}
            for cid, r in reports.items()
        },
    }
    if accepted and business is not BusinessDocType.RECALL:
        dedup = accepted_key if business is BusinessDocType.NEW else f"message|{sha}"
    elif accepted:
        dedup = accepted_key
    else:
        dedup = f"message|{sha}"
    try:
        with services.catalog.session(write=True) as s:
            document_id: int | None = None
            if accepted and business is not BusinessDocType.RECALL:
                assert main is not None and pdf_key is not None
                number = _next_arrival(s, agency, now_vn.year)
                trace = (*message.trace, TraceHeader(agency, now_vn))
                meta = metadata_from_header(
                    header, now_vn.date(), number, agency_id=agency, trace=trace
                )
                document_id = services.catalog.insert_document(s, meta, None, actor)
                version_id = services.catalog.insert_version(
                    s, document_id, "received", pdf_key, main.sha256, main.size, actor
                )
                services.catalog.insert_report(
                    s, version_id, reports[main.content_id], actor, report_key
                )
                if business is not BusinessDocType.NEW:
                    s.execute(
                        incoming.update()
                        .where(
                            incoming.c.agency_id == agency,
                            incoming.c.sender == sender,
                            incoming.c.edxml_document_id == header.document_id,
                            incoming.c.accepted.is_(True),
                            incoming.c.state == "received",
                        )
                        .values(
                            state="updated" if business is BusinessDocType.UPDATE else "replaced"
                        )
                    )
            elif accepted and original is not None:
                s.execute(
                    incoming.update()
                    .where(incoming.c.id == original["id"])
                    .values(state="recall_requested")
                )
            incoming_id = s.execute(
                incoming.insert()
                .values(
                    agency_id=agency,
                    sender=sender,
                    edxml_document_id=header.document_id,
                    business_type=int(business),
                    dedup_key=dedup,
                    message_sha256=sha,
                    object_key=message_key,
                    document_id=document_id if original is None else original.get("document_id"),
                    accepted=accepted,
                    verdict=verdict_json,
                    attachments=files,
                    state=("received" if business is not BusinessDocType.RECALL else "recall")
                    if accepted
                    else "rejected",
                    answer_key=answer_key,
                    answer_code=code.value,
                    via=via[:20],
                    received_at=_utcnow(),
                )
                .returning(incoming.c.id)
            ).scalar_one()
            _insert_status(
                s,
                owner=agency,
                status=status,
                key=answer_key,
                sha256=answer_sha,
                incoming_id=int(incoming_id),
            )
            audit.append(
                s,
                actor,
                "exchange.receive",
                f"exchange:incoming:{incoming_id}",
                {
                    "sender": sender,
                    "document": header.document_id,
                    "business_type": int(business),
                    "accepted": accepted,
                    "answer": code.value,
                    "reasons": [r.code for r in reasons],
                    "message_sha256": sha,
                    "message_key": message_key,
                    "document_id": document_id,
                    "via": via,
                },
            )
    except sa.exc.IntegrityError:
        # Another delivery of the same message won the race: its answer is the answer.
        again = _existing_answer(services, agency, keys)
        if again is None:
            raise
        return again
    return Received(
        answer=answer,
        code=code.value,
        incoming_id=int(incoming_id),
        document_id=document_id,
        created=True,
    )


def _keep_attachments(
    services: Services,
    message: EdxmlMessage,
    main: ReceivedAttachment | None,
    main_key: str | None,
    reports: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Every file of an accepted message archived as an object (content-addressed, with the
    archive's retention; the document itself is already stored as ``main_key``): what the
    incoming row lists and :func:`open_incoming_attachment` serves."""
    files: list[dict[str, Any]] = []
    for index, item in enumerate(message.attachments):
        is_main = main is not None and item.content_id == main.content_id
        if is_main and main_key is not None:
            key = main_key
        else:
            key, sha256, _ = _store_bytes(services, item.path, item.content_type)
            if sha256 != item.sha256:
                raise Problem(503, "unavailable", t("exchange_service.store_mismatch"))
        report = reports.get(item.content_id)
        files.append(
            {
                "index": index,
                "name": item.name,
                "content_type": item.content_type,
                "description": item.description,
                "size": item.size,
                "sha256": item.sha256,
                "object_key": key,
                "main": is_main,
                "indication": report.get("indication") if report else None,
            }
        )
    return files


def _accepted_incoming(
    services: Services, agency: str, sender: str, edxml_document_id: str
) -> dict[str, Any] | None:
    with services.catalog.session() as s:
        row = (
            s.execute(
                sa.select(incoming)
                .where(
                    incoming.c.agency_id == agency,
                    incoming.c.sender == sender,
                    incoming.c.edxml_document_id == edxml_document_id,
                    incoming.c.accepted.is_(True),
                    incoming.c.business_type == int(BusinessDocType.NEW),
                )
                .order_by(incoming.c.id)
                .limit(1)
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        result = dict(row)
        if row["document_id"] is not None:
            result["version_sha256"] = s.scalar(
                sa.select(DocumentVersion.sha256)
                .where(DocumentVersion.document_id == row["document_id"])
                .order_by(DocumentVersion.seq)
                .limit(1)
            )
    return result


def _insert_status(
    s: Any,
    *,
    owner: str,
    status: StatusMessage,
    key: str,
    sha256: str,
    outgoing_id: int | None = None,
    incoming_id: int | None = None,
) -> bool:
    """Record ``status`` in ``owner``'s history (once per signed message)."""
    exists = s.scalar(
        sa.select(statuses.c.id).where(statuses.c.owner == owner, statuses.c.sha256 == sha256)
    )
    if exists is not None:
        return False
    s.execute(
        statuses.insert().values(
            owner=owner,
            edxml_document_id=status.response_for.document_id,
            agency=status.from_organ.organ_id,
            code=status.status_code.value,
            description=status.description,
            verdict=status.verdict,
            reasons=[_text_params(r).to_dict() for r in status.reasons],
            stated_at=status.timestamp.astimezone(dt.UTC),
            object_key=key,
            sha256=sha256,
            outgoing_id=outgoing_id,
            incoming_id=incoming_id,
            recorded_at=_utcnow(),
        )
    )
    return True


# -- statuses -----------------------------------------------------------------------------------


def accept_status(
    services: Services,
    data: bytes,
    *,
    via: str,
    outgoing_id: int | None = None,
    expected: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Record a signed status message about a document this instance sent: checked (XML
    signature, trust, signed by the answering agency), matched to the outgoing message
    (``outgoing_id`` when it is the answer to one delivery), archived, added to the sender's
    history.  Idempotent.  Problem 422 for a status that does not check out, 404 for one
    about no message sent from here."""
    try:
        parsed: ParsedStatus = parse_status(
            data,
            trust_roots=_trust_roots(services),
            sender_certificates=_KnownCertificates(services),
        )
    except MalformedMessage as exc:
        raise Problem(422, "validation", exc.message(), code=exc.code) from exc
    if not parsed.verdict.accepted:
        raise Problem(
            422,
            "validation",
            t("exchange_service.status.rejected", reasons=", ".join(parsed.verdict.codes)),
            reasons=list(parsed.verdict.codes),
        )
    status = parsed.status
    owner = status.response_for.organ_id
    answering = status.from_organ.organ_id
    with services.catalog.session() as s:
        query = sa.select(outgoing).where(
            outgoing.c.kind == "document",
            outgoing.c.agency_id == owner,
            outgoing.c.recipient == answering,
            outgoing.c.edxml_document_id == status.response_for.document_id,
        )
        if outgoing_id is not None:
            query = query.where(outgoing.c.id == outgoing_id)
        row = s.execute(query.order_by(outgoing.c.id.desc()).limit(1)).mappings().first()
    if row is None or not _is_local(services, owner):
        raise _not_found("message", status.response_for.document_id)
    if expected is not None and row["sha256"] != expected["sha256"]:
        raise _not_found("message", status.response_for.document_id)
    if (
        status.message_sha256 is not None
        and outgoing_id is not None
        and status.message_sha256 != row["sha256"]
        and status.status_code is not StatusCode.REJECTED
    ):
        # A rejection of other bytes than those sent is kept: it is the evidence that the
        # message was altered on the way.  Anything else answering other bytes is not ours.
        raise Problem(422, "validation", t("exchange_service.status.other_message"))
    key, sha, _ = _store_bytes(services, data, "application/xml")
    with services.catalog.session(write=True) as s:
        added = _insert_status(
            s, owner=owner, status=status, key=key, sha256=sha, outgoing_id=row["id"]
        )
        if added:
            audit.append(
                s,
                system_actor(owner),
                "exchange.status.received",
                f"exchange:outgoing:{row['id']}",
                {
                    "from": answering,
                    "code": status.status_code.value,
                    "verdict": status.verdict,
                    "reasons": [r.code for r in status.reasons],
                    "object_key": key,
                    "sha256": sha,
                    "via": via,
                },
            )
    return {
        "outgoing_id": row["id"],
        "code": status.status_code.value,
        "recorded": added,
        "object_key": key,
    }


_NEXT_STATE = {
    StatusCode.AGREE: ("recall_requested", "withdrawn"),
    StatusCode.REFUSE: ("recall_requested", "received"),
}


def set_status(
    services: Services,
    principal: Principal,
    incoming_id: int,
    code: str,
    description: str | None = None,
) -> dict[str, Any]:
    """The receiving agency's clerk states how a received document is handled (03 accepted,
    04 assigned, 05 in progress, 06 completed; 15/16 agree or refuse a recall): signed with
    the agency's key, kept in its history and sent back to the sender."""
    _require(principal, CLERKS)
    try:
        status_code = StatusCode.parse(str(code))
    except ValueError:
        status_code = None
    if status_code not in SETTABLE:
        raise Problem(
            422,
            "validation",
            t(
                "exchange_service.status.not_settable",
                code=str(code),
                codes=", ".join(c.value for c in SETTABLE),
            ),
        )
    assert status_code is not None
    with services.catalog.session() as s:
        found = (
            s.execute(sa.select(incoming).where(incoming.c.id == incoming_id)).mappings().first()
        )
        if found is None or found["agency_id"] != principal.agency:
            raise _not_found("incoming", incoming_id)
        row = dict(found)
        doc = s.get(Document, row["document_id"]) if row["document_id"] else None
        version_sha = (
            s.scalar(
                sa.select(DocumentVersion.sha256)
                .where(DocumentVersion.document_id == row["document_id"])
                .order_by(DocumentVersion.seq)
                .limit(1)
            )
            if row["document_id"]
            else None
        )
    if not row["accepted"] or doc is None:
        raise Problem(409, "conflict", t("exchange_service.status.not_received"))
    if status_code in _NEXT_STATE:
        # the answer to a recall: about the recalled document
        with services.catalog.session() as s:
            target = (
                s.execute(
                    sa.select(incoming).where(
                        incoming.c.agency_id == principal.agency,
                        incoming.c.document_id == row["document_id"],
                        incoming.c.business_type == int(BusinessDocType.NEW),
                    )
                )
                .mappings()
                .first()
            )
        if target is None or target["state"] != _NEXT_STATE[status_code][0]:
            raise Problem(409, "conflict", t("exchange_service.status.no_recall"))
    elif row["state"] not in ("received",) or row["business_type"] == int(BusinessDocType.RECALL):
        raise Problem(409, "conflict", t("exchange_service.status.state", state=row["state"]))
    key = _agency_key(services, principal)
    assert doc.issued_date is not None
    status = StatusMessage(
        response_for=ResponseFor(
            organ_id=row["sender"],
            code=f"{doc.code_number}/{doc.code_notation}",
            promulgation_date=doc.issued_date,
            document_id=row["edxml_document_id"],
        ),
        from_organ=Organ(
            organ_id=principal.agency,
            organ_name=_agency_name(services, principal.agency) or principal.agency,
        ),
        status_code=status_code,
        timestamp=_utcnow(),
        document_sha256=(version_sha,) if version_sha else (row["message_sha256"],),
        description=description,
        staff=None,
    )
    try:
        data = build_status(status, signing_key=key)
    except UnsupportedMetadata as exc:
        raise Problem(422, "validation", exc.message()) from exc
    object_key, sha, size = _store_bytes(services, data, "application/xml")
    with services.catalog.session(write=True) as s:
        _insert_status(
            s,
            owner=principal.agency,
            status=status,
            key=object_key,
            sha256=sha,
            incoming_id=incoming_id,
        )
        if status_code in _NEXT_STATE:
            s.execute(
                incoming.update()
                .where(
                    incoming.c.agency_id == principal.agency,
                    incoming.c.document_id == row["document_id"],
                    incoming.c.business_type == int(BusinessDocType.NEW),
                )
                .values(state=_NEXT_STATE[status_code][1])
            )
        audit.append(
            s,
            principal.actor,
            "exchange.status.set",
            f"exchange:incoming:{incoming_id}",
            {"code": status_code.value, "description": description, "object_key": object_key},
        )
    ids = _queue(
        services,
        kind="status",
        agency=principal.agency,
        recipients=[row["sender"]],
        edxml_document_id=row["edxml_document_id"],
        key=object_key,
        sha256=sha,
        size=size,
        actor=principal.actor,
        incoming_id=incoming_id,
        status_code=status_code.value,
    )
    dispatch(services, ids)
    return {"incoming_id": incoming_id, "code": status_code.value, "outgoing_id": ids[0]}


# -- reading ------------------------------------------------------------------------------------


def _outgoing_row(services: Services, principal: Principal, outgoing_id: int) -> dict[str, Any]:
    with services.catalog.session() as s:
        row = s.execute(sa.select(outgoing).where(outgoing.c.id == outgoing_id)).mappings().first()
    if row is None or row["agency_id"] != principal.agency:
        raise _not_found("message", outgoing_id)
    return dict(row)


def _outgoing_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "recipient": row["recipient"],
        "edxml_document_id": row["edxml_document_id"],
        "document_id": row["document_id"],
        "version": row["version_seq"],
        "incoming_id": row["incoming_id"],
        "business_type": row["business_type"],
        "status_code": row["status_code"],
        "state": row["state"],
        "attempts": row["attempts"],
        "next_attempt_at": _iso(row["next_attempt_at"]) if row["state"] == "queued" else None,
        "last_error": row["last_error"],
        "answer_code": row["answer_code"],
        "sha256": row["sha256"],
        "size": row["size"],
        "created_at": _iso(row["created_at"]),
        "created_by": row["created_by"],
        "delivered_at": _iso(row["delivered_at"]),
    }


def _status_dict(row: Any) -> dict[str, Any]:
    return {
        "code": row["code"],
        "agency": row["agency"],
        "description": row["description"],
        "verdict": row["verdict"],
        "reasons": row["reasons"],
        "stated_at": _iso(row["stated_at"]),
        "recorded_at": _iso(row["recorded_at"]),
        "object_key": row["object_key"],
        "sha256": row["sha256"],
    }


def message(services: Services, principal: Principal, outgoing_id: int) -> dict[str, Any]:
    """One outgoing message of the caller's agency with its status history."""
    _require(principal, READERS)
    row = _outgoing_row(services, principal, outgoing_id)
    result = _outgoing_dict(row)
    result["statuses"] = history(services, principal, row["edxml_document_id"], row["recipient"])
    return result


def history(
    services: Services, principal: Principal, edxml_document_id: str, agency: str
) -> list[dict[str, Any]]:
    """The statuses ``agency`` gave the caller agency's document ``edxml_document_id`` (or,
    for a document the caller received, the statuses it gave), oldest first."""
    _require(principal, READERS)
    with services.catalog.session() as s:
        rows = (
            s.execute(
                sa.select(statuses)
                .where(
                    statuses.c.owner == principal.agency,
                    statuses.c.edxml_document_id == edxml_document_id,
                    statuses.c.agency == agency,
                )
                .order_by(statuses.c.stated_at, statuses.c.id)
            )
            .mappings()
            .all()
        )
    return [_status_dict(r) for r in rows]


def outbox(
    services: Services, principal: Principal, *, state: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """The caller agency's outgoing messages, newest first (with the last status each)."""
    _require(principal, READERS)
    query = sa.select(outgoing).where(outgoing.c.agency_id == principal.agency)
    if state is not None:
        query = query.where(outgoing.c.state == state)
    with services.catalog.session() as s:
        rows = s.execute(query.order_by(outgoing.c.id.desc()).limit(limit)).mappings().all()
        result = []
        for row in rows:
            item = _outgoing_dict(row)
            last = s.execute(
                sa.select(statuses.c.code)
                .where(
                    statuses.c.owner == principal.agency,
                    statuses.c.edxml_document_id == row["edxml_document_id"],
                    statuses.c.agency == row["recipient"],
                )
                .order_by(statuses.c.stated_at.desc(), statuses.c.id.desc())
                .limit(1)
            ).scalar()
            item["last_status"] = last
            result.append(item)
    return result


def _incoming_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "sender": row["sender"],
        "edxml_document_id": row["edxml_document_id"],
        "business_type": row["business_type"],
        "document_id": row["document_id"],
        "accepted": row["accepted"],
        "verdict": row["verdict"],
        "attachments": [
            {k: v for k, v in item.items() if k != "object_key"}
            for item in row["attachments"] or []
        ],
        "state": row["state"],
        "answer_code": row["answer_code"],
        "message_sha256": row["message_sha256"],
        "via": row["via"],
        "received_at": _iso(row["received_at"]),
    }


def inbox(services: Services, principal: Principal, *, limit: int = 100) -> list[dict[str, Any]]:
    """What the caller agency received (accepted and rejected), newest first."""
    _require(principal, READERS)
    with services.catalog.session() as s:
        rows = (
            s.execute(
                sa.select(incoming)
                .where(incoming.c.agency_id == principal.agency)
                .order_by(incoming.c.id.desc())
                .limit(limit)
            )
            .mappings()
            .all()
        )
    return [_incoming_dict(r) for r in rows]


def incoming_message(services: Services, principal: Principal, incoming_id: int) -> dict[str, Any]:
    _require(principal, READERS)
    with services.catalog.session() as s:
        row = s.execute(sa.select(incoming).where(incoming.c.id == incoming_id)).mappings().first()
    if row is None or row["agency_id"] != principal.agency:
        raise _not_found("incoming", incoming_id)
    result = _incoming_dict(row)
    with services.catalog.session() as s:
        rows = (
            s.execute(
                sa.select(statuses)
                .where(statuses.c.owner == principal.agency, statuses.c.incoming_id == incoming_id)
                .order_by(statuses.c.stated_at, statuses.c.id)
            )
            .mappings()
            .all()
        )
    result["statuses"] = [_status_dict(r) for r in rows]
    return result


@contextmanager
def open_incoming_attachment(
    services: Services, principal: Principal, incoming_id: int, index: int
) -> Iterator[tuple[dict[str, Any], BinaryIO]]:
    """File number ``index`` (as listed in the incoming message's ``attachments``) of a
    message the caller agency received: its description and a stream of its bytes, checked
    against the SHA-256 recorded at arrival as it is read (:class:`ObjectCorrupt` at the end
    otherwise).  The access is written in the audit log."""
    _require(principal, READERS)
    with services.catalog.session() as s:
        row = s.execute(sa.select(incoming).where(incoming.c.id == incoming_id)).mappings().first()
    if row is None or row["agency_id"] != principal.agency:
        raise _not_found("incoming", incoming_id)
    found = [f for f in row["attachments"] or [] if f.get("index") == index]
    if not found:
        raise _not_found("attachment", f"{incoming_id}/{index}")
    info = dict(found[0])
    key = info.pop("object_key")
    with services.catalog.session() as s:
        audit.append(
            s,
            principal.actor,
            "exchange.attachment.read",
            f"exchange:incoming:{incoming_id}",
            {"index": index, "name": info["name"], "sha256": info["sha256"]},
        )
    with services.store.open(key) as fh:
        yield info, fh


def incoming_attachment_file(
    services: Services, principal: Principal, message_id: int, index: int
) -> tuple[dict[str, Any], Path]:
    """:func:`open_incoming_attachment` copied (hash-checked) to a temporary file, for a
    response to send and then delete: (its description, the file)."""
    handle, name = tempfile.mkstemp(prefix="kyso-attachment-")
    target = Path(name)
    try:
        with (
            open_incoming_attachment(services, principal, message_id, index) as (
                info,
                stream,
            ),
            os.fdopen(handle, "wb") as out,
        ):
            shutil.copyfileobj(stream, out, 1 << 20)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return info, target


def receipt(services: Services, principal: Principal, outgoing_id: int, index: int) -> bytes:
    """The signed status message number ``index`` (0-based) of an outgoing message's history
    (the receipt, as received)."""
    item = message(services, principal, outgoing_id)
    try:
        key = item["statuses"][index]["object_key"]
    except IndexError:
        raise _not_found("status", index) from None
    return _read_object(services, key)
