"""Streamed ``multipart/form-data`` forms with files: the attachments of a document sent to
other agencies (``POST /api/v1/exchange/send`` and the web "send" form) and the one PDF of
``POST /api/v1/documents`` and ``POST /api/v1/verify``.

One parser for all of them, so that the limits and the messages are the same:

* the files of ``file_field`` are streamed to a private temporary folder as they arrive (never
  held whole in memory), at most ``max_files`` of them (422), their total at most ``limit``
  bytes and each at most ``file_limit`` (413 as soon as it is passed, before the rest is read;
  also when ``Content-Length`` announces more than the limits allow); a file part in another
  field is read as that field's text (``curl -F metadata=@meta.json``), within the text
  limits;
* attachments (``named_files``) need a name, made a safe base name by :func:`safe_name` (no
  folders, no control characters; Vietnamese letters kept); an empty one is refused (422),
  except the empty, unnamed part a browser sends when no file was chosen (skipped).  A file
  judged by its content alone (a PDF, which the caller opens) is kept whatever its name and
  size;
* the content type is the part's own, else guessed from the name (``mimetypes``); a ``.pdf``
  name is always ``application/pdf``;
* text fields are short (64 KiB each; at most ``text_limit`` bytes and ``max_fields`` fields
  in all: 1 MiB and 300 by default).

Errors are :class:`~kyso.api.problems.Problem` (problem+json in the API, a message on the page
in the web UI).  :func:`receive_form` is an async context manager: the folder is removed when
the block ends, whatever happens; :func:`read_form` leaves that to its caller
(:meth:`ReceivedForm.cleanup`).
"""

from __future__ import annotations

import mimetypes
import re
import shutil
import tempfile
import unicodedata
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import UploadFile

from kyso.api.problems import Problem
from kyso.exchange.edxml import Attachment, Limits
from kyso.i18n import t

__all__ = [
    "ATTACHMENT_MAX_BYTES",
    "MAX_FILES",
    "FormRules",
    "ReceivedFile",
    "ReceivedForm",
    "content_type_of",
    "read_form",
    "receive_form",
    "safe_name",
]

MAX_FILES = 20
"""Files one form may carry."""
MAX_FIELDS = 300
"""Text fields (200 recipients, the descriptions of 20 files and a few more)."""
MAX_FIELD_BYTES = 64 * 1024
MAX_TEXT_BYTES = 1024 * 1024
"""All text fields together."""
PART_OVERHEAD = 256
"""Room for the boundary and headers of one part, when ``Content-Length`` is judged."""
NAME_CHARS = 200
"""A file name is cut to this many characters (its extension kept)."""
DESCRIPTION_CHARS = 500
CHUNK = 1024 * 1024
ATTACHMENT_MAX_BYTES = Limits().max_attachment_bytes
"""One attachment of an edXML message (the builder's and the readers' limit, 50 MiB)."""

_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_RESERVED = re.compile(r'[<>:"/\\|?*]')
_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL"} | {
    f"{p}{n}" for p in ("COM", "LPT") for n in range(1, 10)
}


# -- names and types ----------------------------------------------------------------------------


def _printable(text: str) -> str:
    """``text`` in NFC without control or format characters (a tab or line break becomes a
    space, runs of spaces one space)."""
    text = unicodedata.normalize("NFC", text)
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in text
        if ch.isspace() or unicodedata.category(ch)[0] != "C"
    )
    return " ".join(kept.split())


def safe_name(raw: str) -> str:
    """The base name of a client's file name, safe to write anywhere and to show: its last
    path component (``/`` or ``\\``), NFC, no control or format characters (no right-to-left
    override hiding the real extension), ``<>:"|?*`` as ``_``, no leading or trailing dots
    and spaces, at most 200 characters (extension kept).  Letters of any script stay
    (``Quyết định.pdf``).  "" when nothing usable is left."""
    name = _printable(raw.replace("\\", "/").rsplit("/", 1)[-1])
    name = _RESERVED.sub("_", name).strip(" .")
    if len(name) > NAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: NAME_CHARS - len(ext) - 1].rstrip(" .") + "." + ext
        else:
            name = name[:NAME_CHARS].rstrip(" .")
    if name.split(".", 1)[0].upper() in _WINDOWS_DEVICES:
        name = "_" + name
    return name


def content_type_of(name: str, given: str | None) -> str:
    """The media type of a file: ``application/pdf`` for a ``.pdf`` name, else the one the
    client gave (when it is a well-formed type other than ``application/octet-stream``, which
    browsers send for "unknown"), else the one ``mimetypes`` knows for the name, else
    ``application/octet-stream``."""
    if name.lower().endswith(".pdf"):
        return "application/pdf"
    media = (given or "").split(";", 1)[0].strip().lower()
    if media != "application/octet-stream" and _MEDIA_TYPE.fullmatch(media):
        return media
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"


def clean_description(text: str | None) -> str | None:
    """A file's description as it can travel in XML: printable, at most 500 characters."""
    if text is None:
        return None
    cleaned = _printable(text)[:DESCRIPTION_CHARS].strip()
    return cleaned or None


# -- the form -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedFile:
    """One uploaded file, in the form's temporary folder."""

    name: str
    """Safe base name (:func:`safe_name`); "" for a file without a usable name (only when the
    form's files are not ``named_files``)."""
    path: Path
    content_type: str
    size: int


@dataclass
class ReceivedForm:
    """A parsed form: its text fields (in order, repeated names kept) and its files."""

    directory: Path
    fields: list[tuple[str, str]] = field(default_factory=list)
    files: list[ReceivedFile] = field(default_factory=list)

    def cleanup(self) -> None:
        """Remove the temporary folder (what :func:`receive_form` does when its block ends)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def get(self, name: str) -> str | None:
        """The first value of text field ``name``."""
        return next((v for k, v in self.fields if k == name), None)

    def getlist(self, name: str) -> list[str]:
        return [v for k, v in self.fields if k == name]

    def names(self) -> set[str]:
        return {k for k, _ in self.fields}

    def attachments(self, descriptions: Sequence[str | None] = ()) -> list[Attachment]:
        """The files as edXML attachments (read from their temporary files when the message
        is built), ``descriptions[i]`` for the i-th file; more descriptions than files is a
        422."""
        if len(descriptions) > len(self.files):
            raise Problem(
                422,
                "validation",
                t("api.upload.descriptions", files=len(self.files), count=len(descriptions)),
            )
        texts = [clean_description(d) for d in descriptions]
        texts += [None] * (len(self.files) - len(texts))
        return [
            Attachment(name=f.name, path=f.path, content_type=f.content_type, description=d)
            for f, d in zip(self.files, texts, strict=True)
        ]


@dataclass(frozen=True)
class FormRules:
    """What one form may carry (the defaults: the attachments of a message)."""

    limit: int
    """Bytes of files in all (413 past it)."""
    file_limit: int | None = None
    """Bytes of one file (413 past it)."""
    file_field: str = "attachments"
    """The only field that takes files."""
    max_files: int = MAX_FILES
    """One: a form of one file, whose messages speak of "the file"."""
    max_fields: int = MAX_FIELDS
    """Text fields (parts, repeated names counted each time)."""
    text_limit: int = MAX_TEXT_BYTES
    """Bytes of all text fields together."""
    named_files: bool = True
    """Files keep their names (attachments): a usable name is needed and an empty file is
    refused.  False: a file is judged by its content alone (the caller opens the PDF): kept
    whatever its name (``""`` when none is usable) and size."""

    def announced_too_much(self, length: str) -> bool:
        """``Content-Length`` says more than these files and fields can take."""
        room = self.limit + self.text_limit + self.max_fields * PART_OVERHEAD
        return length.isdigit() and int(length) > room


def _bad_form(reason: str) -> Problem:
    return Problem(422, "validation", t("api.upload.bad_form", reason=reason))


def _too_large(rules: FormRules) -> Problem:
    limit = rules.limit
    if rules.max_files == 1:  # "the file", not "the files ... in all"
        return Problem(413, "too-large", t("workflow.upload.too_large", limit=limit))
    return Problem(
        413, "too-large", t("api.upload.too_large", limit=limit, mb=f"{limit / (1 << 20):.1f}")
    )


class _Collector:
    """Builds a :class:`ReceivedForm` part by part, checking every limit as bytes arrive."""

    def __init__(self, form: ReceivedForm, rules: FormRules) -> None:
        self.form = form
        self.rules = rules
        self.total = 0
        self.text_bytes = 0
        self.parts = 0
        self.seen: set[str] = set()
        self._name: str | None = None
        self._raw_filename: str | None = None
        self._type: str | None = None
        self._path: Path | None = None
        self._out: IO[bytes] | None = None
        self._size = 0
        self._text = bytearray()

    def start(self, name: str | None, filename: str | None, content_type: str | None) -> None:
        if not name:
            raise _bad_form(t("api.upload.part_without_name"))
        self._name = name
        self._size = 0
        self._text = bytearray()
        rules = self.rules
        if name == rules.file_field:
            self.parts += 1
            if self.parts > rules.max_files:
                if rules.max_files == 1:
                    raise _bad_form(t("api.upload.one_file", field=name))
                raise Problem(422, "validation", t("api.upload.too_many", max=rules.max_files))
            self._raw_filename = filename
            self._type = content_type
            self._path = self.form.directory / f"part-{self.parts:02d}"
            self._out = self._path.open("wb")
        # A file part in a text field (``curl -F metadata=@meta.json``) is read as that
        # field's text, within the same limits as typed text.
        elif len(self.form.fields) >= rules.max_fields:
            raise _bad_form(t("api.upload.too_many_fields", max=rules.max_fields))

    def data(self, chunk: bytes) -> None:
        rules = self.rules
        if self._out is not None:
            self._size += len(chunk)
            self.total += len(chunk)
            if self.total > rules.limit:
                raise _too_large(rules)
            if rules.file_limit is not None and self._size > rules.file_limit:
                name = safe_name(self._raw_filename or "") or "?"
                mb = f"{rules.file_limit / (1 << 20):.1f}"
                raise Problem(413, "too-large", t("api.upload.file_too_large", name=name, mb=mb))
            self._out.write(chunk)
        else:
            self._text.extend(chunk)
            self.text_bytes += len(chunk)
            if len(self._text) > MAX_FIELD_BYTES or self.text_bytes > rules.text_limit:
                raise _bad_form(t("api.upload.field_too_long", field=self._name or ""))

    def end(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
            assert self._path is not None
            self._file_done(self._path)
        elif self._name is not None:
            self.form.fields.append((self._name, self._text.decode("utf-8", "replace")))
        self._name = None

    def _file_done(self, path: Path) -> None:
        raw = self._raw_filename or ""
        if not self.rules.named_files:  # judged by its content (the caller opens it)
            self._keep(path, safe_name(raw))
            return
        if not raw and self._size == 0:
            path.unlink(missing_ok=True)  # a browser's file input with no file chosen
            return
        if not raw:
            raise Problem(422, "validation", t("api.upload.no_name"))
        name = safe_name(raw)
        if not name:
            raise Problem(422, "validation", t("api.upload.bad_name", name=_printable(raw)[:100]))
        if self._size == 0:
            raise Problem(422, "validation", t("api.upload.empty", name=name))
        if name.casefold() in self.seen:
            raise Problem(422, "validation", t("api.upload.duplicate", name=name))
        self.seen.add(name.casefold())
        self._keep(path, name)

    def _keep(self, path: Path, name: str) -> None:
        self.form.files.append(
            ReceivedFile(
                name=name,
                path=path,
                content_type=content_type_of(name, self._type),
                size=self._size,
            )
        )

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


def _decode(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


async def _stream(request: Request, collector: _Collector, boundary: bytes) -> None:
    """Parse the body as it arrives (python-multipart's push parser)."""
    headers: list[tuple[bytes, bytes]] = []
    header_name = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        headers.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers.append((bytes(header_name).lower(), bytes(header_value)))
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        found = dict(headers)
        _, options = parse_options_header(found.get(b"content-disposition", b""))
        collector.start(
            _decode(options.get(b"name")),
            _decode(options.get(b"filename")),
            _decode(found.get(b"content-type")),
        )

    def on_part_data(data: bytes, start: int, end: int) -> None:
        collector.data(data[start:end])

    def on_part_end() -> None:
        collector.end()

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
        },
    )
    async for chunk in request.stream():
        parser.write(chunk)
    parser.finalize()


async def _from_parsed(form: Any, collector: _Collector) -> None:
    """The same from a form Starlette already parsed (the CSRF check of a cookie session
    reads the form before the route runs): copied, with the same limits."""
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            collector.start(name, value.filename or "", value.content_type)
            while chunk := await value.read(CHUNK):
                collector.data(chunk)
        else:
            collector.start(name, None, None)
            collector.data(str(value).encode())
        collector.end()


async def read_form(request: Request, rules: FormRules) -> ReceivedForm:
    """The ``multipart/form-data`` body of ``request`` read under ``rules``, its files in a
    temporary folder the caller removes (:meth:`ReceivedForm.cleanup`; removed here when the
    form is refused).  415 for another content type, 413 past ``rules.limit`` bytes of files
    in all (or ``rules.file_limit`` for one file), 422 for too many files or fields (a file
    part in a text field is read as its text), a file without a usable name or empty
    (attachments), a malformed form."""
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise Problem(
            415, "unsupported-media-type", t("trust.media_type", expected="multipart/form-data")
        )
    if rules.announced_too_much(request.headers.get("content-length", "")):
        raise _too_large(rules)
    form = ReceivedForm(Path(tempfile.mkdtemp(prefix="kyso-form-")))
    collector = _Collector(form, rules)
    try:
        try:
            parsed = getattr(request, "_form", None)
            if parsed is not None:
                await _from_parsed(parsed, collector)
            else:
                await _stream(request, collector, params[b"boundary"])
        finally:
            collector.close()
    except Problem:
        form.cleanup()
        raise
    except Exception as exc:  # python-multipart's parse errors, a client that went away
        form.cleanup()
        raise _bad_form(type(exc).__name__) from None
    except BaseException:
        form.cleanup()
        raise
    return form


@asynccontextmanager
async def receive_form(
    request: Request,
    *,
    limit: int,
    file_limit: int | None = None,
    file_field: str = "attachments",
    max_files: int = MAX_FILES,
) -> AsyncIterator[ReceivedForm]:
    """:func:`read_form` with the rules of attachments (``limit`` bytes in all, ``file_limit``
    each, at most ``max_files`` in ``file_field``), the folder removed when the block ends."""
    rules = FormRules(limit, file_limit=file_limit, file_field=file_field, max_files=max_files)
    form = await read_form(request, rules)
    try:
        yield form
    finally:
        form.cleanup()
