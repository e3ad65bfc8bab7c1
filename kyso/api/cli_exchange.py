"""``kyso peers`` and ``kyso exchange``: the exchange service from the shell.

* ``kyso peers add CODE URL --cert PEM [--name NAME] [--disable]``: the agency ``CODE`` is
  served by another instance whose exchange API is at ``URL`` (``https://…/api/v1/exchange``)
  and signs with the certificate(s) in ``PEM``; ``kyso peers list``.
* ``kyso exchange deliver [--loop SECONDS]``: deliver every due message once (what beat does),
  or keep doing so every SECONDS (a worker without Celery).
* ``kyso exchange outbox CODE [--state STATE]`` / ``kyso exchange inbox CODE``: an agency's
  messages, as an operator sees them (JSON with ``--json``).

Exit codes: 0 done; 1 an error; 3 bad input (an invalid code, URL or certificate file).
"""

from __future__ import annotations

import getpass
import json
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from kyso.api import exchange
from kyso.api.principal import Principal
from kyso.api.problems import Problem
from kyso.api.services import Services
from kyso.api.settings import get_settings
from kyso.errors import KysoError
from kyso.i18n import set_locale, t

out = Console(soft_wrap=True, markup=False, emoji=False, highlight=False)
err = Console(stderr=True, soft_wrap=True, markup=False, emoji=False, highlight=False)

EXIT_BAD_INPUT = 3

peers_app = typer.Typer(help="Agencies served by other instances (exchange).", no_args_is_help=True)
exchange_app = typer.Typer(
    help="Documents between agencies: delivery, outbox, inbox.", no_args_is_help=True
)


def _services() -> Services:
    settings = get_settings()
    set_locale(settings.locale)
    return Services(settings)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _fail(exc: Exception) -> NoReturn:
    if isinstance(exc, Problem):
        err.print(f"{t('cli.error')} {exc.detail}")
        raise typer.Exit(EXIT_BAD_INPUT if exc.status in (400, 413, 415, 422) else 1)
    assert isinstance(exc, KysoError)
    err.print(f"{t('cli.error')} {exc.message()}")
    raise typer.Exit(1)


def _operator(agency: str) -> Principal:
    """The shell's operator reading an agency's messages (the CLI runs with the server's
    rights: it reads the catalogue directly)."""
    return Principal(
        user_id=0,
        username="operator",
        agency=agency,
        roles=frozenset({"archivist"}),
        via="system",
    )


@peers_app.command("add")
def peers_add(
    code: Annotated[str, typer.Argument(help="Agency code, e.g. 000.00.00.H42 or H42.01")],
    url: Annotated[str, typer.Argument(help="Its exchange API: https://host/api/v1/exchange")],
    cert: Annotated[Path, typer.Option("--cert", help="PEM file: the agency's certificate(s)")],
    name: Annotated[str | None, typer.Option("--name", help="The agency's name")] = None,
    disable: Annotated[bool, typer.Option("--disable", help="Configure it switched off")] = False,
) -> None:
    """Configure (or change) an agency served by another instance."""
    services = _services()
    try:
        pem = cert.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"{t('cli.error')} {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    try:
        peer = exchange.add_peer(
            services, code, url, pem, name=name, enabled=not disable, actor=_actor()
        )
    except (Problem, KysoError) as exc:
        _fail(exc)
    out.print(t("exchange_service.peer.added", code=peer["code"], endpoint=peer["endpoint"]))


@peers_app.command("list")
def peers_list(
    as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False,
) -> None:
    """The configured peers."""
    services = _services()
    try:
        found = exchange.list_peers(services)
    except KysoError as exc:
        _fail(exc)
    if as_json:
        out.print(json.dumps(found, ensure_ascii=False, indent=1))
        return
    if not found:
        out.print(t("exchange_service.peer.none"))
        return
    table = Table("code", "name", "endpoint", "enabled", "certificate SHA-256")
    for peer in found:
        table.add_row(
            peer["code"],
            peer["name"] or "",
            peer["endpoint"],
            "yes" if peer["enabled"] else "no",
            "\n".join(c["sha256"] for c in peer["certificates"]),
        )
    out.print(table)


@exchange_app.command("deliver")
def exchange_deliver(
    loop: Annotated[
        float | None, typer.Option("--loop", min=1, help="Keep delivering every … seconds")
    ] = None,
) -> None:
    """Deliver every message that is due (queued, or abandoned while being sent)."""
    services = _services()
    while True:
        try:
            results = exchange.retry_due(services)
        except KysoError as exc:
            _fail(exc)
        if results or loop is None:
            delivered = sum(1 for r in results if r["state"] == "delivered")
            out.print(
                t("exchange_service.cli.delivered", attempted=len(results), delivered=delivered)
            )
        if loop is None:
            return
        time.sleep(loop)


def _print_rows(rows: list[dict[str, Any]], columns: tuple[str, ...], as_json: bool) -> None:
    if as_json:
        out.print(json.dumps(rows, ensure_ascii=False, indent=1))
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    out.print(table)


@exchange_app.command("outbox")
def exchange_outbox(
    agency: Annotated[str, typer.Argument(help="The sending agency's code")],
    state: Annotated[str | None, typer.Option("--state", help="Only this state")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False,
) -> None:
    """An agency's outgoing messages, newest first, with their last status."""
    services = _services()
    try:
        rows = exchange.outbox(services, _operator(agency), state=state)
    except (Problem, KysoError) as exc:
        _fail(exc)
    _print_rows(
        rows,
        ("id", "recipient", "edxml_document_id", "state", "attempts", "last_status", "last_error"),
        as_json,
    )


@exchange_app.command("inbox")
def exchange_inbox(
    agency: Annotated[str, typer.Argument(help="The receiving agency's code")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False,
) -> None:
    """What an agency received, newest first."""
    services = _services()
    try:
        rows = exchange.inbox(services, _operator(agency))
    except (Problem, KysoError) as exc:
        _fail(exc)
    _print_rows(
        rows,
        ("id", "sender", "edxml_document_id", "state", "answer_code", "document_id", "received_at"),
        as_json,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(peers_app, name="peers")
    app.add_typer(exchange_app, name="exchange")


__all__ = ["register"]
