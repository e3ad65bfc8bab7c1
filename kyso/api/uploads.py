"""Forms with several files: the attachments of a document sent to other agencies, posted to
``POST /api/v1/exchange/send`` (``multipart/form-data``) and from the web "send" form.

One parser for both, so that the limits and the messages are the same:

* the files of ``file_field`` are streamed to a private temporary folder as they arrive (never
  held whole in memory), at most ``max_files`` of them (422), their total at most ``limit``
  bytes and each at most ``file_limit`` (413 as soon as it is passed, before the rest is read;
  also when ``Content-Length`` announces more than ``limit``);
* every file needs a name, made a safe base name by :func:`safe_name` (no folders, no control
  characters; Vietnamese letters kept); an empty file is refused (422), except the empty,
  unnamed part a browser sends when no file was chosen (skipped);
* the content type is the part's own, else guessed from the name (``mimetypes``); a ``.pdf``
  name is always ``application/pdf``;
* text fields are short (64 KiB each, 1 MiB and 300 fields in all).

Errors are :class:`~kyso.api.problems.Problem` (problem+json in the API, a message on the page
in the web UI).  :func:`receive_form` is an async context manager: the folder is removed when
the block ends, whatever happens.
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
    "ReceivedFile",
    "ReceivedForm",
    "content_type_of",
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
    """Safe base name (:func:`safe_name`)."""
    path: Path
    content_type: str
    size: int


@dataclass
class ReceivedForm:
    """A parsed form: its text fields (in order, repeated names kept) and its files."""

    directory: Path
    fields: list[tuple[str, str]] = field(default_factory=list)
    files: list[ReceivedFile] = field(default_factory=list)

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


def _bad_form(reason: str) -> Problem:
    return Problem(422, "validation", t("api.upload.bad_form", reason=reason))


def _too_large(limit: int) -> Problem:
    return Problem(
        413, "too-large", t("api.upload.too_large", limit=limit, mb=f"{limit / (1 << 20):.1f}")
    )


class _Collector:
    """Builds a :class:`ReceivedForm` part by part, checking every limit as bytes arrive."""

    def __init__(
        self,
        form: ReceivedForm,
        *,
        limit: int,
        file_limit: int | None,
        file_field: str,
        max_files: int,
    ) -> None:
        self.form = form
        self.limit = limit
        self.file_limit = file_limit
        self.file_field = file_field
        self.max_files = max_files
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
        if name == self.file_field:
            self.parts += 1
            if self.parts > self.max_files:
                raise Problem(422, "validation", t("api.upload.too_many", max=self.max_files))
            self._raw_filename = filename
            self._type = content_type
            self._path = self.form.directory / f"part-{self.parts:02d}"
            self._out = self._path.open("wb")
        elif filename is not None:
            raise _bad_form(t("api.upload.unexpected_file", field=name))
        elif len(self.form.fields) >= MAX_FIELDS:
            raise _bad_form(t("api.upload.too_many_fields", max=MAX_FIELDS))

    def data(self, chunk: bytes) -> None:
        if self._out is not None:
            self._size += len(chunk)
            self.total += len(chunk)
            if self.total > self.limit:
                raise _too_large(self.limit)
            if self.file_limit is not None and self._size > self.file_limit:
                name = safe_name(self._raw_filename or "") or "?"
                mb = f"{self.file_limit / (1 << 20):.1f}"
                raise Problem(413, "too-large", t("api.upload.file_too_large", name=name, mb=mb))
            self._out.write(chunk)
        else:
            self._text.extend(chunk)
            self.text_bytes += len(chunk)
            if len(self._text) > MAX_FIELD_BYTES or self.text_bytes > MAX_TEXT_BYTES:
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


@asynccontextmanager
async def receive_form(
    request: Request,
    *,
    limit: int,
    file_limit: int | None = None,
    file_field: str = "attachments",
    max_files: int = MAX_FILES,
) -> AsyncIterator[ReceivedForm]:
    """The ``multipart/form-data`` body of ``request``, its files in a temporary folder that
    is removed when the block ends.  415 for another content type, 413 past ``limit`` bytes
    of files in all (or ``file_limit`` for one file), 422 for too many files, a file without
    a usable name, an empty file, a malformed form."""
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise Problem(
            415, "unsupported-media-type", t("trust.media_type", expected="multipart/form-data")
        )
    announced = request.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > limit + MAX_TEXT_BYTES + MAX_FIELDS * 256:
        raise _too_large(limit)
    form = ReceivedForm(Path(tempfile.mkdtemp(prefix="kyso-form-")))
    collector = _Collector(
        form, limit=limit, file_limit=file_limit, file_field=file_field, max_files=max_files
    )
    try:
        parsed = getattr(request, "_form", None)
        try:
            if parsed is not None:
                await _from_parsed(parsed, collector)
            else:
                await _stream(request, collector, params[b"boundary"])
        except Problem:
            raise
        except Exception as exc:  # python-multipart's parse errors, a client that went away
            raise _bad_form(type(exc).__name__) from None
        finally:
            collector.close()
        yield form
    finally:
        shutil.rmtree(form.directory, ignore_errors=True)
