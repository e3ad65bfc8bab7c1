"""`kyso serve` as a newcomer runs it: embedded defaults, passphrase asked on a terminal."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pexpect

from tests.api.conftest import free_port

SECRET = "mật khẩu thử nghiệm 2026"


def _spawn(cwd: Path, port: int) -> pexpect.spawn:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYSO_")}
    env["KYSO_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
    return pexpect.spawn(
        sys.executable,
        ["-m", "kyso", "serve", "--port", str(port)],
        cwd=str(cwd),
        env=env,
        encoding="utf-8",
        timeout=60,
    )


def test_first_start_creates_the_pki_after_asking_for_a_passphrase(tmp_path: Path) -> None:
    port = free_port()
    child = _spawn(tmp_path, port)
    try:
        child.expect("Mật khẩu bảo vệ khóa: ")
        child.sendline(SECRET)
        child.expect("Nhập lại mật khẩu: ")
        child.sendline(SECRET)
        child.expect("Đã tạo hạ tầng khóa công khai thử nghiệm")
        child.expect(f"kyso đang phục vụ tại http://127.0.0.1:{port}")
        # a fresh instance: the one-time code that claims it at /setup, shown only here
        code_pattern = r"([A-Z0-9]{4}(?:-[A-Z0-9]{4}){3})"
        child.expect(rf"Mở http://127.0.0.1:{port}/setup .*: " + code_pattern)
        code = child.match.group(1)
        child.expect("Uvicorn running|Application startup complete")
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert health.status_code == 200
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=30, follow_redirects=True)
        assert page.url.path == "/setup" and page.status_code == 200
        assert code not in page.text and code not in (tmp_path / "var" / "setup-code").read_text()
    finally:
        child.terminate(force=True)
    # the embedded default data directory is ./var, keys encrypted, passphrase nowhere on disk
    assert (tmp_path / "var" / "pki" / "root-ca.pem").is_file()
    assert (tmp_path / "var" / "keys" / "kyso-tsa.p12").is_file()
    for path in (tmp_path / "var").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET.encode() not in data and b"PRIVATE KEY" not in data, path

    # second start: asked once; a wrong passphrase is refused before serving
    child = _spawn(tmp_path, port)
    try:
        child.expect("Mật khẩu bảo vệ khóa: ")
        child.sendline("sai rồi")
        child.expect("Sai mật khẩu")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 1
    assert "sai rồi" not in (child.before or "")
