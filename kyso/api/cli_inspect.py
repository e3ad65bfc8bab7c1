"""``kyso cert`` and ``kyso trust``: look at certificates and manage trust anchors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from rich.console import Console

from kyso.api.services import Services
from kyso.api.settings import get_settings
from kyso.certs.identity import identity_of
from kyso.certs.trust import PRESETS, format_fingerprint, load_certificates
from kyso.errors import KysoError
from kyso.i18n import set_locale, t

cert_app = typer.Typer(help="Inspect certificates.", no_args_is_help=True)
trust_app = typer.Typer(help="Trust anchors: presets and the operator's own.", no_args_is_help=True)

# data (names, subjects, fingerprints) is printed as is: no markup, no emoji codes (":CD:")
out = Console(soft_wrap=True, markup=False, emoji=False, highlight=False)
err = Console(stderr=True, soft_wrap=True, markup=False, emoji=False, highlight=False)


def _services() -> Services:
    settings = get_settings()
    set_locale(settings.locale)
    return Services(settings)


def _fail(exc: KysoError) -> typer.Exit:
    err.print(f"{t('cli.error')} {exc.message()}", highlight=False)
    return typer.Exit(1)


def _ext(cert: x509.Certificate, cls: type[Any]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def describe(cert: x509.Certificate) -> dict[str, Any]:
    """Everything a clerk or an auditor wants to know about a certificate, JSON-ready."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key_text = f"RSA-{key.key_size}"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key_text = f"ECDSA {key.curve.name}"
    else:
        key_text = type(key).__name__
    ku = _ext(cert, x509.KeyUsage)
    usages = []
    if ku is not None:
        for name in ("digital_signature", "content_commitment", "key_cert_sign", "crl_sign"):
            if getattr(ku, name):
                usages.append(name)
    eku = _ext(cert, x509.ExtendedKeyUsage)
    aia = _ext(cert, x509.AuthorityInformationAccess)
    crl = _ext(cert, x509.CRLDistributionPoints)
    policies = _ext(cert, x509.CertificatePolicies)
    return {
        "identity": identity_of(cert).as_dict(),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "X"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "key": key_text,
        "signature_hash": cert.signature_hash_algorithm.name
        if cert.signature_hash_algorithm
        else None,
        "key_usage": usages,
        "extended_key_usage": [o.dotted_string for o in eku] if eku else [],
        "policies": [p.policy_identifier.dotted_string for p in policies] if policies else [],
        "ocsp": [
            a.access_location.value
            for a in aia or ()
            if a.access_method.dotted_string.endswith(".1")
        ],
        "crl": [n.value for dp in crl or () for n in dp.full_name or ()],
        "sha256": format_fingerprint(cert.fingerprint(hashes.SHA256()).hex()),
    }


@cert_app.command("show")
def cert_show(
    path: Annotated[Path, typer.Argument(help="Certificate file: PEM (bundle), DER or .p7b")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Show who a certificate names (Vietnamese identity: name, title, agency, CCCD/MST...)."""
    set_locale(get_settings().locale)
    try:
        certs = load_certificates(path)
    except KysoError as exc:
        raise _fail(exc) from None
    described = [describe(c) for c in certs]
    if as_json:
        print(json.dumps(described, ensure_ascii=False, indent=2))
        return
    for n, d in enumerate(described):
        if n:
            out.print()
        who = d["identity"]
        rows = [
            ("cert.name", who["common_name"]),
            ("cert.kind", t(f"cert.kind.{who['kind']}")),
            ("cert.title", who["title"]),
            ("cert.organisation", who["organisation"]),
            ("cert.unit", who["unit"]),
            ("cert.locality", ", ".join(x for x in (who["locality"], who["province"]) if x)),
            ("cert.ids", ", ".join(i["text"] for i in who["ids"])),
            ("cert.issuer", d["issuer"]),
            ("cert.serial", d["serial"]),
            ("cert.validity", f"{d['not_before'][:10]} → {d['not_after'][:10]}"),
            ("cert.key", d["key"]),
            ("cert.sha256", d["sha256"]),
        ]
        for key, value in rows:
            if value:
                out.print(f"{t(key) + ':':22} {value}", highlight=False)


@trust_app.command("list")
def trust_list(
    preset: Annotated[
        list[str] | None, typer.Option(help=f"Preset(s): {', '.join(PRESETS)}")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List trust anchors: the presets asked for (default: all) plus the operator's own."""
    services = _services()
    try:
        store = services.trust_store(*(preset or PRESETS))
    except KysoError as exc:
        raise _fail(exc) from None
    anchors = [a.as_dict() for a in store.anchors()]
    if as_json:
        print(json.dumps(anchors, ensure_ascii=False, indent=2))
        return
    for a in anchors:
        out.print(f"{format_fingerprint(a['fingerprint'])}  {a['subject']}", highlight=False)


@trust_app.command("add")
def trust_add(
    path: Annotated[Path, typer.Argument(help="CA certificate(s): PEM bundle, DER or .p7b")],
) -> None:
    """Add trust anchors from a file (kept in the data directory, used by every trust store)."""
    services = _services()
    try:
        added = services.add_trust_anchors(path)
    except KysoError as exc:
        raise _fail(exc) from None
    for cert in added:
        out.print(t("cli.trust.added", subject=cert.subject.rfc4514_string()), highlight=False)
