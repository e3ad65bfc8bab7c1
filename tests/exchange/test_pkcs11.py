"""Signing edXML and status messages with a key that never leaves a PKCS#11 token
(SoftHSM2): signxml hands the SignedInfo to KeyHandle.sign, the token signs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from kyso.api.services import Services
from kyso.certs import identity
from kyso.certs.errors import KeyStoreError
from kyso.certs.keys import KeyHandle, PKCS11KeyHandle, PKCS11KeyStore
from kyso.exchange._xml import NS
from kyso.exchange.codes import StatusCode
from kyso.exchange.edxml import VN_TZ, Attachment, build_edxml, parse_edxml
from kyso.exchange.status import StatusMessage, build_status, parse_status
from tests.conftest import require_tool, run
from tests.exchange.conftest import RECEIVER, Agencies, sample_header
from tests.exchange.test_status import ANSWERED


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PKCS11KeyStore]:
    from tests.softhsm import init_token

    require_tool("softhsm2-util")
    info = init_token(tmp_path_factory.mktemp("exchange-hsm"))
    store = PKCS11KeyStore(info.module, info.label, user_pin=lambda: info.pin)
    yield store
    store.close()


@pytest.fixture(scope="module", params=["rsa-2048", "ec-p256"])
def token_key(
    request: pytest.FixtureRequest, token: PKCS11KeyStore, dev_services: Services
) -> KeyHandle:
    label = f"exch-hsm-{request.param}"
    issued = dev_services.pki.issue(
        kind="org",
        subject=identity.organisation_subject("Bộ Tài chính", ids=["MST:0300000001"])
        if request.param == "ec-p256"
        else identity.organisation_subject("Văn phòng Chính phủ", ids=["MST:0300000002"]),
        label=label,
        key_type=request.param,
        token=token,
    )
    handle = token.load(issued.label)
    assert isinstance(handle, PKCS11KeyHandle)
    with pytest.raises(KeyStoreError):
        handle.private_key()  # the key cannot leave the token
    return handle


def _xmlsec(path: Path, agencies: Agencies) -> int:
    proc = run(
        "xmlsec1",
        "--verify",
        "--trusted-pem",
        agencies.root_pem,
        "--id-attr:Id",
        f"{NS}:edXMLEnvelope",
        path,
        check=False,
    )
    return proc.returncode


def test_a_token_key_signs_an_edxml_message(
    token_key: KeyHandle, agencies: Agencies, tmp_path: Path
) -> None:
    require_tool("xmlsec1")
    data = build_edxml(
        sample_header(), [Attachment("a.pdf", data=b"%PDF-1.7 token")], signing_key=token_key
    )
    with parse_edxml(data, trust_roots=[agencies.root]) as parsed:
        assert parsed.verdict.accepted, parsed.verdict.codes
        assert parsed.signer_certificate == token_key.certificate
    path = tmp_path / "token.edxml"
    path.write_bytes(data)
    assert _xmlsec(path, agencies) == 0


def test_a_token_key_signs_a_status(
    token_key: KeyHandle, agencies: Agencies, tmp_path: Path
) -> None:
    status = StatusMessage(
        response_for=ANSWERED,
        from_organ=RECEIVER,
        status_code=StatusCode.ARRIVED,
        timestamp=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=VN_TZ),
        document_sha256=("0" * 64,),
    )
    data = build_status(status, signing_key=token_key)
    parsed = parse_status(data, trust_roots=[agencies.root])
    assert parsed.verdict.accepted, parsed.verdict.codes
    assert parsed.status == status
    path = tmp_path / "status.edxml"
    path.write_bytes(data)
    assert _xmlsec(path, agencies) == 0
