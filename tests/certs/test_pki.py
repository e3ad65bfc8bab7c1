"""The built-in PKI on disk: creation, issuing, revocation, checked with openssl and NSS."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kyso.api.services import Services
from kyso.certs import builders, identity
from kyso.certs.errors import KeyExistsError, PKIError
from kyso.certs.pki import INFRA_LABELS, BuiltinPKI, parse_serial
from tests.conftest import require_tool, run

UID = x509.ObjectIdentifier("0.9.2342.19200300.100.1.1")


def _write(path: Path, *certs: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certs))
    return path


def _issue_person(services: Services, label: str, key_type: str = "rsa-2048"):
    return services.pki.issue(
        kind="person",
        subject=identity.person_subject(
            "Nguyễn Văn An",
            ids=["CCCD:001090000001"],
            title="Chủ tịch",
            organisation="UBND Quận Long Biên",
        ),
        label=label,
        key_type=key_type,
    )


def test_init_creates_a_labelled_dev_pki_with_encrypted_keys(dev_services: Services) -> None:
    pki = dev_services.pki
    data_dir = dev_services.settings.data_dir
    root, issuing, tsa, ocsp = pki.root_cert, pki.issuing_cert, pki.tsa_cert, pki.ocsp_cert
    for cert in (root, issuing, tsa, ocsp):
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert "KHÔNG DÙNG THẬT" in cn  # says it is not a real CA
        assert cert.not_valid_before_utc <= dt.datetime.now(dt.UTC) < cert.not_valid_after_utc
    assert root.issuer == root.subject
    assert issuing.issuer == root.subject
    assert tsa.issuer == ocsp.issuer == issuing.subject
    eku = tsa.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    ocsp_eku = ocsp.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(ocsp_eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    ocsp.extensions.get_extension_for_class(x509.OCSPNoCheck)
    # every private key is in an encrypted PKCS#12 file, none in clear anywhere
    assert set(INFRA_LABELS) <= {p.stem for p in (data_dir / "keys").glob("*.p12")}
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert b"PRIVATE KEY" not in path.read_bytes(), path


def test_init_refuses_to_overwrite(dev_services: Services) -> None:
    with pytest.raises(PKIError):
        dev_services.pki.init(public_url="http://127.0.0.1:8000")


def test_infrastructure_certificates_pass_openssl(dev_services: Services, tmp_path: Path) -> None:
    require_tool("openssl")
    pki = dev_services.pki
    root = _write(tmp_path / "root.pem", pki.root_cert)
    issuing = _write(tmp_path / "issuing.pem", pki.issuing_cert)
    for purpose, cert in (("timestampsign", pki.tsa_cert), ("ocsphelper", pki.ocsp_cert)):
        leaf = _write(tmp_path / f"{purpose}.pem", cert)
        proc = run(
            "openssl", "verify", "-CAfile", root, "-untrusted", issuing, "-purpose", purpose, leaf
        )
        assert proc.stdout.strip().endswith("OK")


@pytest.mark.parametrize("key_type", ["rsa-2048", "rsa-3072", "ec-p256"])
def test_person_certificate_is_vietnamese_and_accepted_by_openssl_and_nss(
    dev_services: Services, tmp_path: Path, key_type: str
) -> None:
    issued = _issue_person(dev_services, f"an-{key_type}", key_type)
    cert = issued.certificate
    pki = dev_services.pki
    # subject as Vietnamese CAs write it
    assert cert.subject.get_attributes_for_oid(UID)[0].value == "CCCD:001090000001"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Nguyễn Văn An"
    assert cert.subject.get_attributes_for_oid(NameOID.TITLE)[0].value == "Chủ tịch"
    who = identity.identity_of(cert)
    assert who.kind == "person" and who.organisation == "UBND Quận Long Biên"
    assert [str(i) for i in who.ids] == ["CCCD:001090000001"]
    key = cert.public_key()
    if key_type.startswith("rsa"):
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == int(key_type[4:])
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.content_commitment and not ku.key_cert_sign
    crl_dp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert crl_dp[0].full_name[0].value == "http://127.0.0.1:8000/crl/issuing.crl"
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert {a.access_location.value for a in aia} == {
        "http://127.0.0.1:8000/ocsp",
        "http://127.0.0.1:8000/ca/issuing.crt",
    }
    assert issued.key_uri == f"file:an-{key_type}"
    assert dev_services.keys.resolve(f"an-{key_type}").certificate == cert

    # openssl: chain and S/MIME signing purpose (what a PDF signer needs)
    root = _write(tmp_path / "root.pem", pki.root_cert)
    issuing = _write(tmp_path / "issuing.pem", pki.issuing_cert)
    leaf = _write(tmp_path / "leaf.pem", cert)
    proc = run(
        "openssl", "verify", "-CAfile", root, "-untrusted", issuing, "-purpose", "smimesign", leaf
    )
    assert proc.stdout.strip().endswith("OK")

    # NSS (what poppler's pdfsig uses): trust the root, check the email-signer usage
    require_tool("certutil")
    require_tool("vfychain")
    db = tmp_path / "nssdb"
    db.mkdir()
    run("certutil", "-N", "-d", f"sql:{db}", "--empty-password")
    run("certutil", "-A", "-d", f"sql:{db}", "-n", "kyso-root", "-t", "C,C,C", "-i", root)
    run("certutil", "-A", "-d", f"sql:{db}", "-n", "kyso-issuing", "-t", ",,", "-i", issuing)
    run("certutil", "-A", "-d", f"sql:{db}", "-n", "leaf", "-t", ",,", "-i", leaf)
    proc = run("certutil", "-V", "-d", f"sql:{db}", "-n", "leaf", "-u", "S")
    assert "certificate is valid" in proc.stdout
    proc = run("vfychain", "-d", f"sql:{db}", "-u", "4", "-a", leaf, "-a", issuing, check=False)
    assert "Chain is good!" in proc.stdout + proc.stderr


def test_org_certificate_carries_tax_code(dev_services: Services) -> None:
    issued = dev_services.pki.issue(
        kind="org",
        subject=identity.organisation_subject("UBND Quận Long Biên", ids=["MST:0101234567"]),
        label="ubnd-long-bien",
    )
    who = identity.identity_of(issued.certificate)
    assert who.kind == "organisation"
    assert who.common_name == "UBND Quận Long Biên"
    assert [str(i) for i in who.ids] == ["MST:0101234567"]
    record = dev_services.pki.state.get(issued.certificate.serial_number)
    assert record is not None and record.kind == "org" and record.label == "ubnd-long-bien"


def test_issue_refuses_existing_label_and_reserved_labels(dev_services: Services) -> None:
    _issue_person(dev_services, "duplicate-label")
    with pytest.raises(KeyExistsError):
        _issue_person(dev_services, "duplicate-label")
    with pytest.raises(PKIError):
        _issue_person(dev_services, "kyso-tsa")


def test_revocation_updates_state_crl_and_ocsp(fresh_services: Services, tmp_path: Path) -> None:
    pki = fresh_services.pki
    good = _issue_person(fresh_services, "still-good").certificate
    bad = _issue_person(fresh_services, "compromised").certificate
    before = x509.load_der_x509_crl(pki.crl_der("issuing"))
    record = pki.revoke(bad.serial_number, reason=x509.ReasonFlags.key_compromise)
    assert record.revoked_at is not None and record.reason == "keyCompromise"
    crl = x509.load_der_x509_crl(pki.crl_der("issuing"))
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > before.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    entry = crl.get_revoked_certificate_by_serial_number(bad.serial_number)
    assert entry is not None
    assert crl.get_revoked_certificate_by_serial_number(good.serial_number) is None
    assert pki.status(bad.serial_number).kind == "revoked"
    assert pki.status(good.serial_number).kind == "good"
    assert pki.status(12345).kind == "unknown"
    with pytest.raises(PKIError):
        pki.revoke(bad.serial_number, reason=x509.ReasonFlags.superseded)
    with pytest.raises(PKIError):
        pki.revoke(999999, reason=x509.ReasonFlags.superseded)

    # openssl refuses the revoked certificate with the CRL, accepts the other one
    root = _write(tmp_path / "root.pem", pki.root_cert)
    issuing = _write(tmp_path / "issuing.pem", pki.issuing_cert)
    crl_pem = tmp_path / "crl.pem"
    crl_pem.write_bytes(crl.public_bytes(Encoding.PEM))
    args = [
        "openssl",
        "verify",
        "-crl_check",
        "-CRLfile",
        crl_pem,
        "-CAfile",
        root,
        "-untrusted",
        issuing,
    ]
    assert run(*args, _write(tmp_path / "good.pem", good)).returncode == 0
    proc = run(*args, _write(tmp_path / "bad.pem", bad), check=False)
    assert proc.returncode != 0 and "certificate revoked" in proc.stdout + proc.stderr


def test_state_is_shared_by_a_second_view_of_the_directory(fresh_services: Services) -> None:
    issued = _issue_person(fresh_services, "persisted")
    again = BuiltinPKI(fresh_services.settings.pki_dir, fresh_services.file_keys)
    labels = [r.label for r in again.records()]
    assert "persisted" in labels and labels[:4] == list(INFRA_LABELS)
    assert again.root_cert == fresh_services.pki.root_cert
    assert again.status(issued.certificate.serial_number).kind == "good"


def test_parse_serial_accepts_the_usual_spellings() -> None:
    assert parse_serial("3A:F0") == 0x3AF0
    assert parse_serial("0x3af0") == 0x3AF0
    assert parse_serial("3AF0") == 0x3AF0
    assert parse_serial("d:15088") == 15088
    with pytest.raises(PKIError):
        parse_serial("not-a-serial")


def test_missing_pki_is_a_clear_error(tmp_path: Path, dev_services: Services) -> None:
    empty = BuiltinPKI(tmp_path / "nothing", dev_services.file_keys)
    with pytest.raises(PKIError, match="kyso pki init"):
        _ = empty.root_cert


def test_every_state_change_lands_in_a_hash_chained_trail(fresh_services: Services) -> None:
    import sqlite3

    pki = fresh_services.pki
    cert = pki.issue(
        kind="org",
        subject=identity.organisation_subject("Sở Tư pháp", ids=["MST:0101234569"]),
        label="so-tu-phap",
        actor="cli:van-thu",
    ).certificate
    pki.revoke(cert.serial_number, reason=x509.ReasonFlags.superseded, actor="cli:admin")
    events = pki.state.events()
    actions = [e.action for e in events]
    assert actions[0] == "init" and actions.count("issue") == 5 and "revoke" in actions
    serial = format(cert.serial_number, "X")
    issued = next(e for e in events if e.action == "issue" and e.serial == serial)
    assert issued.actor == "cli:van-thu" and "so-tu-phap" in issued.detail
    revoked = next(e for e in events if e.action == "revoke")
    assert revoked.actor == "cli:admin" and revoked.detail == "superseded"
    # re-signing the CRL after the revocation is recorded too
    assert events[-1].action == "crl"
    assert pki.state.verify_events() is None
    # an edit to any entry breaks the chain from that entry on
    with sqlite3.connect(pki.directory / "state.sqlite3") as db:
        db.execute("UPDATE events SET actor='someone-else' WHERE seq=?", (issued.seq,))
    assert pki.state.verify_events() == issued.seq
    with sqlite3.connect(pki.directory / "state.sqlite3") as db:
        db.execute("UPDATE events SET actor='cli:van-thu' WHERE seq=?", (issued.seq,))
        db.execute("DELETE FROM events WHERE seq=2")
    assert pki.state.verify_events() == 3


def test_check_refuses_tampered_files_and_unfit_services(fresh_services: Services) -> None:
    pki = fresh_services.pki
    pki.check()  # a fresh PKI is fit
    # someone with write access to pki/ but without the passphrase swaps the root file
    other = builders.build_dev_pki(now=dt.datetime.now(dt.UTC))
    original = pki.root_path.read_bytes()
    pki.root_path.write_bytes(other.root_cert.public_bytes(Encoding.PEM))
    with pytest.raises(PKIError, match=r"root-ca\.pem"):
        BuiltinPKI(pki.directory, fresh_services.file_keys).check()
    pki.root_path.write_bytes(original)
    pki.check()
    # a revoked OCSP certificate must not keep signing responses
    pki.revoke(pki.ocsp_cert.serial_number, reason=x509.ReasonFlags.key_compromise)
    with pytest.raises(PKIError, match="ocsp"):
        pki.check()
    # ... until it is renewed: new key, new certificate, old key file retired
    old_serial = pki.ocsp_cert.serial_number
    new = pki.renew_service("ocsp", actor="cli:admin")
    assert new.serial_number != old_serial
    assert pki.ocsp_cert == new
    assert fresh_services.file_keys.load("kyso-ocsp").certificate == new
    assert new.public_key() != other.ocsp_cert.public_key()
    retired = list((fresh_services.settings.keys_dir).glob("kyso-ocsp.p12.*.retired"))
    assert len(retired) == 1 and format(old_serial, "X") in retired[0].name
    pki.check()
    assert any(
        e.action == "issue" and e.serial == format(new.serial_number, "X")
        for e in pki.state.events()
    )
    # the new responder signs, and says the old responder certificate is revoked
    responder = pki.ocsp_responder()
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(
            x509.load_pem_x509_certificate(pki.state.get(old_serial).pem.encode()),
            pki.issuing_cert,
            hashes.SHA1(),
        )
        .build()
    )
    response = ocsp.load_der_ocsp_response(responder.respond(request.public_bytes(Encoding.DER)))
    assert response.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert response.certificates == [new]


def test_renewed_tsa_key_signs_tokens(fresh_services: Services) -> None:
    from kyso.certs.tsa import MemorySerialSource, TimeStampAuthority, TSAPolicy

    old = fresh_services.pki.tsa_cert
    new = fresh_services.pki.renew_service("tsa")
    assert new.public_key() != old.public_key()
    ext = new.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert ext.critical and list(ext.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    tsa = TimeStampAuthority(
        key=fresh_services.pki.tsa_key(), policy=TSAPolicy(), serials=MemorySerialSource()
    )
    assert tsa.respond(b"garbage")  # builds (the key and certificate match)
    with pytest.raises(PKIError):
        fresh_services.pki.renew_service("root")  # type: ignore[arg-type]


def test_a_failed_init_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import make_settings

    services = Services(make_settings(tmp_path / "data"))

    def broken(*args: object, **kwargs: object) -> bytes:
        raise OSError("disk full")

    monkeypatch.setattr("kyso.certs.pki.write_atomic", broken)
    with pytest.raises(OSError):
        services.ensure_pki()
    assert not services.pki.exists()
    assert not list(services.settings.keys_dir.glob("*.p12"))
    monkeypatch.undo()
    retry = Services(make_settings(tmp_path / "data"))
    assert retry.ensure_pki() is True  # init can simply be run again
    retry.pki.check()


def test_a_stale_crl_never_replaces_a_newer_one(fresh_services: Services) -> None:
    """A server refreshing the CRL while 'kyso pki revoke' runs in another process must not
    publish a CRL that lacks the new revocation."""
    pki = fresh_services.pki
    victim = _issue_person(fresh_services, "crl-race").certificate
    server_view = BuiltinPKI(pki.directory, fresh_services.file_keys)
    stale = server_view.state.crl_snapshot("issuing")  # the server read the state first ...
    pki.revoke(victim.serial_number, reason=x509.ReasonFlags.key_compromise)  # ... then revoke
    server_view.state.crl_snapshot = lambda issuer: stale  # type: ignore[method-assign]
    server_view._refresh_crl("issuing", force=True)  # ... then the server writes its CRL
    published = x509.load_der_x509_crl(pki.crl_path("issuing").read_bytes())
    assert published.get_revoked_certificate_by_serial_number(victim.serial_number) is not None
