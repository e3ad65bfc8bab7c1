"""``kyso verify``: the receiving agency's check of signed PDFs.

Exit codes (ARCHITECTURE.md): 0 every signature TOTAL_PASSED; 1 any TOTAL_FAILED;
2 any INDETERMINATE (none failed); 3 the input is not a PDF at all or cannot be read.
A damaged or hostile PDF is not bad input: it gets a report and 1 or 2.  In a batch
(a directory or several files), the worst code of all files.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpFetcherBackend
from rich.console import Console
from rich.table import Table

from kyso.api.progress import progress_bar
from kyso.api.services import PRESETS, Services
from kyso.api.settings import get_settings
from kyso.certs.trust import TrustStore, load_certificates
from kyso.errors import KysoError
from kyso.i18n import current_locale, set_locale, t
from kyso.signer.verify import (
    VerificationReport,
    VerifyInputError,
    VerifyPolicy,
    async_verify,
)

out = Console(soft_wrap=True, markup=False, emoji=False, highlight=False)
err = Console(stderr=True, soft_wrap=True, markup=False, emoji=False, highlight=False)

EXIT_BAD_INPUT = 3
_COLOURS = {"TOTAL_PASSED": "green", "TOTAL_FAILED": "red", "INDETERMINATE": "yellow"}


class Format(enum.StrEnum):
    text = "text"
    json = "json"
    html = "html"
    pdf = "pdf"
    xml = "xml"


class Lang(enum.StrEnum):
    vi = "vi"
    en = "en"


class Weak(enum.StrEnum):
    warn = "warn"
    reject = "reject"


def parse_at(value: str) -> dt.datetime:
    """An ISO 8601 time; without a zone it is Vietnam time (+07:00)."""
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise VerifyInputError("verify.cli.bad_time", value=value) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone(dt.timedelta(hours=7)))
    return when


def build_policy(
    services: Services,
    trust: list[Path],
    presets: list[str],
    *,
    offline: bool,
    at: dt.datetime | None,
    weak: str,
) -> VerifyPolicy:
    """Trust what was asked for; with neither --trust nor --trust-preset, kyso's presets
    (the built-in PKI's root, the Government root) and the operator's anchors."""
    store = TrustStore()
    for path in trust:
        try:
            store = store + TrustStore.from_certificates(load_certificates(path))
        except KysoError:
            raise
        except (OSError, ValueError) as exc:
            raise VerifyInputError(
                "verify.cli.bad_trust", path=str(path), reason=str(exc)
            ) from None
    for name in presets:
        if name not in PRESETS:
            raise VerifyInputError("verify.cli.bad_preset", name=name, known=", ".join(PRESETS))
        store = store + services.trust_store(name)
    if not trust and not presets:
        store = services.trust_store(*PRESETS)
    return VerifyPolicy(
        trust_roots=tuple(store.certificates), offline=offline, at=at, weak_algorithms=weak
    )


def _inputs(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and _looks_pdf(p)))
        else:
            files.append(path)
    return files


def _looks_pdf(path: Path) -> bool:
    return path.suffix.lower() == ".pdf"


def render(
    report: VerificationReport,
    fmt: Format,
    source: Path,
    locale: str,
    *,
    visual_diff: bool,
) -> bytes:
    """The report in ``fmt`` as bytes (PDF written through a temporary file)."""
    if fmt is Format.json:
        return (json.dumps(report.to_dict(locale), ensure_ascii=False, indent=2) + "\n").encode()
    if fmt is Format.html:
        from kyso.signer.verify.html_report import render_html

        return render_html(report, source, locale=locale, visual_diff=visual_diff).encode()
    if fmt is Format.xml:
        from kyso.signer.verify.xml_report import render_xml

        return render_xml(report).encode()
    if fmt is Format.pdf:
        from kyso.signer.verify.pdf_report import render_pdf

        with tempfile.TemporaryDirectory(prefix="kyso-report-") as tmp:
            target = Path(tmp) / "report.pdf"
            render_pdf(report, source, target, locale=locale, visual_diff=visual_diff)
            return target.read_bytes()
    return text_report(report, locale).encode()


def text_report(report: VerificationReport, locale: str) -> str:
    """What a clerk reads in a terminal."""
    data = report.to_dict(locale)
    lines = [
        f"{report.file.name}: {t('verify.indication.' + report.indication, locale=locale)}"
        + (f" ({report.sub_indication})" if report.sub_indication else ""),
        f"  {data['summary']}",
    ]
    for reason in data["reasons"]:
        lines.append(f"  - {reason['message']}")
    for sig in data["signatures"]:
        signer = sig["signer"] or {}
        who = signer.get("common_name") or signer.get("subject") or "?"
        ids = ", ".join(f"{k}:{v}" for k, v in (signer.get("identities") or {}).items())
        kind = t(f"verify.cli.kind.{sig['kind']}", locale=locale)
        lines.append(
            f"  [{sig['index'] + 1}] {kind} '{sig['field_name']}': "
            f"{t('verify.indication.' + sig['indication'], locale=locale)}"
            + (f" ({sig['sub_indication']})" if sig["sub_indication"] else "")
        )
        lines.append(f"      {who}" + (f" ({ids})" if ids else ""))
        if signer.get("organisation"):
            lines.append(f"      {signer['organisation']}")
        time = (sig["timestamp"] or {}).get("time") or sig["claimed_signing_time"]
        if time:
            lines.append(f"      {t('verify.cli.time', locale=locale, time=time)}")
        if sig["level"]:
            until = sig["verifiable_until"] or "-"
            level = t("verify.cli.level", locale=locale, level=sig["level"], until=until)
            lines.append(f"      {level}")
        for reason in sig["reasons"]:
            lines.append(f"      - {reason['message']}")
        for warning in sig["warnings"]:
            lines.append(f"      ! {warning['message']}")
    changes = data["changes"]
    if changes:
        lines.append(f"  {t('verify.cli.changes', locale=locale)}")
        for change in changes:
            mark = "ok" if change["permitted"] else "!!"
            lines.append(f"    [{mark}] r{change['revision']}: {change['description']}")
    return "\n".join(lines) + "\n"


def verify_command(
    paths: Annotated[list[Path], typer.Argument(help="PDF files or directories")],
    trust: Annotated[
        list[Path] | None,
        typer.Option("--trust", help="Trust anchor(s) in a PEM/DER file (repeatable)"),
    ] = None,
    trust_preset: Annotated[
        list[str] | None,
        typer.Option("--trust-preset", help="dev (the built-in PKI) or vn-gov (repeatable)"),
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="Validate at this past time (ISO 8601)")
    ] = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Use only what the file embeds; fetch nothing")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report")] = False,
    fmt: Annotated[Format, typer.Option("--format", help="Report format")] = Format.text,
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="Write the report here (a directory for several files)"),
    ] = None,
    lang: Annotated[Lang | None, typer.Option("--lang", help="Report language")] = None,
    visual_diff: Annotated[
        bool,
        typer.Option(
            "--visual-diff/--no-visual-diff",
            help="HTML/PDF: show what changed after signing, side by side",
        ),
    ] = True,
    weak: Annotated[
        Weak, typer.Option("--weak", help="SHA-1 / RSA < 2048: warn (default) or reject")
    ] = Weak.warn,
    seal: Annotated[
        str | None,
        typer.Option("--seal", help="Sign the PDF report (B-T) with this key (needs --out)"),
    ] = None,
) -> None:
    """Verify signed PDFs: every signature and document timestamp, the signer, the chain,
    revocation, time, the level reached and what changed after signing."""
    settings = get_settings()
    locale = (lang.value if lang else None) or settings.locale
    set_locale(locale)
    if as_json:
        fmt = Format.json
    if seal is not None:
        if out_path is None:
            err.print(f"{t('cli.error')} {t('verify.cli.seal_needs_out')}")
            raise typer.Exit(2)
        fmt = Format.pdf
    if fmt is Format.pdf and out_path is None:
        err.print(f"{t('cli.error')} {t('verify.cli.pdf_needs_out')}")
        raise typer.Exit(2)
    services = Services(settings)
    try:
        policy = build_policy(
            services,
            trust or [],
            trust_preset or [],
            offline=offline,
            at=parse_at(at) if at else None,
            weak=weak.value,
        )
        sealer = services.document_signer(seal) if seal else None
    except KysoError as exc:
        err.print(f"{t('cli.error')} {exc.message()}")
        raise typer.Exit(EXIT_BAD_INPUT if isinstance(exc, VerifyInputError) else 1) from None
    files = _inputs(paths)
    batch = len(files) != 1 or any(p.is_dir() for p in paths)
    if batch and out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
    code = asyncio.run(_run(files, policy, fmt, out_path, locale, visual_diff, sealer, batch=batch))
    raise typer.Exit(code)


async def _run(
    files: list[Path],
    policy: VerifyPolicy,
    fmt: Format,
    out_path: Path | None,
    locale: str,
    visual_diff: bool,
    sealer: Any,
    *,
    batch: bool,
) -> int:
    shared = (
        None if policy.offline else AIOHttpFetcherBackend(per_request_timeout=policy.fetch_timeout)
    )
    try:
        return await _run_files(
            files, policy, fmt, out_path, locale, visual_diff, sealer, batch=batch, fetcher=shared
        )
    finally:
        if shared is not None:
            await shared.close()


async def _run_files(
    files: list[Path],
    policy: VerifyPolicy,
    fmt: Format,
    out_path: Path | None,
    locale: str,
    visual_diff: bool,
    sealer: Any,
    *,
    batch: bool,
    fetcher: AIOHttpFetcherBackend | None,
) -> int:
    worst = 0
    rows: list[tuple[str, str, str, int]] = []
    json_items: list[dict[str, Any]] = []
    progress = progress_bar(err, disable=not batch)
    with progress:
        task = progress.add_task(t("verify.cli.progress"), total=len(files))
        for source in files:
            try:
                report = await async_verify(source, policy, fetcher=fetcher)
            except VerifyInputError as exc:
                progress.console.print(f"{t('cli.error')} {exc.message()}")
                rows.append((str(source), "-", exc.message(), EXIT_BAD_INPUT))
                worst = max(worst, EXIT_BAD_INPUT)
                progress.advance(task)
                continue
            code = report.exit_code
            worst = max(worst, code)
            rows.append(
                (
                    str(source),
                    report.indication,
                    report.sub_indication or "",
                    code,
                )
            )
            try:
                await _emit(report, source, fmt, out_path, locale, visual_diff, sealer, batch)
            except KysoError as exc:
                progress.console.print(f"{t('cli.error')} {source}: {exc.message()}")
                worst = max(worst, 1)
            if batch and fmt is Format.json and out_path is None:
                json_items.append(report.to_dict(locale))
            progress.advance(task)
    if batch:
        if fmt is Format.json and out_path is None:
            out.print(json.dumps(json_items, ensure_ascii=False, indent=2))
        else:
            _summary(rows, locale)
    return worst


async def _emit(
    report: VerificationReport,
    source: Path,
    fmt: Format,
    out_path: Path | None,
    locale: str,
    visual_diff: bool,
    sealer: Any,
    batch: bool,
) -> None:
    if batch and fmt is Format.json and out_path is None:
        return
    if batch and out_path is None and fmt is Format.text:
        return  # the summary table says it
    data = await asyncio.to_thread(render, report, fmt, source, locale, visual_diff=visual_diff)
    if out_path is None:
        out.file.write(data.decode())
        out.file.flush()
        return
    target = out_path / f"{source.stem}.{_suffix(fmt)}" if batch else out_path
    if sealer is not None:
        from kyso.signer.sign import Level, SignOptions

        with tempfile.TemporaryDirectory(prefix="kyso-seal-") as tmp:
            unsigned = Path(tmp) / "report.pdf"
            unsigned.write_bytes(data)
            await sealer.async_sign(
                unsigned,
                target,
                SignOptions(
                    level=Level.B_T,
                    reason=t("verify.cli.seal_reason", locale=locale, sha256=report.file.sha256),
                ),
            )
        return
    _write_atomic(target, data)


def _suffix(fmt: Format) -> str:
    return "txt" if fmt is Format.text else fmt.value


def _write_atomic(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # a report is a normal file, not a secret
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _summary(rows: list[tuple[str, str, str, int]], locale: str) -> None:
    table = Table(title=t("verify.cli.summary", locale=locale))
    table.add_column(t("verify.cli.col.file", locale=locale))
    table.add_column(t("verify.cli.col.verdict", locale=locale))
    table.add_column(t("verify.cli.col.reason", locale=locale))
    table.add_column(t("verify.cli.col.exit", locale=locale), justify="right")
    counts: dict[str, int] = {}
    for name, indication, sub, code in rows:
        label = t(f"verify.indication.{indication}", locale=locale) if indication != "-" else "-"
        table.add_row(name, label, sub, str(code), style=_COLOURS.get(indication))
        counts[indication] = counts.get(indication, 0) + 1
    Console(soft_wrap=True, emoji=False, highlight=False).print(table)
    out.print(
        t(
            "verify.cli.totals",
            locale=locale,
            total=len(rows),
            passed=counts.get("TOTAL_PASSED", 0),
            failed=counts.get("TOTAL_FAILED", 0),
            indeterminate=counts.get("INDETERMINATE", 0),
            bad=counts.get("-", 0),
        )
    )


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_command)


__all__ = ["build_policy", "current_locale", "register", "render", "text_report"]
