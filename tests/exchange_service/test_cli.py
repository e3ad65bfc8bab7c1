"""``kyso peers`` and ``kyso exchange`` (registered on a Typer app of the test's own until
kyso.api.cli registers them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from cryptography.hazmat.primitives.serialization import Encoding
from typer.testing import CliRunner

from kyso.api import cli_exchange
from kyso.api.services import Services
from tests.conftest import PASSPHRASE, make_settings


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    for key in ("KYSO_ARCHIVE_DB", "KYSO_ARCHIVE_STORE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("KYSO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KYSO_KEY_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("KYSO_LOCALE", "en")
    main = typer.Typer()

    @main.callback()
    def _root() -> None:
        pass

    cli_exchange.register(main)
    return main


def test_peers_add_and_list(app: typer.Typer, tmp_path: Path) -> None:
    services = Services(make_settings(tmp_path / "other", ca_key_type="ec-p256"))
    services.ensure_pki()
    pem = tmp_path / "peer.pem"
    pem.write_bytes(services.pki.root_cert.public_bytes(Encoding.PEM))
    runner = CliRunner()
    done = runner.invoke(
        app,
        ["peers", "add", "000.00.00.H42", "https://b.example/api/v1/exchange/", "--cert", str(pem)],
    )
    assert done.exit_code == 0, done.output
    assert "000.00.00.H42" in done.output
    listed = runner.invoke(app, ["peers", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    [peer] = json.loads(listed.output)
    assert peer["endpoint"] == "https://b.example/api/v1/exchange" and peer["enabled"]
    assert len(peer["certificates"]) == 1
    bad = runner.invoke(app, ["peers", "add", "nope", "https://b.example", "--cert", str(pem)])
    assert bad.exit_code == 3
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    bad = runner.invoke(app, ["peers", "add", "000.00.00.H42", "https://b", "--cert", str(garbage)])
    assert bad.exit_code == 3
    bad = runner.invoke(app, ["peers", "add", "000.00.00.H42", "ftp://b", "--cert", str(pem)])
    assert bad.exit_code == 3


def test_deliver_and_boxes_on_an_empty_instance(app: typer.Typer) -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["exchange", "deliver"])
    assert done.exit_code == 0, done.output
    assert "0 messages attempted" in done.output
    for box in ("outbox", "inbox"):
        listed = runner.invoke(app, ["exchange", box, "000.00.00.H41", "--json"])
        assert listed.exit_code == 0, listed.output
        assert json.loads(listed.output) == []
