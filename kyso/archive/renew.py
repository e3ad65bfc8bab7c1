"""Long-term validation of the archive: find the records whose proof is running out, and renew
it with a new document timestamp (PAdES B-LTA), as a new version.

``due_for_renewal`` looks at the latest version of every document and decides from its stored
verification report (or, without one, from verifying the object now):

* the *horizon* is the earliest ``verifiable_until`` the latest document timestamp relies on
  (its TSA certificate and the CAs above it); without a document timestamp, the earliest of
  the signatures' (signer, CA and signature-timestamp certificates);
* ``weak_algorithm``: the latest document timestamp (or, without one, a signature) uses an
  algorithm the policy now calls weak.  A signature that became weak *after* a strong document
  timestamp covered it is protected by that timestamp and is not a reason;
* ``expires``: the horizon falls within ``now + within`` and a document timestamp exists;
* ``no_archive_timestamp``: the same, without any document timestamp (B-T, B-LT).

A window of zero therefore selects only what has already expired (or is weak).

``renew`` raises each candidate to B-LTA: the object is fetched to a temporary file (the
store checks the SHA-256 its key names; kyso checks the catalogue's digest and size too),
``DocumentSigner.extend(..., Level.B_LTA)`` refreshes the DSS validation data of every
signature and document timestamp and adds a new document timestamp (for a file already at
B-LTA this is exactly "refresh validation data, then timestamp").  When validation data
cannot be refreshed any more (a signer certificate expired or was revoked after it was
timestamped) and the file already has a document timestamp, ``DocumentSigner.timestamp`` adds
the new document timestamp alone (warning ``archive.renew.validation_not_refreshed``).  The
result is verified and must not be worse than the input; its bytes are stored under their own
content address (new bytes, new key: nothing is ever overwritten) and recorded as an
``ltv_extended`` version with its verification report.

What can be left half-done, and how it shows:

* the object is stored but ``add_version`` fails (database unreachable...): the object is an
  *orphan* (in the store, in no version).  It is harmless and content-addressed; the failure
  names its key (``orphan_key``) and ``kyso archive reconcile`` lists it.  A version is never
  recorded without its object;
* the version is recorded but ``add_report`` fails: the version stands (it is a valid
  renewal); the outcome carries the warning ``archive.renew.report_failed`` and the next
  ``due_for_renewal`` verifies that version afresh.

A candidate whose version is no longer the document's latest (renewed by another run, or a
later version appended) is skipped as ``archive.renew.stale``, so running ``renew`` twice on the
same list adds nothing the second time.  (The check and ``add_version`` are two transactions:
a version appended by someone else in between is kept, and the renewal follows it, which the
version order allows for ``ltv_extended``.)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from kyso.archive.catalog import Catalog
from kyso.archive.models import DocumentVersion
from kyso.archive.storage import ObjectStore, Retention
from kyso.errors import KysoError
from kyso.signer.sign import DocumentSigner, Level
from kyso.signer.verify import (
    INDETERMINATE,
    TOTAL_FAILED,
    TOTAL_PASSED,
    SignatureReport,
    VerificationReport,
    VerifyPolicy,
    verify,
)

__all__ = [
    "Assessment",
    "RenewalCandidate",
    "RenewalError",
    "RenewalFailure",
    "RenewalOutcome",
    "RenewalReport",
    "RenewalSkip",
    "assess",
    "due_for_renewal",
    "renew",
]

log = logging.getLogger(__name__)

Reason = Literal["expires", "weak_algorithm", "no_archive_timestamp"]
CHUNK = 1 << 20
_BATCH = 200
_RANK = {TOTAL_FAILED: 0, INDETERMINATE: 1, TOTAL_PASSED: 2}
_LEVELS = ("B-B", "B-T", "B-LT", "B-LTA")


class RenewalError(KysoError):
    """A renewal step refused or failed (the code says which)."""

    code = "archive.renew.error"


@dataclass(frozen=True)
class RenewalCandidate:
    document_id: int
    version_id: int
    reason: Reason
    horizon: dt.datetime | None
    """Until when the latest version stays verifiable (None: unknown)."""

    def reason_text(self, locale: str | None = None) -> str:
        from kyso.i18n import t

        return t(f"archive.renew.reason.{self.reason}", locale=locale)


@dataclass(frozen=True)
class Assessment:
    """What a verification report says about a version's long-term proof."""

    horizon: dt.datetime | None
    has_archive_timestamp: bool
    weak: bool
    renewable: bool
    """False when there is no signature (or none intact) to extend."""
    archive_timestamps: int

    def reason(self, deadline: dt.datetime) -> Reason | None:
        if not self.renewable:
            return None
        if self.weak:
            return "weak_algorithm"
        if self.horizon is not None and self.horizon <= deadline:
            return "expires" if self.has_archive_timestamp else "no_archive_timestamp"
        return None


@dataclass(frozen=True)
class RenewalOutcome:
    document_id: int
    old_version_id: int
    new_version_id: int
    object_key: str
    sha256: str
    size: int
    report_id: int | None
    level: str | None
    horizon_before: dt.datetime | None
    horizon_after: dt.datetime | None
    archive_timestamps_before: int
    archive_timestamps_after: int
    warnings: tuple[str, ...] = ()
    """Catalogue codes: ``archive.renew.horizon_not_extended``, ``archive.renew.report_failed``,
    ``archive.renew.validation_not_refreshed``."""


@dataclass(frozen=True)
class RenewalFailure:
    document_id: int
    version_id: int
    code: str
    params: dict[str, Any] = field(default_factory=dict)
    orphan_key: str | None = None
    """Set when the new object was stored but no version records it."""

    def message(self, locale: str | None = None) -> str:
        from kyso.i18n import t

        return t(self.code, locale=locale, **self.params)


@dataclass(frozen=True)
class RenewalSkip:
    document_id: int
    version_id: int
    code: str


@dataclass
class RenewalReport:
    renewed: list[RenewalOutcome] = field(default_factory=list)
    failed: list[RenewalFailure] = field(default_factory=list)
    skipped: list[RenewalSkip] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self, locale: str | None = None) -> str:
        from kyso.i18n import t

        return t(
            "archive.renew.summary",
            locale=locale,
            renewed=len(self.renewed),
            skipped=len(self.skipped),
            failed=len(self.failed),
        )


# --------------------------------------------------------------------------- assessing


def _intact(report: SignatureReport) -> bool:
    return report.level is not None or report.indication != TOTAL_FAILED


def assess(report: VerificationReport) -> Assessment:
    """The horizon, archive timestamps and algorithm strength of a verified version."""
    signatures = [s for s in report.signatures if s.kind == "signature"]
    stamps = [
        s
        for s in report.signatures
        if s.kind == "document_timestamp" and s.indication != TOTAL_FAILED
    ]
    renewable = any(s.level is not None for s in signatures)
    if stamps:
        latest = max(stamps, key=lambda s: (s.revision or 0, s.index))
        return Assessment(
            horizon=latest.verifiable_until,
            has_archive_timestamp=True,
            weak=latest.algorithms.weak,
            renewable=renewable,
            archive_timestamps=len(stamps),
        )
    until = [s.verifiable_until for s in signatures if s.verifiable_until is not None]
    return Assessment(
        horizon=min(until) if until else None,
        has_archive_timestamp=False,
        weak=any(s.algorithms.weak for s in signatures if _intact(s)),
        renewable=renewable,
        archive_timestamps=0,
    )


def _latest_versions(catalog: Catalog) -> Iterator[tuple[DocumentVersion, str | None]]:
    """Every document's latest version with its newest stored report (JSON), by document."""
    latest = (
        sa.select(
            DocumentVersion.document_id.label("document_id"),
            sa.func.max(DocumentVersion.seq).label("seq"),
        )
        .group_by(DocumentVersion.document_id)
        .subquery()
    )
    after = 0
    while True:
        with catalog.session() as s:
            rows = list(
                s.scalars(
                    sa.select(DocumentVersion)
                    .join(
                        latest,
                        sa.and_(
                            DocumentVersion.document_id == latest.c.document_id,
                            DocumentVersion.seq == latest.c.seq,
                        ),
                    )
                    .where(DocumentVersion.document_id > after)
                    .order_by(DocumentVersion.document_id)
                    .limit(_BATCH)
                    .options(selectinload(DocumentVersion.reports))
                )
            )
            batch = [(v, v.reports[-1].report_json if v.reports else None) for v in rows]
        if not batch:
            return
        yield from batch
        after = batch[-1][0].document_id


def _fetch(store: ObjectStore, version: DocumentVersion, target: Path) -> None:
    """The version's object into ``target``, checked against the catalogue's digest."""
    store.get(version.object_key, target)
    digest, size = _hash_file(target)
    if digest != version.sha256.lower() or size != version.size:
        raise RenewalError(
            "archive.renew.checksum",
            object_key=version.object_key,
            expected=version.sha256,
            actual=digest,
        )


def _hash_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _stored_report(report_json: str | None) -> VerificationReport | None:
    if report_json is None:
        return None
    try:
        return VerificationReport.from_dict(json.loads(report_json))
    except Exception:  # an older or foreign report: verify again
        log.warning("unreadable stored report; verifying again", exc_info=True)
        return None


def due_for_renewal(
    catalog: Catalog,
    store: ObjectStore,
    within: dt.timedelta,
    *,
    now: dt.datetime | None = None,
    policy: VerifyPolicy | None = None,
    reverify: bool = False,
    work_dir: Path | None = None,
) -> list[RenewalCandidate]:
    """The documents whose latest version must be renewed (see the module's docstring).

    ``policy`` verifies the versions that have no stored report (or all of them with
    ``reverify=True``); it is needed only then (``archive.renew.needs_policy`` otherwise).
    Unsigned versions are never candidates.  Nothing is written."""
    if within < dt.timedelta(0):
        raise RenewalError("archive.renew.window.negative", within=str(within))
    moment = now if now is not None else dt.datetime.now(dt.UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    deadline = moment + within
    found: list[RenewalCandidate] = []
    for version, report_json in _latest_versions(catalog):
        report = None if reverify else _stored_report(report_json)
        if report is None:
            if policy is None:
                raise RenewalError("archive.renew.needs_policy", version=version.id)
            with tempfile.TemporaryDirectory(prefix="kyso-renew-", dir=work_dir) as tmp:
                path = Path(tmp) / "version.pdf"
                _fetch(store, version, path)
                report = verify(path, policy)
        assessment = assess(report)
        reason = assessment.reason(deadline)
        if reason is not None:
            found.append(
                RenewalCandidate(version.document_id, version.id, reason, assessment.horizon)
            )
    return found


# --------------------------------------------------------------------------- renewing


def _signer_and_policy(
    signer: Any, policy: VerifyPolicy | None
) -> tuple[DocumentSigner, VerifyPolicy]:
    if isinstance(signer, DocumentSigner):
        document_signer = signer
        if policy is None:
            policy = VerifyPolicy(trust_roots=tuple(signer.revocation.trust_roots))
    else:  # kyso.api.services.Services (not imported: the archive does not depend on the API)
        document_signer = signer.document_signer(None)
        if policy is None:
            policy = VerifyPolicy.from_services(signer)
    return document_signer, policy


def _worse(before: VerificationReport, after: VerificationReport) -> str | None:
    """Why ``after`` is worse than ``before`` (None: it is not)."""
    if _RANK.get(after.indication, 0) < _RANK.get(before.indication, 0):
        return f"{before.indication} → {after.indication}"
    levels = {(s.field_name, s.index): s.level for s in after.signatures if s.kind == "signature"}
    by_field = {s.field_name: s.level for s in after.signatures if s.kind == "signature"}
    for sig in before.signatures:
        if sig.kind != "signature" or sig.level is None:
            continue
        now = levels.get((sig.field_name, sig.index), by_field.get(sig.field_name))
        if now != "B-LTA":
            return f"{sig.field_name}: {sig.level} → {now or '-'}"
    return None


def _latest_version(catalog: Catalog, version_id: int) -> tuple[DocumentVersion, bool]:
    with catalog.session() as s:
        version = s.get(DocumentVersion, version_id)
        if version is None:
            raise RenewalError("archive.renew.version.not_found", id=version_id)
        last = s.scalar(
            sa.select(sa.func.max(DocumentVersion.seq)).where(
                DocumentVersion.document_id == version.document_id
            )
        )
        return version, last == version.seq


def _renew_one(
    catalog: Catalog,
    store: ObjectStore,
    signer: DocumentSigner,
    policy: VerifyPolicy,
    candidate: RenewalCandidate,
    actor: str,
    work_dir: Path | None,
    retention: Retention | None,
) -> RenewalOutcome | RenewalSkip:
    version, is_latest = _latest_version(catalog, candidate.version_id)
    if version.document_id != candidate.document_id:
        raise RenewalError(
            "archive.renew.version.mismatch",
            version=candidate.version_id,
            document=candidate.document_id,
        )
    if not is_latest:
        return RenewalSkip(candidate.document_id, candidate.version_id, "archive.renew.stale")
    with tempfile.TemporaryDirectory(prefix="kyso-renew-", dir=work_dir) as tmp:
        source, target = Path(tmp) / "source.pdf", Path(tmp) / "renewed.pdf"
        _fetch(store, version, source)
        before = verify(source, policy)
        before_assessment = assess(before)
        if not before_assessment.renewable:
            raise RenewalError("archive.renew.unsigned", document=candidate.document_id)
        warnings: list[str] = []
        try:
            signer.extend(source, target, Level.B_LTA)
        except KysoError:
            # Fresh validation data cannot be had any more (a signer certificate expired or
            # was revoked since): the DSS already proves the signatures up to the last
            # document timestamp, so a new timestamp over the file keeps that proof alive.
            if not before_assessment.has_archive_timestamp:
                raise
            log.warning("validation data not refreshed; timestamping only", exc_info=True)
            target.unlink(missing_ok=True)
            signer.timestamp(source, target)
            warnings.append("archive.renew.validation_not_refreshed")
        after = verify(target, policy)
        after_assessment = assess(after)
        why = _worse(before, after)
        added = after_assessment.archive_timestamps - before_assessment.archive_timestamps
        if why is None and added < 1:
            why = "no new document timestamp"
        if why is not None:
            raise RenewalError("archive.renew.worse", document=candidate.document_id, detail=why)
        digest, size = _hash_file(target)
        stored = store.put(target, sha256=digest, retention=retention)
    if stored.key == version.object_key:  # cannot happen: a timestamp changes the bytes
        raise RenewalError("archive.renew.unchanged", object_key=stored.key)
    try:
        new_version = catalog.add_version(
            candidate.document_id, "ltv_extended", stored.key, stored.sha256, stored.size, actor
        )
    except Exception as exc:
        raise _Orphaned(stored.key, exc) from exc
    hb, ha = before_assessment.horizon, after_assessment.horizon
    if hb is not None and (ha is None or ha <= hb):
        warnings.append("archive.renew.horizon_not_extended")
    report_id: int | None = None
    try:
        report_id = catalog.add_report(new_version, after.to_dict(), actor=actor)
    except Exception:
        log.warning("report of version %s not recorded", new_version, exc_info=True)
        warnings.append("archive.renew.report_failed")
    levels = [s.level for s in after.signatures if s.kind == "signature" and s.level]
    return RenewalOutcome(
        document_id=candidate.document_id,
        old_version_id=candidate.version_id,
        new_version_id=new_version,
        object_key=stored.key,
        sha256=stored.sha256,
        size=size,
        report_id=report_id,
        level=min(levels, key=_LEVELS.index) if levels else None,
        horizon_before=hb,
        horizon_after=ha,
        archive_timestamps_before=before_assessment.archive_timestamps,
        archive_timestamps_after=after_assessment.archive_timestamps,
        warnings=tuple(warnings),
    )


class _Orphaned(Exception):
    def __init__(self, key: str, cause: BaseException) -> None:
        super().__init__(key)
        self.key = key
        self.cause = cause


def _failure(candidate: RenewalCandidate, exc: BaseException) -> RenewalFailure:
    orphan: str | None = None
    if isinstance(exc, _Orphaned):
        orphan, exc = exc.key, exc.cause
    if isinstance(exc, KysoError):
        code, params = exc.code, dict(exc.params)
    else:
        code, params = "archive.renew.failed", {"reason": f"{type(exc).__name__}: {exc}"[:300]}
    if orphan is not None:
        params = {"object_key": orphan, "reason": f"{code}: {exc}"[:300]}
        code = "archive.renew.orphan"
    return RenewalFailure(candidate.document_id, candidate.version_id, code, params, orphan)


def renew(
    catalog: Catalog,
    store: ObjectStore,
    signer: Any,
    candidates: Sequence[RenewalCandidate],
    *,
    actor: str,
    progress: Callable[[int, int], None] | None = None,
    policy: VerifyPolicy | None = None,
    retention: Retention | Callable[[int], Retention | None] | None = None,
    work_dir: Path | None = None,
) -> RenewalReport:
    """Renew each candidate (see the module's docstring); one failure never stops the others.

    :param signer: a ``DocumentSigner`` able to timestamp (``Services.document_signer(None)``),
        or the ``Services`` to build one from.
    :param policy: how results are verified; default: the services' trust
        (``VerifyPolicy.from_services``) or the signer's trust roots.
    :param progress: called as ``progress(done, total)`` after each candidate.
    :param retention: given to every new object (the archive's, as ingest gives it), or a
        function of the document id (``Archive.retention_for_document``: its case file's
        period), so each record keeps its own retention.
    """
    document_signer, verify_policy = _signer_and_policy(signer, policy)
    result = RenewalReport()
    total = len(candidates)
    for done, candidate in enumerate(candidates, 1):
        try:
            outcome = _renew_one(
                catalog,
                store,
                document_signer,
                verify_policy,
                candidate,
                actor,
                work_dir,
                retention(candidate.document_id) if callable(retention) else retention,
            )
        except Exception as exc:
            log.warning("renewal of document %s failed", candidate.document_id, exc_info=True)
            result.failed.append(_failure(candidate, exc))
        else:
            if isinstance(outcome, RenewalSkip):
                result.skipped.append(outcome)
            else:
                result.renewed.append(outcome)
        if progress is not None:
            progress(done, total)
    return result
