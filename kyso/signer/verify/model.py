"""The verification report: what :func:`kyso.signer.verify.verify` returns.

Plain dataclasses, turned into the JSON contract of ``docs/verification-report.md`` by
:meth:`VerificationReport.to_dict` and read back by :meth:`VerificationReport.from_dict`
(the HTML, PDF and XML renderers work from either).  Field names are stable; a change
that removes or renames one bumps :data:`SCHEMA_VERSION`'s major number.

Everything a person reads is stored as a translation code plus its parameters
(:class:`Reason`), and rendered in the reader's language when the report is written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from kyso.i18n import t

SCHEMA_VERSION = "1.0"
SCHEMA_ID = "https://kyso.vn/schemas/verification-report/1.0"

TOTAL_PASSED = "TOTAL_PASSED"
TOTAL_FAILED = "TOTAL_FAILED"
INDETERMINATE = "INDETERMINATE"
INDICATIONS = (TOTAL_PASSED, TOTAL_FAILED, INDETERMINATE)

# ETSI EN 319 102-1 sub-indications kyso reports (5.1.3, table 5).
FAILED_SUB_INDICATIONS = frozenset(
    {
        "FORMAT_FAILURE",
        "HASH_FAILURE",
        "SIG_CRYPTO_FAILURE",
        "REVOKED",
        "SIG_CONSTRAINTS_FAILURE",
        "CHAIN_CONSTRAINTS_FAILURE",
        "CRYPTO_CONSTRAINTS_FAILURE",
        "EXPIRED",
        "NOT_YET_VALID",
        "POLICY_PROCESSING_ERROR",
        "SIGNATURE_POLICY_NOT_AVAILABLE",
        "TIMESTAMP_ORDER_FAILURE",
    }
)
INDETERMINATE_SUB_INDICATIONS = frozenset(
    {
        "SIG_CONSTRAINTS_FAILURE",
        "CHAIN_CONSTRAINTS_FAILURE",
        "CERTIFICATE_CHAIN_GENERAL_FAILURE",
        "CRYPTO_CONSTRAINTS_FAILURE",
        "EXPIRED",
        "NOT_YET_VALID",
        "FORMAT_FAILURE",
        "POLICY_PROCESSING_ERROR",
        "SIGNATURE_POLICY_NOT_AVAILABLE",
        "TIMESTAMP_ORDER_FAILURE",
        "NO_SIGNING_CERTIFICATE_FOUND",
        "NO_CERTIFICATE_CHAIN_FOUND",
        "REVOKED_NO_POE",
        "REVOKED_CA_NO_POE",
        "OUT_OF_BOUNDS_NO_POE",
        "OUT_OF_BOUNDS_NOT_REVOKED",
        "REVOCATION_OUT_OF_BOUNDS_NO_POE",
        "CRYPTO_CONSTRAINTS_FAILURE_NO_POE",
        "NO_POE",
        "TRY_LATER",
        "SIGNED_DATA_NOT_FOUND",
        "GENERIC",
    }
)

# Kinds of change between revisions (see docs/verification-report.md).
CHANGE_KINDS = (
    "form_filled",
    "field_added",
    "annotation_added",
    "annotation_modified",
    "annotation_removed",
    "page_content_changed",
    "page_added",
    "page_removed",
    "page_resources_changed",
    "object_overridden",
    "signature_added",
    "doc_timestamp_added",
    "signature_dict_changed",
    "ltv_data_added",
    "metadata_changed",
    "struct_tree_changed",
    "catalog_changed",
    "trailing_data",
    "unreadable_revision",
    "other",
)

SIGNATURE = "signature"
DOC_TIMESTAMP = "document_timestamp"


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


def _parse_iso(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


@dataclass(frozen=True)
class Reason:
    """One finding in words: a catalogue code and its parameters."""

    code: str
    params: dict[str, Any] = field(default_factory=dict)

    def message(self, locale: str | None = None) -> str:
        return t(self.code, locale=locale, **self.params)

    def to_dict(self, locale: str | None = None) -> dict[str, Any]:
        return {"code": self.code, "params": dict(self.params), "message": self.message(locale)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reason:
        return cls(code=data["code"], params=dict(data.get("params") or {}))


@dataclass(frozen=True)
class Change:
    """Something that changed in a revision added after a signature."""

    kind: str
    revision: int
    permitted: bool
    page: int | None = None
    target: str | None = None
    detail: Reason | None = None

    def reason(self) -> Reason:
        """The change in words."""
        return Reason(
            f"verify.change.{self.kind}",
            {"page": self.page, "target": self.target or "", "revision": self.revision},
        )

    def to_dict(self, locale: str | None = None) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "revision": self.revision,
            "page": self.page,
            "target": self.target,
            "permitted": self.permitted,
            "description": self.reason().message(locale),
            "detail": self.detail.to_dict(locale) if self.detail else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Change:
        return cls(
            kind=data["kind"],
            revision=data["revision"],
            permitted=data["permitted"],
            page=data.get("page"),
            target=data.get("target"),
            detail=Reason.from_dict(data["detail"]) if data.get("detail") else None,
        )


@dataclass(frozen=True)
class CertificateInfo:
    """A certificate as a person reads it."""

    subject: str
    common_name: str | None
    organisation: str | None
    title: str | None
    identities: dict[str, str]
    kind: str  # person | organisation | unknown
    issuer: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    sha256: str
    key: str  # e.g. "RSA-2048", "EC-P256"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["not_before"] = _iso(self.not_before)
        data["not_after"] = _iso(self.not_after)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CertificateInfo:
        values = dict(data)
        values["not_before"] = _parse_iso(values["not_before"])
        values["not_after"] = _parse_iso(values["not_after"])
        return cls(**values)


@dataclass
class Integrity:
    """The signed bytes and the CMS."""

    byte_range: list[int] | None = None
    byte_range_ok: bool | None = None
    covers_revision: int | None = None  # the revision (1-based) the byte range ends with
    covers_whole_file: bool | None = None
    digest_ok: bool | None = None
    signature_ok: bool | None = None
    digest_algorithm: str | None = None
    signature_algorithm: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Revocation:
    """The signer certificate's revocation status at the time that mattered."""

    status: str = "not_checked"  # good | revoked | unknown | not_checked
    source: str | None = None  # embedded | online | None
    revoked_at: dt.datetime | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "source": self.source,
            "revoked_at": _iso(self.revoked_at),
            "reason": self.reason,
        }


@dataclass
class TimestampInfo:
    """A signature timestamp (or the token of a document timestamp)."""

    time: dt.datetime
    tsa: CertificateInfo | None
    intact: bool
    trusted: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": _iso(self.time),
            "tsa": self.tsa.to_dict() if self.tsa else None,
            "intact": self.intact,
            "trusted": self.trusted,
        }


@dataclass
class Algorithms:
    digest: str | None = None
    signature: str | None = None
    key: str | None = None
    weak: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SignatureReport:
    """One signature or document timestamp."""

    index: int
    kind: str  # signature | document_timestamp
    field_name: str | None
    sub_filter: str | None
    revision: int | None
    indication: str
    sub_indication: str | None
    modified_after_signing: bool
    reasons: list[Reason] = field(default_factory=list)
    warnings: list[Reason] = field(default_factory=list)
    integrity: Integrity = field(default_factory=Integrity)
    signer: CertificateInfo | None = None
    chain: list[CertificateInfo] = field(default_factory=list)
    trusted: bool | None = None
    trust_anchor: str | None = None
    key_usage_ok: bool | None = None
    algorithms: Algorithms = field(default_factory=Algorithms)
    revocation: Revocation = field(default_factory=Revocation)
    claimed_signing_time: dt.datetime | None = None
    timestamp: TimestampInfo | None = None
    best_signature_time: dt.datetime | None = None
    level: str | None = None
    verifiable_until: dt.datetime | None = None
    reason_text: str | None = None
    location: str | None = None
    contact_info: str | None = None
    certification: str | None = None  # None, or the DocMDP permission of a certifying signature
    page: int | None = None
    rect: list[float] | None = None
    changes: list[Change] = field(default_factory=list)

    def to_dict(self, locale: str | None = None) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "field_name": self.field_name,
            "sub_filter": self.sub_filter,
            "revision": self.revision,
            "indication": self.indication,
            "sub_indication": self.sub_indication,
            "modified_after_signing": self.modified_after_signing,
            "summary": summary(
                self.indication, self.sub_indication, self.modified_after_signing
            ).message(locale),
            "reasons": [r.to_dict(locale) for r in self.reasons],
            "warnings": [r.to_dict(locale) for r in self.warnings],
            "integrity": self.integrity.to_dict(),
            "signer": self.signer.to_dict() if self.signer else None,
            "chain": [c.to_dict() for c in self.chain],
            "trusted": self.trusted,
            "trust_anchor": self.trust_anchor,
            "key_usage_ok": self.key_usage_ok,
            "algorithms": self.algorithms.to_dict(),
            "revocation": self.revocation.to_dict(),
            "claimed_signing_time": _iso(self.claimed_signing_time),
            "timestamp": self.timestamp.to_dict() if self.timestamp else None,
            "best_signature_time": _iso(self.best_signature_time),
            "level": self.level,
            "verifiable_until": _iso(self.verifiable_until),
            "reason": self.reason_text,
            "location": self.location,
            "contact_info": self.contact_info,
            "certification": self.certification,
            "page": self.page,
            "rect": self.rect,
            "changes": [c.to_dict(locale) for c in self.changes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SignatureReport:
        ts = data.get("timestamp")
        rev = data.get("revocation") or {}
        return cls(
            index=data["index"],
            kind=data["kind"],
            field_name=data.get("field_name"),
            sub_filter=data.get("sub_filter"),
            revision=data.get("revision"),
            indication=data["indication"],
            sub_indication=data.get("sub_indication"),
            modified_after_signing=data["modified_after_signing"],
            reasons=[Reason.from_dict(r) for r in data.get("reasons", [])],
            warnings=[Reason.from_dict(r) for r in data.get("warnings", [])],
            integrity=Integrity(**(data.get("integrity") or {})),
            signer=CertificateInfo.from_dict(data["signer"]) if data.get("signer") else None,
            chain=[CertificateInfo.from_dict(c) for c in data.get("chain", [])],
            trusted=data.get("trusted"),
            trust_anchor=data.get("trust_anchor"),
            key_usage_ok=data.get("key_usage_ok"),
            algorithms=Algorithms(**(data.get("algorithms") or {})),
            revocation=Revocation(
                status=rev.get("status", "not_checked"),
                source=rev.get("source"),
                revoked_at=_parse_iso(rev.get("revoked_at")),
                reason=rev.get("reason"),
            ),
            claimed_signing_time=_parse_iso(data.get("claimed_signing_time")),
            timestamp=(
                TimestampInfo(
                    time=_parse_iso(ts["time"]) or dt.datetime.min,
                    tsa=CertificateInfo.from_dict(ts["tsa"]) if ts.get("tsa") else None,
                    intact=ts["intact"],
                    trusted=ts["trusted"],
                )
                if ts
                else None
            ),
            best_signature_time=_parse_iso(data.get("best_signature_time")),
            level=data.get("level"),
            verifiable_until=_parse_iso(data.get("verifiable_until")),
            reason_text=data.get("reason"),
            location=data.get("location"),
            contact_info=data.get("contact_info"),
            certification=data.get("certification"),
            page=data.get("page"),
            rect=data.get("rect"),
            changes=[Change.from_dict(c) for c in data.get("changes", [])],
        )


@dataclass(frozen=True)
class PolicyInfo:
    """The validation policy a report was made under."""

    trust_anchors: list[dict[str, str]]  # {"subject": ..., "sha256": ...}
    revocation: str  # "online" | "offline"
    validation_time: dt.datetime
    time_given: bool  # --at was used
    weak_algorithms: str  # "warn" | "reject"
    annotations: str  # the rule for annotations added after signing

    def to_dict(self) -> dict[str, Any]:
        return {
            "trust_anchors": [dict(a) for a in self.trust_anchors],
            "revocation": self.revocation,
            "validation_time": _iso(self.validation_time),
            "time_given": self.time_given,
            "weak_algorithms": self.weak_algorithms,
            "annotations": self.annotations,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyInfo:
        values = dict(data)
        values["validation_time"] = _parse_iso(values["validation_time"])
        return cls(**values)


@dataclass(frozen=True)
class FileInfo:
    name: str
    size: int
    sha256: str
    revisions: int | None
    pages: int | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class VerificationReport:
    """The whole verdict on one file."""

    file: FileInfo
    policy: PolicyInfo
    verified_at: dt.datetime
    indication: str
    sub_indication: str | None
    modified_after_signing: bool
    signatures: list[SignatureReport] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    reasons: list[Reason] = field(default_factory=list)
    kyso_version: str = ""

    @property
    def exit_code(self) -> int:
        """0 passed, 1 failed, 2 indeterminate (ARCHITECTURE.md)."""
        return {TOTAL_PASSED: 0, TOTAL_FAILED: 1}.get(self.indication, 2)

    def to_dict(self, locale: str | None = None) -> dict[str, Any]:
        return {
            "$schema": SCHEMA_ID,
            "schema_version": SCHEMA_VERSION,
            "kyso_version": self.kyso_version,
            "locale": locale,
            "verified_at": _iso(self.verified_at),
            "file": self.file.to_dict(),
            "policy": self.policy.to_dict(),
            "indication": self.indication,
            "sub_indication": self.sub_indication,
            "modified_after_signing": self.modified_after_signing,
            "summary": summary(
                self.indication, self.sub_indication, self.modified_after_signing
            ).message(locale),
            "reasons": [r.to_dict(locale) for r in self.reasons],
            "signatures": [s.to_dict(locale) for s in self.signatures],
            "changes": [c.to_dict(locale) for c in self.changes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VerificationReport:
        return cls(
            file=FileInfo(**data["file"]),
            policy=PolicyInfo.from_dict(data["policy"]),
            verified_at=_parse_iso(data["verified_at"]) or dt.datetime.min,
            indication=data["indication"],
            sub_indication=data.get("sub_indication"),
            modified_after_signing=data["modified_after_signing"],
            signatures=[SignatureReport.from_dict(s) for s in data.get("signatures", [])],
            changes=[Change.from_dict(c) for c in data.get("changes", [])],
            reasons=[Reason.from_dict(r) for r in data.get("reasons", [])],
            kyso_version=data.get("kyso_version", ""),
        )


def summary(indication: str, sub_indication: str | None, modified: bool = False) -> Reason:
    """The one-line verdict a clerk reads."""
    if indication == TOTAL_PASSED:
        return Reason("verify.summary.passed")
    if modified and indication == TOTAL_FAILED and sub_indication in (None, "FORMAT_FAILURE"):
        return Reason("verify.summary.modified")
    key = "failed" if indication == TOTAL_FAILED else "indeterminate"
    if sub_indication:
        return Reason(f"verify.summary.{key}.with", {"sub": sub_indication})
    return Reason(f"verify.summary.{key}")
