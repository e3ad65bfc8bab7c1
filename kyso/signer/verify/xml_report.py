"""The verification report as an ETSI TS 119 102-2 (v1.2.1) validation report, in XML.

Built from the report model alone (not from live pyhanko objects), with pyhanko's xsdata
bindings of the schema (:mod:`pyhanko.generated.etsi.ts_11910202`), serialised the way
pyhanko's own reporter does, so the elements, their order and their namespaces follow the
schema (``http://uri.etsi.org/19102/v1.2.1#``).

Per signature (and per document timestamp) one ``SignatureValidationReport``:

* ``SignatureIdentifier``: ``id="sig-N"`` (N as numbered in the human reports) and the field
  name as ``DAIdentifier``; the model carries no digest of the signature value, so
  ``DigestAlgAndValue``/``SignatureValue`` are absent (``HashOnly``/``DocHashOnly`` false);
* ``ValidationConstraintsEvaluationReport``: the validation policy, identified by the SHA-256
  of its canonical JSON, and its settings (trust anchors, revocation, weak algorithms,
  annotations) as applied constraints;
* ``ValidationTimeInfo``: validation time and best signature time;
* ``SignatureAttributes``: claimed signing time, signature or document timestamp time,
  reason, location, contact, sub-filter, byte range;
* ``SignerInformation``: a reference to the signer's certificate (a validation object
  identified like pyhanko does, ``vo-certificate-<sha256>``, represented by its digest) and its
  name; ``SignatureQuality``: the PAdES baseline level reached;
* ``SignatureValidationProcess``: Basic, LTVM or LTA, after the level reached;
* ``SignatureValidationStatus``: main indication and sub-indication as ETSI URNs, with the
  certificate chain, the revocation of a revoked signer, the signature algorithm (secure or
  not) and kyso's reason codes as associated report data.

kyso's own identifiers (policy, constraints, levels, reason codes) are URIs under
``https://kyso.vn/validation/``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import re
from typing import Any

from kyso.signer.verify.model import (
    DOC_TIMESTAMP,
    INDETERMINATE,
    TOTAL_FAILED,
    TOTAL_PASSED,
    CertificateInfo,
    PolicyInfo,
    SignatureReport,
    VerificationReport,
)

__all__ = ["NAMESPACE", "NAMESPACES", "render_xml"]

NAMESPACE = "http://uri.etsi.org/19102/v1.2.1#"
NAMESPACES = {
    "vr": NAMESPACE,
    "XAdES": "http://uri.etsi.org/01903/v1.3.2#",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
}
KYSO = "https://kyso.vn/validation/"

MAIN_INDICATION = {
    TOTAL_PASSED: "urn:etsi:019102:mainindication:total-passed",
    TOTAL_FAILED: "urn:etsi:019102:mainindication:total-failed",
    INDETERMINATE: "urn:etsi:019102:mainindication:indeterminate",
}
SUB_INDICATION = "urn:etsi:019102:subindication:{}"
PROCESS = "urn:etsi:019102:validationprocess:{}"
CERTIFICATE_VO = "urn:etsi:019102:validationObject:certificate"
POE_VALIDATION = "urn:etsi:019102:poetype:validation"
APPLIED = "urn:etsi:019102:constraintStatus:applied"

DIGEST_URIS = {
    "sha1": "http://www.w3.org/2000/09/xmldsig#sha1",
    "sha224": "http://www.w3.org/2001/04/xmldsig-more#sha224",
    "sha256": "http://www.w3.org/2001/04/xmlenc#sha256",
    "sha384": "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "sha512": "http://www.w3.org/2001/04/xmlenc#sha512",
    "sha3_256": "http://www.w3.org/2007/05/xmldsig-more#sha3-256",
    "sha3_384": "http://www.w3.org/2007/05/xmldsig-more#sha3-384",
    "sha3_512": "http://www.w3.org/2007/05/xmldsig-more#sha3-512",
}
_RSA_URIS = {
    "sha1": "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
    "sha224": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha224",
    "sha256": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "sha384": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "sha512": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
}
_ECDSA_URIS = {
    "sha1": "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1",
    "sha224": "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha224",
    "sha256": "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "sha384": "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
    "sha512": "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
}
_PSS_URIS = {
    "sha224": "http://www.w3.org/2007/05/xmldsig-more#sha224-rsa-MGF1",
    "sha256": "http://www.w3.org/2007/05/xmldsig-more#sha256-rsa-MGF1",
    "sha384": "http://www.w3.org/2007/05/xmldsig-more#sha384-rsa-MGF1",
    "sha512": "http://www.w3.org/2007/05/xmldsig-more#sha512-rsa-MGF1",
}

# Characters XML 1.0 cannot carry at all (strings from a PDF may hold anything).
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value: str) -> str:
    return _NOT_XML.sub("\ufffd", str(value))


def _token(value: str) -> str:
    """A fragment safe inside a URI: letters, digits, ``-._``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-") or "unknown"


def _digest_name(name: str | None) -> str | None:
    """``sha256`` for "SHA-256", "sha256", "SHA_256"; ``sha3_256`` for "SHA3-256"."""
    if not name:
        return None
    key = re.sub(r"[-_/ ]", "", name.lower())
    if key.startswith("sha3"):
        key = "sha3_" + key[4:]
    return key if key in DIGEST_URIS else None


def _algorithm_uri(sig: SignatureReport) -> str | None:
    """The XML Signature URI of the signature algorithm, else a kyso URI naming it."""
    name = sig.algorithms.signature or sig.integrity.signature_algorithm
    if not name:
        return None
    lowered = name.lower()
    digest = _digest_name(sig.algorithms.digest or sig.integrity.digest_algorithm)
    for candidate in ("sha512", "sha384", "sha256", "sha224", "sha1"):
        if candidate in lowered.replace("-", ""):
            digest = candidate
            break
    table: dict[str, str] | None = None
    if "ed25519" in lowered:
        return "http://www.w3.org/2021/04/xmldsig-more#eddsa-ed25519"
    if "ed448" in lowered:
        return "http://www.w3.org/2021/04/xmldsig-more#eddsa-ed448"
    if "pss" in lowered:
        table = _PSS_URIS
    elif "ecdsa" in lowered:
        table = _ECDSA_URIS
    elif "rsa" in lowered:
        table = _RSA_URIS
    if table is not None and digest in table:
        return table[digest]
    return f"{KYSO}algorithm/{_token(name)}"


def _time(value: dt.datetime) -> Any:
    from xsdata.models.datatype import XmlDateTime

    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return XmlDateTime.from_datetime(value.astimezone(dt.UTC))


def _policy_digest(policy: PolicyInfo) -> bytes:
    canonical = json.dumps(
        policy.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).digest()


def _sha256_bytes(text: str) -> bytes | None:
    cleaned = re.sub(r"[^0-9A-Fa-f]", "", text or "")
    if len(cleaned) != 64:
        return None
    return bytes.fromhex(cleaned)


class _Objects:
    """The validation objects referenced so far (certificates, by SHA-256)."""

    def __init__(self) -> None:
        self.objects: dict[str, Any] = {}

    def certificate(self, cert: CertificateInfo) -> Any | None:
        """A VOReference to ``cert``, adding it as a validation object the first time."""
        from pyhanko.generated.etsi import ts_11910202 as vr
        from pyhanko.generated.etsi import xades
        from pyhanko.generated.w3c import xmldsig_core as ds

        digest = _sha256_bytes(cert.sha256)
        if digest is None:
            return None
        ident = f"vo-certificate-{digest.hex()}"
        if ident not in self.objects:
            self.objects[ident] = vr.ValidationObjectType(
                id=ident,
                object_type=CERTIFICATE_VO,
                validation_object_representation=vr.ValidationObjectRepresentationType(
                    digest_alg_and_value=xades.DigestAlgAndValueType(
                        digest_method=ds.DigestMethod(DIGEST_URIS["sha256"]),
                        digest_value=ds.DigestValue(digest),
                    )
                ),
            )
        return vr.VOReferenceType(voreference=(ident,))


def _constraints_report(policy: PolicyInfo) -> Any:
    from pyhanko.generated.etsi import ts_11910202 as vr
    from pyhanko.generated.etsi import xades
    from pyhanko.generated.w3c import xmldsig_core as ds

    def constraint(name: str, values: list[tuple[str, str]]) -> Any:
        return vr.IndividualValidationConstraintReportType(
            validation_constraint_identifier=f"{KYSO}constraint/{name}",
            validation_constraint_parameter=tuple(
                vr.TypedDataType(type_value=f"{KYSO}parameter/{kind}", value=_text(value))
                for kind, value in values
            ),
            constraint_status=vr.ConstraintStatusType(status=APPLIED),
        )

    anchors = [
        ("trust-anchor-sha256", anchor["sha256"])
        for anchor in policy.trust_anchors
        if anchor.get("sha256")
    ]
    return vr.ValidationConstraintsEvaluationReportType(
        signature_validation_policy=vr.SignatureValidationPolicyType(
            signature_policy_identifier=xades.SignaturePolicyIdentifierType(
                signature_policy_id=xades.SignaturePolicyIdType(
                    sig_policy_id=xades.ObjectIdentifierType(
                        identifier=xades.IdentifierType(value=f"{KYSO}policy"),
                        description="kyso verification policy (SHA-256 of its canonical JSON)",
                    ),
                    sig_policy_hash=xades.DigestAlgAndValueType(
                        digest_method=ds.DigestMethod(DIGEST_URIS["sha256"]),
                        digest_value=ds.DigestValue(_policy_digest(policy)),
                    ),
                )
            ),
            policy_name=_text(
                f"kyso: revocation={policy.revocation}; weak_algorithms="
                f"{policy.weak_algorithms}; annotations={policy.annotations}"
            ),
        ),
        validation_constraint=(
            constraint("trust-anchors", anchors),
            constraint("revocation", [("mode", policy.revocation)]),
            constraint("weak-algorithms", [("action", policy.weak_algorithms)]),
            constraint("annotations-after-signing", [("rule", policy.annotations)]),
            constraint(
                "validation-time",
                [
                    ("time", str(_time(policy.validation_time))),
                    ("given", "true" if policy.time_given else "false"),
                ],
            ),
        ),
    )


def _process(sig: SignatureReport) -> str:
    level = (sig.level or "").upper()
    if level.endswith("LTA"):
        return PROCESS.format("LTA")
    if level.endswith(("LT", "-T")) or sig.timestamp is not None:
        return PROCESS.format("LTVM")
    return PROCESS.format("Basic")


def _attributes(sig: SignatureReport) -> Any:
    from pyhanko.generated.etsi import ts_11910202 as vr

    kwargs: dict[str, Any] = {}
    if sig.claimed_signing_time is not None:
        kwargs["signing_time"] = (
            vr.SASigningTimeType(signed=True, time=_time(sig.claimed_signing_time)),
        )
    if sig.timestamp is not None:
        stamp = vr.SATimestampType(signed=False, time_stamp_value=_time(sig.timestamp.time))
        if sig.kind == DOC_TIMESTAMP:
            kwargs["doc_time_stamp"] = (stamp,)
        else:
            kwargs["signature_time_stamp"] = (stamp,)
    if sig.location:
        kwargs["signature_production_place"] = (
            vr.SASignatureProductionPlaceType(signed=True, address_string=(_text(sig.location),)),
        )
    if sig.reason_text:
        kwargs["reason"] = (vr.SAReasonType(signed=True, reason_element=_text(sig.reason_text)),)
    if sig.contact_info:
        kwargs["contact_info"] = (
            vr.SAContactInfoType(signed=True, contact_info_element=_text(sig.contact_info)),
        )
    if sig.sub_filter:
        kwargs["sub_filter"] = (
            vr.SASubFilterType(signed=True, sub_filter_element=_text(sig.sub_filter.lstrip("/"))),
        )
    byte_range = sig.integrity.byte_range
    if byte_range and len(byte_range) == 4:
        with contextlib.suppress(TypeError, ValueError):
            kwargs["byte_range"] = (tuple(int(v) for v in byte_range),)
    return vr.SignatureAttributesType(**kwargs) if kwargs else None


def _report_data(sig: SignatureReport, ident: str, objects: _Objects) -> Any | None:
    from pyhanko.generated.etsi import ts_11910202 as vr

    kwargs: dict[str, Any] = {}
    signer_ref = objects.certificate(sig.signer) if sig.signer is not None else None
    if signer_ref is not None:
        chain_refs = []
        for cert in sig.chain:
            if sig.signer is not None and cert.sha256 == sig.signer.sha256:
                continue
            ref = objects.certificate(cert)
            if ref is not None:
                chain_refs.append(ref)
        anchor = chain_refs[-1] if sig.trusted and chain_refs else None
        kwargs["certificate_chain"] = vr.CertificateChainType(
            signing_certificate=signer_ref,
            intermediate_certificate=tuple(chain_refs[:-1] if anchor else chain_refs),
            trust_anchor=anchor,
        )
        if anchor is not None:
            kwargs["trust_anchor"] = anchor
        rev = sig.revocation
        if rev.status == "revoked" and rev.revoked_at is not None:
            kwargs["revocation_status_information"] = vr.RevocationStatusInformationType(
                validation_object_id=signer_ref,
                revocation_time=_time(rev.revoked_at),
                revocation_reason=_text(rev.reason) if rev.reason else None,
            )
    algorithm = _algorithm_uri(sig)
    if algorithm is not None:
        kwargs["crypto_information"] = vr.CryptoInformationType(
            validation_object_id=vr.VOReferenceType(voreference=(ident,)),
            algorithm=algorithm,
            secure_algorithm=not sig.algorithms.weak,
        )
    data = [
        vr.TypedDataType(type_value=f"{KYSO}{kind}", value=_text(reason.code))
        for kind, reasons in (("reason", sig.reasons), ("warning", sig.warnings))
        for reason in reasons
    ]
    data += [
        vr.TypedDataType(
            type_value=f"{KYSO}change/{'permitted' if change.permitted else 'forbidden'}",
            value=_text(f"{change.kind} (revision {change.revision})"),
        )
        for change in sig.changes
    ]
    if data:
        kwargs["additional_validation_report_data"] = vr.AdditionalValidationReportDataType(
            report_data=tuple(data)
        )
    return vr.ValidationReportDataType(**kwargs) if kwargs else None


def _signature_report(
    sig: SignatureReport,
    number: int,
    report: VerificationReport,
    objects: _Objects,
    constraints: Any,
) -> Any:
    from pyhanko.generated.etsi import ts_11910202 as vr

    ident = f"sig-{number}"
    best = sig.best_signature_time or report.policy.validation_time
    signer_info = None
    if sig.signer is not None:
        ref = objects.certificate(sig.signer)
        if ref is not None:
            signer_info = vr.SignerInformationType(
                signer_certificate=ref,
                signer=_text(sig.signer.common_name or sig.signer.subject),
            )
    sub = (SUB_INDICATION.format(_token(sig.sub_indication)),) if sig.sub_indication else ()
    data = _report_data(sig, ident, objects)
    return vr.SignatureValidationReportType(
        signature_identifier=vr.SignatureIdentifierType(
            id=ident,
            hash_only=False,
            doc_hash_only=False,
            daidentifier=_text(sig.field_name) if sig.field_name else None,
        ),
        validation_constraints_evaluation_report=constraints,
        validation_time_info=vr.ValidationTimeInfoType(
            validation_time=_time(report.policy.validation_time),
            best_signature_time=vr.POEType(poetime=_time(best), type_of_proof=POE_VALIDATION),
        ),
        signature_attributes=_attributes(sig),
        signer_information=signer_info,
        signature_quality=(
            vr.SignatureQualityType(
                signature_quality_information=(f"{KYSO}level/PAdES-{_token(sig.level)}",)
            )
            if sig.level
            else None
        ),
        signature_validation_process=vr.SignatureValidationProcessType(
            signature_validation_process_id=_process(sig),
            signature_validation_service_policy=f"{KYSO}policy",
        ),
        signature_validation_status=vr.ValidationStatusType(
            main_indication=MAIN_INDICATION.get(sig.indication, MAIN_INDICATION[INDETERMINATE]),
            sub_indication=sub,
            associated_validation_report_data=(data,) if data is not None else (),
        ),
    )


def render_xml(report: VerificationReport) -> str:
    """The report as an ETSI TS 119 102-2 ``ValidationReport`` (UTF-8 XML text)."""
    from pyhanko.generated.etsi import ts_11910202 as vr
    from xsdata.formats.dataclass.serializers import XmlSerializer
    from xsdata.formats.dataclass.serializers.config import SerializerConfig

    objects = _Objects()
    constraints = _constraints_report(report.policy)
    reports = tuple(
        _signature_report(sig, number, report, objects, constraints)
        for number, sig in enumerate(report.signatures, start=1)
    )
    document = vr.ValidationReport(
        signature_validation_report=reports,
        signature_validation_objects=(
            vr.ValidationObjectListType(validation_object=tuple(objects.objects.values()))
            if objects.objects
            else None
        ),
    )
    serializer = XmlSerializer(config=SerializerConfig(indent="  "))
    return str(serializer.render(document, ns_map=NAMESPACES))
