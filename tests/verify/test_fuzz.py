"""Property-based mutation of a signed file (hypothesis): the verifier never crashes, never
hangs, and never passes a file whose signed bytes changed.

The target is the corpus's clean_b_b (kyso B-B, one revision, the byte range covers the whole
file). Mutations: flipped, inserted and deleted bytes inside the signed byte range (half of
them near PDF keywords: obj, xref, trailer, /ByteRange…), truncation, other /ByteRange numbers,
other hexadecimal digits in /Contents. About 100 examples, derandomised (the same ones every
run), no shrinking (a failure names the mutation), each verify() call bounded by SIGALRM.
The only exception verify() may raise is its documented VerifyInputError, and only when the
mutant is no PDF at all (empty, or no ``%PDF-`` in its first KiB).
"""

from __future__ import annotations

import contextlib
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest
from asn1crypto import cms
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from kyso.api.services import Services
from kyso.signer.verify import VerifyInputError, VerifyPolicy, verify
from tests.verify.corpus import Case, SigSpan, signature_spans
from tests.verify.test_attacks import policy_for

DEADLINE_SECONDS = 10
INDICATIONS = {"TOTAL_PASSED", "TOTAL_FAILED", "INDETERMINATE"}
HOT_WORDS = (
    b" obj",
    b"endobj",
    b"stream",
    b"xref",
    b"startxref",
    b"trailer",
    b"%%EOF",
    b"/ByteRange",
    b"/Contents",
    b"/Type /Sig",
    b"/SubFilter",
    b"/Root",
    b"/Prev",
    b"/Size",
    b"/Length",
    b"/AcroForm",
    b"/Fields",
    b"/Annots",
    b"/Kids",
)


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
        print_blob=False,
    )


class Hang(BaseException):
    """verify() ran past the deadline (a BaseException, so no ``except Exception`` eats it)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True)
class Target:
    data: bytes
    span: SigSpan
    hot: tuple[int, ...]
    """Offsets of PDF keywords inside the signed byte range."""
    critical_hex: tuple[tuple[int, int], ...]
    """File offsets of the hexadecimal digits of the signed attributes and of the signature
    value inside /Contents: changing one must break the signature."""

    def signed(self, pos: int) -> bool:
        return 0 <= pos < self.span.b or self.span.c <= pos < self.span.signed_end

    def critical(self, pos: int) -> bool:
        return any(start <= pos < end for start, end in self.critical_hex)


@pytest.fixture(scope="module")
def target(corpus_by_name: dict[str, Case]) -> Target:
    return make_target(corpus_by_name["clean_b_b"].path.read_bytes())


def make_target(data: bytes) -> Target:
    [span] = signature_spans(data)
    assert span.signed_end == len(data)
    hot = sorted(
        {
            m.start()
            for word in HOT_WORDS
            for m in re.finditer(re.escape(word), data)
            if 0 <= m.start() < span.b or span.c <= m.start() < span.signed_end
        }
    )
    info = cms.ContentInfo.load(span.cms(data))["content"]["signer_infos"][0]
    critical = []
    for part in (info["signed_attrs"].dump(), info["signature"].native):
        digits = part.hex().upper().encode()
        start = data.index(digits, span.b, span.c)
        critical.append((start, start + len(digits)))
    return Target(data, span, tuple(hot), tuple(critical))


@pytest.fixture(scope="module")
def policy(corpus_services: Services) -> VerifyPolicy:
    return policy_for(corpus_services)


@pytest.fixture(scope="module")
def mutant_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "mutant.pdf"


def check(
    mutant: bytes, policy: VerifyPolicy, path: Path, *, what: str, must_not_pass: bool
) -> None:
    path.write_bytes(mutant)
    started = time.monotonic()
    try:
        with time_limit(DEADLINE_SECONDS):
            report = verify(path, policy)
    except Hang:
        pytest.fail(f"verify() hung (> {DEADLINE_SECONDS} s) on {what}")
    except VerifyInputError as exc:
        # the one documented refusal: input that is no PDF at all (empty, no %PDF- header)
        if mutant and b"%PDF-" in mutant[:1024]:
            pytest.fail(f"verify() refused a PDF ({exc!r}) on {what}")
        return
    except Exception as exc:
        pytest.fail(f"verify() raised {exc!r} on {what}")
    elapsed = time.monotonic() - started
    assert elapsed < DEADLINE_SECONDS, what
    assert report.indication in INDICATIONS, (what, report.indication)
    if must_not_pass:
        assert report.indication != "TOTAL_PASSED", f"TOTAL_PASSED after {what}"


def signed_positions(t: Target) -> st.SearchStrategy[int]:
    """Offsets inside the signed byte range: uniform, or just around a PDF keyword."""
    b, c = t.span.b, t.span.c
    uniform = st.integers(0, b + t.span.d - 1).map(lambda i: i if i < b else c + (i - b))

    def clamp(pos: int) -> int:
        pos = min(max(pos, 0), t.span.signed_end - 1)
        if t.signed(pos):
            return pos
        return b - 1 if pos - b < c - pos else c

    near_keyword = st.sampled_from(t.hot).flatmap(lambda p: st.integers(p - 4, p + 24).map(clamp))
    return st.one_of(uniform, near_keyword)


# -- the unmutated file, or nothing below means anything -------------------------------------


def test_the_unmutated_target_passes(
    target: Target, policy: VerifyPolicy, mutant_path: Path
) -> None:
    mutant_path.write_bytes(target.data)
    assert verify(mutant_path, policy).indication == "TOTAL_PASSED"


# -- mutations -------------------------------------------------------------------------------


@fuzz_settings(30)
@given(data=st.data())
def test_flipped_signed_byte(
    target: Target, policy: VerifyPolicy, mutant_path: Path, data: st.DataObject
) -> None:
    pos = data.draw(signed_positions(target), label="position")
    mask = data.draw(st.integers(1, 255), label="xor")
    mutant = bytearray(target.data)
    mutant[pos] ^= mask
    before, after = target.data[pos : pos + 1], bytes(mutant[pos : pos + 1])
    what = f"byte {pos} xor {mask:#04x} ({before!r} → {after!r})"
    check(bytes(mutant), policy, mutant_path, what=what, must_not_pass=True)


@fuzz_settings(20)
@given(data=st.data())
def test_inserted_or_deleted_signed_byte(
    target: Target, policy: VerifyPolicy, mutant_path: Path, data: st.DataObject
) -> None:
    pos = data.draw(signed_positions(target), label="position")
    if data.draw(st.booleans(), label="insert"):
        byte = data.draw(st.binary(min_size=1, max_size=1), label="byte")
        mutant = target.data[:pos] + byte + target.data[pos:]
        what = f"{byte!r} inserted at {pos}"
    else:
        mutant = target.data[:pos] + target.data[pos + 1 :]
        what = f"byte {pos} ({target.data[pos : pos + 1]!r}) deleted"
    check(mutant, policy, mutant_path, what=what, must_not_pass=True)


@fuzz_settings(10)
@given(data=st.data())
def test_truncated(
    target: Target, policy: VerifyPolicy, mutant_path: Path, data: st.DataObject
) -> None:
    size = data.draw(st.integers(0, len(target.data) - 1), label="size")
    check(
        target.data[:size],
        policy,
        mutant_path,
        what=f"truncated to {size} of {len(target.data)} bytes",
        must_not_pass=True,
    )


@fuzz_settings(20)
@given(data=st.data())
def test_other_byterange_numbers(
    target: Target, policy: VerifyPolicy, mutant_path: Path, data: st.DataObject
) -> None:
    span = target.span
    numbers = [0, span.b, span.c, span.d]
    index = data.draw(st.integers(0, 3), label="which")
    near = st.integers(-16, 16).map(lambda delta: max(numbers[index] + delta, 0))
    value = data.draw(
        st.one_of(near, st.integers(0, len(target.data) + 1024)).filter(
            lambda v: v != numbers[index]
        ),
        label="value",
    )
    numbers[index] = value
    text = b"/ByteRange [%d %d %d %d]" % tuple(numbers)
    room = span.br_end - span.br_key  # pyhanko pads the array with blanks: keep the length
    mutant = target.data[: span.br_key] + text.ljust(room) + target.data[span.br_end :]
    check(mutant, policy, mutant_path, what=text.decode(), must_not_pass=True)


@fuzz_settings(20)
@given(data=st.data())
def test_other_contents_digit(
    target: Target, policy: VerifyPolicy, mutant_path: Path, data: st.DataObject
) -> None:
    """/Contents is outside the signed bytes: a changed padding digit may pass; a changed
    digit of the signed attributes or of the signature value must not."""
    span = target.span
    in_critical = st.sampled_from(target.critical_hex).flatmap(
        lambda r: st.integers(r[0], r[1] - 1)
    )
    pos = data.draw(st.one_of(in_critical, st.integers(span.b + 1, span.c - 2)), label="pos")
    old = target.data[pos : pos + 1]
    new = data.draw(st.sampled_from([d for d in b"0123456789ABCDEF" if bytes([d]) != old]))
    mutant = target.data[:pos] + bytes([new]) + target.data[pos + 1 :]
    what = f"/Contents digit at {pos}: {old!r} → {bytes([new])!r}"
    check(mutant, policy, mutant_path, what=what, must_not_pass=target.critical(pos))
