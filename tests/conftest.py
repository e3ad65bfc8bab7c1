"""Fixtures shared by the whole suite: a built-in PKI in a temporary data directory."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kyso.api.services import Services
from kyso.api.settings import Settings

PASSPHRASE = "test passphrase: không phải bí mật thật"


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings for a test: nothing read from the environment except what is passed here."""
    values: dict[str, object] = {
        "data_dir": data_dir,
        "key_passphrase": PASSPHRASE,
        "public_url": "http://127.0.0.1:8000",
        "locale": "en",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type, call-arg, unused-ignore]


@pytest.fixture(scope="session")
def dev_services(tmp_path_factory: pytest.TempPathFactory) -> Services:
    """One built-in PKI for the session (read-mostly: tests that revoke issue their own cert)."""
    services = Services(make_settings(tmp_path_factory.mktemp("kyso-data")))
    services.ensure_pki()
    return services


@pytest.fixture()
def fresh_services(tmp_path: Path) -> Services:
    """A brand-new PKI of the test's own."""
    services = Services(make_settings(tmp_path / "data"))
    services.ensure_pki()
    return services


def require_tool(name: str) -> str:
    """The path of a system tool the test needs; its absence is a failure, not a skip."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run scripts/bootstrap --dev (as root)")
    return path


def run(
    *args: str | os.PathLike[str], check: bool = True, **kw: object
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture text output, fail with its output on error."""
    proc = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        **kw,  # type: ignore[call-overload]
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{args[0]} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def kyso_cli(
    data_dir: Path,
    *args: object,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m kyso ARGS`` as a user would: its own process, only the KYSO_* settings
    given here (data dir, passphrase, English messages), wide output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KYSO_")}
    full_env.update(
        KYSO_DATA_DIR=str(data_dir), KYSO_KEY_PASSPHRASE=PASSPHRASE, KYSO_LOCALE="en", COLUMNS="200"
    )
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "kyso", *(str(a) for a in args)],
        capture_output=True,
        text=True,
        env=full_env,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        timeout=timeout,
    )


@pytest.fixture()
def no_kyso_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Clear KYSO_* variables so a test sees only what it sets."""
    for key in list(os.environ):
        if key.startswith("KYSO_"):
            monkeypatch.delenv(key)
    yield


# -- a real `kyso serve` process ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    services: Services
    process: subprocess.Popen[bytes]
    log: Path


def start_server(data_dir: Path, port: int, log: Path, **env_extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYSO_")}
    env.update(
        KYSO_DATA_DIR=str(data_dir),
        KYSO_KEY_PASSPHRASE=PASSPHRASE,
        KYSO_PUBLIC_URL=f"http://127.0.0.1:{port}",
        KYSO_LOCALE="en",
        **env_extra,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "kyso", "serve", "--port", str(port), "--host", "127.0.0.1"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"kyso serve exited {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail(f"kyso serve did not come up:\n{log.read_text()}")


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("live")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    services = Services(make_settings(root / "data", public_url=url))
    services.ensure_pki()  # so certificates point at this server's URLs
    log = root / "server.log"
    proc = start_server(root / "data", port, log)
    try:
        yield LiveServer(url=url, services=services, process=proc, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
