"""``kyso sign``, ``kyso extend`` and ``kyso timestamp``.

Exit codes: 0 done; 1 other failure; 2 usage; 3 bad input (not a PDF, damaged, encrypted,
output = input...); 4 certificate refused (revoked, expired, untrusted, no signing usage);
5 no timestamp authority answered. In a batch, the worst code of all files.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kyso.api.services import Services
from kyso.api.settings import get_settings
from kyso.errors import KysoError
from kyso.i18n import set_locale, t
from kyso.signer.errors import BadInputError, CertificateRefusedError, TimestampUnavailableError
from kyso.signer.sign import DocumentSigner, Level, SignOptions, SignResult

out = Console(soft_wrap=True, markup=False, emoji=False, highlight=False)
err = Console(stderr=True, soft_wrap=True, markup=False, emoji=False, highlight=False)

EXIT_BAD_INPUT = 3
EXIT_CERTIFICATE = 4
EXIT_TSA = 5


def exit_code(exc: KysoError) -> int:
    """The exit code that tells a script what went wrong."""
    if isinstance(exc, BadInputError):
        return EXIT_BAD_INPUT
    if isinstance(exc, CertificateRefusedError):
        return EXIT_CERTIFICATE
    if isinstance(exc, TimestampUnavailableError):
        return EXIT_TSA
    return 1


def _services() -> Services:
    settings = get_settings()
    set_locale(settings.locale)
    return Services(settings)


def _report(result: SignResult) -> None:
    out.print(
        t(
            "cli.sign.done",
            path=str(result.output),
            level=str(result.level_reached),
            signer=result.signer,
        )
    )
    for warning in result.warnings:
        err.print(t("cli.sign.warning", warning=warning))


def _fail(exc: KysoError, path: Path | None = None) -> int:
    prefix = f"{path}: " if path is not None else ""
    err.print(f"{t('cli.error')} {prefix}{exc.message()}")
    return exit_code(exc)


LevelOpt = Annotated[Level, typer.Option("--level", help="PAdES level to reach")]


def sign(
    files: Annotated[
        list[Path], typer.Argument(help="IN.pdf OUT.pdf, or with --out-dir: IN.pdf...")
    ],
    key: Annotated[str, typer.Option("--key", help="Key label or URI (kyso keys list)")],
    level: LevelOpt = Level.B_T,
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help="Batch: write each signed file here")
    ] = None,
    invisible: Annotated[
        bool, typer.Option("--invisible", help="Sign without a visible appearance")
    ] = False,
    field: Annotated[str | None, typer.Option("--field", help="Signature field name")] = None,
    reason: Annotated[str | None, typer.Option(help="Reason written in the signature")] = None,
    location: Annotated[str | None, typer.Option(help="Location written in the signature")] = None,
    fallback_b_b: Annotated[
        bool,
        typer.Option(
            "--fallback-b-b", help="If no timestamp authority answers, sign at B-B and say so"
        ),
    ] = False,
) -> None:
    """Sign PDFs (PAdES B-B, B-T, B-LT or B-LTA) with a key from the file store or a token."""
    if out_dir is None and len(files) != 2:
        err.print(t("cli.sign.usage"))
        raise typer.Exit(2)
    if out_dir is not None and not out_dir.is_dir():
        err.print(f"{t('cli.error')} {t('signer.output.no_dir', path=str(out_dir))}")
        raise typer.Exit(EXIT_BAD_INPUT)
    options = SignOptions(
        level=level,
        field_name=field,
        reason=reason,
        location=location,
        fallback_to_b_b=fallback_b_b,
    )
    try:
        signer = _services().document_signer(key)
    except KysoError as exc:
        raise typer.Exit(_fail(exc)) from None
    if out_dir is None:
        try:
            _report(signer.sign(files[0], files[1], options))
        except KysoError as exc:
            raise typer.Exit(_fail(exc)) from None
        return
    raise typer.Exit(asyncio.run(_batch(signer, files, out_dir, options)))


async def _batch(
    signer: DocumentSigner, files: list[Path], out_dir: Path, options: SignOptions
) -> int:
    """Sign every file with one signer (the key opened once), with a progress bar."""
    worst = 0
    done = 0
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as progress:
        task = progress.add_task(t("cli.sign.progress"), total=len(files))
        for source in files:
            target = out_dir / source.name
            try:
                result = await signer.async_sign(source, target, options)
                done += 1
                for warning in result.warnings:
                    progress.console.print(f"{source}: {t('cli.sign.warning', warning=warning)}")
            except KysoError as exc:
                progress.console.print(f"{t('cli.error')} {source}: {exc.message()}")
                worst = max(worst, exit_code(exc))
            progress.advance(task)
    out.print(t("cli.sign.batch_done", done=done, total=len(files), path=str(out_dir)))
    return worst


def extend(
    source: Annotated[Path, typer.Argument(help="A signed PDF")],
    target: Annotated[Path, typer.Argument(help="Where to write the extended PDF")],
    level: LevelOpt = Level.B_LTA,
) -> None:
    """Raise a signed PDF to B-LT (revocation data) or B-LTA (plus a document timestamp)."""
    services = _services()
    try:
        result = services.document_signer(None).extend(source, target, level)
    except KysoError as exc:
        raise typer.Exit(_fail(exc)) from None
    out.print(t("cli.extend.done", path=str(result.output), level=str(result.level_reached)))


def timestamp(
    source: Annotated[Path, typer.Argument(help="A PDF")],
    target: Annotated[Path, typer.Argument(help="Where to write the timestamped PDF")],
) -> None:
    """Add a document timestamp (RFC 3161) to a PDF."""
    services = _services()
    try:
        result = services.document_signer(None).timestamp(source, target)
    except KysoError as exc:
        raise typer.Exit(_fail(exc)) from None
    out.print(t("cli.timestamp.done", path=str(result.output)))


def register(app: typer.Typer) -> None:
    app.command("sign")(sign)
    app.command("extend")(extend)
    app.command("timestamp")(timestamp)
