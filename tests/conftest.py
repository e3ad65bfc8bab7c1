"""Fixtures shared by the whole suite: a built-in PKI in a temporary data directory."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

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
    return Settings(_env_file=None, **values)  # type: ignore[arg-type, call-arg]


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


@pytest.fixture()
def no_kyso_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Clear KYSO_* variables so a test sees only what it sets."""
    for key in list(os.environ):
        if key.startswith("KYSO_"):
            monkeypatch.delenv(key)
    yield
