"""Bootstrapping accounts from the shell, end to end: an agency with its seal key, a user with
a password, a personal key encrypted with their PIN, an API token; then the service uses them.
Secrets come from stdin, are never echoed, and never reach the audit log."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from kyso.api.accounts import AuthenticationFailed, open_agency_key, open_signing_key
from kyso.api.app import create_app
from kyso.api.cli import app as cli
from kyso.api.services import Services
from kyso.archive.models import AuditEvent
from tests.api.service_helpers import login
from tests.conftest import PASSPHRASE, kyso_cli, make_settings

CODE = "000.00.00.G99"
PASSWORD = "Bí mật của An 2026!"
PIN = "135790"


def test_bootstrap_end_to_end(tmp_path: Path, dev_services: Services) -> None:
    data_dir = dev_services.settings.data_dir
    db = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    env = {
        "KYSO_DATA_DIR": str(data_dir),
        "KYSO_KEY_PASSPHRASE": PASSPHRASE,
        "KYSO_ARCHIVE_DB": db,
        "KYSO_LOCALE": "en",
    }
    runner = CliRunner()
    outputs: list[str] = []

    def run(*args: str, code: int = 0, stdin: str | None = None) -> str:
        result = runner.invoke(cli, list(args), input=stdin, env=env)
        text = result.stdout + result.stderr
        outputs.append(text)
        assert result.exit_code == code, (args, text, result.exception)
        return result.stdout

    seal = f"seal-g99-{uuid.uuid4().hex[:6]}"
    run("pki", "issue", "org", "UBND Phường Thử", "--id", "MST:0109999999", "--label", seal)
    created = run("agencies", "create", CODE, "UBND Phường Thử", "--seal-key", seal)
    assert CODE in created and f"file:{seal}" in created
    run("agencies", "create", CODE, "Again", code=1)
    run("agencies", "create", "not a code", "X", code=3)
    run("agencies", "create", "G98.01", "X", "--seal-key", "kyso-root-ca", code=3)
    assert CODE in run("agencies", "list")

    user = ["users", "create", "an.nguyen", "--agency", CODE, "--name", "Nguyễn Văn An"]
    roles = ["--role", "official", "--role", "clerk"]
    run(*user, *roles, code=3)  # no terminal to ask on, no --password-stdin
    run(*user, *roles, "--password-stdin", stdin="short\n", code=3)
    run(*user, "--role", "king", "--password-stdin", stdin=PASSWORD + "\n", code=3)
    run(*user, *roles, "--password-stdin", stdin=PASSWORD + "\n")
    run(*user, *roles, "--password-stdin", stdin=PASSWORD + "\n", code=1)  # exists
    other = ["users", "create", "x.y", "--agency", "Z99.01", "--name", "X", "--role", "clerk"]
    run(*other, "--password-stdin", stdin=PASSWORD + "\n", code=1)
    listing = run("users", "list", "--agency", CODE)
    assert "an.nguyen" in listing and "clerk, official" in listing

    issue = ["users", "issue-key", "an.nguyen", "--id", "CCCD:001090001234"]
    issue += ["--title", "Chủ tịch", "--key-type", "ec-p256"]
    run(*issue, stdin="1357\n", code=3)  # too short (no terminal: read from stdin)
    issue += ["--pin-stdin"]
    issued = run(*issue, stdin=PIN + "\n")
    assert "personal:" in issued
    run(*issue, stdin="246824\n", code=1)  # a second key must use the same PIN
    run("users", "set-pin", "an.nguyen", stdin="246824\n", code=1)  # its key keeps its PIN

    token_out = run("tokens", "create", "an.nguyen", "--name", "ci", "--role", "clerk")
    token = token_out.strip().splitlines()[-1]
    assert token.startswith("kyso_")
    run("tokens", "create", "an.nguyen", "--name", "ci", "--role", "admin", code=3)

    # the service sees what the CLI made
    services = Services(make_settings(data_dir, archive_db=db))
    accounts = services.accounts
    principal = accounts.authenticate("an.nguyen", PASSWORD)
    assert principal.agency == CODE and principal.roles == {"official", "clerk"}
    [ref] = accounts.keys_of(principal.user_id)
    assert ref.startswith("personal:")
    handle = open_signing_key(services, principal, ref, PIN)
    assert "Nguyễn Văn An" in handle.certificate.subject.rfc4514_string()
    assert open_agency_key(services, principal).uri == f"file:{seal}"
    by_token = accounts.principal_for_token(token)
    assert by_token is not None and by_token.roles == {"clerk"}
    with TestClient(create_app(services=services)) as client:
        login(client, "an.nguyen", PASSWORD)
        assert client.get("/api/v1/auth/me").json()["agency"]["code"] == CODE
        assert client.get("/api/v1/agencies/me").json()["seal_key"] == f"file:{seal}"

    # revocation and disabling take effect at once
    assert "ci" in run("tokens", "list", "--agency", CODE)
    run("tokens", "revoke", str(by_token.token_id))
    assert accounts.principal_for_token(token) is None
    run("tokens", "revoke", "999999", code=1)
    run("users", "disable", "an.nguyen")
    with pytest.raises(AuthenticationFailed):
        accounts.authenticate("an.nguyen", PASSWORD)
    run("users", "disable", "nobody.at.all", code=1)

    # the real entry point has the commands and reads the same database
    proc = kyso_cli(data_dir, "users", "list", "--agency", CODE, env={"KYSO_ARCHIVE_DB": db})
    assert proc.returncode == 0, proc.stderr
    assert "disabled" in proc.stdout

    secret_token = token.split("_", 2)[2]
    for text in outputs:
        assert PASSWORD not in text and PIN not in text
    assert sum(secret_token in text for text in outputs) == 1  # printed once, when created
    with services.catalog.session() as s:
        rows = list(s.scalars(sa.select(AuditEvent)))
    actions = {r.action for r in rows if r.actor.startswith("cli:")}
    assert {
        "agency.create",
        "agency.seal_key",
        "user.create",
        "user.pin",
        "key.bind",
        "token.create",
        "token.revoke",
        "user.disable",
    } <= actions
    for row in rows:
        text = f"{row.actor} {row.subject} {row.details_json}"
        assert PASSWORD not in text and PIN not in text and secret_token not in text
    services.catalog.close()
