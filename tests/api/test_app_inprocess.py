"""The app in-process (FastAPI TestClient): settings that change TSA behaviour, hostile input."""

from __future__ import annotations

import base64
import datetime as dt
import random
import urllib.parse

import pytest
from asn1crypto import tsp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from fastapi.testclient import TestClient

from kyso.api.app import create_app
from kyso.api.services import Services
from kyso.certs import identity
from kyso.certs.tsa import TimeStampResponse
from tests.conftest import make_settings

TSQ = {"Content-Type": "application/timestamp-query"}
OCSPQ = {"Content-Type": "application/ocsp-request"}


def _client(dev_services: Services, **overrides: object) -> TestClient:
    services = Services(make_settings(dev_services.settings.data_dir, **overrides))
    return TestClient(create_app(services=services), raise_server_exceptions=False)


def _request(digest: bytes = b"\x11" * 32, **extra: object) -> bytes:
    fields: dict[str, object] = {
        "version": 1,
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": digest},
        "nonce": 123456789,
        "cert_req": True,
    }
    fields.update(extra)
    return tsp.TimeStampReq(fields).dump()


def _tst_info(reply: bytes) -> tsp.TSTInfo:
    resp = TimeStampResponse.load(reply)
    assert resp["status"]["status"].native == "granted", resp["status"].native
    return resp["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed


def test_unsynchronised_clock_makes_the_tsa_refuse(dev_services: Services) -> None:
    with _client(dev_services, tsa_clock_synchronised=False) as client:
        assert client.get("/healthz").json()["tsa"]["clock_synchronised"] is False
        reply = client.post("/tsa", content=_request(), headers=TSQ)
    assert reply.status_code == 200
    status = TimeStampResponse.load(reply.content)["status"]
    assert status["status"].native == "rejection"
    assert "time_not_available" in status["fail_info"].native
    assert TimeStampResponse.load(reply.content)["time_stamp_token"].native is None


def test_policy_and_accuracy_come_from_settings(dev_services: Services) -> None:
    with _client(
        dev_services,
        tsa_policy_oid="1.3.6.1.4.1.55555.2.7",
        tsa_accepted_policies=["1.3.6.1.4.1.55555.2.8"],
        tsa_accuracy_ms=250,
    ) as client:
        info = _tst_info(client.post("/tsa", content=_request(), headers=TSQ).content)
        assert info["policy"].dotted == "1.3.6.1.4.1.55555.2.7"
        assert info["accuracy"].native == {"seconds": None, "millis": 250, "micros": None}
        assert info["nonce"].native == 123456789
        gen = info["gen_time"].native
        assert abs(gen - dt.datetime.now(dt.UTC)) < dt.timedelta(seconds=30)
        asked = _request(req_policy="1.3.6.1.4.1.55555.2.8")
        assert (
            _tst_info(client.post("/tsa", content=asked, headers=TSQ).content)["policy"].dotted
            == "1.3.6.1.4.1.55555.2.8"
        )
        refused = client.post("/tsa", content=_request(req_policy="1.2.3.4"), headers=TSQ).content
        status = TimeStampResponse.load(refused)["status"]
        assert "unaccepted_policy" in status["fail_info"].native


def _mutations(valid: bytes, rng: random.Random, count: int) -> list[bytes]:
    bodies = [b"\x00", b"\x30", b"\x30\x80\x00\x00", b"\xff" * 100, valid[:-1], valid + b"\x00"]
    for _ in range(count):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        bodies.append(bytes(data))
        bodies.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))))
    return bodies


def test_hostile_bodies_never_give_a_500(dev_services: Services) -> None:
    rng = random.Random(20261121)  # fixed seed: a failure is reproducible
    leaf = dev_services.pki.issue(
        kind="person",
        subject=identity.person_subject("Hoàng Văn Em", ids=["CCCD:001090000009"]),
        label="fuzz-target",
    ).certificate
    ocsp_req = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(leaf, dev_services.pki.issuing_cert, hashes.SHA1())
        .build()
        .public_bytes(Encoding.DER)
    )
    with _client(dev_services) as client:
        for body in _mutations(_request(), rng, 150):
            resp = client.post("/tsa", content=body, headers=TSQ)
            assert resp.status_code == 200, body.hex()
            TimeStampResponse.load(resp.content).native  # always a parseable TimeStampResp
        for body in _mutations(ocsp_req, rng, 150):
            resp = client.post("/ocsp", content=body, headers=OCSPQ)
            assert resp.status_code == 200, body.hex()
            ocsp.load_der_ocsp_response(resp.content)
            path = urllib.parse.quote(base64.b64encode(body).decode(), safe="")
            resp = client.get(f"/ocsp/{path}")
            assert resp.status_code == 200, body.hex()
            ocsp.load_der_ocsp_response(resp.content)
        for path in ("/ocsp/%%%", "/ocsp/" + "A" * 5, "/crl/..%2F..%2Fetc%2Fpasswd.crl"):
            assert client.get(path).status_code < 500, path


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_methods_are_problem_json(dev_services: Services, method: str) -> None:
    with _client(dev_services) as client:
        resp = client.request(method, "/tsa")
    assert resp.status_code == 405
    assert resp.headers["content-type"] == "application/problem+json"
