"""Verify every signature and document timestamp of a PDF: :func:`verify`.

The order of the checks, per signature:

1. the bytes (:mod:`.structure`): the ``/ByteRange`` is ``[0 a b c]``, its gap is exactly
   the ``/Contents`` hex string the dictionary declares, ``b + c`` ends a revision, nothing
   lies outside the file;
2. the CMS and the chain: pyhanko's AdES engine (``ades_lta_validation``: ETSI EN 319
   102-1 basic, with-time and long-term validation, proofs of existence from the signature
   and document timestamps, revocation embedded in the DSS and CMS first, then online
   unless the policy is offline), or kyso's own code for ``adbe.pkcs7.sha1``, which
   pyhanko does not enumerate;
3. what changed afterwards: pyhanko's difference analysis with kyso's rules
   (:mod:`.rules`) *and* kyso's describer (:mod:`.changes`); the stricter verdict wins;
4. the level reached and how long it stays verifiable.

Nothing a PDF contains makes :func:`verify` raise: a file it cannot read becomes a report
(``FORMAT_FAILURE``).  Only input that is no PDF at all (missing, empty, no ``%PDF-``
header) raises :class:`VerifyInputError` (exit code 3).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import mmap
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from asn1crypto import cms as asn1_cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.ades.report import AdESFailure, AdESIndeterminate, AdESPassed
from pyhanko.sign.diff_analysis import ModificationLevel, SuspiciousModification
from pyhanko.sign.fields import MDPPerm, enumerate_sig_fields
from pyhanko.sign.validation import ades
from pyhanko.sign.validation.dss import DocumentSecurityStore
from pyhanko.sign.validation.generic_cms import (
    extract_tst_data_iter,
    message_imprint_checker,
    validate_sig_integrity,
    validate_tst_signed_data,
)
from pyhanko.sign.validation.pdf_embedded import (
    EmbeddedPdfSignature,
    async_validate_pdf_timestamp,
    extract_contents,
    read_certification_data,
)
from pyhanko.sign.validation.policy_decl import (
    PdfSignatureValidationSpec,
    RevinfoOnlineFetchingRule,
    RevocationInfoGatheringSpec,
    SignatureValidationSpec,
)
from pyhanko.sign.validation.status import PdfSignatureStatus, TimestampSignatureStatus
from pyhanko.sign.validation.utils import CMSAlgorithmUsagePolicy
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.authority import CertTrustAnchor
from pyhanko_certvalidator.context import CertValidationPolicySpec
from pyhanko_certvalidator.errors import (
    ExpiredError,
    InvalidCertificateError,
    NotYetValidError,
    PathBuildingError,
    RevokedError,
)
from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpFetcherBackend
from pyhanko_certvalidator.fetchers.api import FetcherBackend, Fetchers
from pyhanko_certvalidator.ltv.types import ValidationTimingInfo
from pyhanko_certvalidator.policy_decl import (
    CertRevTrustPolicy,
    DisallowWeakAlgorithmsPolicy,
    RevocationCheckingPolicy,
    RevocationCheckingRule,
)
from pyhanko_certvalidator.registry import SimpleTrustManager

from kyso.aio import run_sync
from kyso.certs.identity import identity_of
from kyso.errors import KysoError
from kyso.signer.verify import changes as change_mod
from kyso.signer.verify import speedups
from kyso.signer.verify.model import (
    DOC_TIMESTAMP,
    INDETERMINATE,
    SIGNATURE,
    TOTAL_FAILED,
    TOTAL_PASSED,
    Algorithms,
    CertificateInfo,
    Change,
    FileInfo,
    PolicyInfo,
    Reason,
    Revocation,
    SignatureReport,
    TimestampInfo,
    VerificationReport,
)
from kyso.signer.verify.rules import DIFF_POLICY
from kyso.signer.verify.structure import (
    CHUNK,
    HEADER_WINDOW,
    check_byte_range,
    digest_byte_range,
    has_pdf_header,
    read_layout,
)

log = logging.getLogger(__name__)
speedups.install()

MAX_VERIFY_BYTES = 2 * 1024**3
SUPPORTED_SUBFILTERS = frozenset({"/adbe.pkcs7.detached", "/ETSI.CAdES.detached", "/ETSI.RFC3161"})
WEAK_DIGESTS = frozenset({"sha1", "md5", "md2"})
MIN_RSA_BITS = 2048
CLOCK_SKEW = dt.timedelta(minutes=5)
ANNOTATION_RULE = "markup-only-unless-docmdp-forbids"
_PAST = frozenset(
    {
        AdESIndeterminate.REVOKED_NO_POE,
        AdESIndeterminate.REVOKED_CA_NO_POE,
        AdESIndeterminate.OUT_OF_BOUNDS_NO_POE,
        AdESIndeterminate.OUT_OF_BOUNDS_NOT_REVOKED,
        AdESIndeterminate.CRYPTO_CONSTRAINTS_FAILURE_NO_POE,
        AdESIndeterminate.REVOCATION_OUT_OF_BOUNDS_NO_POE,
    }
)


class _FileFetchers(FetcherBackend):
    """One set of fetchers for all signatures of one file: a CRL or OCSP response fetched
    for the first signature is reused by the others, and the fetch budget (a guard against
    hostile files naming many URLs) covers the whole file."""

    def __init__(self, shared: AIOHttpFetcherBackend) -> None:
        self._fetchers = shared.get_fetchers()

    def get_fetchers(self) -> Fetchers:
        return self._fetchers

    async def close(self) -> None:
        """The shared backend owns the HTTP session."""


class VerifyInputError(KysoError):
    """The input is not a PDF at all (or cannot be read): exit code 3."""

    code = "verify.input.bad"
    exit_code = 3


@dataclass(frozen=True)
class VerifyPolicy:
    """How to verify: whom to trust, whether to go online, at what time, how strictly."""

    trust_roots: tuple[x509.Certificate, ...] = ()
    offline: bool = False
    at: dt.datetime | None = None
    weak_algorithms: str = "warn"  # "warn" or "reject"
    other_certs: tuple[x509.Certificate, ...] = ()
    fetch_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.weak_algorithms not in ("warn", "reject"):
            raise ValueError("weak_algorithms must be 'warn' or 'reject'")

    @classmethod
    def from_services(cls, services: Any, *presets: str, **kw: Any) -> VerifyPolicy:
        """kyso's default trust: the presets (default: the built-in PKI's root and the
        Government root) plus the operator's anchors (``kyso trust add``)."""
        from kyso.api.services import PRESETS

        store = services.trust_store(*(presets or PRESETS))
        return cls(trust_roots=tuple(store.certificates), **kw)

    def info(self, now: dt.datetime) -> PolicyInfo:
        return PolicyInfo(
            trust_anchors=[
                {
                    "subject": cert.subject.rfc4514_string(),
                    "sha256": cert.fingerprint(hashes.SHA256()).hex().upper(),
                }
                for cert in self.trust_roots
            ],
            revocation="offline" if self.offline else "online",
            validation_time=self.at or now,
            time_given=self.at is not None,
            weak_algorithms=self.weak_algorithms,
            annotations=ANNOTATION_RULE,
        )


def _to_asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))


def _to_crypto(cert: asn1_x509.Certificate) -> x509.Certificate:
    return x509.load_der_x509_certificate(cert.dump())


def key_description(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC-{key.curve.name}"
    return type(key).__name__


def certificate_info(cert: x509.Certificate) -> CertificateInfo:
    who = identity_of(cert)
    identities: dict[str, str] = {}
    for number in who.ids:
        identities.setdefault(number.scheme, number.value)
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        common_name=who.common_name,
        organisation=who.organisation,
        title=who.title,
        identities=identities,
        kind=str(who.kind),
        issuer=cert.issuer.rfc4514_string(),
        serial=format(cert.serial_number, "X"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256=cert.fingerprint(hashes.SHA256()).hex().upper(),
        key=key_description(cert),
    )


def _weak_key(cert: x509.Certificate) -> bool:
    key = cert.public_key()
    return isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS


@dataclass
class _Context:
    """Everything shared by the signatures of one file."""

    reader: PdfFileReader
    data: Any  # mmap or bytes
    stream: Any
    policy: VerifyPolicy
    now: dt.datetime
    layout: Any
    fetcher: FetcherBackend | None
    doc_timestamps: list[SignatureReport] = field(default_factory=list)


def _algorithm_policy(policy: VerifyPolicy) -> CMSAlgorithmUsagePolicy:
    if policy.weak_algorithms == "reject":
        return CMSAlgorithmUsagePolicy.lift_policy(DisallowWeakAlgorithmsPolicy())
    # "warn": accept SHA-1 and short RSA keys here, and flag them in the report instead.
    return CMSAlgorithmUsagePolicy.lift_policy(
        DisallowWeakAlgorithmsPolicy(
            weak_hash_algos=frozenset({"md2", "md5"}), rsa_key_size_threshold=1024
        )
    )


def _cert_policy(policy: VerifyPolicy) -> CertValidationPolicySpec:
    trust = SimpleTrustManager.build(
        trust_roots=[CertTrustAnchor(_to_asn1(c)) for c in policy.trust_roots]
    )
    rule = RevocationCheckingRule.CRL_OR_OCSP_REQUIRED
    return CertValidationPolicySpec(
        trust_manager=trust,
        revinfo_policy=CertRevTrustPolicy(RevocationCheckingPolicy(rule, rule)),
        algorithm_usage_policy=_algorithm_policy(policy),
    )


def _spec(ctx: _Context) -> PdfSignatureValidationSpec:
    policy = ctx.policy
    gathering = RevocationInfoGatheringSpec(
        online_fetching_rule=(
            RevinfoOnlineFetchingRule.LOCAL_ONLY
            if policy.offline
            else RevinfoOnlineFetchingRule.NO_HISTORICAL_FETCH
        ),
        fetcher_backend=ctx.fetcher,
    )
    cert_policy = _cert_policy(policy)
    return PdfSignatureValidationSpec(
        SignatureValidationSpec(
            cert_validation_policy=cert_policy,
            ts_cert_validation_policy=cert_policy,
            revinfo_gathering_policy=gathering,
            signature_algorithm_policy=_algorithm_policy(policy),
        ),
        diff_policy=DIFF_POLICY,
    )


def _timing(ctx: _Context) -> ValidationTimingInfo:
    when = ctx.policy.at or ctx.now
    return ValidationTimingInfo(
        validation_time=when, best_signature_time=when, point_in_time_validation=bool(ctx.policy.at)
    )


def _sub(indication: Any) -> tuple[str, str | None]:
    if isinstance(indication, AdESPassed):
        return TOTAL_PASSED, None
    if isinstance(indication, AdESFailure):
        return TOTAL_FAILED, indication.name
    if isinstance(indication, AdESIndeterminate):
        return INDETERMINATE, indication.name
    return INDETERMINATE, "GENERIC"


_SEVERITY = {TOTAL_PASSED: 0, INDETERMINATE: 1, TOTAL_FAILED: 2}


def _unreadable(report: SignatureReport, exc: BaseException) -> None:
    """The CMS (or what pyhanko makes of it) cannot be read: a format failure, with why."""
    _worse(
        report,
        TOTAL_FAILED,
        "FORMAT_FAILURE",
        Reason("verify.cms.unreadable", {"error": _err(exc)}),
    )


def _worse(report: SignatureReport, indication: str, sub: str | None, reason: Reason) -> None:
    """Lower ``report``'s verdict to ``indication`` if that is worse; always keep the reason."""
    if _SEVERITY[indication] > _SEVERITY[report.indication]:
        report.indication, report.sub_indication = indication, sub
    report.reasons.append(reason)


def _sig_dict_text(sig: generic.DictionaryObject, key: str) -> str | None:
    try:
        value = sig.get(key)
    except Exception:
        return None
    return None if value is None else str(value)[:500]


def _claimed_time(sig: generic.DictionaryObject) -> dt.datetime | None:
    try:
        value = sig.get("/M")
        if value is None:
            return None
        return generic.parse_pdf_date(str(value), strict=False)
    except Exception:
        return None


def _widget_place(
    reader: PdfFileReader, sig_field: generic.DictionaryObject
) -> tuple[int | None, list[float] | None]:
    try:
        widget = sig_field
        if "/Rect" not in widget and "/Kids" in widget:
            widget = widget["/Kids"][0].get_object()
        rect = [float(v) for v in widget["/Rect"]]
        if rect[2] - rect[0] <= 0 or rect[3] - rect[1] <= 0:
            return None, None
        page_ref = widget.raw_get("/P") if "/P" in widget else None
        pages = change_mod.page_refs(
            reader.get_historical_resolver(reader.xrefs.total_revisions - 1)
        )
        if isinstance(page_ref, generic.IndirectObject) and page_ref.reference in pages:
            return pages.index(page_ref.reference) + 1, rect
        for number, ref in enumerate(pages, start=1):
            page = ref.get_object()
            annots = page.get("/Annots") if isinstance(page, generic.DictionaryObject) else None
            if annots is not None and any(
                isinstance(a, generic.IndirectObject) and a.get_object() is widget for a in annots
            ):
                return number, rect
    except Exception:
        log.debug("ignored", exc_info=True)
        pass
    return None, None


def _lock_set(sig_field: generic.DictionaryObject) -> frozenset[str] | None:
    try:
        lock = sig_field.get("/Lock")
        if lock is None:
            return frozenset()
        lock = lock.get_object()
        action = lock.get("/Action")
        if action == "/All":
            return None
        if action == "/Include":
            return frozenset(str(f) for f in lock.get("/Fields", []))
    except Exception:
        log.debug("ignored", exc_info=True)
        pass
    return frozenset()


class _CachedEmbedded(EmbeddedPdfSignature):
    """pyhanko recomputes every signature's integrity (and difference analysis) each time
    it validates any one of them; once per file is enough."""

    def compute_integrity_info(self, diff_policy: Any = None, skip_diff: bool = False) -> None:
        if getattr(self, "_integrity_checked", False) and (
            skip_diff or getattr(self, "diff_result", None) is not None
        ):
            return
        super().compute_integrity_info(diff_policy, skip_diff=skip_diff)


class _Verifier:
    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.reader = ctx.reader
        try:
            cert_data = read_certification_data(self.reader)
            self.docmdp = int(cert_data.permission.value) if cert_data else None
        except Exception:
            self.docmdp = None
        self.dss: DocumentSecurityStore | None
        try:
            self.dss = DocumentSecurityStore.read_dss(self.reader)
        except Exception:
            self.dss = None
        self.embedded: dict[str, _CachedEmbedded] = {}

    def prepare(self, fields: list[tuple[str, Any, Any]]) -> None:
        """Parse the signatures pyhanko can handle once, and make pyhanko's AdES engine
        (which walks every signature of the file for proofs of existence) use exactly
        these: one malformed signature must not take the others down with it."""
        for name, sig_ref, sig_field in fields:
            try:
                sig = sig_ref.get_object()
                if sig.get("/SubFilter") not in SUPPORTED_SUBFILTERS:
                    continue
                self.embedded[name] = _CachedEmbedded(self.reader, sig_field, name)
            except Exception:
                log.debug("ignored", exc_info=True)
                continue
        good = []
        for item in self.embedded.values():
            try:
                item.signed_revision  # noqa: B018 - raises on a hostile xref
                good.append(item)
            except Exception:
                log.debug("ignored", exc_info=True)
                continue
        ordered: Any = sorted(good, key=lambda e: e.signed_revision)
        self.reader._embedded_signatures = ordered
        self._digest_in_one_pass(good)

    def _digest_in_one_pass(self, signatures: list[_CachedEmbedded]) -> None:
        """Every signature's byte-range digest from one read of the file: the ranges all
        start at 0, so the hash of ``[0, a)`` of one signature continues into the next's;
        only the short tails ``[b, b + c)`` are hashed apart.  Signatures whose range is not
        ``[0 a b c]`` inside the file are left to pyhanko."""
        data = self.ctx.data
        size = len(data)
        jobs: dict[str, list[tuple[int, int, int, _CachedEmbedded]]] = {}
        for item in signatures:
            try:
                start, a, b, c = (int(v) for v in item.byte_range)
                algorithm = item.external_md_algorithm
                hashlib.new(algorithm)
            except Exception:  # pyhanko will say what is wrong
                log.debug("no one-pass digest", exc_info=True)
                continue
            if start == 0 and 0 <= a <= b and c >= 0 and b + c <= size:
                jobs.setdefault(algorithm, []).append((a, b, c, item))
        if not jobs:
            return
        with memoryview(data) as view:
            for algorithm, items in jobs.items():
                running = hashlib.new(algorithm)
                position = 0
                for a, b, c, item in sorted(items, key=lambda job: job[0]):
                    for offset in range(position, a, CHUNK):
                        running.update(view[offset : min(a, offset + CHUNK)])
                    position = a
                    digest = running.copy()
                    for offset in range(b, b + c, CHUNK):
                        digest.update(view[offset : min(b + c, offset + CHUNK)])
                    item.external_digests[algorithm] = digest.digest()

    # --- one signature -------------------------------------------------------------------

    async def signature(
        self, index: int, name: str, sig_ref: Any, sig_field: generic.DictionaryObject
    ) -> SignatureReport:
        reader, ctx = self.reader, self.ctx
        sig = sig_ref.get_object() if isinstance(sig_ref, generic.IndirectObject) else sig_ref
        if isinstance(sig_field, generic.IndirectObject):
            sig_field = sig_field.get_object()
        sub_filter = _sig_dict_text(sig, "/SubFilter")
        kind = (
            DOC_TIMESTAMP
            if sig.get("/Type") == "/DocTimeStamp" or sub_filter == "/ETSI.RFC3161"
            else SIGNATURE
        )
        report = SignatureReport(
            index=index,
            kind=kind,
            field_name=name,
            sub_filter=sub_filter.lstrip("/") if sub_filter else None,
            revision=None,
            indication=TOTAL_PASSED,
            sub_indication=None,
            modified_after_signing=False,
            reason_text=_sig_dict_text(sig, "/Reason"),
            location=_sig_dict_text(sig, "/Location"),
            contact_info=_sig_dict_text(sig, "/ContactInfo"),
            claimed_signing_time=_claimed_time(sig),
        )
        report.page, report.rect = _widget_place(reader, sig_field)
        try:
            declared = extract_contents(sig)
        except Exception:
            declared = None
        try:
            raw_range = sig.get("/ByteRange")
            byte_range = list(raw_range) if isinstance(raw_range, generic.ArrayObject) else None
        except Exception:
            byte_range = None
        check = check_byte_range(byte_range, ctx.data, ctx.layout, declared)
        duplicated = self._duplicated_keys(sig_ref)
        if duplicated:
            # one parser takes the first, another the last: two verdicts for one file
            check.ok = False
            check.reasons.append(Reason("verify.sigdict.duplicated", {"keys": duplicated}))
        report.integrity.byte_range = (
            [int(v) for v in byte_range] if byte_range and check.revision is not None else None
        )
        report.integrity.byte_range_ok = check.ok
        report.integrity.covers_revision = check.revision
        report.integrity.covers_whole_file = check.revision is not None and check.revision == len(
            ctx.layout.revision_ends
        )
        report.revision = check.revision
        for reason in check.reasons:
            _worse(report, TOTAL_FAILED, "FORMAT_FAILURE", reason)
        if declared is None or not declared.strip(b"\x00"):
            _worse(report, TOTAL_FAILED, "FORMAT_FAILURE", Reason("verify.contents.missing"))
            return report
        if sub_filter in SUPPORTED_SUBFILTERS:
            if check.revision is None:
                # Without a sane byte range, pyhanko's parser is not worth asking.
                report.integrity.digest_ok = False
                return report
            await self._pyhanko(report, name, sig_field, kind)
        elif sub_filter == "/adbe.pkcs7.sha1":
            await self._pkcs7_sha1(report, declared, byte_range if check.ok else None)
        else:
            _worse(
                report,
                INDETERMINATE,
                "FORMAT_FAILURE",
                Reason("verify.subfilter.unsupported", {"sub_filter": sub_filter or "-"}),
            )
        self._algorithm_findings(report)
        self._changes(report, sig_field, check.revision)
        return report

    def _duplicated_keys(self, sig_ref: Any) -> str:
        """Keys written twice in the signature dictionary's own bytes."""
        if not isinstance(sig_ref, generic.IndirectObject):
            return ""
        try:
            xrefs = self.reader.xrefs
            offset = xrefs.get_historical_ref(sig_ref.reference, xrefs.total_revisions - 1)
        except Exception:
            return ""
        if not isinstance(offset, int):
            return ""  # in an object stream: no byte range could point into it anyway
        data = self.ctx.data
        end = data.find(b"endobj", offset)
        text = bytes(data[offset : end if end > 0 else offset + 65536])
        return ", ".join(
            key.decode()
            for key in (b"/ByteRange", b"/Contents", b"/SubFilter", b"/Filter")
            if len(re.findall(re.escape(key) + rb"(?![A-Za-z0-9])", text)) > 1
        )

    async def _pyhanko(
        self, report: SignatureReport, name: str, sig_field: generic.DictionaryObject, kind: str
    ) -> None:
        try:
            embedded = self.embedded.get(name) or _CachedEmbedded(self.reader, sig_field, name)
        except Exception as exc:
            _unreadable(report, exc)
            return
        report.integrity.digest_algorithm = embedded.md_algorithm
        if not _signed_attrs_are_der(embedded.signer_info):
            _worse(report, TOTAL_FAILED, "FORMAT_FAILURE", Reason("verify.cms.not_der"))
        with contextlib.suppress(Exception):
            report.integrity.signature_algorithm = embedded.signer_info["signature_algorithm"][
                "algorithm"
            ].native
        try:
            signer_cert = embedded.signer_cert
            report.signer = certificate_info(_to_crypto(signer_cert))
        except Exception:
            signer_cert = None
        if signer_cert is None:
            _worse(
                report,
                INDETERMINATE,
                "NO_SIGNING_CERTIFICATE_FOUND",
                Reason("verify.signer.missing"),
            )
        try:
            if kind == DOC_TIMESTAMP:
                await self._doc_timestamp(report, embedded)
            else:
                await self._signature(report, embedded)
        except Exception as exc:
            log.debug("validation failed", exc_info=True)
            _unreadable(report, exc)

    async def _signature(self, report: SignatureReport, embedded: EmbeddedPdfSignature) -> None:
        embedded.compute_integrity_info(DIFF_POLICY)
        result = await self._validate(embedded)
        indication, sub = _sub(result.ades_subindic)
        if sub == "CERTIFICATE_CHAIN_GENERAL_FAILURE":
            sub = await self._chain_diagnosis(embedded)
        status = result.api_status
        if status is not None:
            report.integrity.digest_ok = bool(status.intact)
            report.integrity.signature_ok = bool(status.valid)
            report.trusted = bool(status.trusted)
            self._path(report, status.validation_path)
            report.key_usage_ok = sub not in (
                "CHAIN_CONSTRAINTS_FAILURE",
                "SIG_CONSTRAINTS_FAILURE",
            )
            if status.revocation_details is not None:
                details = status.revocation_details
                report.revocation = Revocation(
                    status="revoked",
                    source=self._revinfo_source(),
                    revoked_at=details.revocation_date,
                    reason=str(details.revocation_reason.native),
                )
        integrity = embedded.summarise_integrity_info()
        self._diff(report, integrity)
        coverage = integrity.get("coverage")
        if coverage is not None and coverage.name not in ("ENTIRE_FILE", "ENTIRE_REVISION"):
            _worse(report, TOTAL_FAILED, "FORMAT_FAILURE", Reason("verify.coverage.partial"))
        if indication != TOTAL_PASSED:
            _worse(report, indication, sub, Reason(f"verify.sub.{sub or 'GENERIC'}"))
        elif report.revocation.status == "not_checked":
            report.revocation = Revocation(status="good", source=self._revinfo_source())
        if sub in ("TRY_LATER",):
            report.revocation = Revocation(status="unknown", source=self._revinfo_source())
        ts_result = getattr(result, "signature_timestamp_status", None)
        ts = ts_result.api_status if ts_result is not None else None
        if ts is None and status is not None:
            ts = getattr(status, "timestamp_validity", None)
        if ts is None:
            ts = await self._fallback_timestamp(embedded)
        if ts is not None:
            report.timestamp = TimestampInfo(
                time=ts.timestamp,
                tsa=certificate_info(_to_crypto(ts.signing_cert)) if ts.signing_cert else None,
                intact=bool(ts.intact and ts.valid),
                trusted=bool(ts.trusted),
            )
            self._tsa_chain = (
                list(ts.validation_path.iter_certs(True)) if ts.validation_path else []
            )
        else:
            self._tsa_chain = []
        report.best_signature_time = getattr(result, "best_signature_time", None)
        self._times(report)
        self._level(report, embedded)

    async def _validate(self, embedded: EmbeddedPdfSignature) -> Any:
        """ETSI EN 319 102-1: validation with time (5.5) first, at the validation time,
        with the revocation data the file embeds (DSS, CMS revocation attribute) as local
        knowledge; only when that ends in a state past validation can cure (expired or
        revoked certificate, weak algorithm, no proof of existence) the long-term
        validation (5.6.3) with proofs of existence from the timestamps."""
        ctx = self.ctx
        spec = _spec(ctx)
        sig_spec = spec.signature_validation_spec
        dss = ades._dss_to_local_knowledge(reader=self.reader)
        ria = ades._adobe_revinfo_archival_to_local_knowledge(embedded)
        local = sig_spec.local_knowledge
        knowledge = replace(
            local,
            known_ocsps=local.known_ocsps + dss.known_ocsps + ria.known_ocsps,
            known_crls=local.known_crls + dss.known_crls + ria.known_crls,
            known_certs=local.known_certs + dss.known_certs,
        )
        arguments: dict[str, Any] = {
            "signed_data": embedded.signed_data,
            "validation_spec": replace(sig_spec, local_knowledge=knowledge),
            "timing_info": _timing(ctx),
            "raw_digest": embedded.compute_digest(),
            "extra_status_kwargs": embedded.summarise_integrity_info(),
            "status_cls": PdfSignatureStatus,
        }
        has_timestamp = next(extract_tst_data_iter(embedded.signer_info, signed=False), None)
        if has_timestamp is None:
            # B-B: nothing proves when it was signed; ETSI basic validation (5.3), which
            # says REVOKED_NO_POE / OUT_OF_BOUNDS_NO_POE where that is the case.
            del arguments["extra_status_kwargs"], arguments["status_cls"]
            basic = await ades.ades_basic_validation(**arguments)
            if basic.ades_subindic not in _PAST or not self._has_doc_timestamps():
                return basic
            return await ades.ades_lta_validation(embedded, spec, timing_info=_timing(ctx))
        with_time = await ades.ades_with_time_validation(**arguments)
        past_can_help = with_time.ades_subindic in _PAST or (
            with_time.ades_subindic == AdESIndeterminate.TRY_LATER
        )
        if not past_can_help or not self._has_doc_timestamps():
            return with_time
        return await ades.ades_lta_validation(embedded, spec, timing_info=_timing(ctx))

    def _soft_context(self, embedded: EmbeddedPdfSignature) -> ValidationContext:
        """Chain building only: no revocation checking, nothing fetched."""
        ctx = self.ctx
        try:
            certs = list(embedded.signed_data["certificates"])
            others = [c.chosen for c in certs if c.name == "certificate"]
        except Exception:
            others = []
        return ValidationContext(
            trust_roots=[_to_asn1(c) for c in ctx.policy.trust_roots],
            other_certs=others + self._dss_certs(),
            allow_fetching=False,
            revocation_mode="soft-fail",
            moment=ctx.policy.at,
            algorithm_usage_policy=_algorithm_policy(ctx.policy),
        )

    async def _chain_diagnosis(self, embedded: EmbeddedPdfSignature) -> str:
        """pyhanko says CERTIFICATE_CHAIN_GENERAL_FAILURE for several causes; tell them
        apart: the chain builds but no revocation data is to be had (TRY_LATER), no chain
        to an anchor, or a certificate out of its validity period."""
        try:
            validator = CertificateValidator(
                embedded.signer_cert, validation_context=self._soft_context(embedded)
            )
            await validator.async_validate_path()
        except PathBuildingError:
            return "NO_CERTIFICATE_CHAIN_FOUND"
        except (ExpiredError, NotYetValidError):
            return "OUT_OF_BOUNDS_NO_POE"
        except Exception:
            return "CERTIFICATE_CHAIN_GENERAL_FAILURE"
        return "TRY_LATER"

    async def _fallback_timestamp(self, embedded: EmbeddedPdfSignature) -> Any:
        """The signature timestamp when the AdES engine stopped before looking at it."""
        try:
            token = next(extract_tst_data_iter(embedded.signer_info, signed=False), None)
            if token is None:
                return None
            kwargs = await validate_tst_signed_data(
                token,
                self._soft_context(embedded),
                message_imprint_checker(embedded.signer_info),
                algorithm_policy=_algorithm_policy(self.ctx.policy),
            )
            return TimestampSignatureStatus(**kwargs)
        except Exception:
            log.debug("signature timestamp", exc_info=True)
            return None

    async def _doc_timestamp(self, report: SignatureReport, embedded: EmbeddedPdfSignature) -> None:
        ctx = self.ctx
        vc = ValidationContext(
            trust_roots=[_to_asn1(c) for c in ctx.policy.trust_roots],
            allow_fetching=not ctx.policy.offline,
            revocation_mode="soft-fail" if ctx.policy.offline else "hard-fail",
            moment=ctx.policy.at,
            other_certs=self._dss_certs(),
            ocsps=self._dss_ocsps(),
            crls=self._dss_crls(),
            algorithm_usage_policy=_algorithm_policy(ctx.policy),
            fetcher_backend=ctx.fetcher,
        )
        status = await async_validate_pdf_timestamp(
            embedded, validation_context=vc, diff_policy=DIFF_POLICY
        )
        report.integrity.digest_ok = bool(status.intact)
        report.integrity.signature_ok = bool(status.valid)
        report.trusted = bool(status.trusted)
        report.timestamp = TimestampInfo(
            time=status.timestamp,
            tsa=certificate_info(_to_crypto(status.signing_cert)) if status.signing_cert else None,
            intact=bool(status.intact and status.valid),
            trusted=bool(status.trusted),
        )
        report.best_signature_time = status.timestamp
        self._path(report, status.validation_path)
        self._diff(report, embedded.summarise_integrity_info())
        if not status.intact:
            _worse(report, TOTAL_FAILED, "HASH_FAILURE", Reason("verify.sub.HASH_FAILURE"))
        elif not status.valid:
            _worse(
                report, TOTAL_FAILED, "SIG_CRYPTO_FAILURE", Reason("verify.sub.SIG_CRYPTO_FAILURE")
            )
        elif not status.trusted:
            indic = status.trust_problem_indic
            indication, sub = (
                _sub(indic) if indic is not None else (INDETERMINATE, "NO_CERTIFICATE_CHAIN_FOUND")
            )
            if indication == TOTAL_PASSED:
                indication, sub = INDETERMINATE, "CERTIFICATE_CHAIN_GENERAL_FAILURE"
            _worse(report, indication, sub, Reason(f"verify.sub.{sub}"))
        else:
            report.revocation = Revocation(status="good", source=self._revinfo_source())
        if report.chain:
            report.verifiable_until = min(c.not_after for c in report.chain)

    async def _pkcs7_sha1(
        self, report: SignatureReport, contents: bytes, byte_range: Sequence[int] | None
    ) -> None:
        """``adbe.pkcs7.sha1``: the CMS signs a SHA-1 digest of the byte range, carried as
        encapsulated content.  pyhanko skips these; kyso checks them itself."""
        ctx = self.ctx
        report.integrity.digest_algorithm = "sha1"
        try:
            info = asn1_cms.ContentInfo.load(contents)
            signed = info["content"]
            signer_info = signed["signer_infos"][0]
            encap = signed["encap_content_info"]["content"].native
            certs = [c.chosen for c in signed["certificates"] if c.name == "certificate"]
            sid = signer_info["sid"]
            cert = next(
                c
                for c in certs
                if sid.name == "issuer_and_serial_number"
                and c.issuer == sid.chosen["issuer"]
                and c.serial_number == sid.chosen["serial_number"].native
            )
            report.integrity.signature_algorithm = signer_info["signature_algorithm"][
                "algorithm"
            ].native
            if len(signed["signer_infos"]) != 1:
                _worse(report, TOTAL_FAILED, "FORMAT_FAILURE", Reason("verify.cms.signer_infos"))
        except Exception as exc:
            _unreadable(report, exc)
            return
        report.signer = certificate_info(_to_crypto(cert))
        if byte_range is None:
            report.integrity.digest_ok = False
            return
        actual = digest_byte_range(ctx.stream, byte_range, "sha1")
        report.integrity.digest_ok = encap == actual
        if encap != actual:
            _worse(report, TOTAL_FAILED, "HASH_FAILURE", Reason("verify.sub.HASH_FAILURE"))
            return
        md = signer_info["digest_algorithm"]["algorithm"].native
        try:
            intact, valid = validate_sig_integrity(
                signer_info, cert, "data", hashlib.new(md, encap).digest()
            )
        except Exception as exc:
            _unreadable(report, exc)
            return
        report.integrity.signature_ok = intact and valid
        if not intact:
            _worse(report, TOTAL_FAILED, "HASH_FAILURE", Reason("verify.sub.HASH_FAILURE"))
            return
        if not valid:
            _worse(
                report, TOTAL_FAILED, "SIG_CRYPTO_FAILURE", Reason("verify.sub.SIG_CRYPTO_FAILURE")
            )
            return
        vc = ValidationContext(
            trust_roots=[_to_asn1(c) for c in ctx.policy.trust_roots],
            other_certs=certs + self._dss_certs(),
            allow_fetching=not ctx.policy.offline,
            revocation_mode="soft-fail" if ctx.policy.offline else "hard-fail",
            moment=ctx.policy.at or report.claimed_signing_time,
            ocsps=self._dss_ocsps(),
            crls=self._dss_crls(),
            weak_hash_algos=set() if ctx.policy.weak_algorithms == "warn" else None,
            fetcher_backend=ctx.fetcher,
        )
        validator = CertificateValidator(cert, intermediate_certs=certs, validation_context=vc)
        try:
            path = await validator.async_validate_usage({"digital_signature"})
            report.trusted = True
            self._path(report, path)
            report.revocation = Revocation(status="good", source=self._revinfo_source())
        except RevokedError as exc:
            report.trusted = False
            report.revocation = Revocation(status="revoked", source=self._revinfo_source())
            _worse(
                report, TOTAL_FAILED, "REVOKED", Reason("verify.sub.REVOKED", {"error": _err(exc)})
            )
        except (ExpiredError, NotYetValidError):
            report.trusted = False
            _worse(
                report,
                INDETERMINATE,
                "OUT_OF_BOUNDS_NO_POE",
                Reason("verify.sub.OUT_OF_BOUNDS_NO_POE"),
            )
        except PathBuildingError:
            report.trusted = False
            _worse(
                report,
                INDETERMINATE,
                "NO_CERTIFICATE_CHAIN_FOUND",
                Reason("verify.sub.NO_CERTIFICATE_CHAIN_FOUND"),
            )
        except InvalidCertificateError:
            report.trusted = False
            report.key_usage_ok = False
            _worse(
                report,
                INDETERMINATE,
                "CHAIN_CONSTRAINTS_FAILURE",
                Reason("verify.sub.CHAIN_CONSTRAINTS_FAILURE"),
            )
        except Exception as exc:
            report.trusted = False
            _worse(
                report,
                INDETERMINATE,
                "CERTIFICATE_CHAIN_GENERAL_FAILURE",
                Reason("verify.cms.unreadable", {"error": _err(exc)}),
            )
        report.level = "B-B" if report.indication == TOTAL_PASSED else None
        if report.chain:
            report.verifiable_until = min(c.not_after for c in report.chain)

    # --- findings shared by all kinds ---------------------------------------------------

    def _path(self, report: SignatureReport, path: Any) -> None:
        if path is None:
            return
        try:
            certs = [_to_crypto(c) for c in path.iter_certs(include_root=True)]
        except Exception:
            return
        report.chain = [certificate_info(c) for c in reversed(certs)]  # leaf first
        anchor = certs[0] if certs else None
        if anchor is not None:
            report.trust_anchor = anchor.subject.rfc4514_string()
        self._chain_certs = certs

    def _algorithm_findings(self, report: SignatureReport) -> None:
        digest = (report.integrity.digest_algorithm or "").lower()
        key = report.signer.key if report.signer else None
        weak = digest in WEAK_DIGESTS
        if key and key.startswith("RSA-") and int(key[4:]) < MIN_RSA_BITS:
            weak = True
        report.algorithms = Algorithms(
            digest=digest or None,
            signature=report.integrity.signature_algorithm,
            key=key,
            weak=weak,
        )
        if weak:
            reason = Reason(
                "verify.algorithm.weak", {"digest": digest or "-", "key_type": key or "-"}
            )
            if self.ctx.policy.weak_algorithms == "reject":
                _worse(report, TOTAL_FAILED, "CRYPTO_CONSTRAINTS_FAILURE", reason)
            else:
                report.warnings.append(reason)

    def _diff(self, report: SignatureReport, integrity: dict[str, Any]) -> None:
        """pyhanko's verdict on the later revisions, kept for :meth:`_changes`."""
        diff = integrity.get("diff_result")
        self._pyhanko_forbidden: str | None = None
        if isinstance(diff, SuspiciousModification):
            self._pyhanko_forbidden = str(diff)[:300]
        elif diff is not None and integrity.get("docmdp_ok", True) is False:
            self._pyhanko_forbidden = f"modification level {diff.modification_level.name}"
        elif diff is not None and diff.modification_level == ModificationLevel.OTHER:
            self._pyhanko_forbidden = "modification level OTHER"

    def _changes(
        self, report: SignatureReport, sig_field: generic.DictionaryObject, revision: int | None
    ) -> None:
        if revision is None:
            return
        perms = change_mod.Permissions(docmdp=self.docmdp, locked_fields=_lock_set(sig_field))
        if self.docmdp is not None and report.certification is None and report.index == 0:
            report.certification = MDPPerm(self.docmdp).name if self.docmdp in (1, 2, 3) else None
        try:
            found = change_mod.describe(self.reader, revision - 1, perms)
        except Exception as exc:
            found = [Change("unreadable_revision", revision + 1, False, target=_err(exc))]
        trailing = self.ctx.layout.trailing_bytes
        if trailing:
            found.append(
                Change(
                    "trailing_data",
                    len(self.ctx.layout.revision_ends) + 1,
                    False,
                    target=str(trailing),
                )
            )
        pyhanko_says = getattr(self, "_pyhanko_forbidden", None)
        if pyhanko_says and all(c.permitted for c in found):
            found.append(
                Change(
                    "other",
                    found[-1].revision if found else revision + 1,
                    False,
                    target="pyhanko",
                    detail=Reason("verify.change.detail", {"message": pyhanko_says}),
                )
            )
        report.changes = found
        forbidden = [c for c in found if not c.permitted]
        if forbidden:
            report.modified_after_signing = True
            _worse(
                report,
                TOTAL_FAILED,
                "FORMAT_FAILURE",
                Reason("verify.modified", {"count": len(forbidden)}),
            )

    def _revinfo_source(self) -> str:
        if self.dss is not None and (self.dss.ocsps or self.dss.crls):
            return "embedded"
        return "none" if self.ctx.policy.offline else "online"

    def _dss_certs(self) -> list[asn1_x509.Certificate]:
        if self.dss is None:
            return []
        try:
            return list(self.dss.load_certs())
        except Exception:
            return []

    def _dss_ocsps(self) -> list[Any]:
        if self.dss is None:
            return []
        return [o.get_object().data for o in self.dss.ocsps] if self.dss.ocsps else []

    def _dss_crls(self) -> list[Any]:
        if self.dss is None:
            return []
        return [c.get_object().data for c in self.dss.crls] if self.dss.crls else []

    def _times(self, report: SignatureReport) -> None:
        claimed, ts = report.claimed_signing_time, report.timestamp
        if claimed is not None and ts is not None and claimed - CLOCK_SKEW > ts.time:
            report.warnings.append(
                Reason(
                    "verify.time.claimed_after_timestamp",
                    {"claimed": claimed.isoformat(), "timestamp": ts.time.isoformat()},
                )
            )

    def _level(self, report: SignatureReport, embedded: EmbeddedPdfSignature) -> None:
        if report.integrity.digest_ok is not True or report.integrity.signature_ok is not True:
            return
        level = "B-B"
        until = [c.not_after for c in report.chain] if report.chain else []
        if report.timestamp is not None and report.timestamp.intact:
            level = "B-T"
            tsa_until = [_to_crypto(c).not_valid_after_utc for c in self._tsa_chain]
            if self._has_ltv_data():
                level = "B-LT"
                until = tsa_until or until
            else:
                until = until + tsa_until
        report.level = level
        report.verifiable_until = min(until) if until else None

    def _has_doc_timestamps(self) -> bool:
        return any(e.sig_object.get("/Type") == "/DocTimeStamp" for e in self.embedded.values())

    def _has_ltv_data(self) -> bool:
        return self.dss is not None and bool(self.dss.ocsps or self.dss.crls)

    # --- the document --------------------------------------------------------------------

    def finish_levels(self, reports: list[SignatureReport]) -> None:
        """B-LTA: B-LT and a valid document timestamp added after the DSS (covering it)."""
        stamps = [
            r
            for r in reports
            if r.kind == DOC_TIMESTAMP and r.indication == TOTAL_PASSED and r.revision
        ]
        dss_revision = self._dss_revision()
        for report in reports:
            if report.kind != SIGNATURE or report.level != "B-LT" or dss_revision is None:
                continue
            later = [
                s
                for s in stamps
                if s.revision
                and s.revision >= dss_revision
                and report.revision
                and s.revision > report.revision
            ]
            if later:
                report.level = "B-LTA"
                last = max(later, key=lambda s: s.revision or 0)
                if last.verifiable_until:
                    report.verifiable_until = last.verifiable_until

    def _dss_revision(self) -> int | None:
        """The first revision (1-based) whose catalog has a /DSS."""
        total = self.reader.xrefs.total_revisions
        for number in range(total):
            try:
                if "/DSS" in self.reader.get_historical_resolver(number).root:
                    return number + 1
            except Exception:
                log.debug("ignored", exc_info=True)
                continue
        return None


def _signed_attrs_are_der(signer_info: Any) -> bool:
    """RFC 5652 5.4: the signature covers the DER encoding of the signed attributes.  A BER
    encoding signed as found is accepted by some verifiers and refused by others (NSS
    re-encodes): one file, two verdicts, so kyso refuses it."""
    try:
        attrs = signer_info["signed_attrs"]
        if attrs.native is None:
            return True
        as_set = b"\x31" + bytes(attrs.dump()[1:])  # [0] IMPLICIT -> the SET OF it stands for
        again = asn1_cms.CMSAttributes.load(as_set)
        for attr in again:  # parse each attribute and its values, so all is re-encoded
            for value in attr["values"]:
                value.contents  # noqa: B018
        return bytes(again.dump(force=True)) == as_set
    except Exception:
        return False


def _err(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _file_info(path: Path, name: str | None) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while piece := handle.read(1 << 20):
            h.update(piece)
            size += len(piece)
    return size, h.hexdigest().upper()


def _open_input(path: Path) -> None:
    if not path.exists():
        raise VerifyInputError("verify.input.missing", path=str(path))
    if path.is_dir():
        raise VerifyInputError("verify.input.directory", path=str(path))
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(HEADER_WINDOW)
    except OSError as exc:
        raise VerifyInputError(
            "verify.input.unreadable", path=str(path), reason=exc.strerror or str(exc)
        ) from None
    if size == 0:
        raise VerifyInputError("verify.input.empty", path=str(path))
    if size > MAX_VERIFY_BYTES:
        raise VerifyInputError(
            "verify.input.too_large", path=str(path), size=size, limit=MAX_VERIFY_BYTES
        )
    if not has_pdf_header(head):
        raise VerifyInputError("verify.input.not_pdf", path=str(path))


async def async_verify(
    source: str | os.PathLike[str],
    policy: VerifyPolicy,
    *,
    fetcher: AIOHttpFetcherBackend | None = None,
    now: dt.datetime | None = None,
) -> VerificationReport:
    """Verify every signature and document timestamp of ``source``.

    ``fetcher``: an HTTP backend to share between files (a batch); without one, one is
    opened for this file and closed at the end."""
    path = Path(source)
    _open_input(path)
    if policy.offline:
        return await _verify_file(path, policy, None, now)
    shared = fetcher or AIOHttpFetcherBackend(per_request_timeout=policy.fetch_timeout)
    try:
        return await _verify_file(path, policy, _FileFetchers(shared), now)
    finally:
        if fetcher is None:
            await shared.close()


async def _verify_file(
    path: Path,
    policy: VerifyPolicy,
    fetcher: FetcherBackend | None,
    now: dt.datetime | None,
) -> VerificationReport:
    from kyso import __version__

    now = now or dt.datetime.now(dt.UTC)
    size, sha256 = _file_info(path, None)
    with path.open("rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
        layout = read_layout(data)
        base = VerificationReport(
            file=FileInfo(
                name=path.name,
                size=size,
                sha256=sha256,
                revisions=len(layout.revision_ends) or None,
                pages=None,
            ),
            policy=policy.info(now),
            verified_at=now,
            indication=INDETERMINATE,
            sub_indication=None,
            modified_after_signing=False,
            kyso_version=__version__,
        )
        try:
            reader = PdfFileReader(stream, strict=False)
            if reader.encrypted:
                base.sub_indication = "FORMAT_FAILURE"
                base.reasons.append(Reason("verify.encrypted"))
                return base
            fields = list(enumerate_sig_fields(reader, filled_status=True))
        except Exception as exc:
            signed = data.find(b"/ByteRange") >= 0
            base.indication = TOTAL_FAILED if signed else INDETERMINATE
            base.sub_indication = "FORMAT_FAILURE"
            base.reasons.append(Reason("verify.unreadable", {"error": _err(exc)}))
            return base
        with contextlib.suppress(Exception):
            base = replace(
                base,
                file=replace(
                    base.file,
                    pages=len(
                        change_mod.page_refs(
                            reader.get_historical_resolver(reader.xrefs.total_revisions - 1)
                        )
                    ),
                ),
            )
        ctx = _Context(
            reader=reader,
            data=data,
            stream=stream,
            policy=policy,
            now=now,
            layout=layout,
            fetcher=fetcher,
        )
        verifier = _Verifier(ctx)
        verifier.prepare(fields)
        reports: list[SignatureReport] = []
        for index, (name, sig_ref, sig_field) in enumerate(fields):
            try:
                reports.append(await verifier.signature(index, name, sig_ref, sig_field))
            except Exception as exc:
                log.debug("signature %s", name, exc_info=True)
                reports.append(
                    SignatureReport(
                        index=index,
                        kind=SIGNATURE,
                        field_name=name,
                        sub_filter=None,
                        revision=None,
                        indication=TOTAL_FAILED,
                        sub_indication="FORMAT_FAILURE",
                        modified_after_signing=False,
                        reasons=[Reason("verify.cms.unreadable", {"error": _err(exc)})],
                    )
                )
        reports.sort(key=lambda r: (r.revision or 10**9, r.index))
        for number, item in enumerate(reports):
            item.index = number
        verifier.finish_levels(reports)
        base.signatures = reports
        return _conclude(base, verifier)


def _conclude(report: VerificationReport, verifier: _Verifier) -> VerificationReport:
    sigs = report.signatures
    if not sigs:
        report.indication = INDETERMINATE
        report.sub_indication = "SIGNED_DATA_NOT_FOUND"
        report.reasons.append(Reason("verify.no_signatures"))
        if verifier.ctx.layout.trailing_bytes:
            report.changes.append(
                Change("trailing_data", 1, False, target=str(verifier.ctx.layout.trailing_bytes))
            )
        return report
    first = min(sigs, key=lambda s: s.revision or 10**9)
    report.changes = list(first.changes)
    report.modified_after_signing = any(s.modified_after_signing for s in sigs)
    if not any(s.kind == SIGNATURE for s in sigs):
        report.reasons.append(Reason("verify.only_timestamps"))
    worst = max(sigs, key=lambda s: _SEVERITY[s.indication])
    report.indication = worst.indication
    report.sub_indication = worst.sub_indication
    if report.indication != TOTAL_PASSED:
        report.reasons.append(
            Reason("verify.signature_verdict", {"field": worst.field_name or str(worst.index)})
        )
    return report


def verify(source: str | os.PathLike[str], policy: VerifyPolicy) -> VerificationReport:
    """Synchronous :func:`async_verify` (any thread: :func:`kyso.aio.run_sync`)."""
    return run_sync(async_verify(source, policy))
