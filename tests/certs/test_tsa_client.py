"""The TSA client against real HTTP servers on 127.0.0.1 wrapping our TimeStampAuthority."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from typing import cast

import pytest
from asn1crypto import keys, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter
from pyhanko.sign import signers
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore

from kyso.certs.builders import (
    PKIMaterial,
    build_dev_pki,
    build_issuing_ca,
    build_signer_certificate,
    build_tsa_certificate,
    dev_name,
    new_private_key,
)
from kyso.certs.errors import TSAError
from kyso.certs.trust import TrustStore
from kyso.certs.tsa import DEV_TSA_POLICY_OID, MemorySerialSource, TimeStampAuthority, TSAPolicy
from kyso.certs.tsa_client import (
    REPLY_CONTENT_TYPE,
    BadReplyError,
    FailoverTimeStamper,
    TSAClient,
    build_request,
    check_response,
)
from tests.certs.test_tsa import SoftKey, tsa_key

OTHER_POLICY = "1.3.6.1.4.1.55555.2.2"
DIGEST = hashlib.sha256(b"C\xf4ng v\xe4n 7816/VPCP-TT\xd0\xd0").digest()

Behaviour = Callable[[bytes, dict[str, str]], tuple[int, str, bytes]]


# ---------------------------------------------------------------------------------------------
# Tiny HTTP servers


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, behaviour: Behaviour) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.behaviour = behaviour
        self.hits = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/tsa"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.hits += 1
        status, content_type, payload = self.server.behaviour(body, dict(self.headers))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(payload)  # the client may have given up (time-out tests)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Servers:
    ok: _Server
    slow: _Server
    error: _Server
    bad_imprint: _Server
    bad_nonce: _Server
    rejecting: _Server
    forged: _Server
    html: _Server
    no_certs: _Server
    auth: _Server
    foreign: _Server
    down_url: str


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/tsa"


@pytest.fixture(scope="module")
def pki() -> PKIMaterial:
    return build_dev_pki(
        now=dt.datetime.now(dt.UTC), ca_key_type="ec-p256", service_key_type="ec-p256"
    )


@pytest.fixture(scope="module")
def foreign_pki() -> PKIMaterial:
    """A brand-new, unrelated PKI — with the very same names as ``pki``."""
    return build_dev_pki(
        now=dt.datetime.now(dt.UTC), ca_key_type="ec-p256", service_key_type="ec-p256"
    )


@pytest.fixture(scope="module")
def servers(pki: PKIMaterial, foreign_pki: PKIMaterial) -> Iterator[Servers]:
    policy = TSAPolicy(accepted_policies=frozenset({DEV_TSA_POLICY_OID, OTHER_POLICY}))
    tsa = TimeStampAuthority(key=tsa_key(pki), policy=policy, serials=MemorySerialSource())
    refusing = TimeStampAuthority(
        key=tsa_key(pki),
        policy=TSAPolicy(clock_synchronised=False),
        serials=MemorySerialSource(),
    )
    # Signs with a key that does not belong to the certificate it embeds.
    forger = TimeStampAuthority(
        key=SoftKey(ec.generate_private_key(ec.SECP256R1()), pki.tsa_cert, ()),
        policy=policy,
        serials=MemorySerialSource(),
    )

    # An unrelated PKI with the same names: what an attacker on the network path would use.
    foreign = TimeStampAuthority(
        key=tsa_key(foreign_pki), policy=policy, serials=MemorySerialSource()
    )

    def reply(authority: TimeStampAuthority, body: bytes) -> tuple[int, str, bytes]:
        return 200, REPLY_CONTENT_TYPE, authority.respond(body)

    def ok(body: bytes, _h: dict[str, str]) -> tuple[int, str, bytes]:
        return reply(tsa, body)

    def slow(body: bytes, _h: dict[str, str]) -> tuple[int, str, bytes]:
        time.sleep(1.0)
        return reply(tsa, body)

    def error(_b: bytes, _h: dict[str, str]) -> tuple[int, str, bytes]:
        return 500, "text/plain", b"internal error"

    def edited(**changes: object) -> Behaviour:
        def behaviour(body: bytes, _h: dict[str, str]) -> tuple[int, str, bytes]:
            req = tsp.TimeStampReq.load(body)
            for name, value in changes.items():
                req[name] = value(req) if callable(value) else value
            return reply(tsa, req.dump(force=True))

        return behaviour

    other_imprint = {
        "hash_algorithm": {"algorithm": "sha256"},
        "hashed_message": hashlib.sha256(b"something else").digest(),
    }

    def auth(body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        expected = "Basic " + base64.b64encode("van-thu:mát-khẩu".encode()).decode()
        if headers.get("Authorization") != expected:
            return 401, "text/plain", b"unauthorised"
        return reply(tsa, body)

    made = {
        "ok": ok,
        "slow": slow,
        "error": error,
        "bad_imprint": edited(message_imprint=other_imprint),
        "bad_nonce": edited(nonce=lambda r: r["nonce"].native + 1),
        "rejecting": lambda b, _h: reply(refusing, b),
        "forged": lambda b, _h: reply(forger, b),
        "html": lambda b, _h: (200, "text/html", b"<html>maintenance</html>"),
        "no_certs": edited(cert_req=False),
        "auth": auth,
        "foreign": lambda b, _h: reply(foreign, b),
    }
    running = {name: _Server(behaviour) for name, behaviour in made.items()}
    threads = [
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        for s in running.values()
    ]
    for th in threads:
        th.start()
    yield Servers(**running, down_url=_closed_port_url())
    for s in running.values():
        s.shutdown()
        s.server_close()


def _client(*urls: str, **kwargs: object) -> TSAClient:
    options: dict[str, object] = {"timeout": 0.3, "retries": 1, "backoff": 0.01}
    options.update(kwargs)
    return TSAClient(urls, **options)  # type: ignore[arg-type]


def _imprint(token_reply_info: tsp.TSTInfo) -> bytes:
    return token_reply_info["message_imprint"]["hashed_message"].native


# ---------------------------------------------------------------------------------------------
# Fail-over


def test_fails_over_to_working_tsa(servers: Servers) -> None:
    before = (servers.slow.hits, servers.error.hits, servers.ok.hits)
    client = _client(servers.down_url, servers.slow.url, servers.error.url, servers.ok.url)
    reply = client.timestamp(DIGEST)
    assert reply.url == servers.ok.url
    assert _imprint(reply.tst_info) == DIGEST
    assert reply.tst_info["policy"].dotted == DEV_TSA_POLICY_OID
    assert abs(reply.gen_time - dt.datetime.now(dt.UTC)) < dt.timedelta(seconds=30)
    assert reply.serial_number >= 1
    assert reply.token["content_type"].native == "signed_data"
    # timeouts and 5xx are retried (retries=1 → 2 attempts each); the good one is asked once
    after = (servers.slow.hits, servers.error.hits, servers.ok.hits)
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 2, 1]


async def test_async_fails_over(servers: Servers) -> None:
    client = _client(servers.down_url, servers.error.url, servers.ok.url)
    reply = await client.async_timestamp(hashlib.sha384(b"x").digest(), "sha384")
    assert reply.url == servers.ok.url
    assert reply.tst_info["message_imprint"]["hash_algorithm"]["algorithm"].native == "sha384"


def test_all_bad_lists_every_url(servers: Servers) -> None:
    bad = [
        servers.down_url,
        servers.slow.url,
        servers.error.url,
        servers.bad_imprint.url,
        servers.bad_nonce.url,
        servers.rejecting.url,
        servers.forged.url,
        servers.html.url,
        servers.auth.url,
    ]
    imprint_hits = servers.bad_imprint.hits
    with pytest.raises(TSAError) as err:
        _client(*bad).timestamp(DIGEST)
    text = str(err.value)
    for url in bad:
        assert url in text
    listing = text.split("answered usefully: ", 1)[1]
    reasons = dict(part.split(": ", 1) for part in listing.split("; "))
    assert reasons[servers.down_url].startswith("connection failed")
    assert reasons[servers.slow.url] == "timed out (2 attempts)"
    assert reasons[servers.error.url] == "HTTP 500 (2 attempts)"
    assert "another message imprint" in reasons[servers.bad_imprint.url]
    assert "nonce" in reasons[servers.bad_nonce.url]
    assert "refused" in reasons[servers.rejecting.url]
    assert "time_not_available" in reasons[servers.rejecting.url]
    assert "signature does not verify" in reasons[servers.forged.url]
    assert "text/html" in reasons[servers.html.url]
    assert reasons[servers.auth.url] == "HTTP 401"
    # A wrong answer is not retried: the next URL is asked at once.
    assert servers.bad_imprint.hits == imprint_hits + 1
    # The error speaks Vietnamese too.
    assert "dấu thời gian" in err.value.message("vi")


async def test_async_all_bad(servers: Servers) -> None:
    with pytest.raises(TSAError) as err:
        await _client(servers.error.url, servers.bad_nonce.url).async_timestamp(DIGEST)
    assert servers.error.url in str(err.value) and servers.bad_nonce.url in str(err.value)


# ---------------------------------------------------------------------------------------------
# Options


def test_policy_request(servers: Servers) -> None:
    reply = _client(servers.ok.url, policy_oid=OTHER_POLICY).timestamp(DIGEST)
    assert reply.tst_info["policy"].dotted == OTHER_POLICY
    with pytest.raises(TSAError, match="unaccepted_policy"):
        _client(servers.ok.url, policy_oid="1.2.3.4").timestamp(DIGEST)


def test_known_tsa_certificate_for_tokens_without_certs(servers: Servers, pki: PKIMaterial) -> None:
    with pytest.raises(TSAError, match="neither embedded nor known"):
        _client(servers.no_certs.url).timestamp(DIGEST)
    reply = _client(servers.no_certs.url, tsa_certificates=[pki.tsa_cert]).timestamp(DIGEST)
    assert not reply.token["content"]["certificates"]


def test_basic_auth(servers: Servers) -> None:
    reply = _client(servers.auth.url, auth=("van-thu", "mát-khẩu")).timestamp(DIGEST)
    assert reply.url == servers.auth.url


def test_request_validation() -> None:
    with pytest.raises(TSAError):
        build_request(b"\x00" * 20, "sha1")
    with pytest.raises(TSAError):
        build_request(b"\x00" * 31)
    req = build_request(DIGEST)
    assert req["cert_req"].native is True and req["nonce"].native.bit_length() == 64
    with pytest.raises(TSAError):
        TSAClient([])


# ---------------------------------------------------------------------------------------------
# Trust: pinning the TSA


def _token_from(
    key: SoftKey, *, clock: Callable[[], dt.datetime] | None = None
) -> tuple[tsp.TimeStampReq, bytes]:
    authority = TimeStampAuthority(
        key=key,
        policy=TSAPolicy(),
        serials=MemorySerialSource(),
        clock=clock or (lambda: dt.datetime.now(dt.UTC)),
    )
    request = build_request(DIGEST)
    return request, authority.respond(request.dump())


def test_untrusted_pki_is_refused(pki: PKIMaterial, foreign_pki: PKIMaterial) -> None:
    request, response = _token_from(tsa_key(foreign_pki))
    # Without trust, any PKI passes: only integrity is checked (documented behaviour).
    check_response(response, request)
    # Same names as our PKI, other keys: refused.
    with pytest.raises(BadReplyError, match="is not trusted") as err:
        check_response(response, request, trust=[pki.root_cert])
    assert "CN=kyso Dev TSA" in str(err.value)
    assert "no path to a trust anchor" in str(err.value)
    with pytest.raises(BadReplyError, match="is not trusted"):
        check_response(response, request, trust=[pki.issuing_cert, pki.tsa_cert])
    # Its own root (cryptography or asn1crypto), or several roots including it: accepted.
    check_response(response, request, trust=[foreign_pki.root_cert])
    check_response(
        response,
        request,
        trust=[asn1_x509.Certificate.load(foreign_pki.root_cert.public_bytes(Encoding.DER))],
    )
    check_response(response, request, trust=TrustStore([pki.root_cert, foreign_pki.root_cert]))
    # An empty trust set trusts nothing.
    with pytest.raises(BadReplyError, match="is not trusted"):
        check_response(response, request, trust=[])


def test_pinning_the_tsa_or_its_ca(pki: PKIMaterial, foreign_pki: PKIMaterial) -> None:
    request, response = _token_from(tsa_key(pki))
    check_response(response, request, trust=[pki.tsa_cert])
    check_response(response, request, trust=[pki.issuing_cert])
    with pytest.raises(BadReplyError, match="is not trusted"):
        check_response(response, request, trust=[foreign_pki.tsa_cert])
    with pytest.raises(BadReplyError, match="is not trusted"):
        check_response(response, request, trust=[foreign_pki.issuing_cert])


def test_pinned_certificate_serves_tokens_without_certs(servers: Servers, pki: PKIMaterial) -> None:
    # The pinned TSA certificate is also where the signer is looked for.
    reply = _client(servers.no_certs.url, trust=[pki.tsa_cert]).timestamp(DIGEST)
    assert not reply.token["content"]["certificates"]
    # Chaining to the root needs the intermediate: from tsa_certificates, which are not a pin.
    with pytest.raises(TSAError, match="is not trusted"):
        _client(
            servers.no_certs.url, tsa_certificates=[pki.tsa_cert], trust=[pki.root_cert]
        ).timestamp(DIGEST)
    _client(
        servers.no_certs.url,
        tsa_certificates=[pki.tsa_cert, pki.issuing_cert],
        trust=[pki.root_cert],
    ).timestamp(DIGEST)


def test_chain_rules(pki: PKIMaterial) -> None:
    now = dt.datetime.now(dt.UTC)

    def tsa_under(
        issuer_cert: x509.Certificate,
        issuer_key: CertificateIssuerPrivateKeyTypes,
        *chain: x509.Certificate,
    ) -> SoftKey:
        key = new_private_key("ec-p256")
        cert = build_tsa_certificate(
            key.public_key(),
            dev_name("Rogue TSA"),
            issuer_cert=issuer_cert,
            issuer_key=issuer_key,
            now=now,
        )
        return SoftKey(key, cert, (issuer_cert, *chain))

    # An end-entity (the OCSP responder) is not a CA, even under our root.
    request, response = _token_from(tsa_under(pki.ocsp_cert, pki.ocsp_key, pki.issuing_cert))
    check_response(response, request)
    with pytest.raises(BadReplyError, match=r"OCSP Responder.* is not a CA"):
        check_response(response, request, trust=[pki.root_cert])

    # The issuing CA has pathLenConstraint 0: no sub-CA under it.
    sub_key = new_private_key("ec-p256")
    sub_ca = build_issuing_ca(
        sub_key.public_key(),
        dev_name("Sub CA"),
        issuer_cert=pki.issuing_cert,
        issuer_key=pki.issuing_key,
        now=now,
    )
    request, response = _token_from(tsa_under(sub_ca, sub_key, pki.issuing_cert))
    with pytest.raises(BadReplyError, match="exceeds its pathLenConstraint"):
        check_response(response, request, trust=[pki.root_cert])
    with pytest.raises(BadReplyError, match="exceeds its pathLenConstraint"):
        check_response(response, request, trust=[pki.issuing_cert])  # anchors too
    check_response(response, request, trust=[sub_ca])

    # An intermediate not yet valid at genTime.
    late_key = new_private_key("ec-p256")
    late_ca = build_issuing_ca(
        late_key.public_key(),
        dev_name("Late CA"),
        issuer_cert=pki.root_cert,
        issuer_key=pki.root_key,
        now=now + dt.timedelta(days=2),
    )
    request, response = _token_from(tsa_under(late_ca, late_key), clock=lambda: now)
    with pytest.raises(BadReplyError, match=r"Late CA.* was not valid at genTime"):
        check_response(response, request, trust=[pki.root_cert])


def test_failover_skips_untrusted_tsa(servers: Servers, pki: PKIMaterial) -> None:
    foreign_hits, ok_hits = servers.foreign.hits, servers.ok.hits
    reply = _client(servers.foreign.url, servers.ok.url, trust=[pki.root_cert]).timestamp(DIGEST)
    assert reply.url == servers.ok.url
    # A forged answer is not retried.
    assert (servers.foreign.hits, servers.ok.hits) == (foreign_hits + 1, ok_hits + 1)

    with pytest.raises(TSAError) as err:
        _client(servers.foreign.url, trust=[pki.root_cert]).timestamp(DIGEST)
    assert f"{servers.foreign.url}: TSA certificate CN=kyso Dev TSA" in str(err.value)
    assert "is not trusted" in str(err.value)


async def test_async_failover_skips_untrusted_tsa(
    servers: Servers, pki: PKIMaterial, foreign_pki: PKIMaterial
) -> None:
    client = _client(servers.ok.url, servers.foreign.url, trust=[foreign_pki.root_cert])
    reply = await client.async_timestamp(DIGEST)
    assert reply.url == servers.foreign.url


def test_empty_trust_is_a_configuration_error(pki: PKIMaterial) -> None:
    with pytest.raises(ValueError, match="trust is empty"):
        TSAClient(["http://127.0.0.1/tsa"], trust=[])
    with pytest.raises(ValueError, match="trust is empty"):
        FailoverTimeStamper(["http://127.0.0.1/tsa"], trust=TrustStore())
    with pytest.raises(TypeError):
        der = pki.root_cert.public_bytes(Encoding.DER)
        TSAClient(["http://127.0.0.1/tsa"], trust=cast("list[x509.Certificate]", [der]))


# ---------------------------------------------------------------------------------------------
# pyhanko


def _tiny_pdf() -> BytesIO:
    writer = PdfFileWriter()
    content = writer.add_object(generic.StreamObject(stream_data=b"0 0 m 10 10 l S"))
    writer.insert_page(PageObject(contents=content, media_box=[0, 0, 200, 200]))
    out = BytesIO()
    writer.write(out)
    out.seek(0)
    return out


def _asn1(cert: object) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))  # type: ignore[attr-defined]


def _sign(pki: PKIMaterial, timestamper: FailoverTimeStamper) -> BytesIO:
    signer_key = ec.generate_private_key(ec.SECP256R1())
    signer_cert = build_signer_certificate(
        signer_key.public_key(),
        dev_name("Nguyễn Văn A", "Văn phòng Chính phủ (thử nghiệm)"),
        issuer_cert=pki.issuing_cert,
        issuer_key=pki.issuing_key,
        now=dt.datetime.now(dt.UTC),
    )

    signer = signers.SimpleSigner(
        signing_cert=_asn1(signer_cert),
        signing_key=keys.PrivateKeyInfo.load(
            signer_key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
        ),
        cert_registry=SimpleCertificateStore.from_certs([_asn1(pki.issuing_cert)]),
    )
    return signers.sign_pdf(
        IncrementalPdfFileWriter(_tiny_pdf()),
        signers.PdfSignatureMetadata(field_name="Signature1", md_algorithm="sha256"),
        signer=signer,
        timestamper=timestamper,
    )


def _check_signed(signed: BytesIO, pki: PKIMaterial) -> tsp.TSTInfo:
    reader = PdfFileReader(signed)
    (embedded,) = reader.embedded_signatures
    context = ValidationContext(trust_roots=[_asn1(pki.root_cert)], allow_fetching=False)
    status = validate_pdf_signature(embedded, signer_validation_context=context)
    assert status.intact and status.valid
    ts = status.timestamp_validity
    assert ts is not None
    assert ts.intact and ts.valid and ts.trusted, ts
    assert ts.signing_cert.subject.native["common_name"].startswith("kyso Dev TSA")
    tst = embedded.signer_info["unsigned_attrs"][0]["values"][0]["content"]
    return tst["encap_content_info"]["content"].parsed


def test_pyhanko_signs_with_failover_timestamper(servers: Servers, pki: PKIMaterial) -> None:
    timestamper = FailoverTimeStamper(
        [servers.down_url, servers.error.url, servers.ok.url],
        timeout=0.3,
        retries=1,
        backoff=0.01,
        policy_oid=OTHER_POLICY,
    )
    ok_hits = servers.ok.hits
    signed = _sign(pki, timestamper)
    assert servers.ok.hits > ok_hits
    assert _check_signed(signed, pki)["policy"].dotted == OTHER_POLICY


def test_pyhanko_failover_timestamper_with_trust(
    servers: Servers, pki: PKIMaterial, foreign_pki: PKIMaterial
) -> None:
    """An attacker's token (first URL) is skipped; the trusted TSA's token is embedded."""
    timestamper = FailoverTimeStamper(
        [servers.foreign.url, servers.ok.url],
        timeout=0.3,
        retries=1,
        backoff=0.01,
        trust=TrustStore([pki.root_cert]),
    )
    foreign_hits, ok_hits = servers.foreign.hits, servers.ok.hits
    signed = _sign(pki, timestamper)
    assert servers.foreign.hits > foreign_hits and servers.ok.hits > ok_hits
    assert _check_signed(signed, pki)["policy"].dotted == DEV_TSA_POLICY_OID

    only_foreign = FailoverTimeStamper(
        [servers.ok.url], timeout=0.3, retries=0, trust=[foreign_pki.root_cert]
    )
    with pytest.raises(TSAError, match="is not trusted"):
        _sign(pki, only_foreign)
