"""The ``kyso`` command line as a user runs it: a real process, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from tests.conftest import PASSPHRASE, kyso_cli, require_tool, run


def kyso(data_dir: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None):
    return kyso_cli(data_dir, *args, env=env, stdin=stdin, timeout=120)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli") / "var"
    proc = kyso(d, "pki", "init")
    assert proc.returncode == 0, proc.stderr
    assert "Created the development PKI" in proc.stdout
    return d


def test_init_twice_is_refused(data_dir: Path) -> None:
    proc = kyso(data_dir, "pki", "init")
    assert proc.returncode == 1
    assert "already exists" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_issue_list_revoke_export(data_dir: Path, tmp_path: Path) -> None:
    proc = kyso(
        data_dir,
        "pki",
        "issue",
        "person",
        "Nguyễn Văn An",
        "--id",
        "CCCD:001090000001",
        "--title",
        "Chủ tịch",
        "--org",
        "UBND Quận Long Biên",
    )
    assert proc.returncode == 0, proc.stderr
    assert "--key nguyen-van-an" in proc.stdout
    proc = kyso(
        data_dir,
        "pki",
        "issue",
        "org",
        "UBND Quận Long Biên",
        "--id",
        "MST:0101234567",
        "--key-type",
        "ec-p256",
    )
    assert proc.returncode == 0, proc.stderr
    assert "--key ubnd-quan-long-bien" in proc.stdout

    rows = json.loads(kyso(data_dir, "pki", "list", "--json").stdout)
    by_label = {r["label"]: r for r in rows}
    assert by_label["nguyen-van-an"]["kind"] == "person"
    assert "CCCD:001090000001" in by_label["nguyen-van-an"]["subject"]
    assert by_label["ubnd-quan-long-bien"]["status"] == "valid"

    serial = by_label["nguyen-van-an"]["serial"]
    proc = kyso(data_dir, "pki", "revoke", serial, "--reason", "keyCompromise")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(kyso(data_dir, "pki", "list", "--json").stdout)
    revoked = next(r for r in rows if r["serial"] == serial)
    assert revoked["status"] == "revoked" and revoked["reason"] == "keyCompromise"

    table = kyso(data_dir, "pki", "list").stdout
    assert "revoked (keyCompromise)" in table

    out = tmp_path / "root.pem"
    assert kyso(data_dir, "pki", "export-root", str(out)).returncode == 0
    root = x509.load_pem_x509_certificate(out.read_bytes())
    assert root.subject == root.issuer

    crl = tmp_path / "issuing.crl"
    assert kyso(data_dir, "pki", "crl", str(crl)).returncode == 0
    parsed = x509.load_der_x509_crl(crl.read_bytes())
    assert parsed.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None

    keys = kyso(data_dir, "keys", "list").stdout
    assert "file:nguyen-van-an" in keys and "file:kyso-tsa" in keys

    trail = json.loads(kyso(data_dir, "pki", "events", "--json").stdout)
    assert trail["intact"] is True
    revocation = next(e for e in trail["events"] if e["action"] == "revoke")
    assert revocation["serial"] == serial and revocation["actor"].startswith("cli:")


def test_user_errors_are_messages_with_exit_codes(data_dir: Path) -> None:
    cases = [
        (["pki", "issue", "person", "Lê Văn C", "--id", "CCCD:12"], "CCCD"),
        (["pki", "issue", "person", "Lê Văn C", "--id", "XYZ:1"], "XYZ"),
        (["pki", "revoke", "ABCDEF", "--reason", "keyCompromise"], "ABCDEF"),
        (["pki", "revoke", "ABCDEF", "--reason", "bored"], "bored"),
    ]
    for args, fragment in cases:
        proc = kyso(data_dir, *args)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert fragment in proc.stderr
        assert "Traceback" not in proc.stderr


def test_wrong_passphrase_is_refused_without_revealing_it(data_dir: Path) -> None:
    proc = kyso(
        data_dir,
        "pki",
        "issue",
        "org",
        "Sở Nội vụ",
        "--id",
        "MST:0101234568",
        env={"KYSO_KEY_PASSPHRASE": "wrong horse"},
    )
    assert proc.returncode == 1
    assert "Wrong passphrase" in proc.stderr
    assert "wrong horse" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_no_passphrase_and_no_terminal_is_a_clear_error(tmp_path: Path) -> None:
    proc = kyso(tmp_path / "var", "pki", "init", env={"KYSO_KEY_PASSPHRASE": ""})
    assert proc.returncode == 1
    assert "passphrase" in proc.stderr and "Traceback" not in proc.stderr


def test_vietnamese_is_the_default_language(data_dir: Path) -> None:
    proc = kyso(data_dir, "pki", "init", env={"KYSO_LOCALE": "vi"})
    assert "Đã có hạ tầng khóa công khai" in proc.stderr


def test_pkcs11_issue_generates_a_key_on_the_token(data_dir: Path, tmp_path: Path) -> None:
    from tests.softhsm import init_token

    require_tool("softhsm2-util")
    token = init_token(tmp_path / "hsm")
    env = {
        "KYSO_PKCS11_MODULE": token.module,
        "KYSO_PKCS11_TOKEN": token.label,
        "KYSO_PKCS11_PIN": token.pin,
        "SOFTHSM2_CONF": str(token.conf),
    }
    proc = kyso(
        data_dir,
        "pki",
        "issue",
        "person",
        "Phạm Thị Dung",
        "--id",
        "CCCD:001190000003",
        "--store",
        "pkcs11",
        "--key-type",
        "ec-p256",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "pkcs11:" in proc.stdout
    keys = kyso(data_dir, "keys", "list", env=env).stdout
    assert "pham-thi-dung" in keys and "pkcs11:" in keys
    assert not (data_dir / "keys" / "pham-thi-dung.p12").exists()
    listing = run(
        "pkcs11-tool",
        "--module",
        token.module,
        "--token-label",
        token.label,
        "--login",
        "--pin",
        token.pin,
        "--list-objects",
        env={**os.environ, **env},
    )
    assert "pham-thi-dung" in listing.stdout


REAL = Path(__file__).resolve().parents[1] / "certs" / "data" / "real-vn"


def test_cert_show_reads_a_real_agency_certificate(data_dir: Path) -> None:
    proc = kyso(
        data_dir, "cert", "show", str(REAL / "sample-agency-cert-tong-cuc-thue.pem"), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    [info] = json.loads(proc.stdout)
    assert info["identity"]["common_name"] == "TỔNG CỤC THUẾ"
    assert info["identity"]["organisation"] == "BỘ TÀI CHÍNH"
    assert info["identity"]["locality"] == "Hà Nội"
    assert info["key"] == "RSA-2048"
    assert info["ocsp"] == ["http://ocsp.ca.gov.vn"]
    assert "2.16.704.1.1.1.1.1" in info["policies"]
    assert info["sha256"].startswith("32:FB:1A:EC:A2:77:9B:D2")
    text = kyso(
        data_dir,
        "cert",
        "show",
        str(REAL / "sample-agency-cert-tong-cuc-thue.pem"),
        env={"KYSO_LOCALE": "vi"},
    ).stdout
    assert "Tên:" in text and "TỔNG CỤC THUẾ" in text and "A7:CD:CC" in text


def test_cert_show_of_our_person_certificate_lists_the_ids(data_dir: Path, tmp_path: Path) -> None:
    kyso(
        data_dir,
        "pki",
        "issue",
        "person",
        "Đỗ Thị Hà",
        "--id",
        "CCCD:001190000004",
        "--id",
        "MST:8000000001",
        "--title",
        "Phó Giám đốc",
        "--org",
        "Sở Tư pháp",
    )
    rows = json.loads(kyso(data_dir, "pki", "list", "--json").stdout)
    assert any(r["label"] == "do-thi-ha" for r in rows)
    from kyso.certs.keys import FileKeyStore

    store = FileKeyStore(data_dir / "keys", passphrase=lambda: PASSPHRASE.encode())
    pem = tmp_path / "ha.pem"
    from cryptography.hazmat.primitives.serialization import Encoding

    pem.write_bytes(store.load("do-thi-ha").certificate.public_bytes(Encoding.PEM))
    [info] = json.loads(kyso(data_dir, "cert", "show", str(pem), "--json").stdout)
    assert info["identity"]["kind"] == "person"
    assert info["identity"]["title"] == "Phó Giám đốc"
    assert [i["text"] for i in info["identity"]["ids"]] == ["CCCD:001190000004", "MST:8000000001"]
    assert info["key_usage"] == ["digital_signature", "content_commitment"]


def test_cert_show_of_a_non_certificate_is_a_clear_error(data_dir: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    proc = kyso(data_dir, "cert", "show", str(junk))
    assert proc.returncode == 1 and str(junk) in proc.stderr and "Traceback" not in proc.stderr


def test_trust_presets_and_operator_anchors(data_dir: Path) -> None:
    anchors = json.loads(kyso(data_dir, "trust", "list", "--json").stdout)
    fingerprints = {a["fingerprint"] for a in anchors}
    assert "f04ba4b459a7c9a1b971ad9b1cb833e695a80c79aea63b174b66a70edfe2fdb8" in fingerprints
    assert len(anchors) == 2  # vn-gov root G2 and the dev root
    proc = kyso(data_dir, "trust", "add", str(REAL / "sample-agency-cert-tong-cuc-thue.pem"))
    assert proc.returncode == 1 and "CA" in proc.stderr  # an agency certificate is no anchor
    proc = kyso(data_dir, "trust", "add", str(REAL / "vnpt-ca-sha2-intermediate.pem"))
    assert proc.returncode == 0, proc.stderr
    anchors = json.loads(kyso(data_dir, "trust", "list", "--json").stdout)
    assert len(anchors) == 3
    assert any("VNPT-CA SHA2" in a["subject"] for a in anchors)
    only_gov = json.loads(kyso(data_dir, "trust", "list", "--preset", "vn-gov", "--json").stdout)
    assert {a["subject"] for a in only_gov} >= {
        "CN=RootCA chuyên dùng Chính phủ G2,O=Ban Cơ yếu Chính phủ,C=VN"
    }
    proc = kyso(data_dir, "trust", "list", "--preset", "nope")
    assert proc.returncode == 1 and "nope" in proc.stderr


def test_serve_with_workers_needs_the_passphrase_in_the_environment(data_dir: Path) -> None:
    # the passphrase variable unset, and no terminal
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KYSO_")}
    full_env.update(KYSO_DATA_DIR=str(data_dir), KYSO_LOCALE="en")
    proc = subprocess.run(
        [sys.executable, "-m", "kyso", "serve", "--workers", "2", "--port", "1"],
        capture_output=True,
        text=True,
        env=full_env,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "KYSO_KEY_PASSPHRASE" in proc.stderr and "Traceback" not in proc.stderr


def test_db_upgrade_creates_the_catalogue_then_reports_it_current(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    from kyso.archive.catalog import Catalog

    d = tmp_path / "var"
    head = ScriptDirectory.from_config(Catalog("sqlite://").alembic_config()).get_current_head()
    assert kyso(d, "db", "revision").stdout.strip() == "-"
    first = kyso(d, "db", "upgrade")
    assert first.returncode == 0, first.stderr
    assert f"- → {head}" in first.stdout
    again = kyso(d, "db", "upgrade")
    assert f"{head} → {head}" in again.stdout
    assert kyso(d, "db", "revision").stdout.strip() == head
