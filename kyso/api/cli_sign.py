"""``kyso sign``, ``kyso extend`` and ``kyso timestamp``.

Exit codes: 0 done; 1 other failure; 2 usage; 3 bad input (not a PDF, damaged, encrypted,
output = input...); 4 certificate refused (revoked, expired, untrusted, no signing usage);
5 no timestamp authority answered. In a batch, the worst code of all files.
"""

from __future__ import annotations

import asyncio
import enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kyso.api.progress import progress_bar
from kyso.api.services import Services
from kyso.api.settings import get_settings
from kyso.certs.identity import identity_of
from kyso.errors import KysoError
from kyso.i18n import set_locale, t
from kyso.signer.appearance import (
    Appearance,
    PersonAppearance,
    Placement,
    SealAppearance,
    TextStampAppearance,
)
from kyso.signer.errors import (
    AppearanceError,
    BadInputError,
    CertificateRefusedError,
    SigningError,
    TimestampUnavailableError,
)
from kyso.signer.register import (
    fill_register_fields,
    parse_date,
    parse_number,
    read_register_fields,
)
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


class Role(enum.StrEnum):
    person = "person"
    agency = "agency"
    attachment = "attachment"
    copy = "copy"


def _box(text: str) -> tuple[float, float, float, float]:
    try:
        x1, y1, x2, y2 = (float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(t("cli.sign.bad_box", box=text)) from None
    return (x1, y1, x2, y2)


def _appearance(
    services: Services,
    signer: DocumentSigner,
    key: str,
    role: Role | None,
    image: Path | None,
    stamp_lines: list[str],
) -> Appearance:
    """The Decree 30 appearance for ``role`` (default: from the certificate's identity)."""
    if role is None:
        kind = identity_of(signer.key.certificate).kind if signer.key is not None else "person"
        role = Role.agency if kind == "organisation" else Role.person
    if role in (Role.attachment, Role.copy):
        if not stamp_lines:
            raise SigningError("cli.sign.stamp_lines_needed", role=str(role))
        return TextStampAppearance(stamp_lines)
    if image is None:
        label = signer.key.label if signer.key is not None else key
        image = services.image_path(label)
        if not image.is_file():
            raise AppearanceError("cli.sign.no_image", label=label, path=str(image))
    try:
        data = image.read_bytes()
    except OSError as exc:
        raise BadInputError(
            "signer.input.unreadable", path=str(image), reason=exc.strerror or str(exc)
        ) from None
    return SealAppearance(data) if role is Role.agency else PersonAppearance(data)


def _is_person(signer: DocumentSigner) -> bool:
    return signer.key is not None and identity_of(signer.key.certificate).kind == "person"


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
    role: Annotated[
        Role | None,
        typer.Option(
            help="person: signature image between title and name; agency: red seal over the "
            "person's signature; attachment/copy: top-right text (default: from the certificate)"
        ),
    ] = None,
    image: Annotated[
        Path | None,
        typer.Option(help="Signature or seal PNG (default: the image kept for the key)"),
    ] = None,
    stamp_line: Annotated[
        list[str] | None,
        typer.Option(help="attachment/copy: a line of the text stamp (repeat the option)"),
    ] = None,
    page: Annotated[int | None, typer.Option(help="Page for --box (1 = first, -1 = last)")] = None,
    box: Annotated[str | None, typer.Option(help="Signature box x1,y1,x2,y2 in PDF points")] = None,
    anchor: Annotated[
        str | None, typer.Option(help="Place the signature at this text of the page")
    ] = None,
    field: Annotated[str | None, typer.Option("--field", help="Signature field name")] = None,
    reason: Annotated[str | None, typer.Option(help="Reason written in the signature")] = None,
    location: Annotated[str | None, typer.Option(help="Location written in the signature")] = None,
    fallback_b_b: Annotated[
        bool,
        typer.Option(
            "--fallback-b-b", help="If no timestamp authority answers, sign at B-B and say so"
        ),
    ] = False,
    register_fields: Annotated[
        bool,
        typer.Option(
            "--register-fields/--no-register-fields",
            help="person: add the empty number and date fields the clerk fills (kyso register)",
        ),
    ] = True,
) -> None:
    """Sign PDFs (PAdES B-B, B-T, B-LT or B-LTA) as Decree 30/2020 describes, with a key from
    the file store or a token."""
    if out_dir is None and len(files) != 2:
        err.print(t("cli.sign.usage"))
        raise typer.Exit(2)
    if out_dir is not None and not out_dir.is_dir():
        err.print(f"{t('cli.error')} {t('signer.output.no_dir', path=str(out_dir))}")
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        services = _services()
        signer = services.document_signer(key)
        placement = None
        if box is not None:
            index = None if page is None else (page - 1 if page > 0 else page)
            placement = Placement.at(_box(box), page=index)
        elif anchor is not None:
            placement = Placement.near_text(anchor)
        appearance = (
            None if invisible else _appearance(services, signer, key, role, image, stamp_line or [])
        )
    except KysoError as exc:
        raise typer.Exit(_fail(exc)) from None
    is_person = isinstance(appearance, PersonAppearance) or (
        appearance is None and role in (None, Role.person) and _is_person(signer)
    )
    options = SignOptions(
        level=level,
        field_name=field,
        reason=reason,
        location=location,
        fallback_to_b_b=fallback_b_b,
        appearance=appearance,
        placement=placement,
        register_fields=is_person and register_fields,
    )
    if isinstance(appearance, SealAppearance) and out_dir is None:
        try:
            number, date = read_register_fields(files[0])
        except KysoError:
            number = date = None
        if number is None or date is None:
            err.print(t("cli.sign.not_registered", path=str(files[0])))
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
    with progress_bar(err) as progress:
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


def register_number(
    source: Annotated[Path, typer.Argument(help="The PDF the competent person signed")],
    target: Annotated[Path, typer.Argument(help="Where to write the registered PDF")],
    number: Annotated[str, typer.Option("--number", help="Number in the year, e.g. 15")],
    symbol: Annotated[str, typer.Option("--symbol", help="Symbol, e.g. QĐ-UBND")],
    date: Annotated[
        str | None, typer.Option("--date", help="Issue date YYYY-MM-DD (default: today)")
    ] = None,
    place: Annotated[str | None, typer.Option(help="Place before the date, e.g. Hà Nội")] = None,
) -> None:
    """The clerk's step (Decree 30/2020 Art. 15): write "Số: 15/QĐ-UBND" and the date into the
    fields prepared when the person signed, as permitted form filling."""
    _services()  # locale
    try:
        issued = parse_date(date) if date is not None else None
        number_line, date_line = fill_register_fields(
            source, target, number=parse_number(number), symbol=symbol, issued=issued, place=place
        )
    except KysoError as exc:
        raise typer.Exit(_fail(exc)) from None
    out.print(t("cli.register.done", path=str(target), number=number_line, date=date_line))


def prepare_external(
    source: Annotated[Path, typer.Argument(help="The PDF to sign")],
    cert: Annotated[
        Path, typer.Option("--cert", help="Signer certificate (PEM/DER), then its issuers")
    ],
    level: LevelOpt = Level.B_T,
) -> None:
    """Two-phase signing, step 1 (USB token, remote signer): print, as JSON, what the key must
    sign and a handle (an invisible signature). The key never comes near kyso; finish with
    'kyso complete' within 15 minutes."""
    import base64
    import json

    from kyso.certs.trust import load_certificates
    from kyso.signer import external

    services = _services()
    try:
        certs = load_certificates(cert)
        work_dir = services.pending_dir()
        prepared = external.prepare_sync(
            source,
            certificate=certs[0],
            chain=certs[1:],
            options=SignOptions(level=level),
            revocation=services.revocation_context(),
            timestamper=services.timestamper(),
            work_dir=work_dir,
        )
    except KysoError as exc:
        raise typer.Exit(_fail(exc)) from None
    body = {
        "handle": prepared.handle,
        "signed_attributes": base64.b64encode(prepared.signed_attributes).decode(),
        "digest": base64.b64encode(prepared.digest).decode(),
        "digest_algorithm": prepared.digest_algorithm,
        "signature_algorithm": prepared.signature_algorithm,
        "expires_at": prepared.expires_at.isoformat(),
    }
    print(json.dumps(body, indent=2))


def complete_external(
    handle: Annotated[str, typer.Argument(help="The handle 'kyso prepare' printed")],
    target: Annotated[Path, typer.Argument(help="Where to write the signed PDF")],
    cert: Annotated[Path, typer.Option("--cert", help="The same signer certificate")],
    signature: Annotated[
        Path | None, typer.Option(help="Raw signature value over the signed attributes")
    ] = None,
    cms: Annotated[Path | None, typer.Option(help="Or a whole CMS SignedData (DER)")] = None,
) -> None:
    """Two-phase signing, step 2: check the signature (or CMS) and write the signed PDF."""
    from kyso.certs.trust import load_certificates
    from kyso.signer import external

    services = _services()
    try:
        certificate = load_certificates(cert)[0]
        result = external.complete_sync(
            handle,
            signature=signature.read_bytes() if signature is not None else None,
            cms=cms.read_bytes() if cms is not None else None,
            certificate=certificate,
            target=target,
            work_dir=services.pending_dir(),
            revocation=services.revocation_context(),
            timestamper=services.timestamper(),
        )
    except OSError as exc:
        err.print(f"{t('cli.error')} {t('cli.os_error', path=exc.filename or '', reason=exc)}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except KysoError as exc:
        raise typer.Exit(_fail(exc)) from None
    _report(result)


def register(app: typer.Typer) -> None:
    app.command("prepare")(prepare_external)
    app.command("complete")(complete_external)
    app.command("register")(register_number)
    app.command("sign")(sign)
    app.command("extend")(extend)
    app.command("timestamp")(timestamp)
