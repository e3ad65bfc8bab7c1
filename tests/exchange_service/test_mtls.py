"""Delivery to a peer that requires mutual TLS (``KYSO_EXCHANGE_CLIENT_CERT`` / ``CLIENT_KEY``
/ ``CA_BUNDLE``): instance B's API served over HTTPS by uvicorn with ``CERT_REQUIRED``, and a
private CA for both the server and the client certificate.  Without its client certificate
instance A's delivery is refused in the TLS handshake and stays queued (a transient failure,
retried); with it, the document is delivered and answered 01."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kyso.api import exchange
from kyso.api.app import create_app
from tests.conftest import free_port
from tests.exchange_service.conftest import A1, B1, Instance


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    usage: x509.ObjectIdentifier | None = None,
    ip: str | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


def _write(folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey):
    cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture()
def tls_b(pair: tuple[Instance, Instance], tmp_path: Path) -> Iterator[dict[str, Path | str]]:
    """Instance B's API on HTTPS with client certificates required; A's peer entry for B1
    points there for the test (put back afterwards)."""
    a, b = pair
    ca, ca_key = _issue("kyso test mTLS CA", None)
    server, server_key = _issue(
        "127.0.0.1", (ca.subject, ca_key), usage=ExtendedKeyUsageOID.SERVER_AUTH, ip="127.0.0.1"
    )
    client, client_key = _issue(
        "kyso instance A", (ca.subject, ca_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    ca_path, _ = _write(tmp_path, "ca", ca, ca_key)
    server_cert, server_key_path = _write(tmp_path, "server", server, server_key)
    client_cert, client_key_path = _write(tmp_path, "client", client, client_key)
    port = free_port()
    config = uvicorn.Config(
        create_app(services=b.services),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        ssl_certfile=str(server_cert),
        ssl_keyfile=str(server_key_path),
        ssl_ca_certs=str(ca_path),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "TLS server did not start"
        time.sleep(0.02)
    [peer] = [p for p in exchange.list_peers(a.services) if p["code"] == B1]
    cert_pem = b.seal_certificate_pem(B1)
    exchange.add_peer(
        a.services,
        B1,
        f"https://127.0.0.1:{port}/api/v1/exchange",
        cert_pem,
        name=peer["name"],
        actor="test:mtls",
    )
    plain = exchange.exchange_settings(a.services)
    try:
        yield {
            "ca": ca_path,
            "client_cert": client_cert,
            "client_key": client_key_path,
        }
    finally:
        a.services.__dict__["exchange_settings"] = plain
        exchange.add_peer(
            a.services, B1, peer["endpoint"], cert_pem, name=peer["name"], actor="test:mtls"
        )
        uv.should_exit = True
        thread.join(15)


def test_delivery_needs_the_client_certificate(
    pair: tuple[Instance, Instance], tls_b: dict[str, Path]
) -> None:
    a, b = pair
    plain = exchange.exchange_settings(a.services)
    doc = a.sealed_document(A1)
    [sent] = exchange.send(a.services, a.user(A1, "clerk"), doc, [B1])

    # Trusting B's server certificate is not enough: B asks for A's client certificate.
    a.services.__dict__["exchange_settings"] = plain.model_copy(update={"ca_bundle": tls_b["ca"]})
    refused = exchange.deliver(a.services, sent["id"], force=True)
    assert refused["state"] == "queued", refused
    # (TLS 1.3: the server checks the client's certificate after the handshake and drops the
    # connection, which httpx reports as a protocol error: transient, retried)
    assert refused["error"] and refused["error"].split(":")[0] in (
        "RemoteProtocolError",
        "ConnectError",
        "ReadError",
    ), refused
    assert b.count(exchange.incoming, edxml_document_id=sent["edxml_document_id"]) == 0

    # Without the private CA, A does not trust B's server certificate: refused as well.
    a.services.__dict__["exchange_settings"] = plain.model_copy(
        update={"client_cert": tls_b["client_cert"], "client_key": tls_b["client_key"]}
    )
    untrusted = exchange.deliver(a.services, sent["id"], force=True)
    assert untrusted["state"] == "queued", untrusted
    assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted["error"]), untrusted

    a.services.__dict__["exchange_settings"] = plain.model_copy(
        update={
            "client_cert": tls_b["client_cert"],
            "client_key": tls_b["client_key"],
            "ca_bundle": tls_b["ca"],
        }
    )
    done = exchange.deliver(a.services, sent["id"], force=True)
    assert done["state"] == "delivered", done
    shown = exchange.message(a.services, a.user(A1, "clerk"), sent["id"])
    assert [s["code"] for s in shown["statuses"]] == ["01"]
    assert b.count(exchange.incoming, edxml_document_id=sent["edxml_document_id"]) == 1
