"""``kyso agencies``, ``kyso users`` and ``kyso tokens``: bootstrapping accounts from the shell.

Passwords and PINs are never taken as arguments (they would land in the shell history and the
process list): they are asked on the terminal (twice), or read from the first line of stdin
with ``--password-stdin`` / ``--pin-stdin`` (a PIN is read from stdin whenever it is not a
terminal). An API token is printed once, when created.

Exit codes: 0 done; 1 an error (unknown agency or user, a conflict, a key store problem);
3 bad input (an invalid code, username, role, a weak or empty password or PIN).
"""

from __future__ import annotations

import getpass
import sys
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from kyso.api.accounts import (
    AccountConflict,
    AccountInvalid,
    canonical_key_ref,
    check_password,
    check_pin_strength,
    issue_personal_key,
    key_kind,
)
from kyso.api.principal import ROLES
from kyso.api.services import Services
from kyso.api.settings import get_settings
from kyso.errors import KysoError
from kyso.i18n import set_locale, t

out = Console(soft_wrap=True, markup=False, emoji=False, highlight=False)
err = Console(stderr=True, soft_wrap=True, markup=False, emoji=False, highlight=False)

EXIT_BAD_INPUT = 3

agencies_app = typer.Typer(help="Agencies (tenants) of the service.", no_args_is_help=True)
users_app = typer.Typer(help="Users, their roles and signing keys.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens for systems.", no_args_is_help=True)

RoleOpt = Annotated[
    list[str],
    typer.Option("--role", help=f"A role ({', '.join(ROLES)}); repeatable"),
]


def _services() -> Services:
    settings = get_settings()
    set_locale(settings.locale)
    return Services(settings)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _fail(exc: KysoError) -> NoReturn:
    err.print(f"{t('cli.error')} {exc.message()}")
    raise typer.Exit(EXIT_BAD_INPUT if isinstance(exc, AccountInvalid | ValueError) else 1)


def _secret(*, from_stdin: bool, prompt: str, confirm: str, what: str, option: str) -> str:
    """A secret from stdin's first line, or asked twice on the terminal."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        err.print(f"{t('cli.error')} {t('accounts.cli.secret_missing', what=what, option=option)}")
        raise typer.Exit(EXIT_BAD_INPUT)
    first = getpass.getpass(prompt)
    if getpass.getpass(confirm) != first:
        err.print(f"{t('cli.error')} {t('accounts.cli.mismatch')}")
        raise typer.Exit(EXIT_BAD_INPUT)
    return first


# -- agencies -------------------------------------------------------------------------------------


@agencies_app.command("create")
def agencies_create(
    code: Annotated[str, typer.Argument(help="Agency code: 000.00.00.H41 or H41.01")],
    name: Annotated[str, typer.Argument(help="Agency name, e.g. 'UBND Quận Long Biên'")],
    seal_key: Annotated[
        str | None,
        typer.Option("--seal-key", help="The agency's seal key (label or URI, see kyso keys list)"),
    ] = None,
) -> None:
    """Create an agency (tenant), optionally with the key its clerks seal with."""
    services = _services()
    try:
        ref = canonical_key_ref(services, seal_key) if seal_key is not None else None
        services.accounts.create_agency(code, name, actor=_actor(), seal_key=ref)
        agency = services.accounts.get_agency(code.strip())
    except KysoError as exc:
        _fail(exc)
    out.print(t("accounts.cli.agency_created", code=agency.code, name=agency.name))
    if agency.seal_key:
        out.print(t("accounts.cli.seal_key_set", code=agency.code, ref=agency.seal_key))


@agencies_app.command("set-seal-key")
def agencies_set_seal_key(
    code: Annotated[str, typer.Argument(help="Agency code")],
    key: Annotated[str, typer.Argument(help="Key label or URI")],
) -> None:
    """Set (or change) the key an agency's clerks seal with."""
    services = _services()
    try:
        ref = canonical_key_ref(services, key)
        services.accounts.set_agency_key(code, ref, actor=_actor())
    except KysoError as exc:
        _fail(exc)
    out.print(t("accounts.cli.seal_key_set", code=code, ref=ref))


@agencies_app.command("list")
def agencies_list() -> None:
    """List the agencies."""
    services = _services()
    try:
        agencies = services.accounts.list_agencies()
    except KysoError as exc:
        _fail(exc)
    table = Table()
    for column in ("code", "name", "seal key"):
        table.add_column(column)
    for agency in agencies:
        table.add_row(agency.code, agency.name, agency.seal_key or "-")
    out.print(table)


# -- users ----------------------------------------------------------------------------------------


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Argument(help="Login name (lower case)")],
    agency: Annotated[str, typer.Option("--agency", help="Agency code")],
    name: Annotated[str, typer.Option("--name", help="Full name, e.g. 'Nguyễn Văn An'")],
    roles: RoleOpt,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin's first line")
    ] = False,
) -> None:
    """Create a user of an agency with their roles and a password."""
    services = _services()
    try:
        password = _secret(
            from_stdin=password_stdin,
            prompt=t("accounts.cli.password_prompt", username=username),
            confirm=t("accounts.cli.password_confirm"),
            what="password",
            option="password",
        )
        check_password(password, username)
        user_id = services.accounts.create_user(
            agency, username, name, password=password, roles=roles, actor=_actor()
        )
        user = services.accounts.get_user(user_id)
    except KysoError as exc:
        _fail(exc)
    out.print(
        t(
            "accounts.cli.user_created",
            username=user.username,
            id=user.id,
            agency=user.agency,
            roles=", ".join(user.roles),
        )
    )


@users_app.command("list")
def users_list(
    agency: Annotated[str, typer.Option("--agency", help="Agency code")],
) -> None:
    """List the users of an agency."""
    services = _services()
    try:
        services.accounts.get_agency(agency)
        users = services.accounts.list_users(agency)
    except KysoError as exc:
        _fail(exc)
    table = Table()
    for column in ("id", "username", "full name", "roles", "state", "keys"):
        table.add_column(column)
    for user in users:
        table.add_row(
            str(user.id),
            user.username,
            user.full_name,
            ", ".join(user.roles),
            "disabled" if user.disabled else "active",
            ", ".join(user.keys) or "-",
        )
    out.print(table)


def _set_disabled(username: str, disabled: bool) -> None:
    services = _services()
    try:
        user = services.accounts.user_by_name(username)
        services.accounts.set_disabled(user.id, disabled, agency=None, actor=_actor())
    except KysoError as exc:
        _fail(exc)
    done = "accounts.cli.user_disabled" if disabled else "accounts.cli.user_enabled"
    out.print(t(done, username=user.username))


@users_app.command("disable")
def users_disable(username: Annotated[str, typer.Argument(help="Login name")]) -> None:
    """Disable a user: their sessions end and their API tokens stop working at once."""
    _set_disabled(username, True)


@users_app.command("enable")
def users_enable(username: Annotated[str, typer.Argument(help="Login name")]) -> None:
    """Enable a disabled user again."""
    _set_disabled(username, False)


@users_app.command("issue-key")
def users_issue_key(
    username: Annotated[str, typer.Argument(help="Login name")],
    ids: Annotated[
        list[str],
        typer.Option("--id", help="Identity number, e.g. CCCD:001090000001 (repeatable)"),
    ],
    title: Annotated[str | None, typer.Option(help="Position, e.g. 'Chủ tịch'")] = None,
    unit: Annotated[str | None, typer.Option(help="Unit within the agency")] = None,
    key_type: Annotated[str, typer.Option("--key-type", help="rsa-2048, rsa-3072 or ec-p256")] = (
        "rsa-2048"
    ),
    days: Annotated[int, typer.Option(help="Validity in days", min=1, max=3650)] = 730,
    pin_stdin: Annotated[
        bool,
        typer.Option(
            "--pin-stdin",
            help="Read the signing PIN from stdin's first line (the default without a terminal)",
        ),
    ] = False,
) -> None:
    """Issue a personal signing certificate (built-in PKI) whose key is encrypted with the
    user's signing PIN, and bind it to the user: the server can sign with it only when the
    user gives the PIN."""
    services = _services()
    try:
        user = services.accounts.user_by_name(username)
        pin = _secret(
            from_stdin=pin_stdin or not sys.stdin.isatty(),
            prompt=t("accounts.cli.pin_prompt", username=user.username),
            confirm=t("accounts.cli.pin_confirm"),
            what="PIN",
            option="pin",
        )
        if not user.has_pin:
            check_pin_strength(pin)
        issued = issue_personal_key(
            services,
            user.id,
            pin=pin,
            ids=ids,
            title=title,
            unit=unit,
            key_type=key_type,
            days=days,
            actor=_actor(),
        )
    except KysoError as exc:
        _fail(exc)
    out.print(
        t(
            "accounts.cli.key_issued",
            username=user.username,
            subject=issued.certificate.subject.rfc4514_string(),
            serial=format(issued.certificate.serial_number, "X"),
            ref=issued.key_uri,
        )
    )
    image = services.image_path(issued.label)
    if not image.exists():
        # a made-up signature so the first signature is visible (the agency seal is drawn
        # over it); 'kyso keys image' or the admin page replaces it with the real one
        from kyso.signer.appearance import demo_signature_png

        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(demo_signature_png(user.full_name))
        out.print(t("cli.issue.demo_image", path=str(image)))


@users_app.command("bind-key")
def users_bind_key(
    username: Annotated[str, typer.Argument(help="Login name")],
    key: Annotated[str, typer.Argument(help="Key label or URI (e.g. a PKCS#11 token object)")],
) -> None:
    """Let a user sign with an existing key (their PIN is checked each time they use it)."""
    services = _services()
    try:
        user = services.accounts.user_by_name(username)
        ref = canonical_key_ref(services, key)
        services.accounts.bind_key(user.id, ref, actor=_actor())
    except KysoError as exc:
        _fail(exc)
    out.print(t("accounts.cli.key_bound", ref=ref, username=user.username))


@users_app.command("set-pin")
def users_set_pin(
    username: Annotated[str, typer.Argument(help="Login name")],
    pin_stdin: Annotated[
        bool,
        typer.Option(
            "--pin-stdin",
            help="Read the signing PIN from stdin's first line (the default without a terminal)",
        ),
    ] = False,
) -> None:
    """Set a user's signing PIN (for keys on a token; a personal key file keeps the PIN it was
    issued with)."""
    services = _services()
    try:
        user = services.accounts.user_by_name(username)
        pin = _secret(
            from_stdin=pin_stdin or not sys.stdin.isatty(),
            prompt=t("accounts.cli.pin_prompt", username=user.username),
            confirm=t("accounts.cli.pin_confirm"),
            what="PIN",
            option="pin",
        )
        if any(key_kind(k) == "personal" for k in user.keys):
            # their key files stay encrypted with the PIN they were issued with
            raise AccountConflict("accounts.pin.has_personal_keys", username=user.username)
        services.accounts.set_pin(user.id, pin, actor=_actor())
    except KysoError as exc:
        _fail(exc)


# -- tokens ---------------------------------------------------------------------------------------


@tokens_app.command("create")
def tokens_create(
    username: Annotated[str, typer.Argument(help="The user the token acts for")],
    name: Annotated[str, typer.Option("--name", help="What the token is for")],
    roles: Annotated[
        list[str] | None,
        typer.Option("--role", help="Limit the token to these roles (default: the user's)"),
    ] = None,
) -> None:
    """Create an API token; it is printed this once and only its hash is kept."""
    services = _services()
    try:
        user = services.accounts.user_by_name(username)
        token_id, plaintext = services.accounts.create_token(
            user.id, name, roles=roles or None, actor=_actor()
        )
        info = services.accounts.get_token(token_id, agency=None)
    except KysoError as exc:
        _fail(exc)
    err.print(
        t(
            "accounts.cli.token_created",
            id=info.id,
            name=info.name,
            username=user.username,
            roles=", ".join(info.roles),
        )
    )
    print(plaintext)


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[int, typer.Argument(help="Token id")]) -> None:
    """Revoke an API token: it stops working on the next request."""
    services = _services()
    try:
        services.accounts.revoke_token(token_id, agency=None, actor=_actor())
    except KysoError as exc:
        _fail(exc)
    out.print(t("accounts.cli.token_revoked", id=token_id))


@tokens_app.command("list")
def tokens_list(
    agency: Annotated[str | None, typer.Option("--agency", help="Agency code")] = None,
) -> None:
    """List API tokens (never their secrets)."""
    services = _services()
    try:
        tokens = services.accounts.list_tokens(agency)
    except KysoError as exc:
        _fail(exc)
    table = Table()
    for column in ("id", "user", "name", "roles", "last used", "revoked"):
        table.add_column(column)
    for tk in tokens:
        table.add_row(
            str(tk.id),
            tk.username,
            tk.name,
            ", ".join(tk.roles),
            f"{tk.last_used_at:%Y-%m-%d %H:%M}" if tk.last_used_at else "-",
            f"{tk.revoked_at:%Y-%m-%d %H:%M}" if tk.revoked_at else "-",
        )
    out.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(agencies_app, name="agencies")
    app.add_typer(users_app, name="users")
    app.add_typer(tokens_app, name="tokens")


__all__ = ["register"]
