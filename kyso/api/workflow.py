"""The document workflow of an agency: what the HTTP routes, the web pages and the job handlers
call.  Nothing here signs, verifies or archives by itself: each step reads the document's
latest version from the archive into a temporary file (``Archive.get``, logged as a read), calls
the library as the CLI does (``DocumentSigner``, ``fill_register_fields``, ``external``,
``verify``) and stores the result as a new version (``Archive.put``, audited with the actor).

Order of an outgoing document (Decree 30/2020 Art. 14, 15.3, 32.2d)::

    draft ──(official: sign_as_person or prepare/complete_external)──► person_signed
          ──(clerk: register, number and date)──► registered
          ──(clerk: seal, agency key)──► sealed ──(extend)──► ltv_extended …

Each function takes ``services`` and the caller's :class:`Principal` first.  A document of
another agency is answered exactly like an unknown one (``Problem`` 404, no existence oracle);
a missing role is ``Problem`` 403 ``forbidden``; a step out of order ``Problem`` 409
``conflict``; everything else is the library's own ``KysoError``.

Numbers: each agency has one register per year (Decree 30 Art. 15: 01 on 1 January, unique
within the year).  ``register`` takes the next number of the agency's register for the year of
the issue date unless the clerk gives one; the tables of migration 0004 make a number unique per
(agency, year) in the database itself, and a document keeps the number reserved for it, so a
retried or concurrent registration cannot number a document twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kyso.api.principal import Principal
from kyso.api.problems import Problem
from kyso.archive import audit
from kyso.archive.catalog import Catalog, NotFoundError
from kyso.archive.ingest import IngestResult
from kyso.archive.metadata import DocumentMetadata, MetadataError, Recipient
from kyso.archive.models import NAMING, CaseFile, Document, DocumentVersion
from kyso.errors import KysoError
from kyso.i18n import t

if TYPE_CHECKING:
    from kyso.api.services import Services
    from kyso.certs.keys import KeyHandle

__all__ = [
    "ExternalPrepared",
    "VerifyOutcome",
    "check_case",
    "complete_external",
    "download",
    "extend",
    "get_document",
    "metadata_from_dict",
    "prepare_external",
    "register",
    "register_plan",
    "reserve_number",
    "seal",
    "sign_as_person",
    "upload",
    "verify_document",
    "verify_version",
]

# -- the workflow's tables (migrations 0004, 0009) ----------------------------------------------

metadata = sa.MetaData(naming_convention=NAMING)
"""The workflow's tables (created by migration 0004 with the catalogue's schema, the prepared
state of ``pending_signatures`` added by 0009); they refer to the catalogue's ``documents``
table, which lives in :data:`kyso.archive.models.Base`."""

register_counters = sa.Table(
    "register_counters",
    metadata,
    sa.Column("agency_id", sa.String(35), primary_key=True),
    sa.Column("year", sa.Integer, primary_key=True),
    sa.Column("last_number", sa.Integer, nullable=False),
)

register_numbers = sa.Table(
    "register_numbers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("agency_id", sa.String(35), nullable=False),
    sa.Column("year", sa.Integer, nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column(
        "document_id",
        sa.Integer,
        sa.ForeignKey("documents.id", ondelete="RESTRICT"),
        nullable=False,
        unique=True,
    ),
    sa.Column("symbol", sa.String(30), nullable=False),
    sa.Column("issued_date", sa.Date, nullable=False),
    sa.Column("place", sa.String(100)),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.UniqueConstraint("agency_id", "year", "number"),
    sa.CheckConstraint("state IN ('reserved', 'issued')", name="state"),
)

document_plans = sa.Table(
    "document_plans",
    metadata,
    sa.Column(
        "document_id",
        sa.Integer,
        sa.ForeignKey("documents.id", ondelete="RESTRICT"),
        primary_key=True,
    ),
    sa.Column("symbol", sa.String(30)),
    sa.Column("place", sa.String(100)),
)

pending_signatures = sa.Table(
    "pending_signatures",
    metadata,
    sa.Column("handle", sa.String(64), primary_key=True),
    sa.Column(
        "document_id",
        sa.Integer,
        sa.ForeignKey("documents.id", ondelete="RESTRICT"),
        nullable=False,
        index=True,
    ),
    sa.Column("agency_id", sa.String(35), nullable=False),
    sa.Column("user_id", sa.Integer, nullable=False),
    sa.Column("base_seq", sa.Integer, nullable=False),
    sa.Column("certificate", sa.LargeBinary, nullable=False),
    sa.Column("level", sa.String(8), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    # migration 0009: the prepared state itself, so that any replica can complete it
    sa.Column("prepared_pdf", sa.LargeBinary),
    sa.Column("state", sa.LargeBinary),
    sa.Column("claimed_by", sa.String(64)),
    sa.Column("claimed_until", sa.DateTime(timezone=True)),
)

# -- roles --------------------------------------------------------------------------------------

UPLOADERS = ("official", "clerk")
SIGNERS = ("official",)
CLERKS = ("clerk",)
EXTENDERS = ("clerk", "archivist")

_ALIASES = {
    "agency": "organ_id",
    "agency_name": "organ_name",
    "number": "code_number",
    "symbol": "code_notation",
    "date": "issued_date",
    "type": "type_name",
    "signer": "signer_full_name",
    "position": "signer_position",
}
_FIELDS = {
    "organ_id",
    "organ_name",
    "code_number",
    "code_notation",
    "issued_date",
    "type_name",
    "subject",
    "direction",
    "document_id",
    "language",
    "page_amount",
    "description",
    "signer_position",
    "signer_full_name",
    "to",
    "urgency",
    "secrecy",
    "issued_amount",
    "due_date",
    "doc_ordinal",
    "arrival_date",
    "arrival_number",
    "to_places",
}
_DATES = {"issued_date", "due_date", "arrival_date"}
_INTS = {"page_amount", "issued_amount", "doc_ordinal"}
_LISTS = {"to", "to_places"}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _require(principal: Principal, roles: tuple[str, ...]) -> None:
    if not principal.has(*roles):
        raise Problem(403, "forbidden", t("workflow.forbidden", roles=", ".join(roles)))


def _not_found(document_id: int) -> Problem:
    return Problem(404, "not-found", t("workflow.document.not_found", id=document_id))


def _conflict(kind: str | None, step: str) -> Problem:
    return Problem(
        409,
        "conflict",
        t("workflow.order", kind=kind or "-", step=step),
        current=kind,
    )


@dataclass(frozen=True)
class _Latest:
    document_id: int
    direction: str
    organ_id: str
    kind: str | None
    seq: int | None


def _latest(services: Services, principal: Principal, document_id: int) -> _Latest:
    """The document of the caller's agency and its latest version (no access logged)."""
    with services.catalog.session() as s:
        doc = s.get(Document, document_id)
        if doc is None or doc.agency_id != principal.agency:
            raise _not_found(document_id)
        last = s.execute(
            sa.select(DocumentVersion.kind, DocumentVersion.seq)
            .where(DocumentVersion.document_id == document_id)
            .order_by(DocumentVersion.seq.desc())
            .limit(1)
        ).first()
        return _Latest(
            document_id,
            doc.direction,
            doc.organ_id,
            last.kind if last else None,
            last.seq if last else None,
        )


def _expect(latest: _Latest, kinds: tuple[str, ...], step: str) -> None:
    if latest.kind not in kinds:
        raise _conflict(latest.kind, step)


@contextmanager
def _workspace() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kyso-workflow-") as tmp:
        yield Path(tmp)


def _fetch(
    services: Services, principal: Principal, latest: _Latest, target: Path, purpose: str
) -> DocumentVersion:
    """The latest version's bytes into ``target`` (hash-checked, logged as a read)."""
    return services.archive.get(
        latest.document_id, target, version=latest.seq, actor=principal.actor, purpose=purpose
    )


def _level(value: str) -> Any:
    from kyso.signer.sign import Level

    try:
        return Level(str(value).upper())
    except ValueError:
        raise Problem(
            422,
            "validation",
            t("workflow.level", value=str(value), choices="B-B, B-T, B-LT, B-LTA"),
        ) from None


# -- metadata -------------------------------------------------------------------------------------


def _date(name: str, value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise MetadataError("archive.ingest.bad_date", field=name, value=str(value)) from None


def _recipients(name: str, value: Any) -> list[Recipient]:
    items = value if isinstance(value, list) else [value]
    found: list[Recipient] = []
    for item in items:
        if isinstance(item, Mapping):
            organ_name = str(item.get("organ_name") or "").strip()
            organ_id = item.get("organ_id")
            if not organ_name:
                raise MetadataError("archive.catalog.metadata.required", field=f"{name}.organ_name")
            found.append(Recipient(organ_name, str(organ_id).strip() if organ_id else None))
        else:
            code, bar, rest = str(item).partition("|")
            found.append(Recipient(rest.strip(), code.strip()) if bar else Recipient(str(item)))
    return found


def metadata_from_dict(values: Mapping[str, Any]) -> tuple[dict[str, Any], str | None, str | None]:
    """Appendix VI fields (their names or the CLI's short names, see ``kyso archive put``)
    as DocumentMetadata keyword arguments, plus the planned ``symbol`` and ``place`` of an
    outgoing document not yet numbered.  MetadataError for an unknown field or a bad value."""
    out: dict[str, Any] = {}
    place: str | None = None
    for key, raw in values.items():
        name = _ALIASES.get(key, key)
        if isinstance(raw, str) and any(c in raw for c in "\x00\r\x0b\x0c"):
            raise MetadataError("workflow.metadata.control", field=name)
        if name == "place":
            place = str(raw).strip() or None if raw is not None else None
            continue
        if name not in _FIELDS:
            raise MetadataError("archive.ingest.bad_meta", field=key, value=str(raw))
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        if name in _DATES:
            out[name] = _date(name, raw)
        elif name in _INTS:
            try:
                out[name] = int(raw)
            except (TypeError, ValueError):
                raise MetadataError("archive.ingest.bad_int", field=name, value=str(raw)) from None
        elif name in _LISTS:
            out[name] = _recipients(name, raw)
        elif name == "code_number":
            out[name] = raw if isinstance(raw, int) else str(raw).strip()
        else:
            out[name] = str(raw).strip()
    symbol: str | None = None
    if out.get("direction", "outgoing") == "outgoing" and "code_number" not in out:
        symbol = out.pop("code_notation", None)
    return out, symbol, place


# -- upload ---------------------------------------------------------------------------------------


def check_case(services: Services, principal: Principal, case: int | str) -> int:
    with services.catalog.session() as s:
        found: CaseFile | None = None
        if isinstance(case, int) or (isinstance(case, str) and case.strip().isdigit()):
            found = s.get(CaseFile, int(case)) if 0 < int(case) < 2**31 else None
        else:
            organ, _, notation = case.strip().rpartition(".")
            organ, _, year = organ.rpartition(".")
            if year.isdigit():
                found = s.scalars(
                    sa.select(CaseFile).where(
                        CaseFile.organ_id == organ,
                        CaseFile.file_catalog == int(year),
                        CaseFile.file_notation == notation,
                        CaseFile.agency_id == principal.agency,
                    )
                ).first()
        if found is None or found.agency_id != principal.agency:
            raise Problem(404, "not-found", t("workflow.case.not_found", case=str(case)))
        return found.id


def _agency_name(services: Services, code: str) -> str:
    """The agency's name from the accounts ("" when it has none recorded)."""
    try:
        return services.accounts.get_agency(code).name
    except (KysoError, LookupError):
        return ""


def _check_pdf(path: Path) -> None:
    """A PDF at all (BadInputError otherwise: not a PDF, damaged, encrypted, too large)."""
    from kyso.signer.sign import open_pdf

    with open_pdf(path):
        pass


def upload(
    services: Services,
    principal: Principal,
    path: Path,
    metadata: Mapping[str, Any],
    *,
    case: int | str | None = None,
) -> IngestResult:
    """A new document of the caller's agency, its first version (``draft`` for an unsigned
    outgoing file, ``received`` for an incoming one) archived with its metadata."""
    _require(principal, UPLOADERS)
    values, symbol, place = metadata_from_dict(metadata)
    values.setdefault("organ_id", principal.agency)
    values["agency_id"] = principal.agency
    direction = values.get("direction", "outgoing")
    if direction == "outgoing" and "code_number" in values:
        raise MetadataError("workflow.upload.number_given", field="code_number")
    if direction == "incoming" and not principal.has(*CLERKS):
        raise Problem(403, "forbidden", t("workflow.forbidden", roles="clerk"))
    if not values.get("organ_name") and values["organ_id"] == principal.agency:
        values["organ_name"] = _agency_name(services, principal.agency)
    for name in ("organ_name", "type_name", "subject"):
        values.setdefault(name, "")
    values.setdefault("code_number", None)
    values.setdefault("code_notation", None)
    values.setdefault("issued_date", None)
    meta = DocumentMetadata(**values).validate()
    if symbol is not None:
        from kyso.signer.register import RegisterError, check_place, parse_symbol

        try:
            symbol = parse_symbol(symbol)
            place = check_place(place)
        except RegisterError as e:
            raise MetadataError(e.code, field="code_notation", **e.params) from e
    case_id = check_case(services, principal, case) if case is not None else None
    _check_pdf(Path(path))
    result = services.archive.put(Path(path), meta, case=case_id, actor=principal.actor)
    if not result.created:
        # The same bytes already uploaded by this agency (the archive scopes its
        # de-duplication to the uploading agency: another agency's upload of the same file
        # is a record of its own, never a reference to this one).
        return result
    if symbol is not None or place is not None:
        with services.catalog.session() as s:
            s.execute(
                document_plans.insert().values(
                    document_id=result.document_id, symbol=symbol, place=place
                )
            )
            audit.append(
                s,
                principal.actor,
                "document.plan",
                f"document:{result.document_id}",
                {"symbol": symbol, "place": place},
            )
    return result


# -- the person's signature -------------------------------------------------------------------


def _placement(placement: Mapping[str, Any] | None) -> Any:
    if not placement:
        return None
    from kyso.signer.appearance import Placement

    allowed = {"box", "page", "field", "anchor", "anchor_mode"}
    unknown = set(placement) - allowed
    if unknown:
        raise Problem(422, "validation", t("workflow.placement", reason=", ".join(sorted(unknown))))
    values = {k: v for k, v in placement.items() if v is not None}
    if "box" in values:
        values["box"] = tuple(values["box"]) if isinstance(values["box"], list) else values["box"]
    try:
        return Placement(**values)
    except TypeError as exc:
        raise Problem(422, "validation", t("workflow.placement", reason=str(exc))) from None


def _signer(services: Services, key: KeyHandle) -> Any:
    from kyso.signer.sign import DocumentSigner

    return DocumentSigner(
        key=key, revocation=services.revocation_context(), timestamper=services.timestamper()
    )


def _sign(services: Services, handle: KeyHandle, source: Path, target: Path, options: Any) -> None:
    """Sign, counting the outcome in the service's metrics."""
    from kyso.api.observability import record_signature

    try:
        _signer(services, handle).sign(source, target, options)
    except BaseException:
        record_signature("failed")
        raise
    record_signature("ok")


def _image(services: Services, key: KeyHandle) -> bytes | None:
    path = services.image_path(key.label)
    try:
        return path.read_bytes() if path.is_file() else None
    except OSError:
        return None


def sign_as_person(
    services: Services,
    principal: Principal,
    document_id: int,
    *,
    key: str,
    pin: str,
    placement: Mapping[str, Any] | None = None,
    level: str = "B-T",
) -> IngestResult:
    """The competent person's signature (official) with a key bound to them, unlocked by
    their PIN; the empty number and date fields for the clerk are added in the same revision.
    The signature image kept for the key is drawn when there is one (``placement`` chooses
    where); without an image the signature is invisible."""
    from kyso.api.accounts import open_signing_key
    from kyso.certs.identity import identity_of
    from kyso.signer.appearance import PersonAppearance
    from kyso.signer.sign import SignOptions

    _require(principal, SIGNERS)
    latest = _latest(services, principal, document_id)
    if latest.direction != "outgoing":
        raise _conflict(latest.kind, "person_signed")
    _expect(latest, ("draft",), "person_signed")
    wanted = _level(level)
    where = _placement(placement)
    handle = open_signing_key(services, principal, key, pin)
    if identity_of(handle.certificate).kind == "organisation":
        raise Problem(422, "validation", t("workflow.sign.not_person", label=key))
    image = _image(services, handle)
    if image is None and where is not None:
        raise Problem(422, "validation", t("workflow.sign.no_image", label=key))
    options = SignOptions(
        level=wanted,
        appearance=PersonAppearance(image) if image is not None else None,
        placement=where,
        register_fields=True,
    )
    with _workspace() as tmp:
        source, target = tmp / "in.pdf", tmp / "signed.pdf"
        _fetch(services, principal, latest, source, "sign")
        _sign(services, handle, source, target, options)
        return services.archive.put(
            target, document=document_id, kind="person_signed", actor=principal.actor
        )


# -- two-phase signing (USB token, remote signer) ----------------------------------------------


@dataclass(frozen=True)
class ExternalPrepared:
    """What the client's token must sign (see :mod:`kyso.signer.external`)."""

    handle: str
    signed_attributes: bytes
    digest: bytes
    digest_algorithm: str
    signature_algorithm: str
    document_digest: bytes
    level: str
    expires_at: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        import base64

        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        return {
            "handle": self.handle,
            "signed_attributes": b64(self.signed_attributes),
            "digest": b64(self.digest),
            "digest_algorithm": self.digest_algorithm,
            "signature_algorithm": self.signature_algorithm,
            "document_digest": b64(self.document_digest),
            "level": self.level,
            "expires_at": self.expires_at.isoformat(),
        }


def _certificates(data: bytes) -> list[Any]:
    from cryptography import x509

    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise Problem(422, "validation", t("workflow.external.bad_certificate")) from None
    if not certs:
        raise Problem(422, "validation", t("workflow.external.bad_certificate"))
    return certs


CLAIM_LEASE = dt.timedelta(minutes=5)
"""How long one ``complete_external`` holds a prepared signature before another may take it
over (the replica holding it died half-way).  Taking over never signs twice: only the current
holder of the claim can consume the row, and it does so before archiving."""


def prepare_external(
    services: Services,
    principal: Principal,
    document_id: int,
    *,
    certificate: bytes,
    level: str = "B-T",
) -> ExternalPrepared:
    """Step 1 of a signature made on the official's own token: the number and date fields
    are added to the draft, the signature is prepared for ``certificate`` (PEM: the signer's
    certificate then its issuers, or one DER certificate) and what the token must sign is
    returned with a handle, valid 15 minutes, usable only by the same user on this document.

    The prepared state (the to-be-signed PDF and the JSON state of
    :mod:`kyso.signer.external`) is made in a private temporary folder and kept in the
    ``pending_signatures`` row, not on this host: ``complete_external`` may run on another
    replica."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from kyso.signer import external
    from kyso.signer.register import prepare_register_fields
    from kyso.signer.sign import SignOptions

    _require(principal, SIGNERS)
    latest = _latest(services, principal, document_id)
    if latest.direction != "outgoing":
        raise _conflict(latest.kind, "person_signed")
    _expect(latest, ("draft",), "person_signed")
    wanted = _level(level)
    certs = _certificates(certificate)
    _purge_pending(services)
    with _workspace() as tmp:
        source, with_fields, work_dir = tmp / "in.pdf", tmp / "fields.pdf", tmp / "pending"
        work_dir.mkdir(mode=0o700)
        _fetch(services, principal, latest, source, "sign.prepare")
        prepare_register_fields(source, with_fields)
        prepared = external.prepare_sync(
            with_fields,
            certificate=certs[0],
            chain=certs[1:],
            options=SignOptions(level=wanted),
            revocation=services.revocation_context(),
            timestamper=services.timestamper(),
            work_dir=work_dir,
        )
        prepared_pdf, state = _read_pending(work_dir, prepared.handle)
    with services.catalog.session(write=True) as s:
        s.execute(
            pending_signatures.insert().values(
                handle=prepared.handle,
                document_id=document_id,
                agency_id=principal.agency,
                user_id=principal.user_id,
                base_seq=latest.seq or 0,
                certificate=certs[0].public_bytes(Encoding.DER),
                level=str(wanted),
                expires_at=prepared.expires_at,
                created_at=_utcnow(),
                created_by=principal.actor,
                prepared_pdf=prepared_pdf,
                state=state,
            )
        )
        audit.append(
            s,
            principal.actor,
            "signature.prepare",
            f"document:{document_id}",
            {
                "level": str(wanted),
                "version": latest.seq,
                "subject": certs[0].subject.rfc4514_string(),
            },
        )
    return ExternalPrepared(
        handle=prepared.handle,
        signed_attributes=prepared.signed_attributes,
        digest=prepared.digest,
        digest_algorithm=prepared.digest_algorithm,
        signature_algorithm=prepared.signature_algorithm,
        document_digest=prepared.document_digest,
        level=str(wanted),
        expires_at=prepared.expires_at,
    )


def complete_external(
    services: Services,
    principal: Principal,
    document_id: int,
    *,
    handle: str,
    signature: bytes | None = None,
    cms: bytes | None = None,
) -> IngestResult:
    """Step 2: the token's signature value (or a whole CMS) is checked against the prepared
    document and certificate, the signed PDF is archived as ``person_signed``.

    Any replica can do it: the prepared state comes from the handle's row, claimed first (a
    second ``complete`` of the handle meanwhile is refused as busy), written into a private
    temporary folder for :func:`kyso.signer.external.complete`.  A refused signature gives the
    claim back (the client may try again); a good one consumes the row before the result is
    archived, so a handle makes at most one version."""
    from cryptography import x509

    from kyso.signer import external

    _require(principal, SIGNERS)
    latest = _latest(services, principal, document_id)
    with services.catalog.session() as s:
        row = s.execute(
            sa.select(
                pending_signatures.c.document_id,
                pending_signatures.c.agency_id,
                pending_signatures.c.user_id,
                pending_signatures.c.base_seq,
                pending_signatures.c.expires_at,
            ).where(pending_signatures.c.handle == handle)
        ).first()
    if (
        row is None
        or row.document_id != document_id
        or row.agency_id != principal.agency
        or row.user_id != principal.user_id
    ):
        raise Problem(404, "not-found", t("workflow.external.unknown_handle"))
    if latest.seq != row.base_seq or latest.kind != "draft":
        # the document moved on since the signature was prepared: that preparation is void
        _forget_pending(services, handle)
        raise _conflict(latest.kind, "person_signed")
    expires_at = _aware(row.expires_at)
    if _utcnow() > expires_at:
        _forget_pending(services, handle)
        raise external.HandleError("signer.external.expired", expired_at=expires_at.isoformat())
    claim, pending = _claim_pending(services, handle)
    with _workspace() as tmp:
        work_dir, target = tmp / "pending", tmp / "signed.pdf"
        work_dir.mkdir(mode=0o700)
        (work_dir / f"{handle}.pdf").write_bytes(pending["prepared_pdf"])
        (work_dir / f"{handle}.json").write_bytes(pending["state"])
        try:
            external.complete_sync(
                handle,
                signature=signature,
                cms=cms,
                certificate=x509.load_der_x509_certificate(pending["certificate"]),
                target=target,
                work_dir=work_dir,
                revocation=services.revocation_context(),
                timestamper=services.timestamper(),
            )
        except external.HandleError:
            _forget_pending(services, handle, claim=claim)
            raise
        except BaseException:
            _release_pending(services, handle, claim)
            raise
        if not _forget_pending(services, handle, claim=claim):
            # held longer than CLAIM_LEASE and taken over by another replica: that one signs
            raise external.HandleError("signer.external.unknown_handle")
        try:
            return services.archive.put(
                target, document=document_id, kind="person_signed", actor=principal.actor
            )
        except BaseException:
            # nothing archived: the client may send its signature again
            _restore_pending(services, pending)
            raise


def _aware(value: dt.datetime) -> dt.datetime:
    """A timestamp of the catalogue in UTC (SQLite gives them back without a zone)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _read_pending(work_dir: Path, handle: str) -> tuple[bytes, bytes]:
    """The prepared document and JSON state :func:`kyso.signer.external.prepare` left in
    ``work_dir`` (``<handle>.pdf``, ``<handle>.json``: the library's documented layout)."""
    return (work_dir / f"{handle}.pdf").read_bytes(), (work_dir / f"{handle}.json").read_bytes()


def _claim_pending(services: Services, handle: str) -> tuple[str, dict[str, Any]]:
    """Take ``handle``'s row for this ``complete`` (an UPDATE that only one transaction can
    win, on SQLite and PostgreSQL alike): the claim token and the whole row."""
    from kyso.signer import external

    claim = secrets.token_urlsafe(24)
    now = _utcnow()
    table = pending_signatures
    with services.catalog.session(write=True) as s:
        taken = s.execute(
            table.update()
            .where(
                table.c.handle == handle,
                table.c.state.is_not(None),
                sa.or_(table.c.claimed_by.is_(None), table.c.claimed_until < now),
            )
            .values(claimed_by=claim, claimed_until=now + CLAIM_LEASE)
        )
        if _rowcount(taken) == 1:
            row = s.execute(
                sa.select(table).where(table.c.handle == handle, table.c.claimed_by == claim)
            ).one()
            return claim, dict(row._mapping)
        held = s.execute(
            sa.select(table.c.claimed_by).where(
                table.c.handle == handle, table.c.state.is_not(None)
            )
        ).first()
        if held is None:
            # completed meanwhile, or prepared by a version that kept the state in files
            s.execute(table.delete().where(table.c.handle == handle, table.c.state.is_(None)))
    # raised once the session is committed (raising inside would roll the delete back)
    if held is None:
        raise external.HandleError("signer.external.unknown_handle")
    raise external.ExternalSigningError("signer.external.busy")


def _release_pending(services: Services, handle: str, claim: str) -> None:
    """Give the claim back (the signature was refused, the TSA was down...); if the database
    fails here too, the claim lapses after :data:`CLAIM_LEASE` and the first error stands."""
    with contextlib.suppress(sa.exc.SQLAlchemyError), services.catalog.session(write=True) as s:
        s.execute(
            pending_signatures.update()
            .where(pending_signatures.c.handle == handle, pending_signatures.c.claimed_by == claim)
            .values(claimed_by=None, claimed_until=None)
        )


def _restore_pending(services: Services, pending: dict[str, Any]) -> None:
    """Put a consumed row back, unclaimed (archiving the signed result failed); best effort:
    when the database is what failed, the client prepares again."""
    with contextlib.suppress(sa.exc.SQLAlchemyError), services.catalog.session(write=True) as s:
        s.execute(
            pending_signatures.insert().values(
                {**pending, "claimed_by": None, "claimed_until": None}
            )
        )


def _forget_pending(services: Services, handle: str, *, claim: str | None = None) -> bool:
    """Delete ``handle``'s row (only if ``claim`` still holds it, when given): whether it
    was there to delete."""
    where = [pending_signatures.c.handle == handle]
    if claim is not None:
        where.append(pending_signatures.c.claimed_by == claim)
    with services.catalog.session(write=True) as s:
        return _rowcount(s.execute(pending_signatures.delete().where(*where))) > 0


def _purge_pending(services: Services) -> int:
    """Delete the expired preparations no ``complete`` holds; how many."""
    now = _utcnow()
    table = pending_signatures
    with services.catalog.session(write=True) as s:
        return _rowcount(
            s.execute(
                table.delete().where(
                    table.c.expires_at < now,
                    sa.or_(table.c.claimed_until.is_(None), table.c.claimed_until < now),
                )
            )
        )


def _rowcount(result: sa.Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched (what its cursor result says)."""
    return int(cast("sa.CursorResult[Any]", result).rowcount)


# -- the clerk: number and date ----------------------------------------------------------------


def _reserve(
    s: Session,
    *,
    agency: str,
    document_id: int,
    number: int | None,
    symbol: str,
    issued: dt.date,
    place: str | None,
    actor: str,
) -> int:
    """The number of ``document_id`` in ``agency``'s register for ``issued.year``: the one
    already reserved for it, ``number`` when given and free, else the next one."""
    existing = s.execute(
        sa.select(register_numbers).where(register_numbers.c.document_id == document_id)
    ).first()
    if existing is not None:
        if number is not None and number != existing.number:
            raise Problem(
                409,
                "conflict",
                t("workflow.register.reserved", number=f"{existing.number:02d}"),
            )
        s.execute(
            register_numbers.update()
            .where(register_numbers.c.document_id == document_id)
            .values(symbol=symbol, issued_date=issued, place=place)
        )
        return int(existing.number)
    year = issued.year
    _ensure_counter(s, agency, year)
    if number is None:
        while True:  # skip numbers a clerk gave by hand ahead of the counter
            number = s.execute(
                register_counters.update()
                .where(register_counters.c.agency_id == agency, register_counters.c.year == year)
                .values(last_number=register_counters.c.last_number + 1)
                .returning(register_counters.c.last_number)
            ).scalar_one()
            if not _taken(s, agency, year, number):
                break
    else:
        s.execute(
            register_counters.update()
            .where(
                register_counters.c.agency_id == agency,
                register_counters.c.year == year,
                register_counters.c.last_number < number,
            )
            .values(last_number=number)
        )
    if _taken(s, agency, year, number):
        raise Problem(
            409, "conflict", t("workflow.register.taken", number=f"{number:02d}", year=year)
        )
    s.execute(
        register_numbers.insert().values(
            agency_id=agency,
            year=year,
            number=number,
            document_id=document_id,
            symbol=symbol,
            issued_date=issued,
            place=place,
            state="reserved",
            created_at=_utcnow(),
            created_by=actor,
        )
    )
    audit.append(
        s,
        actor,
        "register.reserve",
        f"document:{document_id}",
        {"agency": agency, "year": year, "number": number, "symbol": symbol},
    )
    return int(number)


def reserve_number(catalog: Catalog, **kw: Any) -> int:
    """:func:`_reserve` in a transaction of its own; a number (or document) another clerk
    took at the same moment is a 409 ``conflict``, not a database error."""
    try:
        with catalog.session() as s:
            return _reserve(s, **kw)
    except sa.exc.IntegrityError:
        raise Problem(409, "conflict", t("workflow.register.concurrent")) from None


def _taken(s: Session, agency: str, year: int, number: int) -> bool:
    return (
        s.scalar(
            sa.select(register_numbers.c.document_id).where(
                register_numbers.c.agency_id == agency,
                register_numbers.c.year == year,
                register_numbers.c.number == number,
            )
        )
        is not None
    )


def _ensure_counter(s: Session, agency: str, year: int) -> None:
    """The counter row of (agency, year), created at 0 if missing (concurrency-safe)."""
    values = {"agency_id": agency, "year": year, "last_number": 0}
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        s.execute(pg_insert(register_counters).values(**values).on_conflict_do_nothing())
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        s.execute(sqlite_insert(register_counters).values(**values).on_conflict_do_nothing())


def _release(services: Services, document_id: int, actor: str) -> None:
    """Give back a number reserved for a registration that failed before it was archived:
    the counter steps back when nothing was taken after it (no gap), else the gap stays and
    is on record."""
    with services.catalog.session() as s:
        row = s.execute(
            sa.select(register_numbers).where(
                register_numbers.c.document_id == document_id,
                register_numbers.c.state == "reserved",
            )
        ).first()
        if row is None:
            return
        s.execute(register_numbers.delete().where(register_numbers.c.id == row.id))
        s.execute(
            register_counters.update()
            .where(
                register_counters.c.agency_id == row.agency_id,
                register_counters.c.year == row.year,
                register_counters.c.last_number == row.number,
            )
            .values(last_number=row.number - 1)
        )
        audit.append(
            s,
            actor,
            "register.release",
            f"document:{document_id}",
            {"agency": row.agency_id, "year": row.year, "number": row.number},
        )


def _record_register(services: Services, document_id: int, actor: str) -> None:
    """Write CodeNumber, CodeNotation, IssuedDate (and the DocumentId they make) into the
    document's catalogue record once the registered version is archived."""
    with services.catalog.session() as s:
        row = s.execute(
            sa.select(register_numbers).where(register_numbers.c.document_id == document_id)
        ).first()
        doc = s.get(Document, document_id)
        if row is None or doc is None:
            return
        number = f"{row.number:02d}"
        doc.code_number = number
        doc.code_notation = row.symbol
        doc.issued_date = row.issued_date
        if doc.document_id is None:
            doc.document_id = f"{doc.organ_id},{row.issued_date:%Y/%m/%d},{number}/{row.symbol}"
        s.execute(
            register_numbers.update().where(register_numbers.c.id == row.id).values(state="issued")
        )
        audit.append(
            s,
            actor,
            "document.register",
            f"document:{document_id}",
            {
                "number": f"{number}/{row.symbol}",
                "issued_date": row.issued_date.isoformat(),
                "document_id": doc.document_id,
            },
        )


def _latest_result(services: Services, document_id: int, actor: str) -> IngestResult:
    with services.catalog.session() as s:
        version = s.scalars(
            sa.select(DocumentVersion)
            .where(DocumentVersion.document_id == document_id)
            .order_by(DocumentVersion.seq.desc())
            .limit(1)
        ).one()
    return services.archive._result_for(version, created=False)


def register(
    services: Services,
    principal: Principal,
    document_id: int,
    *,
    number: int | str | None = None,
    date: dt.date | str | None = None,
    symbol: str | None = None,
    place: str | None = None,
) -> IngestResult:
    """The clerk's step: the number (the next of the agency's register for the year, unless
    given) and the issue date (default: today in Vietnam) written into the fields the person's
    signature prepared, archived as ``registered``; the catalogue record gets CodeNumber,
    CodeNotation and IssuedDate.  ``symbol`` and ``place`` default to those planned at upload."""
    from kyso.signer.register import (
        check_issue_date,
        check_place,
        fill_register_fields,
        parse_date,
        parse_number,
        parse_symbol,
        today_vn,
    )

    _require(principal, CLERKS)
    latest = _latest(services, principal, document_id)
    if latest.kind == "registered":
        # the version is archived; a failure after it left the record without its number
        with services.catalog.session() as s:
            state = s.scalar(
                sa.select(register_numbers.c.state).where(
                    register_numbers.c.document_id == document_id
                )
            )
        if state == "reserved":
            _record_register(services, document_id, principal.actor)
            return _latest_result(services, document_id, principal.actor)
    _expect(latest, ("person_signed",), "registered")
    with services.catalog.session() as s:
        plan = s.execute(
            sa.select(document_plans).where(document_plans.c.document_id == document_id)
        ).first()
    symbol = symbol or (plan.symbol if plan is not None else None)
    place = place if place is not None else (plan.place if plan is not None else None)
    if not symbol:
        raise MetadataError("archive.catalog.metadata.required", field="code_notation")
    symbol = parse_symbol(symbol)
    place = check_place(place)
    wanted = parse_number(number) if number is not None else None
    if date is None:
        issued = today_vn()
    elif isinstance(date, dt.date):
        issued = date
    else:
        issued = parse_date(date)
    issued = check_issue_date(issued)
    given = reserve_number(
        services.catalog,
        agency=principal.agency,
        document_id=document_id,
        number=wanted,
        symbol=symbol,
        issued=issued,
        place=place,
        actor=principal.actor,
    )
    try:
        with _workspace() as tmp:
            source, target = tmp / "in.pdf", tmp / "registered.pdf"
            _fetch(services, principal, latest, source, "register")
            fill_register_fields(
                source, target, number=given, symbol=symbol, issued=issued, place=place
            )
            result = services.archive.put(
                target, document=document_id, kind="registered", actor=principal.actor
            )
    except BaseException:
        _release(services, document_id, principal.actor)
        raise
    _record_register(services, document_id, principal.actor)
    return result


# -- the clerk: the agency's seal ----------------------------------------------------------------


def seal(
    services: Services, principal: Principal, document_id: int, *, level: str = "B-LT"
) -> IngestResult:
    """The agency's signature (clerk, with the agency's key) over a registered document; the
    seal image kept for the key is drawn over the left third of the person's signature."""
    from kyso.api.accounts import open_agency_key
    from kyso.signer.appearance import SealAppearance
    from kyso.signer.sign import SignOptions

    _require(principal, CLERKS)
    latest = _latest(services, principal, document_id)
    _expect(latest, ("registered",), "sealed")
    wanted = _level(level)
    handle = open_agency_key(services, principal)
    image = _image(services, handle)
    options = SignOptions(
        level=wanted, appearance=SealAppearance(image) if image is not None else None
    )
    with _workspace() as tmp:
        source, target = tmp / "in.pdf", tmp / "sealed.pdf"
        _fetch(services, principal, latest, source, "seal")
        _sign(services, handle, source, target, options)
        return services.archive.put(
            target, document=document_id, kind="sealed", actor=principal.actor
        )


def seal_attachment(
    services: Services,
    principal: Principal,
    source: Path,
    target: Path,
    number_and_symbol: str,
    *,
    level: str = "B-LT",
) -> bool:
    """An attachment sent as a separate file gets the agency's signature (Decree 30/2020,
    Appendix I): top right of its first page, no image, the document's number and symbol
    (``number_and_symbol``, e.g. ``"Số: 15/QĐ-BNV"``) and the signing time.  A PDF that already
    carries a signature is left as it is (its signer chose; the receiver verifies it): then
    ``target`` is a copy of ``source`` and the answer is False.  Not a PDF, damaged or
    encrypted: :class:`~kyso.signer.errors.BadInputError` (422)."""
    import shutil

    from pyhanko.pdf_utils.reader import PdfFileReader

    from kyso.api.accounts import open_agency_key
    from kyso.signer.appearance import TextStampAppearance
    from kyso.signer.errors import BadInputError
    from kyso.signer.sign import SignOptions, open_pdf

    _require(principal, CLERKS)
    wanted = _level(level)
    with open_pdf(source) as fh:
        try:
            signed = bool(PdfFileReader(fh, strict=False).embedded_signatures)
        except Exception as exc:  # pyHanko's reader raises many kinds on a damaged file
            raise BadInputError("signer.input.damaged", path=source.name, reason=str(exc)) from exc
    if signed:
        shutil.copyfile(source, target)
        return False
    handle = open_agency_key(services, principal)
    options = SignOptions(
        level=wanted, appearance=TextStampAppearance.attachment(number_and_symbol)
    )
    _sign(services, handle, source, target, options)
    return True


# -- verification, extension, reading -------------------------------------------------------------


@dataclass(frozen=True)
class VerifyOutcome:
    report_id: int
    version: int
    report: dict[str, Any]


def verify_version(
    services: Services, principal: Principal, document_id: int, *, version: int | None = None
) -> VerifyOutcome:
    """Verify a version (default: the latest) now and keep the report with it."""
    from kyso.api.observability import record_verification
    from kyso.signer.verify import VerifyPolicy, verify

    latest = _latest(services, principal, document_id)
    if latest.seq is None:
        raise _not_found(document_id)
    policy = VerifyPolicy.from_services(services, offline=services.settings.archive_verify_offline)
    with _workspace() as tmp:
        source = tmp / "document.pdf"
        try:
            chosen = services.archive.get(
                document_id, source, version=version, actor=principal.actor, purpose="verify"
            )
        except NotFoundError:
            raise Problem(
                404, "not-found", t("workflow.version.not_found", id=document_id, seq=version)
            ) from None
        report = verify(source, policy).to_dict()
    record_verification(str(report.get("indication")))
    report_id = services.catalog.add_report(chosen.id, report, actor=principal.actor)
    return VerifyOutcome(report_id=report_id, version=chosen.seq, report=report)


def verify_document(
    services: Services, principal: Principal, document_id: int, *, version: int | None = None
) -> dict[str, Any]:
    """The verification report (``kyso verify --json``) of a version, kept with it."""
    return verify_version(services, principal, document_id, version=version).report


def extend(
    services: Services, principal: Principal, document_id: int, *, level: str = "B-LTA"
) -> IngestResult:
    """Raise a sealed (or received) document to B-LT/B-LTA: a new ``ltv_extended`` version."""
    _require(principal, EXTENDERS)
    latest = _latest(services, principal, document_id)
    _expect(latest, ("sealed", "ltv_extended", "received"), "ltv_extended")
    wanted = _level(level)
    with _workspace() as tmp:
        source, target = tmp / "in.pdf", tmp / "extended.pdf"
        _fetch(services, principal, latest, source, "extend")
        services.document_signer(None).extend(source, target, wanted)
        return services.archive.put(
            target, document=document_id, kind="ltv_extended", actor=principal.actor
        )


def get_document(services: Services, principal: Principal, document_id: int) -> Document:
    """The document with its case file, versions and reports; the read is logged."""
    _latest(services, principal, document_id)
    return services.catalog.get(document_id, actor=principal.actor, purpose="show")


def download(
    services: Services,
    principal: Principal,
    document_id: int,
    target: Path,
    *,
    version: int | None = None,
) -> DocumentVersion:
    """A version's bytes (default: the latest), bit-identical and hash-checked; logged."""
    _latest(services, principal, document_id)
    try:
        return services.archive.get(
            document_id, target, version=version, actor=principal.actor, purpose="download"
        )
    except NotFoundError:
        raise Problem(
            404, "not-found", t("workflow.version.not_found", id=document_id, seq=version)
        ) from None


def register_plan(services: Services, document_id: int) -> dict[str, Any] | None:
    """The number given to a document (or reserved for it), for display."""
    with services.catalog.session() as s:
        row = s.execute(
            sa.select(register_numbers).where(register_numbers.c.document_id == document_id)
        ).first()
        plan = s.execute(
            sa.select(document_plans).where(document_plans.c.document_id == document_id)
        ).first()
    if row is None and plan is None:
        return None
    return {
        "number": f"{row.number:02d}" if row is not None else None,
        "symbol": row.symbol if row is not None else (plan.symbol if plan else None),
        "place": row.place if row is not None else (plan.place if plan else None),
        "issued_date": row.issued_date.isoformat() if row is not None else None,
        "state": row.state if row is not None else "planned",
    }
