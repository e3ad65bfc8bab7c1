"""Two-phase signing: kyso prepares, a separate process holding the key signs, kyso completes.

The signer is ``tests/signer/external_client.py``, run as its own process with the private key
exported from the file key store to a PEM file (kyso's side never touches the key). Results are
checked by pyhanko and by poppler's pdfsig, trusting the live server's root.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding

from kyso.certs import identity
from kyso.certs.keys import KeyHandle
from kyso.signer.errors import (
    BadInputError,
    CertificateRefusedError,
    SigningError,
    TimestampUnavailableError,
)
from kyso.signer.external import (
    ExternalSigningError,
    HandleError,
    PreparedSignature,
    SignatureRejectedError,
    complete,
    discard,
    prepare,
    purge_expired,
)
from kyso.signer.sign import Level, SignOptions, SignResult
from tests.conftest import LiveServer
from tests.signer.test_sign import _issue, _level_of, _pdfsig, _validate, nss_db, source

__all__ = ["nss_db", "source"]  # fixtures imported from test_sign

CLIENT = Path(__file__).with_name("external_client.py")
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Holder:
    """A certificate in kyso's hands and its private key in the client's (a PEM file)."""

    key: KeyHandle
    key_pem: Path
    cert_pem: Path

    @property
    def certificate(self) -> x509.Certificate:
        return self.key.certificate


def _holder(
    live_server: LiveServer, tmp: Path, label: str, kind: str = "person", key_type: str = "rsa-2048"
) -> Holder:
    services = live_server.services
    if kind == "person":
        _issue(live_server, label, key_type)
    else:
        services.pki.issue(
            kind="org",
            subject=identity.organisation_subject("UBND Quận Long Biên", ids=["MST:0101234567"]),
            label=label,
            key_type=key_type,
        )
    key = services.keys.resolve(label)
    key_pem, cert_pem = tmp / f"{label}.key.pem", tmp / f"{label}.crt.pem"
    key_pem.write_bytes(
        key.private_key().private_bytes(
            Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_pem.chmod(0o600)
    cert_pem.write_bytes(key.certificate.public_bytes(Encoding.PEM))
    return Holder(key=key, key_pem=key_pem, cert_pem=cert_pem)


def _client(holder: Holder, prepared: PreparedSignature, mode: str) -> bytes:
    """Run the external client (its own process) in ``mode``; its signature or CMS."""
    args: list[str] = [
        "--key",
        str(holder.key_pem),
        "--digest-algorithm",
        prepared.digest_algorithm,
    ]
    if mode == "signed-attrs":
        args += ["--signed-attrs", base64.b64encode(prepared.signed_attributes).decode()]
    elif mode == "digest":
        args += ["--digest", base64.b64encode(prepared.digest).decode(), "--encoding", "base64"]
    else:
        args += [
            "--cms",
            "--document-digest",
            prepared.document_digest.hex(),
            "--cert",
            str(holder.cert_pem),
        ]
    proc = subprocess.run(
        [sys.executable, str(CLIENT), *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return base64.b64decode(proc.stdout.strip(), validate=True)


def _prepare(
    live_server: LiveServer,
    holder: Holder,
    source: Path,
    work_dir: Path,
    level: Level,
    **kw: object,
) -> PreparedSignature:
    services = live_server.services
    return asyncio.run(
        prepare(
            source,
            certificate=holder.certificate,
            chain=holder.key.chain,
            options=SignOptions(level=level, reason="Ký ban hành"),
            revocation=services.revocation_context(),
            timestamper=services.timestamper(),
            work_dir=work_dir,
            **kw,  # type: ignore[arg-type]
        )
    )


def _complete(
    live_server: LiveServer,
    handle: str,
    certificate: x509.Certificate,
    target: Path,
    work_dir: Path,
    value: bytes,
    mode: str = "signed-attrs",
    **kw: object,
) -> SignResult:
    services = live_server.services
    payload = {"cms": value} if mode == "cms" else {"signature": value}
    return asyncio.run(
        complete(
            handle,
            certificate=certificate,
            target=target,
            work_dir=work_dir,
            revocation=services.revocation_context(),
            timestamper=services.timestamper(),
            **payload,  # type: ignore[arg-type]
            **kw,  # type: ignore[arg-type]
        )
    )


@pytest.fixture()
def dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(work_dir for the state, out_dir for results, keys dir for the client's PEM files)."""
    paths = tuple(tmp_path / n for n in ("work", "out", "keys"))
    for path in paths:
        path.mkdir()
    return paths  # type: ignore[return-value]


SIGNERS = [("person", "rsa-2048"), ("person", "ec-p256"), ("org", "rsa-2048"), ("org", "ec-p256")]
MODES = ["signed-attrs", "digest", "cms"]


@pytest.mark.parametrize("level", list(Level))
@pytest.mark.parametrize(("kind", "key_type"), SIGNERS, ids=[f"{k}-{t}" for k, t in SIGNERS])
def test_prepare_sign_elsewhere_complete_at_every_level(
    live_server: LiveServer,
    nss_db: Path,
    source: Path,
    dirs: tuple[Path, Path, Path],
    kind: str,
    key_type: str,
    level: Level,
) -> None:
    work, out, keys = dirs
    # every signer meets every way of signing across the levels
    mode = MODES[(SIGNERS.index((kind, key_type)) + level.rank) % len(MODES)]
    holder = _holder(live_server, keys, f"ext-{kind}-{key_type}-{level.lower()}", kind, key_type)
    before = source.read_bytes()

    prepared = _prepare(live_server, holder, source, work, level)
    assert prepared.level is level and prepared.digest_algorithm == "sha256"
    assert prepared.signature_algorithm == ("sha256_rsa" if "rsa" in key_type else "sha256_ecdsa")
    assert sorted(p.name for p in work.iterdir()) == sorted(
        [f"{prepared.handle}.json", f"{prepared.handle}.pdf"]
    )
    assert not list(out.iterdir())  # nothing at the output before the signature comes back

    value = _client(holder, prepared, mode)
    target = out / "signed.pdf"
    result = _complete(live_server, prepared.handle, holder.certificate, target, work, value, mode)
    assert result.level_reached is level and result.output == target
    assert not list(work.iterdir())  # the state is gone
    assert source.read_bytes() == before
    signed = target.read_bytes()
    assert signed.startswith(before)  # an incremental update
    assert _level_of(signed) is level
    asyncio.run(_validate(live_server, signed))
    report = _pdfsig(nss_db, target)
    assert "Signature Validation: Signature is Valid." in report, report
    assert "Certificate Validation: Certificate is Trusted." in report, report


# -- restart safety --------------------------------------------------------------------------

COMPLETE_IN_ANOTHER_PROCESS = textwrap.dedent(
    """
    import base64, json, sys
    from pathlib import Path
    from cryptography import x509
    from kyso.api.services import Services
    from kyso.signer.external import complete_sync
    from tests.conftest import make_settings

    args = json.loads(sys.argv[1])
    services = Services(make_settings(Path(args["data_dir"]), public_url=args["url"]))
    result = complete_sync(
        args["handle"],
        signature=base64.b64decode(args["signature"]),
        certificate=x509.load_pem_x509_certificate(Path(args["cert"]).read_bytes()),
        target=Path(args["target"]),
        work_dir=Path(args["work_dir"]),
        revocation=services.revocation_context(),
        timestamper=services.timestamper(),
    )
    print(result.level_reached)
    """
)


def test_complete_in_a_fresh_process_reads_only_the_work_dir(
    live_server: LiveServer, nss_db: Path, source: Path, dirs: tuple[Path, Path, Path]
) -> None:
    work, out, keys = dirs
    holder = _holder(live_server, keys, "ext-restart", "org", "ec-p256")
    prepared = _prepare(live_server, holder, source, work, Level.B_LTA)
    signature = _client(holder, prepared, "digest")
    target = out / "sealed.pdf"
    args = {
        "data_dir": str(live_server.services.settings.data_dir),
        "url": live_server.url,
        "handle": prepared.handle,
        "signature": base64.b64encode(signature).decode(),
        "cert": str(holder.cert_pem),
        "target": str(target),
        "work_dir": str(work),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYSO_")}
    proc = subprocess.run(
        [sys.executable, "-c", COMPLETE_IN_ANOTHER_PROCESS, json.dumps(args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "B-LTA"
    assert _level_of(target.read_bytes()) is Level.B_LTA
    asyncio.run(_validate(live_server, target.read_bytes()))
    assert "Signature is Valid." in _pdfsig(nss_db, target)
    assert not list(work.iterdir())


# -- refusals --------------------------------------------------------------------------------


def _refused(
    live_server: LiveServer,
    error: type[SigningError],
    code: str,
    handle: str,
    certificate: x509.Certificate,
    target: Path,
    work: Path,
    value: bytes,
    mode: str = "signed-attrs",
    **kw: object,
) -> SigningError:
    with pytest.raises(error) as caught:
        _complete(live_server, handle, certificate, target, work, value, mode, **kw)
    assert caught.value.code == code, caught.value
    assert not target.exists()
    assert not [p for p in target.parent.iterdir()], list(target.parent.iterdir())
    return caught.value


def test_wrong_signatures_and_certificates_are_refused_and_nothing_is_written(
    live_server: LiveServer, nss_db: Path, source: Path, dirs: tuple[Path, Path, Path]
) -> None:
    work, out, keys = dirs
    holder = _holder(live_server, keys, "ext-refusals", "person", "rsa-2048")
    other = _holder(live_server, keys, "ext-other", "person", "ec-p256")
    prepared = _prepare(live_server, holder, source, work, Level.B_T)
    h, cert, target = prepared.handle, holder.certificate, out / "signed.pdf"
    good = _client(holder, prepared, "signed-attrs")
    assert good == _client(holder, prepared, "digest")  # PKCS#1 v1.5 is deterministic

    flipped = bytearray(good)
    flipped[10] ^= 0x01
    err = _refused(
        live_server,
        SignatureRejectedError,
        "signer.external.bad_signature",
        h,
        cert,
        target,
        work,
        bytes(flipped),
    )
    assert "does not verify" in str(err)
    _refused(
        live_server,
        SignatureRejectedError,
        "signer.external.bad_signature",
        h,
        cert,
        target,
        work,
        b"",
    )
    # a signature by another key over the same data
    by_other = _client(other, prepared, "signed-attrs")
    _refused(
        live_server,
        SignatureRejectedError,
        "signer.external.bad_signature",
        h,
        cert,
        target,
        work,
        by_other,
    )
    # a good signature, but presented with another certificate
    _refused(
        live_server,
        SignatureRejectedError,
        "signer.external.wrong_certificate",
        h,
        other.certificate,
        target,
        work,
        good,
    )
    # a CMS from another signer, over another document, or not a CMS at all
    _refused(
        live_server,
        SignatureRejectedError,
        "signer.external.wrong_certificate",
        h,
        cert,
        target,
        work,
        _client(other, prepared, "cms"),
        "cms",
    )
    elsewhere = dataclasses.replace(prepared, document_digest=bytes(32))
    _refused(
        live_server,
        SignatureRejectedError,
        "signer.external.wrong_document",
        h,
        cert,
        target,
        work,
        _client(holder, elsewhere, "cms"),
        "cms",
    )
    _refused(
        live_server,
        SignatureRejectedError,
        "signer.external.bad_cms",
        h,
        cert,
        target,
        work,
        b"\x30\x03\x02\x01\x00",
        "cms",
    )
    with pytest.raises(ExternalSigningError) as caught:
        asyncio.run(
            complete(
                h,
                certificate=cert,
                target=target,
                work_dir=work,
                revocation=live_server.services.revocation_context(),
                timestamper=None,
            )
        )
    assert caught.value.code == "signer.external.one_of"

    # the target cannot be the state itself
    with pytest.raises(BadInputError) as caught_input:
        _complete(live_server, h, cert, work / f"{h}.pdf", work, good)
    assert caught_input.value.code == "signer.output.is_input"

    # refusals keep the state: the right signature still completes, once
    assert sorted(p.suffix for p in work.iterdir()) == [".json", ".pdf"]
    _complete(live_server, h, cert, target, work, good)
    assert _level_of(target.read_bytes()) is Level.B_T
    assert "Signature is Valid." in _pdfsig(nss_db, target)
    target.unlink()
    _refused(
        live_server, HandleError, "signer.external.unknown_handle", h, cert, target, work, good
    )
    for bogus in ("x" * 32, "../" + h, "", h[:-1]):
        _refused(
            live_server,
            HandleError,
            "signer.external.unknown_handle",
            bogus,
            cert,
            target,
            work,
            good,
        )


def test_an_expired_handle_is_refused_and_forgotten(
    live_server: LiveServer, source: Path, dirs: tuple[Path, Path, Path]
) -> None:
    work, out, keys = dirs
    holder = _holder(live_server, keys, "ext-expiry", "org", "ec-p256")
    now = dt.datetime.now(dt.UTC)
    prepared = _prepare(
        live_server, holder, source, work, Level.B_B, clock=lambda: now, ttl=dt.timedelta(minutes=5)
    )
    assert prepared.expires_at == now + dt.timedelta(minutes=5)
    signature = _client(holder, prepared, "digest")
    target = out / "late.pdf"
    later = now + dt.timedelta(minutes=5, seconds=1)
    err = _refused(
        live_server,
        HandleError,
        "signer.external.expired",
        prepared.handle,
        holder.certificate,
        target,
        work,
        signature,
        clock=lambda: later,
    )
    assert later.isoformat()[:10] in str(err)
    assert not list(work.iterdir())  # forgotten
    _refused(
        live_server,
        HandleError,
        "signer.external.unknown_handle",
        prepared.handle,
        holder.certificate,
        target,
        work,
        signature,
    )
    # purge_expired and discard clean up abandoned states
    first = _prepare(
        live_server, holder, source, work, Level.B_B, clock=lambda: now, ttl=dt.timedelta(minutes=5)
    )
    second = _prepare(live_server, holder, source, work, Level.B_B)
    assert purge_expired(work, clock=lambda: later) == 1
    assert not (work / f"{first.handle}.json").exists()
    assert (work / f"{second.handle}.json").exists()
    discard(second.handle, work_dir=work)
    assert not list(work.iterdir())


def test_a_changed_state_or_document_is_refused(
    live_server: LiveServer, source: Path, dirs: tuple[Path, Path, Path]
) -> None:
    work, out, keys = dirs
    holder = _holder(live_server, keys, "ext-tamper", "person", "ec-p256")
    prepared = _prepare(live_server, holder, source, work, Level.B_B)
    signature = _client(holder, prepared, "signed-attrs")
    target = out / "signed.pdf"
    pdf = work / f"{prepared.handle}.pdf"
    original = pdf.read_bytes()
    pdf.write_bytes(original.replace(b"/Reason (", b"/Reason (X", 1))
    err = _refused(
        live_server,
        ExternalSigningError,
        "signer.external.bad_state",
        prepared.handle,
        holder.certificate,
        target,
        work,
        signature,
    )
    assert "changed" in str(err)
    pdf.write_bytes(original)
    state = work / f"{prepared.handle}.json"
    data = json.loads(state.read_text())
    state.write_text("{not json")
    _refused(
        live_server,
        ExternalSigningError,
        "signer.external.bad_state",
        prepared.handle,
        holder.certificate,
        target,
        work,
        signature,
    )
    state.write_text(json.dumps(data))
    _complete(live_server, prepared.handle, holder.certificate, target, work, signature)
    asyncio.run(_validate(live_server, target.read_bytes()))


def test_revoked_certificates_are_refused_at_prepare_and_at_complete(
    live_server: LiveServer, source: Path, dirs: tuple[Path, Path, Path]
) -> None:
    work, out, keys = dirs
    revoked = _holder(live_server, keys, "ext-revoked-early", "person", "rsa-2048")
    live_server.services.pki.revoke(
        revoked.certificate.serial_number, reason=x509.ReasonFlags.key_compromise
    )
    for level in (Level.B_B, Level.B_LT):
        with pytest.raises(CertificateRefusedError) as caught:
            _prepare(live_server, revoked, source, work, level)
        assert caught.value.code == "signer.cert.revoked"
    assert not list(work.iterdir())

    # revoked between the two phases: complete checks again
    holder = _holder(live_server, keys, "ext-revoked-late", "org", "rsa-2048")
    prepared = _prepare(live_server, holder, source, work, Level.B_LT)
    signature = _client(holder, prepared, "signed-attrs")
    live_server.services.pki.revoke(
        holder.certificate.serial_number, reason=x509.ReasonFlags.key_compromise
    )
    _refused(
        live_server,
        CertificateRefusedError,
        "signer.cert.revoked",
        prepared.handle,
        holder.certificate,
        out / "signed.pdf",
        work,
        signature,
    )
    # an expired certificate at prepare
    with pytest.raises(CertificateRefusedError) as caught:
        _prepare(
            live_server,
            holder,
            source,
            work,
            Level.B_B,
            clock=lambda: dt.datetime.now(dt.UTC) + dt.timedelta(days=3650),
        )
    assert caught.value.code == "signer.cert.expired"


def test_a_tsa_outage_or_a_concurrent_complete_keeps_the_state_for_a_retry(
    live_server: LiveServer, nss_db: Path, source: Path, dirs: tuple[Path, Path, Path]
) -> None:
    import fcntl

    from kyso.certs.tsa_client import FailoverTimeStamper

    work, out, keys = dirs
    holder = _holder(live_server, keys, "ext-retry", "person", "ec-p256")
    prepared = _prepare(live_server, holder, source, work, Level.B_T)
    signature = _client(holder, prepared, "signed-attrs")
    target = out / "signed.pdf"
    dead = FailoverTimeStamper(["http://127.0.0.1:9/tsa"], timeout=0.5, retries=0, backoff=0.01)
    with pytest.raises(TimestampUnavailableError) as caught:
        asyncio.run(
            complete(
                prepared.handle,
                signature=signature,
                certificate=holder.certificate,
                target=target,
                work_dir=work,
                revocation=live_server.services.revocation_context(),
                timestamper=dead,
            )
        )
    assert caught.value.code == "signer.tsa.unavailable"
    assert not list(out.iterdir())
    # another worker is completing the same handle right now
    with (work / f"{prepared.handle}.json").open("rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        _refused(
            live_server,
            ExternalSigningError,
            "signer.external.busy",
            prepared.handle,
            holder.certificate,
            target,
            work,
            signature,
        )
    result = _complete(live_server, prepared.handle, holder.certificate, target, work, signature)
    assert result.level_reached is Level.B_T and _level_of(target.read_bytes()) is Level.B_T
    assert "Signature is Valid." in _pdfsig(nss_db, target)
