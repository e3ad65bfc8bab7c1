"""A faster hex-string reader for pyhanko's PDF parser.

pyhanko reads a hex string (``<...>``) one token at a time; a signature's ``/Contents`` is
tens of kilobytes of hex, so every signature of a file costs 20-40 ms of Python just to be
read (measured by ``bench/verify.py``).  This reader takes the same input and gives the
same result — the same whitespace skipped, the same error on a non-hex byte, an odd last
digit padded with 0 — reading 64 KiB at a time.  It replaces pyhanko's function for the
whole process (signing reads hex strings too), once, when :func:`install` is called.
"""

from __future__ import annotations

import binascii
from typing import IO, Any

from pyhanko.pdf_utils import generic

_HEX = b"0123456789abcdefABCDEF"
_WHITESPACE = b" \t\r\n\f\x00"
_CHUNK = 1 << 16
_original = generic.read_hex_string_from_stream


def read_hex_string_from_stream(stream: IO[bytes]) -> Any:
    stream.read(1)  # the "<"
    start = stream.tell()
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            raise generic.PdfStreamError("Stream has ended unexpectedly")
        end = chunk.find(b">")
        if end >= 0:
            parts.append(chunk[:end])
            size += end
            stream.seek(start + size + 1)
            break
        parts.append(chunk)
        size += len(chunk)
    body = b"".join(parts).translate(None, _WHITESPACE)
    if body.translate(None, _HEX):
        bad = next(bytes([b]) for b in body if b not in _HEX)
        raise generic.PdfStreamError("Unexpected token in hex string: " + repr(bad))
    if len(body) % 2:
        body += b"0"
    return generic.pdf_string(binascii.unhexlify(body))


def install() -> None:
    generic.read_hex_string_from_stream = read_hex_string_from_stream
