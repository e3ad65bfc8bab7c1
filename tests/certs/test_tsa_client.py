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

import pytest
from asn1crypto import keys, tsp
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter
from pyhanko.sign import signers
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore

from kyso.certs.builders import PKIMaterial, build_dev_pki, build_signer_certificate, dev_name
from kyso.certs.errors import TSAError
from kyso.certs.tsa import DEV_TSA_POLICY_OID, MemorySerialSource, TimeStampAuthority, TSAPolicy
from kyso.certs.tsa_client import (
    REPLY_CONTENT_TYPE,
    FailoverTimeStamper,
    TSAClient,
    build_request,
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
def servers(pki: PKIMaterial) -> Iterator[Servers]:
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
# pyhanko


def _tiny_pdf() -> BytesIO:
    writer = PdfFileWriter()
    content = writer.add_object(generic.StreamObject(stream_data=b"0 0 m 10 10 l S"))
    writer.insert_page(PageObject(contents=content, media_box=[0, 0, 200, 200]))
    out = BytesIO()
    writer.write(out)
    out.seek(0)
    return out


def test_pyhanko_signs_with_failover_timestamper(servers: Servers, pki: PKIMaterial) -> None:
    signer_key = ec.generate_private_key(ec.SECP256R1())
    signer_cert = build_signer_certificate(
        signer_key.public_key(),
        dev_name("Nguyễn Văn A", "Văn phòng Chính phủ (thử nghiệm)"),
        issuer_cert=pki.issuing_cert,
        issuer_key=pki.issuing_key,
        now=dt.datetime.now(dt.UTC),
    )

    def asn1(cert: object) -> asn1_x509.Certificate:
        return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))  # type: ignore[attr-defined]

    signer = signers.SimpleSigner(
        signing_cert=asn1(signer_cert),
        signing_key=keys.PrivateKeyInfo.load(
            signer_key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
        ),
        cert_registry=SimpleCertificateStore.from_certs([asn1(pki.issuing_cert)]),
    )
    timestamper = FailoverTimeStamper(
        [servers.down_url, servers.error.url, servers.ok.url],
        timeout=0.3,
        retries=1,
        backoff=0.01,
        policy_oid=OTHER_POLICY,
    )
    ok_hits = servers.ok.hits
    signed = signers.sign_pdf(
        IncrementalPdfFileWriter(_tiny_pdf()),
        signers.PdfSignatureMetadata(field_name="Signature1", md_algorithm="sha256"),
        signer=signer,
        timestamper=timestamper,
    )
    assert servers.ok.hits > ok_hits

    reader = PdfFileReader(signed)
    (embedded,) = reader.embedded_signatures
    context = ValidationContext(trust_roots=[asn1(pki.root_cert)], allow_fetching=False)
    status = validate_pdf_signature(embedded, signer_validation_context=context)
    assert status.intact and status.valid
    ts = status.timestamp_validity
    assert ts is not None
    assert ts.intact and ts.valid and ts.trusted, ts
    assert ts.signing_cert.subject.native["common_name"].startswith("kyso Dev TSA")
    tst = embedded.signer_info["unsigned_attrs"][0]["values"][0]["content"]
    assert tst["encap_content_info"]["content"].parsed["policy"].dotted == OTHER_POLICY
