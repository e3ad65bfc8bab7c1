"""PAdES signing at every baseline level, extension, and document timestamps (pyhanko).

The collaborators, as in pyhanko itself: *who* signs (a :class:`~kyso.certs.keys.KeyHandle`),
*when* (a pyhanko ``TimeStamper``: the built-in TSA in-process or external TSAs with failover),
*whom to trust and how to learn about revocation* (a :class:`RevocationContext`), and *what*
(:class:`SignOptions`). :class:`DocumentSigner` orchestrates; it reads no settings.

Every operation reads the input and writes a new file next to the output path, renamed into
place only when complete: the input is never modified, and a failure leaves no partial output.
Only incremental updates are ever written, so earlier signatures stay intact.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.timestamps.api import TimeStamper
from pyhanko.sign.timestamps.common_utils import TimestampRequestError
from pyhanko.sign.validation import async_add_validation_info
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.errors import (
    ExpiredError,
    InvalidCertificateError,
    PathBuildingError,
    PathValidationError,
    RevokedError,
)
from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpFetcherBackend
from pyhanko_certvalidator.fetchers.api import FetcherBackend

from kyso.aio import run_sync
from kyso.certs.errors import TSAError
from kyso.certs.identity import display_name
from kyso.certs.keys import KeyHandle
from kyso.errors import KysoError
from kyso.signer.appearance import (
    PersonAppearance,
    Placement,
    SealAppearance,
    TextStampAppearance,
    prepare_visible_signature,
)
from kyso.signer.errors import (
    BadInputError,
    CertificateRefusedError,
    SigningError,
    TimestampUnavailableError,
)
from kyso.signer.register import add_register_fields

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Level(enum.StrEnum):
    """PAdES baseline levels (ETSI EN 319 142-1)."""

    B_B = "B-B"
    B_T = "B-T"
    B_LT = "B-LT"
    B_LTA = "B-LTA"

    @property
    def rank(self) -> int:
        return list(Level).index(self)

    @property
    def timestamped(self) -> bool:
        return self is not Level.B_B

    @property
    def long_term(self) -> bool:
        return self in (Level.B_LT, Level.B_LTA)


@dataclass(frozen=True)
class SignOptions:
    """What to sign and how. Every field has a safe default."""

    level: Level = Level.B_T
    """The PAdES level to reach."""

    field_name: str | None = None
    """Signature field to create (or sign, when it exists empty); generated when None."""

    reason: str | None = None
    location: str | None = None
    contact_info: str | None = None

    md_algorithm: str = "sha256"
    """Digest of the signed bytes."""

    fallback_to_b_b: bool = False
    """When no TSA answers: sign at B-B and say so, instead of failing (only when asked)."""

    appearance: PersonAppearance | SealAppearance | TextStampAppearance | None = None
    """How the signature looks (Decree 30 Appendix I, :mod:`kyso.signer.appearance`); None
    signs invisibly."""

    placement: Placement | None = None
    """Where a visible signature goes; None: the appearance's sensible default (the signer's
    printed name on the last page, the person's signature for a seal, top right for a stamp)."""

    register_fields: bool = False
    """Add the empty number and date fields (``so_hieu``, ``ngay_ban_hanh``) in the same
    revision as this signature, for the clerk to fill afterwards as permitted form filling
    (:mod:`kyso.signer.register`): what the competent person's signature does."""

    register_page: int = 0
    register_number_box: tuple[float, float, float, float] | None = None
    register_date_box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class SignResult:
    """What one signing (or extension) produced."""

    output: Path
    level_requested: Level
    level_reached: Level
    field_name: str | None
    signer: str
    warnings: tuple[str, ...] = ()


@dataclass
class RevocationContext:
    """Trust anchors and revocation sources for pre-sign validation and for B-LT data.

    ``ocsp_responses``/``crls`` are DER revocation data known in advance (the built-in PKI
    produces them in-process, so B-LT works without its server running); ``fetch`` lets
    pyhanko-certvalidator also fetch from the URLs in certificates (an external CA's)."""

    trust_roots: Sequence[x509.Certificate]
    other_certs: Sequence[x509.Certificate] = ()
    ocsp_responses: Sequence[bytes] = ()
    crls: Sequence[bytes] = ()
    fetch: bool = True
    material: Callable[[Sequence[x509.Certificate]], tuple[list[bytes], list[bytes]]] | None = None
    """Called with the certificates about to be validated, for fresh local revocation data."""

    local: Callable[[x509.Certificate], bool] | None = None
    """Whether a certificate belongs to the PKI that ``material`` speaks for: when every
    certificate to check does, nothing is fetched over HTTP (the data is already here)."""

    def validation_context(
        self,
        *,
        require_revocation: bool,
        extra_certs: Sequence[x509.Certificate] = (),
        fetcher_backend: FetcherBackend | None = None,
        local_tsa: bool = True,
    ) -> ValidationContext:
        """A pyhanko-certvalidator context for ``extra_certs`` (the signer and its chain).

        ``local_tsa``: the timestamps come from the built-in TSA (its certificate is local)."""
        all_local = (
            self.local is not None
            and local_tsa
            and all(self.local(c) for c in (*extra_certs, *self.other_certs))
        )
        ocsps = list(self.ocsp_responses)
        crls = list(self.crls)
        if self.material is not None:
            more_ocsps, more_crls = self.material([*extra_certs, *self.other_certs])
            ocsps += more_ocsps
            crls += more_crls
        return ValidationContext(
            trust_roots=[_asn1(c) for c in self.trust_roots],
            other_certs=[_asn1(c) for c in (*self.other_certs, *extra_certs)],
            ocsps=[asn1_ocsp.OCSPResponse.load(o) for o in ocsps],
            crls=[asn1_crl.CertificateList.load(c) for c in crls],
            allow_fetching=self.fetch and not all_local,
            revocation_mode="require" if require_revocation else "soft-fail",
            fetcher_backend=fetcher_backend,
        )


def _asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))


# -- input and output ------------------------------------------------------------------------

MAX_HEADER_OFFSET = 1024  # a PDF header may follow some junk (PDF 32000-1 §7.5.2 tolerance)


#: Copy and hash in 1 MiB pieces (pyhanko's 4 KiB default costs ~70 ms on a 50 MB file).
IO_CHUNK_SIZE = 1 << 20

#: How long one successful pre-sign validation of the signer's certificate (chain, revocation)
#: is trusted for further B-B/B-T signatures of the same signer: a batch validates once.
PRESIGN_VALIDATION_TTL = dt.timedelta(minutes=5)

#: Intermediate files of ``extend`` stay in memory up to this size, then go to disk.
SPOOL_BYTES = 8 * 1024 * 1024

#: Extra room over pyhanko's first estimate (timestamp tokens vary slightly), in hexadecimal
#: digits as pyhanko counts ``bytes_reserved`` (must stay even).
RESERVE_MARGIN = 2048

#: Largest PDF kyso signs: exchanged documents are at most 50 MB in practice (DOMAIN.md); twice
#: that leaves room for scans, and anything larger is refused before it is read.
MAX_PDF_BYTES = 100 * 1024 * 1024


def open_pdf(path: Path, *, max_bytes: int = MAX_PDF_BYTES) -> BinaryIO:
    """Open ``path`` for reading after checking that it looks like an unencrypted PDF of at
    most ``max_bytes``."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BadInputError("signer.input.missing", path=str(path)) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise BadInputError("signer.input.unreadable", path=str(path), reason=reason) from None
    if size > max_bytes:
        raise BadInputError(
            "signer.input.too_large", path=str(path), size=size // 2**20, limit=max_bytes // 2**20
        )
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise BadInputError("signer.input.missing", path=str(path)) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise BadInputError("signer.input.unreadable", path=str(path), reason=reason) from None
    try:
        head = handle.read(MAX_HEADER_OFFSET)
        if b"%PDF-" not in head:
            raise BadInputError("signer.input.not_pdf", path=str(path))
        handle.seek(0)
        try:
            reader = PdfFileReader(handle, strict=False)
            encrypted = reader.encrypted
            _ = reader.root  # forces the trailer and the catalogue to be read
        except (PdfError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise BadInputError("signer.input.damaged", path=str(path), reason=str(exc)) from None
        if encrypted:
            raise BadInputError("signer.input.encrypted", path=str(path))
        handle.seek(0)
        return handle
    except BaseException:
        handle.close()
        raise


@contextlib.asynccontextmanager
async def atomic_output(target: Path) -> AsyncIterator[IO[bytes]]:
    """A temporary file beside ``target``, renamed onto it only when the block succeeds."""
    target = Path(target)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise BadInputError("signer.output.no_dir", path=str(directory))
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w+b") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


# -- the signer ------------------------------------------------------------------------------


@dataclass
class DocumentSigner:
    """Signs PDFs with one key; built once and reused for a batch (the key is opened once)."""

    key: KeyHandle | None
    """Who signs; None for operations that only add TSA material (extend, timestamp)."""
    revocation: RevocationContext
    timestamper: TimeStamper | None = None
    clock: Clock = utc_now
    _pyhanko_signer: Any = field(default=None, init=False, repr=False)
    _fetchers: FetcherBackend | None = field(default=None, init=False, repr=False)
    _reserved: dict[tuple[object, ...], int] = field(default_factory=dict, init=False, repr=False)
    _validated_until: dt.datetime | None = field(default=None, init=False, repr=False)

    def _context(
        self, *, require_revocation: bool, extra_certs: Sequence[x509.Certificate] = ()
    ) -> ValidationContext:
        return self.revocation.validation_context(
            require_revocation=require_revocation,
            extra_certs=extra_certs,
            fetcher_backend=self._fetchers,
            local_tsa=self.timestamper is None or bool(getattr(self.timestamper, "local", False)),
        )

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[None]:
        """HTTP fetchers (OCSP, CRL, certificates) for one operation, closed after it."""
        self._fetchers = AIOHttpFetcherBackend() if self.revocation.fetch else None
        try:
            yield
        finally:
            backend, self._fetchers = self._fetchers, None
            if backend is not None:
                await backend.close()

    @property
    def signer_name(self) -> str:
        """Who signs, as a person reads it: name, title, organisation and identity numbers."""
        return display_name(self.key.certificate) if self.key is not None else ""

    def _key(self) -> KeyHandle:
        if self.key is None:
            raise SigningError("signer.no_key")
        return self.key

    def _signer(self) -> Any:
        if self._pyhanko_signer is None:
            self._pyhanko_signer = self._key().pyhanko_signer()
        return self._pyhanko_signer

    def check_certificate(self) -> None:
        """Refuse a certificate that is not valid now or has no signing key usage (the chain
        and revocation are checked by pyhanko's pre-sign validation)."""
        check_certificate(self._key().certificate, self.clock())

    # -- signing ---------------------------------------------------------------------------
    async def async_sign(self, source: Path, target: Path, options: SignOptions) -> SignResult:
        """Sign ``source`` into ``target`` at ``options.level``."""
        source, target = Path(source), Path(target)
        if same_file(source, target):
            raise BadInputError("signer.output.is_input", path=str(target))
        self.check_certificate()
        warnings: list[str] = []
        level = options.level
        timestamper = self.timestamper
        if level.timestamped and timestamper is None:
            raise TimestampUnavailableError("signer.tsa.none_configured")
        async with self._session():
            try:
                await self._sign_once(source, target, options, level, timestamper)
            except (TSAError, TimestampRequestError, TimestampUnavailableError) as exc:
                if not options.fallback_to_b_b or not level.timestamped:
                    raise TimestampUnavailableError(
                        "signer.tsa.unavailable", reason=str(exc)
                    ) from exc
                log.warning("no TSA answered (%s): signing at B-B as asked", exc)
                warnings.append(f"no timestamp authority answered ({exc}); signed at B-B")
                level = Level.B_B
                await self._sign_once(source, target, options, level, None)
        return SignResult(
            output=target,
            level_requested=options.level,
            level_reached=level,
            field_name=options.field_name,
            signer=self.signer_name,
            warnings=tuple(warnings),
        )

    def sign(self, source: Path, target: Path, options: SignOptions) -> SignResult:
        """Synchronous twin of :meth:`async_sign` (see :func:`kyso.aio.run_sync`)."""
        return run_sync(self.async_sign(source, target, options))

    async def _sign_once(
        self,
        source: Path,
        target: Path,
        options: SignOptions,
        level: Level,
        timestamper: TimeStamper | None,
    ) -> None:
        key = self._key()
        now = self.clock()
        # pyhanko validates the signer's chain and revocation before signing. B-LT needs that
        # data for the DSS every time; at B-B/B-T one verdict serves a batch for a few minutes.
        validate = level.long_term or self._validated_until is None or now >= self._validated_until
        context = (
            self._context(
                require_revocation=level.long_term, extra_certs=[key.certificate, *key.chain]
            )
            if validate
            else None
        )
        with open_pdf(source) as handle:
            field_name, appearance_kwargs = resolve_field(handle, options, key.certificate)
            meta = signers.PdfSignatureMetadata(
                field_name=field_name,
                md_algorithm=options.md_algorithm,
                reason=options.reason,
                location=options.location,
                contact_info=options.contact_info,
                subfilter=fields.SigSeedSubFilter.PADES,
                validation_context=context,
                embed_validation_info=level.long_term,
                use_pades_lta=level is Level.B_LTA,
                signer_key_usage={"digital_signature"},
            )
            pdf_signer = signers.PdfSigner(
                meta,
                signer=self._signer(),
                timestamper=timestamper if level.timestamped else None,
                **appearance_kwargs,
            )
            # the size of the CMS to reserve: what pyhanko estimated for the first signature
            # of this kind (it otherwise builds a throw-away signature to find out every time)
            size_key = (level, timestamper is not None, type(options.appearance).__name__)
            reserved = self._reserved.get(size_key)
            try:
                await self._write_signed(handle, source, target, options, pdf_signer, reserved)
            except SigningError:
                if reserved is None:
                    raise
                self._reserved.pop(size_key, None)  # the guess was too small: let pyhanko size it
                await self._write_signed(handle, source, target, options, pdf_signer, None)
            if reserved is None:
                self._reserved[size_key] = _reserved_size(target, field_name) + RESERVE_MARGIN
        if validate and not level.long_term:
            self._validated_until = now + PRESIGN_VALIDATION_TTL

    async def _write_signed(
        self,
        handle: BinaryIO,
        source: Path,
        target: Path,
        options: SignOptions,
        pdf_signer: signers.PdfSigner,
        reserved: int | None,
    ) -> None:
        handle.seek(0)
        try:
            writer = IncrementalPdfFileWriter(handle, strict=False)
        except (PdfError, ValueError, KeyError) as exc:
            raise BadInputError("signer.input.damaged", path=str(source), reason=str(exc)) from None
        writer.IO_CHUNK_SIZE = IO_CHUNK_SIZE  # pyhanko copies in 4 KiB pieces by default
        if options.register_fields:
            add_register_fields(
                writer,
                page=options.register_page,
                number_box=options.register_number_box,
                date_box=options.register_date_box,
            )
        async with atomic_output(target) as out:
            await self._guard(
                pdf_signer.async_sign_pdf(
                    writer, bytes_reserved=reserved, output=out, chunk_size=IO_CHUNK_SIZE
                )
            )

    async def _guard(self, job: Any) -> Any:
        """Run a pyhanko job, turning its errors (and their causes) into kyso's."""
        try:
            return await job
        except (KysoError, TimestampRequestError):
            raise
        except Exception as exc:
            for cause in causes(exc):
                mapped = map_error(cause)
                if mapped is not None:
                    raise mapped from exc
            raise SigningError("signer.failed", reason=str(exc)) from exc

    # -- raising the level of signed files ---------------------------------------------------
    async def async_extend(self, source: Path, target: Path, level: Level) -> SignResult:
        """Raise a signed file to B-LT (revocation data for every signature in the DSS) or
        B-LTA (plus a document timestamp)."""
        async with self._session():
            return await self._extend(source, target, level)

    def extend(self, source: Path, target: Path, level: Level) -> SignResult:
        """Synchronous twin of :meth:`async_extend`."""
        return run_sync(self.async_extend(source, target, level))

    async def _extend(self, source: Path, target: Path, level: Level) -> SignResult:
        source, target = Path(source), Path(target)
        if same_file(source, target):
            raise BadInputError("signer.output.is_input", path=str(target))
        if not level.long_term:
            raise SigningError("signer.extend.level", level=str(level))
        if level is Level.B_LTA and self.timestamper is None:
            raise TimestampUnavailableError("signer.tsa.none_configured")
        with contextlib.ExitStack() as stack:
            # Each step reads the previous step's output: at most two copies, spilled to disk
            # above a few MB (a 50 MB file is never held several times in memory).
            def spool() -> IO[bytes]:
                return stack.enter_context(tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES))

            current: IO[bytes] = stack.enter_context(open_pdf(source))
            count = len(PdfFileReader(current, strict=False).embedded_signatures)
            if not count:
                raise BadInputError("signer.extend.unsigned", path=str(source))
            for index in range(count):
                current.seek(0)
                embedded = PdfFileReader(current, strict=False).embedded_signatures[index]
                certs = [_crypto(c) for c in embedded.other_embedded_certs]
                context = self._context(
                    require_revocation=True, extra_certs=[_crypto(embedded.signer_cert), *certs]
                )
                updated = spool()
                await self._guard(
                    async_add_validation_info(
                        embedded,
                        context,
                        output=updated,
                        force_write=True,
                        chunk_size=IO_CHUNK_SIZE,
                    )
                )
                current = updated
            if level is Level.B_LTA:
                assert self.timestamper is not None
                current.seek(0)
                writer = IncrementalPdfFileWriter(current, strict=False)
                writer.IO_CHUNK_SIZE = IO_CHUNK_SIZE
                stamped = spool()
                ts_context = self._context(require_revocation=True)
                await self._guard(
                    signers.PdfTimeStamper(self.timestamper).async_timestamp_pdf(
                        writer,
                        "sha256",
                        validation_context=ts_context,
                        output=stamped,
                        chunk_size=IO_CHUNK_SIZE,
                    )
                )
                current = stamped
            current.seek(0)
            async with atomic_output(target) as out:
                shutil.copyfileobj(current, out, IO_CHUNK_SIZE)
        return SignResult(
            output=target,
            level_requested=level,
            level_reached=level,
            field_name=None,
            signer=self.signer_name,
        )

    async def async_timestamp(self, source: Path, target: Path) -> SignResult:
        """Add a document timestamp (no other change)."""
        async with self._session():
            return await self._timestamp(source, target)

    def timestamp(self, source: Path, target: Path) -> SignResult:
        """Synchronous twin of :meth:`async_timestamp`."""
        return run_sync(self.async_timestamp(source, target))

    async def _timestamp(self, source: Path, target: Path) -> SignResult:
        source, target = Path(source), Path(target)
        if same_file(source, target):
            raise BadInputError("signer.output.is_input", path=str(target))
        if self.timestamper is None:
            raise TimestampUnavailableError("signer.tsa.none_configured")
        with open_pdf(source) as handle:
            writer = IncrementalPdfFileWriter(handle, strict=False)
            writer.IO_CHUNK_SIZE = IO_CHUNK_SIZE
            async with atomic_output(target) as out:
                await self._guard(
                    signers.PdfTimeStamper(self.timestamper).async_timestamp_pdf(
                        writer, "sha256", output=out, chunk_size=IO_CHUNK_SIZE
                    )
                )
        return SignResult(
            output=target,
            level_requested=Level.B_T,
            level_reached=Level.B_T,
            field_name=None,
            signer="",
        )


def check_certificate(cert: x509.Certificate, now: dt.datetime) -> None:
    """Refuse a certificate not valid at ``now`` or without a signing key usage."""
    if now < cert.not_valid_before_utc:
        raise CertificateRefusedError(
            "signer.cert.not_yet_valid", since=cert.not_valid_before_utc.isoformat()
        )
    if now > cert.not_valid_after_utc:
        raise CertificateRefusedError(
            "signer.cert.expired", until=cert.not_valid_after_utc.isoformat()
        )
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return  # no KeyUsage: any usage (RFC 5280 §4.2.1.3)
    if not (usage.digital_signature or usage.content_commitment):
        raise CertificateRefusedError("signer.cert.key_usage")


def causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from, outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def map_error(exc: BaseException) -> KysoError | TimestampRequestError | None:
    """kyso's error for a pyhanko/certvalidator one, or None to keep looking."""
    reason = str(exc)
    if isinstance(exc, TSAError | TimestampRequestError):
        return exc
    if isinstance(exc, RevokedError):
        return CertificateRefusedError("signer.cert.revoked", reason=reason)
    if isinstance(exc, ExpiredError):
        return CertificateRefusedError("signer.cert.expired_chain", reason=reason)
    if isinstance(exc, PathBuildingError):
        return CertificateRefusedError("signer.cert.untrusted", reason=reason)
    if isinstance(exc, InvalidCertificateError | PathValidationError):
        return CertificateRefusedError("signer.cert.invalid", reason=reason)
    if isinstance(exc, PdfError):
        return BadInputError("signer.input.damaged", path="", reason=reason)
    return None


def resolve_field(
    pdf: BinaryIO, options: SignOptions, certificate: x509.Certificate
) -> tuple[str, dict[str, Any]]:
    """The signature field to sign and the ``PdfSigner`` keyword arguments that draw it
    (none for an invisible signature)."""
    if options.appearance is None and options.placement is None:
        reader = PdfFileReader(pdf, strict=False)
        name = options.field_name or _free_field_name(reader)
        pdf.seek(0)
        return name, {}
    visible = prepare_visible_signature(
        pdf,
        options.appearance,
        options.placement,
        field_name=options.field_name,
        signer_name=_common_name(certificate),
    )
    return visible.field_name, visible.pdf_signer_kwargs()


def _reserved_size(path: Path, field_name: str) -> int:
    """How much room pyhanko reserved for the CMS of ``field_name`` in ``path``, in its unit
    (``bytes_reserved`` counts hexadecimal digits: two per byte)."""
    with path.open("rb") as handle:
        reader = PdfFileReader(handle, strict=False)
        for embedded in reader.embedded_signatures:
            if embedded.field_name == field_name:
                return 2 * len(embedded.sig_object["/Contents"])
    raise SigningError("signer.failed", reason=f"signature field {field_name} not in output")


def _common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def _free_field_name(reader: PdfFileReader, prefix: str = "Signature") -> str:
    """``Signature<n>`` with the first n no field of the document uses."""
    taken = {name for name, _, _ in fields.enumerate_sig_fields(reader, filled_status=None)}
    n = 1
    while f"{prefix}{n}" in taken:
        n += 1
    return f"{prefix}{n}"


def _crypto(cert: asn1_x509.Certificate) -> x509.Certificate:
    return x509.load_der_x509_certificate(cert.dump())
