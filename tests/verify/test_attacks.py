"""Every corpus case (tests/verify/CORPUS.md) through kyso's verifier.

No attack may ever come out TOTAL_PASSED, no permitted change TOTAL_FAILED; the report lists
the changes each case is about, reports every signature (a broken one is not skipped) and is
JSON-ready. test_corpus.py checks, without kyso, that each file is what it claims to be.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kyso.api.services import Services
from kyso.signer.verify import VerifyPolicy, verify
from tests.verify.corpus import CHANGE_KINDS, WEAK, Case, case_names

NAMES = case_names()
INDICATIONS = {"TOTAL_PASSED", "TOTAL_FAILED", "INDETERMINATE"}

#: signatures and document timestamps each file holds (1 signature unless listed)
SIGNATURES = {
    "clean_b_lta": ["signature", "document_timestamp"],
    "permitted_ltv_extend": ["signature", "document_timestamp"],
    "permitted_fill_then_seal": ["signature", "signature"],
    "shadow_field_appearance_swap": ["signature", "signature"],
}

#: one revision, nothing after the signature
UNMODIFIED = {"clean_b_b", "clean_b_t", "clean_handmade_cms"}

#: attacks that append bytes after the signed revision (the report must say so)
APPENDED = {
    name
    for name in NAMES
    if name.startswith(("isa_", "shadow_", "spoof_"))
    or name in {"tail_data_after_eof", "wrap_moved_sigdict", "wrap_duplicated_keys"}
}


def policy_for(services: Services) -> VerifyPolicy:
    """kyso's default policy for the PKI that signed the corpus: its root and the Government
    root trusted, revocation checked online against the live server (B-B and B-T files carry
    no revocation data: offline they could only be INDETERMINATE/TRY_LATER)."""
    return VerifyPolicy.from_services(services)


@pytest.fixture(scope="module")
def policy(corpus_services: Services) -> VerifyPolicy:
    return policy_for(corpus_services)


@pytest.fixture(scope="module")
def reports() -> dict[str, Any]:
    """Reports computed once per case, on first use (see :func:`_report`)."""
    return {}


def _report(
    name: str, corpus_by_name: dict[str, Case], policy: VerifyPolicy, cache: dict[str, Any]
) -> Any:
    if name not in cache:
        cache[name] = verify(corpus_by_name[name].path, policy)
    return cache[name]


@pytest.mark.parametrize("name", NAMES)
def test_verdict(
    name: str, corpus_by_name: dict[str, Case], policy: VerifyPolicy, reports: dict[str, Any]
) -> None:
    case = corpus_by_name[name]
    report = _report(name, corpus_by_name, policy, reports)
    summary = f"{name}: {report.indication}/{report.sub_indication}"
    assert report.indication in INDICATIONS, summary
    if case.expect == "pass":
        assert report.indication == "TOTAL_PASSED", summary
        assert report.sub_indication is None, summary
        for sig in report.signatures:
            assert sig.indication == "TOTAL_PASSED", (summary, sig.field_name, sig.sub_indication)
        return
    # an attack: never passes, whatever else happens
    assert report.indication != "TOTAL_PASSED", summary
    if case.expect == "fail":
        assert report.indication == "TOTAL_FAILED", summary
    if case.sub_indications:
        assert report.sub_indication in case.sub_indications, summary


@pytest.mark.parametrize("name", NAMES)
def test_changes_are_listed(
    name: str, corpus_by_name: dict[str, Case], policy: VerifyPolicy, reports: dict[str, Any]
) -> None:
    case = corpus_by_name[name]
    report = _report(name, corpus_by_name, policy, reports)
    listed = [(c.kind, c.permitted) for c in report.changes]
    for change in report.changes:
        assert change.kind in CHANGE_KINDS, change
        assert change.page is None or change.page >= 1, change
    kinds = {kind for kind, _ in listed}
    assert case.change_kinds <= kinds, (name, listed)
    if case.expect == "pass":
        assert all(permitted for _, permitted in listed), (name, listed)
    elif case.change_kinds:
        # the change the attack is about is among those refused
        assert any(kind in case.change_kinds and not permitted for kind, permitted in listed), (
            name,
            listed,
        )


@pytest.mark.parametrize("name", NAMES)
def test_every_signature_is_reported(
    name: str, corpus_by_name: dict[str, Case], policy: VerifyPolicy, reports: dict[str, Any]
) -> None:
    report = _report(name, corpus_by_name, policy, reports)
    kinds = [sig.kind for sig in report.signatures]
    if name == "tamper_truncated":
        return  # the signed revision is cut: whatever can still be found
    assert kinds == SIGNATURES.get(name, ["signature"]), (name, kinds)
    for sig in report.signatures:
        assert sig.indication in INDICATIONS
        if report.indication == "TOTAL_PASSED":
            assert sig.indication == "TOTAL_PASSED"


@pytest.mark.parametrize("name", NAMES)
def test_modified_after_signing(
    name: str, corpus_by_name: dict[str, Case], policy: VerifyPolicy, reports: dict[str, Any]
) -> None:
    report = _report(name, corpus_by_name, policy, reports)
    if name in UNMODIFIED:
        assert report.modified_after_signing is False
        assert not report.changes
    if name in APPENDED:
        assert report.modified_after_signing is True
        assert report.signatures[0].modified_after_signing is True


@pytest.mark.parametrize("name", NAMES)
def test_report_is_json_ready(
    name: str, corpus_by_name: dict[str, Case], policy: VerifyPolicy, reports: dict[str, Any]
) -> None:
    report = _report(name, corpus_by_name, policy, reports)
    data = report.to_dict()
    text = json.dumps(data, ensure_ascii=False)
    assert json.loads(text) == data
    assert data["indication"] == report.indication


def test_weak_sha1_is_reported_not_skipped(
    corpus_by_name: dict[str, Case], policy: VerifyPolicy, reports: dict[str, Any]
) -> None:
    """adbe.pkcs7.sha1 is cryptographically intact: it is in the report with its sub-filter,
    the verdict is never an integrity failure, and the weak algorithm is flagged (a
    CRYPTO_CONSTRAINTS_FAILURE sub-indication, or kyso's ``algorithms.weak`` with a warning
    when the policy only warns)."""
    report = _report("weak_sha1_pkcs7", corpus_by_name, policy, reports)
    [sig] = report.signatures
    assert (sig.sub_filter or "").lstrip("/") == "adbe.pkcs7.sha1"
    assert sig.sub_indication not in {"HASH_FAILURE", "SIG_CRYPTO_FAILURE", "FORMAT_FAILURE"}
    assert sig.modified_after_signing is False
    flagged = getattr(getattr(sig, "algorithms", None), "weak", False) is True
    assert flagged or sig.sub_indication in WEAK, sig
    if sig.indication != "TOTAL_PASSED":
        assert sig.sub_indication in WEAK and report.sub_indication in WEAK


def test_signature_level_verdicts_of_integrity_failures(
    corpus_by_name: dict[str, Case], policy: VerifyPolicy, reports: dict[str, Any]
) -> None:
    for name, subs in (
        ("tamper_signed_byte", {"HASH_FAILURE"}),
        ("tamper_signature_value", {"SIG_CRYPTO_FAILURE", "FORMAT_FAILURE"}),
        ("cms_embedded_content_substituted", {"HASH_FAILURE", "FORMAT_FAILURE"}),
    ):
        [sig] = _report(name, corpus_by_name, policy, reports).signatures
        assert sig.indication == "TOTAL_FAILED", (name, sig.sub_indication)
        assert sig.sub_indication in subs, (name, sig.sub_indication)


#: where pdfsig calls the signed bytes and the CMS valid but kyso does not, on purpose
STRICTER_THAN_PDFSIG = {
    "cms_signed_attrs_ber_der": "signed attributes not DER-encoded: NSS re-encodes them and "
    "accepts, pyhanko verifies the bytes as found and refuses; kyso refuses the ambiguity",
    "cms_two_signer_infos": "two SignerInfos: pdfsig checks one (the first after sorting)",
    "wrap_relocated_signed_part": "the signed bytes hash correctly but no longer end a "
    "revision: they were moved, and what a viewer shows is the attacker's",
}


def _pdfsig_decided() -> dict[str, str]:
    from tests.verify import corpus as corpus_module

    return {
        spec.name: spec.pdfsig
        for spec in corpus_module._SPECS
        if spec.pdfsig in ("valid", "mismatch")
    }


@pytest.mark.parametrize("name", sorted(_pdfsig_decided()))
def test_integrity_agrees_with_pdfsig(
    name: str, corpus_by_name: dict[str, Case], policy: VerifyPolicy, reports: dict[str, Any]
) -> None:
    """Where poppler's pdfsig can decide on integrity, kyso agrees, except where it is
    deliberately stricter (listed above and in CORPUS.md). Modifications after signing are
    not integrity: pdfsig does no difference analysis, so those files are "valid" to both
    here and fail only in kyso's change analysis."""
    report = _report(name, corpus_by_name, policy, reports)
    signatures = [s for s in report.signatures if s.kind == "signature"]
    intact = bool(signatures) and all(
        s.integrity.byte_range_ok
        and s.integrity.digest_ok
        and s.integrity.signature_ok
        and not any(r.code == "verify.cms.not_der" for r in s.reasons)
        for s in signatures
    )
    if _pdfsig_decided()[name] == "mismatch":
        assert not intact, report.to_dict("en")
        assert report.indication != "TOTAL_PASSED"
    elif name in STRICTER_THAN_PDFSIG:
        assert not intact and report.indication != "TOTAL_PASSED"
    else:
        assert intact, report.to_dict("en")
