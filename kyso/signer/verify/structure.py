"""The raw layout of a signed PDF, read without trusting the PDF parser.

Signature-wrapping and universal-forgery attacks live in the gap between what a parser
believes and what the bytes say, so the checks here work on the bytes: where each revision
ends, whether a ``/ByteRange`` covers exactly one revision minus the ``/Contents`` hex
string it claims to leave out, and whether anything follows the last revision.
"""

from __future__ import annotations

import hashlib
import mmap
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from kyso.signer.verify.model import Reason

_EOF_RE = re.compile(rb"startxref\s*(\d+)\s*%%EOF(\r\n|\r|\n)?")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_WHITESPACE = frozenset(b" \t\r\n\f\x00")
HEADER_WINDOW = 1024
CHUNK = 1 << 20


@dataclass(frozen=True)
class Layout:
    """Where the revisions of a file end (offsets just past ``%%EOF`` and its end of line)."""

    size: int
    revision_ends: tuple[int, ...]
    trailing_bytes: int  # non-whitespace bytes after the last revision

    def revision_of(self, end: int) -> int | None:
        """The 1-based revision whose end is ``end``, if any."""
        try:
            return self.revision_ends.index(end) + 1
        except ValueError:
            return None


def has_pdf_header(head: bytes) -> bool:
    return b"%PDF-" in head[:HEADER_WINDOW]


def read_layout(data: bytes | mmap.mmap) -> Layout:
    """Find the revision ends: each ``startxref N %%EOF`` with its line ending."""
    size = len(data)
    ends: list[int] = []
    for match in _EOF_RE.finditer(data):
        ends.append(match.end())
    # Several markers on top of each other can come from one update; keep them ordered.
    ends = sorted(set(ends))
    last = ends[-1] if ends else 0
    tail = data[last:] if ends else b""
    trailing = sum(1 for b in tail if b not in _WHITESPACE)
    return Layout(size=size, revision_ends=tuple(ends), trailing_bytes=trailing)


@dataclass
class ByteRangeCheck:
    ok: bool
    reasons: list[Reason]
    revision: int | None  # the revision the byte range ends with (1-based)
    contents: bytes | None  # the DER found in the gap, when the gap is a hex string


def check_byte_range(
    byte_range: Sequence[object] | None,
    data: bytes | mmap.mmap,
    layout: Layout,
    declared_contents: bytes | None,
) -> ByteRangeCheck:
    """Is ``byte_range`` exactly [0, a, b, c] with the gap a..b holding the /Contents hex
    string, b + c the end of a revision, and nothing outside the file?"""
    reasons: list[Reason] = []
    if byte_range is None:
        return ByteRangeCheck(False, [Reason("verify.byte_range.missing")], None, None)
    values = list(byte_range)
    if len(values) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return ByteRangeCheck(
            False, [Reason("verify.byte_range.shape", {"value": _short(values)})], None, None
        )
    start, length1, start2, length2 = (int(v) for v in values)  # type: ignore[call-overload]
    if min(start, length1, start2, length2) < 0:
        return ByteRangeCheck(
            False, [Reason("verify.byte_range.negative", {"value": _short(values)})], None, None
        )
    if start != 0:
        reasons.append(Reason("verify.byte_range.not_from_start", {"start": start}))
    if start2 < start + length1:
        reasons.append(Reason("verify.byte_range.overlap"))
    end = start2 + length2
    if end > layout.size:
        reasons.append(Reason("verify.byte_range.outside", {"end": end, "size": layout.size}))
        return ByteRangeCheck(False, reasons, None, None)
    revision = layout.revision_of(end)
    if revision is None:
        reasons.append(Reason("verify.byte_range.not_revision_end", {"end": end}))
    contents: bytes | None = None
    gap_start, gap_end = start + length1, start2
    if gap_end - gap_start < 2 or data[gap_start] != 0x3C or data[gap_end - 1] != 0x3E:
        reasons.append(Reason("verify.byte_range.gap_not_contents"))
    else:
        hex_digits = bytes(data[gap_start + 1 : gap_end - 1])
        if not all(b in _HEX for b in hex_digits):
            reasons.append(Reason("verify.byte_range.gap_not_contents"))
        else:
            try:
                contents = bytes.fromhex(hex_digits.decode("ascii"))
            except ValueError:
                reasons.append(Reason("verify.byte_range.gap_not_contents"))
    if (
        contents is not None
        and declared_contents is not None
        and contents.rstrip(b"\x00") != declared_contents.rstrip(b"\x00")
    ):
        reasons.append(Reason("verify.byte_range.contents_elsewhere"))
    return ByteRangeCheck(not reasons, reasons, revision, contents)


def digest_byte_range(stream: IO[bytes], byte_range: Sequence[int], algorithm: str) -> bytes:
    """Hash the covered bytes, reading 1 MiB at a time."""
    h = hashlib.new(algorithm)
    start, length1, start2, length2 = byte_range
    for offset, length in ((start, length1), (start2, length2)):
        stream.seek(offset)
        left = length
        while left > 0:
            piece = stream.read(min(CHUNK, left))
            if not piece:
                raise ValueError("short read")
            h.update(piece)
            left -= len(piece)
    return h.digest()


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
