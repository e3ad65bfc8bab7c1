"""The verification report as one self-contained HTML page, and what the PDF report shares.

A clerk reads the verdict at a glance (green: valid, red: not valid, amber: indeterminate) and
the reasons in words; an archivist finds the file's digest, the policy, every signer's
certificate, times, level, revocation and algorithms, what changed after each signature
(permitted and forbidden apart), a picture of the document with each signature's box, and for a
file modified after signing the side-by-side pictures of the signed and current versions.

Everything the PDF brings (signer names, ``/Reason``, ``/Location``, field names, messages
quoting them) is attacker-controlled: the template is rendered with autoescape on, images are
``data:`` URIs of PNGs we drew, and a Content-Security-Policy forbids scripts and remote loads.

:func:`build_view` turns a :class:`~kyso.signer.verify.model.VerificationReport` into plain
translated strings; :func:`preview_pages` and :func:`diff_views` draw the pictures.  The PDF
report (:mod:`.pdf_report`) lays out the same view with reportlab.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from kyso.i18n import catalogue, current_locale, t
from kyso.signer.verify.model import (
    DOC_TIMESTAMP,
    INDETERMINATE,
    TOTAL_FAILED,
    TOTAL_PASSED,
    CertificateInfo,
    Change,
    Reason,
    SignatureReport,
    VerificationReport,
    summary,
)
from kyso.signer.verify.render import (
    AMBER,
    DEFAULT_TIMEOUT,
    GREEN,
    GREY,
    RED,
    Box,
    RenderRequest,
    data_uri,
    draw_boxes,
    framed,
    png_bytes,
    render_pages,
)
from kyso.signer.verify.visual_diff import DEFAULT_THRESHOLD, visual_diffs

__all__ = [
    "ChangeView",
    "DiffPageView",
    "DiffView",
    "PreviewPage",
    "ReportView",
    "Row",
    "SignatureView",
    "build_view",
    "diff_views",
    "format_date",
    "format_time",
    "headline",
    "preview_pages",
    "render_html",
]

VIETNAM = dt.timezone(dt.timedelta(hours=7), "ICT")
PREVIEW_DPI = 110.0
DIFF_DPI = 100.0
MAX_PREVIEW_PAGES = 6
"""Pages pictured with their signature boxes: the first page and pages bearing signatures."""

CSS_CLASS = {TOTAL_PASSED: "passed", TOTAL_FAILED: "failed", INDETERMINATE: "indeterminate"}
COLOUR = {TOTAL_PASSED: GREEN, TOTAL_FAILED: RED, INDETERMINATE: AMBER}


# -- the view: every string a reader sees, translated ----------------------------------------


@dataclass
class Row:
    label: str
    value: str
    tone: str = ""  # "" | "good" | "warn" | "bad"
    mono: bool = False  # digests, serial numbers: shown in a fixed-width font


@dataclass
class ChangeView:
    text: str
    revision: str
    permitted: bool
    detail: str | None = None


@dataclass
class SignatureView:
    number: int
    heading: str
    tone: str  # passed | failed | indeterminate
    indication: str
    summary: str  # the verdict in one sentence a clerk understands
    sub_code: str | None  # the ETSI sub-indication, for the technically minded
    rows: list[Row]
    reasons: list[str]
    warnings: list[str]
    forbidden: list[ChangeView]
    permitted: list[ChangeView]
    modified_after_signing: bool


@dataclass
class ReportView:
    locale: str
    title: str
    tone: str
    indication: str
    summary: str
    sub_code: str | None
    reasons: list[str]
    file_rows: list[Row]
    policy_rows: list[Row]
    anchors: list[str]
    signatures: list[SignatureView]
    forbidden: list[ChangeView]
    permitted: list[ChangeView]
    footer: str
    labels: dict[str, str] = field(default_factory=dict)


def _has(key: str) -> bool:
    return key in catalogue()


def _lookup(key: str, fallback: str, locale: str, **params: Any) -> str:
    """``t(key)`` when the catalogue has it, else ``fallback`` (for values read from reports)."""
    return t(key, locale=locale, **params) if _has(key) else fallback


def _locale(locale: str | None) -> str:
    return locale if locale in ("vi", "en") else current_locale()


def format_time(value: dt.datetime | None, locale: str) -> str:
    """A time as people in Vietnam read it: local time (UTC+07:00), day first in Vietnamese."""
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    try:
        local = value.astimezone(VIETNAM)
    except (OverflowError, ValueError):
        local = value
    date = local.strftime("%d/%m/%Y" if locale == "vi" else "%Y-%m-%d")
    return t("verify.report.time", locale=locale, date=date, time=local.strftime("%H:%M:%S"))


def format_date(value: dt.datetime | None, locale: str) -> str:
    """The calendar day (in Vietnam) of ``value``."""
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    with contextlib.suppress(OverflowError, ValueError):
        value = value.astimezone(VIETNAM)
    return value.strftime("%d/%m/%Y" if locale == "vi" else "%Y-%m-%d")


def _number(value: int, locale: str) -> str:
    text = f"{value:,}"
    return text.replace(",", ".") if locale == "vi" else text


def _yes_no(value: bool | None, locale: str) -> str:
    if value is None:
        return t("verify.report.unknown", locale=locale)
    return t("verify.report.yes" if value else "verify.report.no", locale=locale)


def _sentence(
    indication: str, sub_indication: str | None, locale: str, modified: bool = False
) -> str:
    """The verdict in words: the summary when valid, else what went wrong, in plain words."""
    if modified and indication == TOTAL_FAILED and sub_indication in (None, "FORMAT_FAILURE"):
        return _message(summary(indication, sub_indication, modified), locale)
    if indication != TOTAL_PASSED and sub_indication and _has(f"verify.sub.{sub_indication}"):
        return t(f"verify.sub.{sub_indication}", locale=locale)
    return _message(summary(indication, sub_indication), locale)


def _sub_code(sub_indication: str | None, locale: str) -> str | None:
    if not sub_indication:
        return None
    return t("verify.report.sub_code", locale=locale, sub=sub_indication)


def headline(indication: str, sentence: str) -> str:
    """``indication. sentence``, unless the sentence already starts with the indication."""
    return sentence if sentence.startswith(indication) else f"{indication}. {sentence}"


def _indication_text(indication: str, locale: str) -> str:
    return _lookup(f"verify.indication.{indication}", indication, locale)


def _tone(indication: str) -> str:
    return CSS_CLASS.get(indication, "indeterminate")


def _message(reason: Reason, locale: str) -> str:
    try:
        return reason.message(locale)
    except Exception:  # a malformed code or parameter must not lose the report
        return reason.code


def _change_view(change: Change, locale: str) -> ChangeView:
    return ChangeView(
        text=_message(change.reason(), locale),
        revision=t("verify.report.changes.revision", locale=locale, revision=change.revision),
        permitted=change.permitted,
        detail=_message(change.detail, locale) if change.detail else None,
    )


def _split_changes(changes: list[Change], locale: str) -> tuple[list[ChangeView], list[ChangeView]]:
    views = [_change_view(c, locale) for c in changes]
    return [v for v in views if not v.permitted], [v for v in views if v.permitted]


def _name(cert: CertificateInfo) -> str:
    return cert.common_name or cert.subject


def _certificate_rows(cert: CertificateInfo, locale: str, *, tsa: bool) -> list[Row]:
    def L(key: str) -> str:
        return t(key, locale=locale)

    rows = [Row(L("verify.report.tsa.name" if tsa else "verify.report.signer.name"), _name(cert))]
    if not tsa:
        kind = _lookup(f"verify.report.signer.kind.{cert.kind}", cert.kind, locale)
        rows.append(Row(L("verify.report.signer.kind"), kind))
    if cert.organisation:
        rows.append(Row(L("verify.report.signer.organisation"), cert.organisation))
    if cert.title:
        rows.append(Row(L("verify.report.signer.title"), cert.title))
    if cert.identities:
        ids = "; ".join(f"{scheme}: {number}" for scheme, number in cert.identities.items())
        rows.append(Row(L("verify.report.signer.identities"), ids))
    rows.append(Row(L("verify.report.signer.issuer"), cert.issuer))
    rows.append(Row(L("verify.report.signer.serial"), cert.serial, mono=True))
    validity = t(
        "verify.report.signer.validity_value",
        locale=locale,
        start=format_date(cert.not_before, locale),
        end=format_date(cert.not_after, locale),
    )
    rows.append(Row(L("verify.report.signer.validity"), validity))
    return rows


def _timestamp_row(sig: SignatureReport, locale: str) -> Row:
    label = t("verify.report.timestamp", locale=locale)
    ts = sig.timestamp
    if ts is None:
        return Row(label, t("verify.report.timestamp.none", locale=locale), "warn")
    tsa = _name(ts.tsa) if ts.tsa else t("verify.report.unknown", locale=locale)
    parts = [
        t(
            "verify.report.timestamp.value",
            locale=locale,
            time=format_time(ts.time, locale),
            tsa=tsa,
        )
    ]
    tone = "good"
    if not ts.intact:
        parts.append(t("verify.report.timestamp.not_intact", locale=locale))
        tone = "bad"
    if not ts.trusted:
        parts.append(t("verify.report.timestamp.untrusted", locale=locale))
        tone = tone if tone == "bad" else "warn"
    return Row(label, " ".join(parts), tone)


def _revocation_row(sig: SignatureReport, locale: str) -> Row:
    rev = sig.revocation
    label = t("verify.report.revocation", locale=locale)
    if rev.status == "revoked":
        text = (
            t(
                "verify.report.revocation.revoked_at",
                locale=locale,
                time=format_time(rev.revoked_at, locale),
            )
            if rev.revoked_at
            else t("verify.report.revocation.revoked", locale=locale)
        )
        tone = "bad"
    else:
        text = _lookup(f"verify.report.revocation.{rev.status}", rev.status, locale)
        tone = "good" if rev.status == "good" else "warn"
    extra = []
    if rev.reason:
        extra.append(t("verify.report.revocation.reason", locale=locale, reason=rev.reason))
    if rev.source:
        extra.append(_lookup(f"verify.report.revocation.source.{rev.source}", rev.source, locale))
    return Row(label, f"{text} ({', '.join(extra)})" if extra else text, tone)


_SIGNATURE_NAMES = {
    "rsassa_pkcs1v15": "RSA (PKCS#1 v1.5)",
    "rsassa_pss": "RSA-PSS",
    "rsa": "RSA",
    "ecdsa": "ECDSA",
    "dsa": "DSA",
    "ed25519": "Ed25519",
    "ed448": "Ed448",
}


def _digest_label(name: str) -> str:
    """``SHA-256`` for "sha256", ``SHA3-256`` for "sha3_256"; other names as they are."""
    lowered = name.lower().replace("-", "").replace("_", "")
    if lowered.startswith("sha3") and lowered[4:].isdigit():
        return f"SHA3-{lowered[4:]}"
    if lowered.startswith("sha") and lowered[3:].isdigit():
        return "SHA-1" if lowered == "sha1" else f"SHA-{lowered[3:]}"
    return name


def _signature_label(name: str) -> str:
    """``RSA (PKCS#1 v1.5)``, ``ECDSA with SHA-256`` and the like, from pyhanko's names."""
    lowered = name.lower()
    if lowered in _SIGNATURE_NAMES:
        return _SIGNATURE_NAMES[lowered]
    digest, _, scheme = lowered.partition("_")
    if scheme in _SIGNATURE_NAMES and digest.startswith("sha"):
        return f"{_SIGNATURE_NAMES[scheme]}, {_digest_label(digest)}"
    return name


def _algorithms_row(sig: SignatureReport, locale: str) -> Row:
    alg = sig.algorithms
    digest = alg.digest or sig.integrity.digest_algorithm
    signature = alg.signature or sig.integrity.signature_algorithm
    key = alg.key or (sig.signer.key if sig.signer else None) or "—"
    text = t(
        "verify.report.algorithms.value",
        locale=locale,
        digest=_digest_label(digest) if digest else "—",
        signature=_signature_label(signature) if signature else "—",
        public_key=key,
    )
    label = t("verify.report.algorithms", locale=locale)
    if alg.weak:
        return Row(label, f"{text}. {t('verify.report.algorithms.weak', locale=locale)}", "bad")
    return Row(label, text)


def _integrity_row(sig: SignatureReport, locale: str) -> Row | None:
    integ = sig.integrity
    parts: list[str] = []
    tone = "good"
    if integ.byte_range_ok is False:
        parts.append(t("verify.report.integrity.byte_range_bad", locale=locale))
        tone = "bad"
    if integ.digest_ok is not None:
        parts.append(
            t(
                "verify.report.integrity.digest_ok"
                if integ.digest_ok
                else "verify.report.integrity.digest_bad",
                locale=locale,
            )
        )
        tone = tone if integ.digest_ok else "bad"
    if integ.signature_ok is not None:
        parts.append(
            t(
                "verify.report.integrity.signature_ok"
                if integ.signature_ok
                else "verify.report.integrity.signature_bad",
                locale=locale,
            )
        )
        tone = tone if integ.signature_ok else "bad"
    if integ.covers_whole_file:
        parts.append(t("verify.report.integrity.whole_file", locale=locale))
    elif integ.covers_whole_file is False:
        revision = integ.covers_revision if integ.covers_revision is not None else "?"
        parts.append(t("verify.report.integrity.covers_revision", locale=locale, revision=revision))
        if tone == "good" and sig.modified_after_signing:
            tone = "warn"
    if not parts:
        return None
    return Row(t("verify.report.integrity", locale=locale), "; ".join(parts), tone)


def _signature_view(sig: SignatureReport, number: int, locale: str) -> SignatureView:
    def L(key: str) -> str:
        return t(key, locale=locale)

    is_ts = sig.kind == DOC_TIMESTAMP
    heading = t(
        "verify.report.doc_timestamp.title" if is_ts else "verify.report.signature.title",
        locale=locale,
        number=number,
    )
    if sig.signer is not None:
        heading = f"{heading}: {_name(sig.signer)}"
    rows: list[Row] = []
    if sig.signer is not None:
        rows.extend(_certificate_rows(sig.signer, locale, tsa=is_ts))
    else:
        rows.append(Row(L("verify.report.signer.name"), L("verify.report.signer.missing"), "warn"))
    if sig.trusted is not None:
        if sig.trusted:
            anchor = sig.trust_anchor or L("verify.report.unknown")
            rows.append(
                Row(
                    L("verify.report.trust"),
                    t("verify.report.trust.trusted", locale=locale, anchor=anchor),
                    "good",
                )
            )
        else:
            rows.append(Row(L("verify.report.trust"), L("verify.report.trust.untrusted"), "bad"))
    if sig.key_usage_ok is False:
        rows.append(Row(L("verify.report.trust"), L("verify.report.key_usage.bad"), "bad"))
    if not is_ts:
        rows.append(
            Row(L("verify.report.signing_time"), format_time(sig.claimed_signing_time, locale))
        )
    rows.append(_timestamp_row(sig, locale))
    if sig.best_signature_time is not None:
        rows.append(Row(L("verify.report.best_time"), format_time(sig.best_signature_time, locale)))
    rows.append(
        Row(
            L("verify.report.level"),
            sig.level or L("verify.report.level.none"),
            "" if sig.level else "warn",
        )
    )
    if sig.verifiable_until is not None:
        rows.append(
            Row(L("verify.report.verifiable_until"), format_time(sig.verifiable_until, locale))
        )
    if not is_ts:
        rows.append(_revocation_row(sig, locale))
    rows.append(_algorithms_row(sig, locale))
    integrity = _integrity_row(sig, locale)
    if integrity is not None:
        rows.append(integrity)
    if sig.sub_filter:
        rows.append(Row(L("verify.report.sub_filter"), sig.sub_filter))
    if sig.field_name:
        rows.append(Row(L("verify.report.field"), sig.field_name))
    if _visible(sig):
        rows.append(
            Row(
                L("verify.report.position"),
                t("verify.report.position.page", locale=locale, page=sig.page, number=number),
            )
        )
    elif not is_ts:
        rows.append(Row(L("verify.report.position"), L("verify.report.position.invisible")))
    for key, value in (
        ("verify.report.reason_text", sig.reason_text),
        ("verify.report.location", sig.location),
        ("verify.report.contact", sig.contact_info),
    ):
        if value:
            rows.append(Row(L(key), value))
    if sig.certification:
        permission = _lookup(
            f"verify.report.certification.{sig.certification}", sig.certification, locale
        )
        rows.append(Row(L("verify.report.certification"), permission))
    forbidden, permitted = _split_changes(sig.changes, locale)
    return SignatureView(
        number=number,
        heading=heading,
        tone=_tone(sig.indication),
        indication=_indication_text(sig.indication, locale),
        summary=_sentence(sig.indication, sig.sub_indication, locale, sig.modified_after_signing),
        sub_code=_sub_code(sig.sub_indication, locale),
        rows=rows,
        reasons=[_message(r, locale) for r in sig.reasons],
        warnings=[_message(r, locale) for r in sig.warnings],
        forbidden=forbidden,
        permitted=permitted,
        modified_after_signing=sig.modified_after_signing,
    )


def _visible(sig: SignatureReport) -> bool:
    rect = sig.rect
    if sig.page is None or sig.page < 1 or not rect or len(rect) != 4:
        return False
    try:
        return abs(float(rect[2]) - float(rect[0])) > 0 and abs(float(rect[3]) - float(rect[1])) > 0
    except (TypeError, ValueError):
        return False


def build_view(report: VerificationReport, locale: str | None = None) -> ReportView:
    """Every string of the report, in ``locale`` (default: the current one)."""
    loc = _locale(locale)

    def L(key: str) -> str:
        return t(key, locale=loc)

    info = report.file
    file_rows = [
        Row(L("verify.report.file.name"), info.name),
        Row(
            L("verify.report.file.size"),
            t("verify.report.file.size_value", locale=loc, size=_number(info.size, loc)),
        ),
        Row(L("verify.report.file.sha256"), info.sha256, mono=True),
    ]
    if info.revisions is not None:
        file_rows.append(Row(L("verify.report.file.revisions"), str(info.revisions)))
    if info.pages is not None:
        file_rows.append(Row(L("verify.report.file.pages"), str(info.pages)))
    policy = report.policy
    when = format_time(policy.validation_time, loc)
    if policy.time_given:
        when = t("verify.report.policy.time_given", locale=loc, time=when)
    policy_rows = [
        Row(L("verify.report.policy.validation_time"), when),
        Row(
            L("verify.report.policy.revocation"),
            _lookup(f"verify.report.policy.revocation.{policy.revocation}", policy.revocation, loc),
        ),
        Row(
            L("verify.report.policy.weak_algorithms"),
            _lookup(
                f"verify.report.policy.weak_algorithms.{policy.weak_algorithms}",
                policy.weak_algorithms,
                loc,
            ),
        ),
        Row(
            L("verify.report.policy.annotations"),
            _lookup(
                f"verify.report.policy.annotations.{policy.annotations}", policy.annotations, loc
            ),
        ),
    ]
    anchors = [
        f"{a.get('subject', '?')} (SHA-256 {a.get('sha256', '?')})" for a in policy.trust_anchors
    ]
    forbidden, permitted = _split_changes(report.changes, loc)
    labels = {
        name: L(f"verify.report.{name}")
        for name in (
            "verdict",
            "details",
            "file.heading",
            "policy.heading",
            "policy.trust_anchors",
            "policy.no_anchors",
            "signatures.heading",
            "signatures.none",
            "reasons",
            "warnings",
            "changes.heading",
            "changes.document_heading",
            "changes.none",
            "changes.forbidden",
            "changes.permitted",
            "pages.heading",
            "diff.heading",
            "diff.legend",
        )
    }
    return ReportView(
        locale=loc,
        title=L("verify.report.title"),
        tone=_tone(report.indication),
        indication=_indication_text(report.indication, loc),
        summary=_sentence(
            report.indication, report.sub_indication, loc, report.modified_after_signing
        ),
        sub_code=_sub_code(report.sub_indication, loc),
        reasons=[_message(r, loc) for r in report.reasons],
        file_rows=file_rows,
        policy_rows=policy_rows,
        anchors=anchors,
        signatures=[
            _signature_view(sig, number, loc)
            for number, sig in enumerate(report.signatures, start=1)
        ],
        forbidden=forbidden,
        permitted=permitted,
        footer=t(
            "verify.report.footer",
            locale=loc,
            version=report.kyso_version or "?",
            time=format_time(report.verified_at, loc),
        ),
        labels=labels,
    )


# -- pictures ---------------------------------------------------------------------------------


@dataclass
class PreviewPage:
    page: int
    png: bytes | None
    caption: str
    alt: str
    note: str | None = None


def preview_pages(
    report: VerificationReport,
    source_pdf: Path,
    locale: str | None = None,
    *,
    dpi: float = PREVIEW_DPI,
    max_pages: int = MAX_PREVIEW_PAGES,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[list[PreviewPage], list[str]]:
    """The first page and the pages bearing signatures, each signature's box outlined.

    Boxes are numbered like the signatures in the report and coloured by their indication.
    Returns the pictures and, for what could not be drawn, notes in words.
    """
    loc = _locale(locale)
    boxes: dict[int, list[tuple[list[float], tuple[int, int, int], str]]] = {}
    for number, sig in enumerate(report.signatures, start=1):
        if _visible(sig) and sig.page is not None and sig.rect is not None:
            colour = COLOUR.get(sig.indication, GREY)
            boxes.setdefault(sig.page - 1, []).append(
                ([float(v) for v in sig.rect], colour, str(number))
            )
    wanted = sorted({0, *boxes})[:max_pages]
    pages: list[PreviewPage] = []
    notes: list[str] = []
    request = RenderRequest(Path(source_pdf), pages=tuple(wanted), dpi=dpi)
    with render_pages([request], timeout=timeout) as (rendering,):
        if rendering.error is not None:
            notes.append(
                _message(
                    Reason(
                        f"verify.report.render.{rendering.error}",
                        {"detail": rendering.detail or "", "page": ""},
                    ),
                    loc,
                )
            )
            return pages, notes
        for index in wanted:
            rendered = rendering.page(index)
            if rendered is None:
                continue  # beyond the last page
            number = index + 1
            caption = t("verify.report.pages.caption", locale=loc, page=number)
            alt = t("verify.report.pages.alt", locale=loc, page=number)
            if not rendered.ok:
                note = _message(
                    Reason(
                        f"verify.report.render.{rendered.error}",
                        {"detail": rendered.detail or "", "page": number},
                    ),
                    loc,
                )
                pages.append(PreviewPage(number, None, caption, alt, note))
                continue
            drawn = []
            for rect, colour, label in boxes.get(index, []):
                box = rendered.to_pixels(rect)
                if box is not None:
                    drawn.append(Box(box, colour, label))
            image = framed(draw_boxes(rendered.load(), drawn))
            pages.append(PreviewPage(number, png_bytes(image), caption, alt))
    return pages, notes


@dataclass
class DiffPageView:
    page: int
    text: str
    png: bytes | None
    tone: str  # "bad" | "warn"
    detail_png: bytes | None = None


@dataclass
class DiffView:
    title: str
    summary: str | None
    notes: list[str]
    pages: list[DiffPageView]
    unchanged: str | None
    no_visible_change: str | None


def diff_views(
    report: VerificationReport,
    source_pdf: Path,
    locale: str | None = None,
    *,
    dpi: float = DIFF_DPI,
    max_pages: int | None = None,
    threshold: int = DEFAULT_THRESHOLD,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[DiffView]:
    """The visual comparison of each modified signed revision with the file, in words and
    pictures (one :class:`DiffView` per revision, for the signatures that cover it)."""
    loc = _locale(locale)
    numbers = {sig.index: n for n, sig in enumerate(report.signatures, start=1)}
    kwargs: dict[str, Any] = {"dpi": dpi, "threshold": threshold, "timeout": timeout}
    if max_pages is not None:
        kwargs["max_pages"] = max_pages
    views: list[DiffView] = []
    for indexes, diff in visual_diffs(report.signatures, Path(source_pdf), **kwargs):
        signatures = ", ".join(str(numbers.get(i, i)) for i in indexes)
        if diff.signed_length > 0:
            title = t(
                "verify.report.diff.for",
                locale=loc,
                signatures=signatures,
                length=_number(diff.signed_length, loc),
            )
        else:
            title = t("verify.report.diff.for_unknown", locale=loc, signatures=signatures)
        text = None
        if diff.signed_pages is not None or diff.current_pages is not None:
            text = t(
                "verify.report.diff.summary",
                locale=loc,
                compared=diff.compared,
                signed=diff.signed_pages if diff.signed_pages is not None else "?",
                current=diff.current_pages if diff.current_pages is not None else "?",
            )
        notes = [_message(n, loc) for n in diff.notes]
        pages: list[DiffPageView] = []
        unchanged: list[str] = []
        for page in diff.pages:
            if page.status == "unchanged":
                unchanged.append(str(page.page))
                continue
            if page.status == "error":
                if page.note is not None:
                    pages.append(DiffPageView(page.page, _message(page.note, loc), None, "warn"))
                continue
            if page.status == "changed":
                words = t(
                    "verify.report.diff.page.changed",
                    locale=loc,
                    page=page.page,
                    regions=len(page.regions),
                )
                if page.size_changed:
                    words += " " + t(
                        "verify.report.diff.page.size_changed", locale=loc, page=page.page
                    )
            else:
                words = t(f"verify.report.diff.page.{page.status}", locale=loc, page=page.page)
            pages.append(DiffPageView(page.page, words, page.image_png, "bad", page.detail_png))
        views.append(
            DiffView(
                title=title,
                summary=text,
                notes=notes,
                pages=pages,
                unchanged=(
                    t("verify.report.diff.unchanged_pages", locale=loc, pages=", ".join(unchanged))
                    if unchanged
                    else None
                ),
                no_visible_change=(
                    t("verify.report.diff.no_visible_change", locale=loc)
                    if diff.pages and not diff.changed
                    else None
                ),
            )
        )
    return views


# -- HTML --------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("kyso.signer.verify", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(
    report: VerificationReport,
    source_pdf: Path | None = None,
    locale: str | None = None,
    visual_diff: bool = False,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """The report as one HTML page (inline CSS, pictures as ``data:`` URIs, no script).

    With ``source_pdf`` (the file the report is about) the page shows the document with the
    signature boxes, and with ``visual_diff`` the comparison of each modified signed revision
    with the file.  A file that cannot be drawn gives a note, never an exception.
    """
    view = build_view(report, locale)
    previews: list[PreviewPage] = []
    preview_notes: list[str] = []
    diffs: list[DiffView] = []
    if source_pdf is not None:
        previews, preview_notes = preview_pages(report, source_pdf, view.locale, timeout=timeout)
        if visual_diff:
            diffs = diff_views(report, source_pdf, view.locale, timeout=timeout)
    template = _environment().get_template("report.html.j2")
    return str(
        template.render(
            view=view,
            previews=[
                {
                    "page": p.page,
                    "caption": p.caption,
                    "alt": p.alt,
                    "note": p.note,
                    "uri": data_uri(p.png) if p.png else None,
                }
                for p in previews
            ],
            preview_notes=preview_notes,
            diffs=[
                {
                    "title": d.title,
                    "summary": d.summary,
                    "notes": d.notes,
                    "unchanged": d.unchanged,
                    "no_visible_change": d.no_visible_change,
                    "pages": [
                        {
                            "text": p.text,
                            "tone": p.tone,
                            "uri": data_uri(p.png) if p.png else None,
                            "detail_uri": data_uri(p.detail_png) if p.detail_png else None,
                        }
                        for p in d.pages
                    ],
                }
                for d in diffs
            ],
        )
    )
