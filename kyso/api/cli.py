"""The ``kyso`` command line."""

from __future__ import annotations

import getpass
import json
import logging
import os
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, NoReturn

import typer
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from kyso.api import cli_accounts, cli_archive, cli_exchange, cli_sign, cli_verify
from kyso.api.cli_inspect import cert_app, trust_app
from kyso.api.services import Services
from kyso.api.settings import Settings, get_settings
from kyso.certs import identity
from kyso.certs.errors import PKIError
from kyso.certs.keys import slug_label
from kyso.certs.pki import parse_serial
from kyso.certs.revocation import REASONS, parse_reason
from kyso.errors import KysoError
from kyso.i18n import set_locale, t

app = typer.Typer(
    pretty_exceptions_enable=False,
    name="kyso",
    help="Ký số: signing, timestamping and trust services.",
    no_args_is_help=True,
)
pki_app = typer.Typer(help="The built-in PKI (development/demo).", no_args_is_help=True)
issue_app = typer.Typer(help="Issue a signing certificate.", no_args_is_help=True)
keys_app = typer.Typer(help="Keys in the file store and on PKCS#11 tokens.", no_args_is_help=True)
db_app = typer.Typer(help="The catalogue database (KYSO_ARCHIVE_DB).", no_args_is_help=True)
app.add_typer(pki_app, name="pki")
pki_app.add_typer(issue_app, name="issue")
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(cert_app, name="cert")
app.add_typer(trust_app, name="trust")
cli_sign.register(app)
cli_verify.register(app)
cli_archive.register(app)
cli_accounts.register(app)
cli_exchange.register(app)

# data (names, subjects, fingerprints) is printed as is: no markup, no emoji codes (":CD:")
out = Console(soft_wrap=True, markup=False, emoji=False, highlight=False)
err = Console(stderr=True, soft_wrap=True, markup=False, emoji=False, highlight=False)


class KeyType(StrEnum):
    rsa_2048 = "rsa-2048"
    rsa_3072 = "rsa-3072"
    ec_p256 = "ec-p256"


class Store(StrEnum):
    file = "file"
    pkcs11 = "pkcs11"


def _settings() -> Settings:
    settings = get_settings()
    set_locale(settings.locale)
    return settings


def _who(cert: x509.Certificate) -> str:
    """A short human description of a certificate's subject: name, organisation, ids."""
    return identity.display_name(cert)


def _fail(exc: KysoError) -> NoReturn:
    err.print(f"{t('cli.error')} {exc.message()}")
    raise typer.Exit(1)


def _actor() -> str:
    """Who runs this command, for the audit trail."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _services(*, confirm: bool = False) -> Services:
    return Services(_settings(), confirm_new_passphrase=confirm)


@pki_app.command("init")
def pki_init() -> None:
    """Create the built-in development PKI: root CA, issuing CA, TSA and OCSP certificates."""
    services = _services(confirm=True)
    try:
        if not services.ensure_pki(actor=_actor()):
            err.print(t("cli.pki.exists", path=str(services.settings.pki_dir)))
            raise typer.Exit(1)
    except KysoError as exc:
        _fail(exc)
    pki = services.pki
    out.print(t("cli.pki.created", path=str(services.settings.pki_dir)))
    for name, cert in (
        ("root", pki.root_cert),
        ("issuing", pki.issuing_cert),
        ("tsa", pki.tsa_cert),
        ("ocsp", pki.ocsp_cert),
    ):
        out.print(f"  {name:8} {_who(cert)}", highlight=False)


def _issue(
    kind: Literal["person", "org"],
    subject_builder: Callable[[], x509.Name],
    name: str,
    label: str | None,
    key_type: KeyType,
    store: Store,
    days: int,
) -> None:
    services = _services()
    try:
        subject = subject_builder()
        label = label or slug_label(name)
        token = None
        if store is Store.pkcs11:
            token = services.token
            if token is None:
                err.print(t("cli.pkcs11.not_configured"))
                raise typer.Exit(1)
        issued = services.pki.issue(
            kind=kind,
            subject=subject,
            label=label,
            key_type=key_type.value,
            days=days,
            public_url=services.settings.public_url,
            token=token,
            actor=_actor(),
        )
    except KysoError as exc:
        _fail(exc)
    cert = issued.certificate
    out.print(t("cli.issue.done", subject=_who(cert)), highlight=False)
    out.print(f"  serial    {format(cert.serial_number, 'X')}", highlight=False)
    out.print(
        f"  valid     {cert.not_valid_before_utc:%Y-%m-%d} → {cert.not_valid_after_utc:%Y-%m-%d}"
    )
    out.print(f"  key       {issued.key_uri}", highlight=False)
    image = services.image_path(issued.label)
    if not image.exists():
        # a made-up image so the tour works; 'kyso keys image' replaces it with the real one
        from kyso.signer.appearance import demo_seal_png, demo_signature_png

        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(demo_seal_png(name) if kind == "org" else demo_signature_png(name))
        out.print(t("cli.issue.demo_image", path=str(image)))
    out.print(t("cli.issue.label", label=issued.label), highlight=False)


IdOpt = Annotated[
    list[str],
    typer.Option("--id", help="Identity number, e.g. CCCD:001090000001 or MST:0101234567"),
]
LabelOpt = Annotated[str | None, typer.Option(help="Key label (default: derived from the name)")]
KeyTypeOpt = Annotated[KeyType, typer.Option("--key-type", help="Key algorithm")]
StoreOpt = Annotated[Store, typer.Option(help="Where the private key is created")]
DaysOpt = Annotated[int, typer.Option(help="Validity in days", min=1, max=3650)]


@issue_app.command("person")
def issue_person(
    name: Annotated[str, typer.Argument(help="Full name, e.g. 'Nguyễn Văn An'")],
    ids: IdOpt,
    title: Annotated[str | None, typer.Option(help="Position, e.g. 'Chủ tịch'")] = None,
    org: Annotated[str | None, typer.Option(help="Organisation (agency)")] = None,
    unit: Annotated[str | None, typer.Option(help="Unit within the organisation")] = None,
    locality: Annotated[str | None, typer.Option(help="Locality (L)")] = None,
    province: Annotated[str | None, typer.Option(help="Province or city (ST)")] = None,
    label: LabelOpt = None,
    key_type: KeyTypeOpt = KeyType.rsa_2048,
    store: StoreOpt = Store.file,
    days: DaysOpt = 730,
) -> None:
    """Issue a personal signing certificate for a competent official."""

    def subject() -> x509.Name:
        return identity.person_subject(
            name,
            ids=ids,
            title=title,
            organisation=org,
            unit=unit,
            locality=locality,
            province=province,
        )

    _issue("person", subject, name, label, key_type, store, days)


@issue_app.command("org")
def issue_org(
    name: Annotated[str, typer.Argument(help="Agency name, e.g. 'UBND Quận Long Biên'")],
    ids: IdOpt,
    parent: Annotated[str | None, typer.Option(help="Parent body (O)")] = None,
    unit: Annotated[str | None, typer.Option(help="Unit (OU)")] = None,
    locality: Annotated[str | None, typer.Option(help="Locality (L)")] = None,
    province: Annotated[str | None, typer.Option(help="Province or city (ST)")] = None,
    label: LabelOpt = None,
    key_type: KeyTypeOpt = KeyType.rsa_2048,
    store: StoreOpt = Store.file,
    days: DaysOpt = 1825,
) -> None:
    """Issue an organisation (agency seal) signing certificate."""

    def subject() -> x509.Name:
        return identity.organisation_subject(
            name, ids=ids, parent=parent, unit=unit, locality=locality, province=province
        )

    _issue("org", subject, name, label, key_type, store, days)


@pki_app.command("list")
def pki_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List every certificate the built-in PKI issued, with its status."""
    services = _services()
    try:
        records = services.pki.records()
        now = services.pki.clock()
    except KysoError as exc:
        _fail(exc)
    if as_json:
        rows = [
            {
                "serial": r.serial_hex,
                "label": r.label,
                "kind": r.kind,
                "subject": r.subject,
                "not_before": r.not_before.isoformat(),
                "not_after": r.not_after.isoformat(),
                "status": r.status_at(now),
                "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
                "reason": r.reason,
                "key": r.key_uri,
            }
            for r in records
        ]
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table(show_lines=False)
    for col in ("serial", "label", "kind", "subject", "not_after", "status"):
        # the serial is what 'kyso pki revoke' takes: never cut it
        table.add_column(t(f"cli.list.{col}"), no_wrap=col in ("serial", "not_after"))
    for r in records:
        status = t(f"cli.status.{r.status_at(now)}")
        if r.reason and r.status_at(now) == "revoked":
            status = f"{status} ({r.reason})"
        who = _who(r.certificate())
        table.add_row(
            r.serial_hex, r.label, t(f"cli.kind.{r.kind}"), who, f"{r.not_after:%Y-%m-%d}", status
        )
    out.print(table)


@pki_app.command("renew")
def pki_renew(
    service: Annotated[str, typer.Argument(help="tsa or ocsp")],
) -> None:
    """New key and certificate for the TSA or the OCSP responder (restart kyso serve after)."""
    services = _services()
    try:
        if service not in ("tsa", "ocsp"):
            raise PKIError("certs.pki.bad_service", name=service)
        cert = services.pki.renew_service(
            service,  # type: ignore[arg-type]
            public_url=services.settings.public_url,
            actor=_actor(),
        )
    except KysoError as exc:
        _fail(exc)
    out.print(
        t(
            "cli.renew.done",
            service=service,
            serial=format(cert.serial_number, "X"),
            not_after=f"{cert.not_valid_after_utc:%Y-%m-%d}",
        )
    )


@pki_app.command("events")
def pki_events(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Show the PKI's audit trail (init, issue, revoke, CRL) and check its hash chain."""
    services = _services()
    try:
        services.pki.records()  # a clear error when there is no PKI
        broken = services.pki.state.verify_events()  # before parsing anything it holds
        events = services.pki.state.events()
    except KysoError as exc:
        _fail(exc)
    if as_json:
        rows = [
            {
                "seq": e.seq,
                "at": e.at,
                "actor": e.actor,
                "action": e.action,
                "serial": e.serial,
                "detail": e.detail,
                "hash": e.hash,
            }
            for e in events
        ]
        print(json.dumps({"events": rows, "intact": broken is None}, ensure_ascii=False, indent=2))
    else:
        for e in events:
            when = e.at[:19].replace("T", " ")
            out.print(f"{e.seq:>5} {when} {e.actor:16} {e.action:8} {e.detail}")
        if broken is None:
            out.print(t("cli.events.intact", count=len(events)))
    if broken is not None:
        err.print(t("cli.events.broken", seq=broken))
        raise typer.Exit(1)


@pki_app.command("export-root")
def pki_export_root(
    out_file: Annotated[Path, typer.Argument(help="Where to write the PEM")],
) -> None:
    """Write the root CA certificate (PEM), to install as a trust anchor."""
    services = _services()
    try:
        cert = services.pki.root_cert
    except KysoError as exc:
        _fail(exc)
    out_file.write_bytes(cert.public_bytes(Encoding.PEM))
    out.print(t("cli.export_root.done", path=str(out_file)), highlight=False)


@pki_app.command("revoke")
def pki_revoke(
    serial: Annotated[str, typer.Argument(help="Serial number in hex, as 'kyso pki list' shows")],
    reason: Annotated[str, typer.Option(help="|".join(REASONS))] = "unspecified",
) -> None:
    """Revoke a certificate: the CRL is re-signed and OCSP answers 'revoked' at once."""
    services = _services()
    try:
        record = services.pki.revoke(
            parse_serial(serial), reason=parse_reason(reason), actor=_actor()
        )
    except KysoError as exc:
        _fail(exc)
    out.print(
        t(
            "cli.revoke.done",
            serial=record.serial_hex,
            reason=record.reason,
            subject=_who(record.certificate()),
        ),
        highlight=False,
    )


@pki_app.command("crl")
def pki_crl(
    out_file: Annotated[Path, typer.Argument(help="Where to write the CRL (DER)")],
    issuer: Annotated[str, typer.Option(help="root or issuing")] = "issuing",
) -> None:
    """Write the current CRL of the root or the issuing CA."""
    if issuer not in ("root", "issuing"):
        err.print(t("trust.unknown_ca", name=issuer))
        raise typer.Exit(2)
    services = _services()
    try:
        der = services.pki.crl_der(issuer)  # type: ignore[arg-type]
    except KysoError as exc:
        _fail(exc)
    out_file.write_bytes(der)
    out.print(t("cli.crl.done", path=str(out_file)), highlight=False)


@keys_app.command("list")
def keys_list() -> None:
    """List the keys every configured store holds, with the URI that names each."""
    services = _services()
    try:
        labels = services.keys.labels()
    except KysoError as exc:
        _fail(exc)
    for label, uri in labels:
        out.print(f"{label:32} {uri}", highlight=False)


@keys_app.command("image")
def keys_image(
    label: Annotated[str, typer.Argument(help="Key label")],
    png: Annotated[Path, typer.Argument(help="PNG with a transparent background")],
) -> None:
    """Keep the official's signature image (blue) or the agency's seal image (red) for a key:
    'kyso sign' draws it (Decree 30/2020 Appendix I)."""
    services = _services()
    try:
        services.keys.resolve(label)
        data = png.read_bytes()
    except KysoError as exc:
        _fail(exc)
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        err.print(f"{t('cli.error')} {t('cli.keys.not_png', path=str(png))}")
        raise typer.Exit(3)
    target = services.image_path(label)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    out.print(t("cli.keys.image_set", label=label, path=str(target)))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the catalogue's tables to this version of kyso (run once per release,
    before the API and workers start; the service also upgrades on first use)."""
    from kyso.archive.catalog import Catalog

    settings = _settings()
    if not settings.archive_db:
        settings.archive_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(settings.archive_db_url)
    try:
        before = catalog.revision()
        catalog.migrate()
        after = catalog.revision()
    finally:
        catalog.close()
    out.print(t("cli.db.upgraded", before=before or "-", after=after or "-"))


@db_app.command("revision")
def db_revision() -> None:
    """Print the catalogue's schema revision ('-': not created yet)."""
    from kyso.archive.catalog import Catalog

    settings = _settings()
    if not settings.archive_db and not (settings.archive_dir / "catalog.sqlite3").exists():
        out.print("-")  # the embedded catalogue is not created yet
        return
    catalog = Catalog(settings.archive_db_url)
    try:
        out.print(catalog.revision() or "-")
    finally:
        catalog.close()


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes", min=1)] = 1,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="Log one line per request (off by default: it costs throughput, see "
            "BENCHMARKS.md)",
        ),
    ] = False,
) -> None:
    """Run the service (trust-service endpoints) under uvicorn; creates the PKI if absent."""
    import uvicorn

    from kyso.api.app import create_app
    from kyso.api.observability import configure_logging

    services = _services(confirm=True)
    settings = services.settings
    configure_logging(settings)  # one redacting handler; JSON lines when KYSO_LOG_FORMAT=json
    if workers > 1 and settings.key_passphrase is None:
        # Worker processes start without a terminal and must not get the secret through
        # their environment from here: the operator provides it to all of them.
        err.print(f"{t('cli.error')} {t('cli.serve.workers_need_passphrase')}")
        raise typer.Exit(2)
    try:
        if services.ensure_pki(actor=_actor()):
            out.print(t("cli.pki.created", path=str(settings.pki_dir)))
        # Unlock the keys and check the PKI before serving, so a wrong passphrase or a
        # tampered file fails here and not per request.
        services.pki.check()
        _ = services.tsa, services.ocsp
        _ = services.secret_key  # production refuses to start without KYSO_SECRET_KEY
        from kyso.api.web.setup import ensure_setup_code

        # a fresh instance is claimed at /setup with a one-time code shown only here
        setup_code = ensure_setup_code(services)
    except KysoError as exc:
        _fail(exc)
    out.print(
        t("cli.serve.listening", url=f"http://{host or settings.host}:{port or settings.port}")
    )
    if setup_code is not None:
        url = f"http://{host or settings.host}:{port or settings.port}/setup"
        out.print(t("web.setup.console", code=setup_code, url=url), highlight=False)
    if workers == 1:
        uvicorn.run(
            create_app(services=services),
            host=host or settings.host,
            port=port or settings.port,
            log_level=settings.log_level,
            log_config=None,  # keep configure_logging()'s handler
            access_log=access_log,
        )
    else:
        # Worker processes build their own app (and open keys) from the same settings.
        uvicorn.run(
            "kyso.api.app:create_app_from_environment",
            factory=True,
            host=host or settings.host,
            port=port or settings.port,
            workers=workers,
            log_level=settings.log_level,
            log_config=None,
            access_log=access_log,
        )


def main() -> None:
    """Console-script entry point: user errors become messages, never tracebacks.

    Set KYSO_DEBUG=1 to see the traceback of an unexpected error."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not os.environ.get("KYSO_DEBUG"):
        # pyhanko logs tracebacks and advice meant for developers while it validates and
        # signs (MEASURED.md #12); kyso reports what matters in the user's language.
        for name in ("pyhanko", "pyhanko_certvalidator"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        app()
    except KysoError as exc:
        err.print(f"{t('cli.error')} {exc.message()}")
        sys.exit(1)
    except ValidationError as exc:  # a bad KYSO_* setting
        problems = "; ".join(
            f"KYSO_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        err.print(f"{t('cli.error')} {t('cli.bad_settings', problems=problems)}")
        sys.exit(2)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        err.print(f"{t('cli.error')} {t('cli.os_error', path=exc.filename or '', reason=reason)}")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("KYSO_DEBUG"):
            raise
        err.print(f"{t('cli.error')} {t('cli.unexpected', kind=type(exc).__name__, reason=exc)}")
        sys.exit(1)
