"""Two-phase (external) PAdES signing: the private key stays with a USB token or a remote
signing service, kyso prepares the document and finishes it.

Built on pyhanko's interrupted signing, not re-invented:

``prepare``
    the same pyhanko stages as :meth:`PdfSigner.async_sign_pdf`
    (``init_signing_session`` → ``perform_presign_validation`` → size estimate →
    ``prepare_tbs_document`` → ``digest_tbs_document``), with an ``ExternalSigner`` that holds
    only the certificate; then ``Signer.signed_attrs`` builds the CMS signed attributes over the
    document digest. The prepared document (signature placeholder included) and a JSON state go
    to ``work_dir``; what the client must sign is returned.

``complete``
    verifies the client's signature (or CMS) against the certificate *before* anything is
    written, repeats the pre-sign validation (the certificate may have been revoked meanwhile),
    builds the CMS with ``ExternalSigner.async_sign_prescribed_attributes`` (which adds the
    signature timestamp for B-T and up), and hands it to
    ``PdfTBSDocument.async_finish_signing`` (DSS for B-LT, document timestamp for B-LTA), in
    memory; only then is the target written, atomically.

What the client signs
    ``PreparedSignature.signed_attributes`` (DER of the CMS ``SignedAttributes``) with the
    certificate's key and ``digest_algorithm``: the client hashes (``KeyHandle.sign``,
    ``openssl dgst -sign``, PKCS#11 ``CKM_SHA256_RSA_PKCS``/``CKM_ECDSA_SHA256``). A client that
    only signs hashes (a remote signing service, ``CKM_ECDSA``) signs ``PreparedSignature.digest``
    (= the hash of the signed attributes) as a prehashed value; both give the same signature.
    RSA signatures are PKCS#1 v1.5 (``sha256_rsa``), ECDSA signatures DER-encoded
    (``sha256_ecdsa``): ``signature_algorithm`` names the mechanism. A token middleware that
    builds its own CMS may send it instead (``complete(cms=...)``): it must be a SignedData
    with one SignerInfo whose message-digest is ``PreparedSignature.document_digest``, with an
    ESS signing-certificate(-v2) attribute (PAdES), signed by the prepared certificate. Only
    its signed attributes and signature value are kept: kyso re-packages them with the
    prepared chain and its own signature timestamp (the client's unsigned attributes go).

State in ``work_dir``
    ``<handle>.pdf`` (the prepared document) and ``<handle>.json`` (public data only: digests,
    byte range, signed attributes, certificates, level, expiry). Either phase can run in any
    process that sees ``work_dir``; nothing is kept in memory between them. ``complete`` trusts
    none of it blindly: it recomputes the document digest over the byte range of the stored
    file, checks that the signed attributes carry it, re-checks the certificate. A second
    ``complete`` of the same handle at the same time is refused (a lock on the state file); a
    refused signature leaves the state in place so that the client can try again.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.sign import fields, signers
from pyhanko.sign.signers.pdf_byterange import PreparedByteRangeDigest
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes
from pyhanko.sign.signers.pdf_signer import PdfTBSDocument, PostSignInstructions
from pyhanko.sign.timestamps.api import TimeStamper
from pyhanko.sign.timestamps.common_utils import TimestampRequestError
from pyhanko.sign.validation.generic_cms import get_signing_cert_attr, validate_sig_integrity
from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpFetcherBackend
from pyhanko_certvalidator.fetchers.api import FetcherBackend
from pyhanko_certvalidator.registry import SimpleCertificateStore

from kyso.aio import run_sync
from kyso.certs.errors import TSAError
from kyso.errors import KysoError
from kyso.signer.errors import (
    BadInputError,
    SigningError,
    TimestampUnavailableError,
)
from kyso.signer.sign import (
    Clock,
    Level,
    RevocationContext,
    SignOptions,
    SignResult,
    atomic_output,
    causes,
    check_certificate,
    map_error,
    open_pdf,
    resolve_field,
    utc_now,
)

__all__ = [
    "DEFAULT_TTL",
    "ExternalSigningError",
    "HandleError",
    "PreparedSignature",
    "SignatureRejectedError",
    "complete",
    "complete_sync",
    "discard",
    "prepare",
    "prepare_sync",
    "purge_expired",
]

DEFAULT_TTL = dt.timedelta(minutes=15)
"""How long a prepared signature waits for its signature value."""

STATE_VERSION = 1
_HANDLE = re.compile(r"[A-Za-z0-9_-]{32}")


class ExternalSigningError(SigningError):
    """Two-phase signing could not go on; nothing was written to the target."""

    code = "signer.external.error"


class HandleError(ExternalSigningError):
    """The handle names no prepared signature: unknown, already completed or expired."""

    code = "signer.external.unknown_handle"


class SignatureRejectedError(ExternalSigningError):
    """The signature (or CMS) given to ``complete`` does not fit the prepared document."""

    code = "signer.external.bad_signature"


@dataclass(frozen=True)
class PreparedSignature:
    """What the client needs to sign, and the handle to complete with."""

    handle: str
    """Opaque id of the prepared state in ``work_dir`` (32 URL-safe characters)."""
    signed_attributes: bytes
    """DER of the CMS SignedAttributes: sign these bytes (hashing with ``digest_algorithm``)."""
    digest: bytes
    """``digest_algorithm`` hash of ``signed_attributes``: sign this as a prehashed value."""
    digest_algorithm: str
    """Hash of the signature and of the document (``sha256``...)."""
    signature_algorithm: str
    """Expected mechanism (asn1crypto name): ``sha256_rsa`` (PKCS#1 v1.5), ``sha256_ecdsa``."""
    document_digest: bytes
    """Hash of the document's byte range (the message-digest attribute; for a client's CMS)."""
    level: Level
    field_name: str
    expires_at: dt.datetime


# -- prepare ---------------------------------------------------------------------------------


async def prepare(
    source: Path,
    *,
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate],
    options: SignOptions,
    revocation: RevocationContext,
    timestamper: TimeStamper | None,
    work_dir: Path,
    clock: Clock = utc_now,
    ttl: dt.timedelta = DEFAULT_TTL,
) -> PreparedSignature:
    """Validate the certificate, write the to-be-signed document to ``work_dir`` and return
    what the external signer must sign."""
    source, work_dir = Path(source), Path(work_dir)
    if not work_dir.is_dir():
        raise BadInputError("signer.output.no_dir", path=str(work_dir))
    level = options.level
    if level.timestamped and timestamper is None:
        raise TimestampUnavailableError("signer.tsa.none_configured")
    check_certificate(certificate, clock())
    with open_pdf(source) as handle:
        original = handle.read()
        handle.seek(0)
        field_name, appearance_kwargs = resolve_field(handle, options, certificate)
    signer = _external_signer(certificate, chain, _placeholder_length(certificate))
    async with _fetchers(revocation) as backend:
        pdf_signer = signers.PdfSigner(
            _metadata(options, level, field_name, certificate, chain, revocation, backend),
            signer=signer,
            timestamper=timestamper if level.timestamped else None,
            **appearance_kwargs,
        )
        writer = _writer(original, source)
        session = await _guarded(_init_session(pdf_signer, writer))
        validation_info = await _guarded(session.perform_presign_validation(writer))
        reserved = await _guarded(session.estimate_signature_container_size(validation_info))
        tbs = session.prepare_tbs_document(validation_info=validation_info, bytes_reserved=reserved)
        output = BytesIO()
        prepared, _ = tbs.digest_tbs_document(output=output)
        signed_attrs = await signer.signed_attrs(
            prepared.document_digest,
            session.md_algorithm,
            attr_settings=PdfCMSSignedAttributes(
                signing_time=session.system_time,
                cades_signed_attrs=pdf_signer.signature_meta.cades_signed_attr_spec,
            ),
            use_pades=session.use_pades,
        )
    md = session.md_algorithm
    signed_der = signed_attrs.dump()
    mechanism = signer.get_signature_mechanism_for_digest(md)["algorithm"].native
    expires = clock() + ttl
    token = secrets.token_urlsafe(24)
    state = {
        "version": STATE_VERSION,
        "level": str(level),
        "field_name": field_name,
        "md_algorithm": md,
        "signature_algorithm": mechanism,
        "document_digest": prepared.document_digest.hex(),
        "reserved_region": [prepared.reserved_region_start, prepared.reserved_region_end],
        "original_length": len(original),
        "prepared_sha256": hashlib.sha256(output.getvalue()).hexdigest(),
        "signed_attrs": _b64(signed_der),
        "certificate": _b64(certificate.public_bytes(Encoding.DER)),
        "chain": [_b64(c.public_bytes(Encoding.DER)) for c in chain],
        "created_at": clock().isoformat(),
        "expires_at": expires.isoformat(),
    }
    _write_private(_pdf_path(work_dir, token), output.getvalue())
    _write_private(_state_path(work_dir, token), json.dumps(state, indent=1).encode())
    return PreparedSignature(
        handle=token,
        signed_attributes=signed_der,
        digest=_hash(md, signed_der),
        digest_algorithm=md,
        signature_algorithm=mechanism,
        document_digest=prepared.document_digest,
        level=level,
        field_name=field_name,
        expires_at=expires,
    )


def prepare_sync(source: Path, **kw: Any) -> PreparedSignature:
    """Synchronous twin of :func:`prepare` (any thread: :func:`kyso.aio.run_sync`)."""
    return run_sync(prepare(source, **kw))


# -- complete --------------------------------------------------------------------------------


async def complete(
    handle: str,
    *,
    signature: bytes | None = None,
    cms: bytes | None = None,
    certificate: x509.Certificate,
    target: Path,
    work_dir: Path,
    revocation: RevocationContext,
    timestamper: TimeStamper | None,
    clock: Clock = utc_now,
) -> SignResult:
    """Check ``signature`` (a raw signature value over the signed attributes) or ``cms`` (a
    whole CMS SignedData) against the prepared document and ``certificate``, then write the
    signed PDF to ``target`` and forget the handle."""
    target, work_dir = Path(target), Path(work_dir)
    if (signature is None) == (cms is None):
        raise ExternalSigningError("signer.external.one_of")
    if target.resolve().parent == work_dir.resolve() and _HANDLE.fullmatch(target.stem):
        raise BadInputError("signer.output.is_input", path=str(target))
    with _claimed(work_dir, handle) as raw_state:
        state = _State.load(raw_state)
        if clock() > state.expires_at:
            _forget(work_dir, handle)
            raise HandleError("signer.external.expired", expired_at=state.expires_at.isoformat())
        if not hmac.compare_digest(
            certificate.public_bytes(Encoding.DER), state.certificate.public_bytes(Encoding.DER)
        ):
            raise SignatureRejectedError(
                "signer.external.wrong_certificate",
                expected=state.certificate.subject.rfc4514_string(),
            )
        prepared_pdf = _read_prepared(work_dir, handle, state)
        check_certificate(certificate, clock())
        signer, signed_attrs = _signer_for(state, signature=signature, cms=cms)
        level = state.level
        if level.timestamped and timestamper is None:
            raise TimestampUnavailableError("signer.tsa.none_configured")
        async with _fetchers(revocation) as backend:
            meta = _metadata(
                SignOptions(level=level, md_algorithm=state.md_algorithm),
                level,
                state.field_name,
                certificate,
                state.chain,
                revocation,
                backend,
            )
            stamper = timestamper if level.timestamped else None
            pdf_signer = signers.PdfSigner(meta, signer=signer, timestamper=stamper)
            # the pre-sign checks again, on the original document: revocation may have
            # changed since prepare, and B-LT/B-LTA need the validation paths for the DSS
            writer = _writer(prepared_pdf[: state.original_length], target)
            session = await _guarded(_init_session(pdf_signer, writer))
            validation_info = await _guarded(session.perform_presign_validation(writer))
            signature_cms = await _guarded(
                signer.async_sign_prescribed_attributes(
                    state.md_algorithm, signed_attrs, timestamper=stamper
                )
            )
            _check_integrity(signature_cms, certificate, state.document_digest)
            instructions = None
            if level.long_term:
                if validation_info is None:  # pragma: no cover - a context is always given
                    raise SigningError("signer.failed", reason="no validation information")
                instructions = PostSignInstructions(
                    validation_info=validation_info,
                    timestamper=stamper if level is Level.B_LTA else None,
                    timestamp_md_algorithm=state.md_algorithm,
                    timestamp_field_name=meta.timestamp_field_name,
                    dss_settings=meta.dss_settings,
                    tight_size_estimates=meta.tight_size_estimates,
                    embed_roots=signer.embed_roots,
                    strict=False,
                )
            document = BytesIO(prepared_pdf)
            await _guarded(
                PdfTBSDocument.async_finish_signing(
                    document,
                    PreparedByteRangeDigest(
                        document_digest=state.document_digest,
                        reserved_region_start=state.reserved_region[0],
                        reserved_region_end=state.reserved_region[1],
                    ),
                    signature_cms,
                    post_sign_instr=instructions,
                    validation_context=meta.validation_context,
                )
            )
        async with atomic_output(target) as out:
            out.write(document.getvalue())
        _forget(work_dir, handle)
    return SignResult(
        output=target,
        level_requested=level,
        level_reached=level,
        field_name=state.field_name,
        signer=certificate.subject.rfc4514_string(),
    )


def complete_sync(handle: str, **kw: Any) -> SignResult:
    """Synchronous twin of :func:`complete` (any thread: :func:`kyso.aio.run_sync`)."""
    return run_sync(complete(handle, **kw))


def discard(handle: str, *, work_dir: Path) -> None:
    """Forget a prepared signature (the user cancelled); unknown handles are ignored."""
    if _HANDLE.fullmatch(handle):
        _forget(Path(work_dir), handle)


def purge_expired(work_dir: Path, *, clock: Clock = utc_now) -> int:
    """Delete the state of every expired (or unreadable) prepared signature, and documents
    left without a state for longer than :data:`DEFAULT_TTL`; how many signatures."""
    removed = 0
    stale = clock().timestamp() - DEFAULT_TTL.total_seconds()
    for path in Path(work_dir).glob("*.pdf"):
        if _HANDLE.fullmatch(path.stem) and not path.with_suffix(".json").exists():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < stale:
                    path.unlink()
    for path in Path(work_dir).glob("*.json"):
        handle = path.stem
        if not _HANDLE.fullmatch(handle):
            continue
        try:
            expires = _State.load(path.read_bytes()).expires_at
        except (OSError, ExternalSigningError):
            expires = None
        if expires is None or clock() > expires:
            _forget(Path(work_dir), handle)
            removed += 1
    return removed


# -- certificate and signature checks --------------------------------------------------------


def _signer_for(
    state: _State, *, signature: bytes | None, cms: bytes | None
) -> tuple[signers.ExternalSigner, asn1_cms.CMSAttributes]:
    """The pyhanko signer that embeds the client's signature, and the signed attributes it
    covers; refuses what does not verify, before anything is written or fetched."""
    if signature is not None:
        signed_attrs = asn1_cms.CMSAttributes.load(state.signed_attrs)
        signer = _external_signer(state.certificate, state.chain, signature)
        info = signer.signer_info(state.md_algorithm, signed_attrs, signature)
        _verify(info, state.certificate, state.document_digest)
        return signer, signed_attrs
    assert cms is not None
    info = _client_signer_info(cms, state)
    mechanism = info["signature_algorithm"]
    signer = _external_signer(
        state.certificate, state.chain, info["signature"].native, mechanism=mechanism
    )
    return signer, info["signed_attrs"]


def _client_signer_info(der: bytes, state: _State) -> asn1_cms.SignerInfo:
    """The one SignerInfo of a client's CMS, checked against the prepared signature."""
    try:
        content = asn1_cms.ContentInfo.load(der, strict=True)
        if content["content_type"].native != "signed_data":
            raise ValueError(f"content type {content['content_type'].native}, not signed_data")
        signed_data = content["content"]
        infos = list(signed_data["signer_infos"])
        if len(infos) != 1:
            raise ValueError(f"{len(infos)} signer infos, expected 1")
        info = infos[0]
        signed_attrs = info["signed_attrs"]
        digest_algorithm = info["digest_algorithm"]["algorithm"].native
        _ = info["signature_algorithm"]["algorithm"].native
        sid = info["sid"]
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise SignatureRejectedError("signer.external.bad_cms", reason=str(exc)) from None
    if signed_attrs is asn1_core.VOID or not len(signed_attrs):
        raise SignatureRejectedError("signer.external.bad_cms", reason="no signed attributes")
    if digest_algorithm != state.md_algorithm:
        raise SignatureRejectedError(
            "signer.external.bad_cms",
            reason=f"digest {digest_algorithm}, prepared for {state.md_algorithm}",
        )
    cert = _asn1(state.certificate)
    if not _sid_matches(sid, cert):
        raise SignatureRejectedError(
            "signer.external.wrong_certificate",
            expected=state.certificate.subject.rfc4514_string(),
        )
    try:
        has_ess = get_signing_cert_attr(signed_attrs.untag()) is not None
    except Exception as exc:
        raise SignatureRejectedError("signer.external.bad_cms", reason=str(exc)) from None
    if not has_ess:
        raise SignatureRejectedError(
            "signer.external.bad_cms", reason="no ESS signing-certificate attribute (PAdES)"
        )
    _verify(info, state.certificate, state.document_digest)
    return info


def _sid_matches(sid: asn1_cms.SignerIdentifier, cert: asn1_x509.Certificate) -> bool:
    if sid.name == "issuer_and_serial_number":
        return bool(
            sid.chosen["issuer"] == cert.issuer
            and sid.chosen["serial_number"].native == cert.serial_number
        )
    return bool(sid.chosen.native == cert.key_identifier)


def _verify(info: asn1_cms.SignerInfo, cert: x509.Certificate, document_digest: bytes) -> None:
    """pyhanko's integrity check of one SignerInfo: content type, signing-certificate
    attribute, message digest, signature over the signed attributes."""
    try:
        intact, valid = validate_sig_integrity(info, _asn1(cert), "data", document_digest)
    except Exception as exc:  # SignatureValidationError, unsupported mechanisms, bad DER...
        reason = getattr(exc, "failure_message", None) or str(exc)
        if "certificate attribute" in reason:
            raise SignatureRejectedError(
                "signer.external.wrong_certificate",
                expected=cert.subject.rfc4514_string(),
            ) from None
        raise SignatureRejectedError("signer.external.bad_signature", reason=reason) from None
    if not intact:
        raise SignatureRejectedError("signer.external.wrong_document")
    if not valid:
        raise SignatureRejectedError(
            "signer.external.bad_signature", reason="does not verify with the certificate's key"
        )


def _check_integrity(content: asn1_cms.ContentInfo, cert: x509.Certificate, digest: bytes) -> None:
    """The CMS about to be embedded still verifies (a last guard before writing)."""
    _verify(content["content"]["signer_infos"][0], cert, digest)


# -- state -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _State:
    level: Level
    field_name: str
    md_algorithm: str
    document_digest: bytes
    reserved_region: tuple[int, int]
    original_length: int
    prepared_sha256: str
    signed_attrs: bytes
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    expires_at: dt.datetime

    @classmethod
    def load(cls, raw: bytes) -> _State:
        try:
            data = json.loads(raw)
            if data["version"] != STATE_VERSION:
                raise ValueError(f"state version {data['version']}")
            start, end = (int(v) for v in data["reserved_region"])
            state = cls(
                level=Level(data["level"]),
                field_name=str(data["field_name"]),
                md_algorithm=str(data["md_algorithm"]),
                document_digest=bytes.fromhex(data["document_digest"]),
                reserved_region=(start, end),
                original_length=int(data["original_length"]),
                prepared_sha256=str(data["prepared_sha256"]),
                signed_attrs=base64.b64decode(data["signed_attrs"], validate=True),
                certificate=x509.load_der_x509_certificate(
                    base64.b64decode(data["certificate"], validate=True)
                ),
                chain=tuple(
                    x509.load_der_x509_certificate(base64.b64decode(c, validate=True))
                    for c in data["chain"]
                ),
                expires_at=dt.datetime.fromisoformat(data["expires_at"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ExternalSigningError("signer.external.bad_state", reason=str(exc)) from None
        if not 0 < state.original_length < start < end:
            raise ExternalSigningError("signer.external.bad_state", reason="byte range")
        return state


def _state_path(work_dir: Path, handle: str) -> Path:
    return work_dir / f"{handle}.json"


def _pdf_path(work_dir: Path, handle: str) -> Path:
    return work_dir / f"{handle}.pdf"


@contextlib.contextmanager
def _claimed(work_dir: Path, handle: str) -> Iterator[bytes]:
    """The state of ``handle``, locked for this process until the block ends."""
    if not isinstance(handle, str) or not _HANDLE.fullmatch(handle):
        raise HandleError("signer.external.unknown_handle")
    path = _state_path(work_dir, handle)
    try:
        stream = path.open("rb")
    except FileNotFoundError:
        raise HandleError("signer.external.unknown_handle") from None
    with stream:
        try:
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise ExternalSigningError("signer.external.busy") from None
            raise
        # completed (and unlinked) by another process between open and lock?
        try:
            same = os.path.samestat(os.fstat(stream.fileno()), path.stat())
        except FileNotFoundError:
            same = False
        if not same:
            raise HandleError("signer.external.unknown_handle")
        yield stream.read()


def _read_prepared(work_dir: Path, handle: str, state: _State) -> bytes:
    """The prepared document, checked against the state: its hash, and the byte-range digest
    the signed attributes were made over."""
    try:
        data = _pdf_path(work_dir, handle).read_bytes()
    except FileNotFoundError:
        raise ExternalSigningError("signer.external.bad_state", reason="no document") from None
    start, end = state.reserved_region
    if hashlib.sha256(data).hexdigest() != state.prepared_sha256 or end > len(data):
        raise ExternalSigningError("signer.external.bad_state", reason="document changed")
    digest = hashes.Hash(_hash_algorithm(state.md_algorithm))
    digest.update(data[:start])
    digest.update(data[end:])
    if digest.finalize() != state.document_digest:
        raise ExternalSigningError("signer.external.bad_state", reason="document digest")
    return data


def _forget(work_dir: Path, handle: str) -> None:
    _state_path(work_dir, handle).unlink(missing_ok=True)
    _pdf_path(work_dir, handle).unlink(missing_ok=True)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``path`` atomically, readable by this user only."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- pyhanko plumbing ------------------------------------------------------------------------


def _metadata(
    options: SignOptions,
    level: Level,
    field_name: str,
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate],
    revocation: RevocationContext,
    backend: FetcherBackend | None,
) -> signers.PdfSignatureMetadata:
    """The same signature metadata as :class:`DocumentSigner` uses."""
    return signers.PdfSignatureMetadata(
        field_name=field_name,
        md_algorithm=options.md_algorithm,
        reason=options.reason,
        location=options.location,
        contact_info=options.contact_info,
        subfilter=fields.SigSeedSubFilter.PADES,
        validation_context=revocation.validation_context(
            require_revocation=level.long_term,
            extra_certs=[certificate, *chain],
            fetcher_backend=backend,
        ),
        embed_validation_info=level.long_term,
        use_pades_lta=level is Level.B_LTA,
        signer_key_usage={"digital_signature"},
    )


def _external_signer(
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate],
    signature: bytes | int,
    *,
    mechanism: Any = None,
) -> signers.ExternalSigner:
    return signers.ExternalSigner(
        signing_cert=_asn1(certificate),
        cert_registry=SimpleCertificateStore.from_certs([_asn1(c) for c in chain]),
        signature_value=signature,
        signature_mechanism=mechanism,
    )


def _placeholder_length(certificate: x509.Certificate) -> int:
    """Room for the signature value in the size estimate (its real size is not known yet)."""
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return (key.key_size + 7) // 8
    if isinstance(key, ec.EllipticCurvePublicKey):
        return 2 * ((key.key_size + 7) // 8) + 9  # DER SEQUENCE of two INTEGERs
    return 512


async def _init_session(pdf_signer: signers.PdfSigner, writer: IncrementalPdfFileWriter) -> Any:
    return pdf_signer.init_signing_session(writer)


def _writer(data: bytes, path: Path) -> IncrementalPdfFileWriter:
    try:
        return IncrementalPdfFileWriter(BytesIO(data), strict=False)
    except (PdfError, ValueError, KeyError) as exc:
        raise BadInputError("signer.input.damaged", path=str(path), reason=str(exc)) from None


@contextlib.asynccontextmanager
async def _fetchers(revocation: RevocationContext) -> AsyncIterator[FetcherBackend | None]:
    """HTTP fetchers (OCSP, CRL, certificates) for one phase, closed after it."""
    backend = AIOHttpFetcherBackend() if revocation.fetch else None
    try:
        yield backend
    finally:
        if backend is not None:
            await backend.close()


async def _guarded(job: Any) -> Any:
    """Run a pyhanko step, turning its errors (and their causes) into kyso's, as
    :meth:`DocumentSigner._guard` does; TSA failures become ``signer.tsa.unavailable``."""
    try:
        return await job
    except Exception as exc:
        chain = causes(exc)
        for cause in chain:
            if isinstance(cause, TSAError | TimestampRequestError):
                raise TimestampUnavailableError(
                    "signer.tsa.unavailable", reason=str(cause)
                ) from exc
        if isinstance(exc, KysoError):
            raise
        for cause in chain:
            mapped = map_error(cause)
            if mapped is not None:
                raise mapped from exc
        raise SigningError("signer.failed", reason=str(exc)) from exc


def _asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))


def _hash_algorithm(name: str) -> hashes.HashAlgorithm:
    algorithms: dict[str, type[hashes.HashAlgorithm]] = {
        "sha256": hashes.SHA256,
        "sha384": hashes.SHA384,
        "sha512": hashes.SHA512,
        "sha3_256": hashes.SHA3_256,
        "sha3_384": hashes.SHA3_384,
        "sha3_512": hashes.SHA3_512,
    }
    try:
        return algorithms[name]()
    except KeyError:
        raise SigningError("signer.failed", reason=f"unsupported digest {name}") from None


def _hash(name: str, data: bytes) -> bytes:
    digest = hashes.Hash(_hash_algorithm(name))
    digest.update(data)
    return digest.finalize()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
