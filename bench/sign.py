"""Signing speed in-process: kyso's DocumentSigner next to stock pyhanko and the raw cost.

For each input (a 1-page, a 200-page and a ~50 MB PDF, generated here, deterministic) and each
PAdES level (B-B, B-T, B-LT, B-LTA) this script measures, interleaved round by round in the
same run, one thread, sequentially:

* **kyso**: ``DocumentSigner.async_sign`` of a signer built once (``Services.document_signer``,
  as a batch does), awaited on one event loop; B-T and up use the built-in TSA in-process
  (``LocalTimeStamper``), B-LT/B-LTA the built-in PKI's in-process revocation data;
* **stock (naive)**: ``pyhanko.sign.signers.sign_pdf`` with ``SimpleSigner.load(key PEM, cert
  PEM, chain PEMs)`` re-created for every signature, file in, file out (``w+b``): the
  issue's baseline. B-T and up use the same in-process TSA object as kyso; B-LT/B-LTA a
  ``ValidationContext`` (root trusted, no fetching, revocation required) holding the same
  in-process OCSP responses and CRLs, produced per signature as kyso does;
* **stock (signer once)**: the same with the ``SimpleSigner`` loaded once;
* **raw**: ``hashlib.file_digest`` (sha256) of the input file plus one RSA-2048 PKCS#1 v1.5
  signature with the already-parsed key: the least any signer must do.

The key is one RSA-2048 person key issued by a fresh built-in PKI in a temporary data
directory (public URL on a closed port, so nothing is fetched over the network). The median
of ``--repeat`` rounds is reported (``--repeat-big`` for the large file), with signatures/s
(= 1000 / median ms, one thread), ratios, and the CPU that processes *outside* this benchmark
used during each cell's rounds ("others' CPU", in % of one core: compare only runs where it
is near 0 %). One output of each kyso and stock variant per cell is validated with pyhanko
(intact, valid, trusted, timestamp present at B-T and up, a document timestamp at B-LTA).

**B-T against B-B, interleaved** (``--bt-rounds``, for the 1-page and 200-page inputs): the
table above measures each level in a cell of its own, minutes apart, so the ratio of two cells
carries the machine's drift (CPU speed moves by ±30 % between minutes here). This second
measurement alternates kyso B-B and B-T signatures of the same input round by round (the
order flips every round) and reports the medians of wall time and of this process's CPU time
(``time.process_time``: what other processes take from the machine barely changes it).

Peak memory for the large file: each variant runs in a fresh subprocess that signs a 1-page
file first (imports, caches), resets its peak RSS (``/proc/self/clear_refs``), then signs the
large file once; reported as VmHWM minus VmRSS just before, in MB and in copies of the file.

    .venv/bin/python bench/sign.py                          # everything (about 3-5 minutes)
    .venv/bin/python bench/sign.py --inputs 1p --levels B-B --repeat 15
    .venv/bin/python bench/sign.py --inputs 1p,200p --levels B-B --variants kyso --bt-rounds 60
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import hashlib
import io
import json
import logging
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PASSPHRASE = "kyso bench passphrase (not a secret)"
PUBLIC_URL = "http://127.0.0.1:9"  # the discard port: closed here, so fetches fail at once
LABEL = "bench-signer"
LEVELS = ("B-B", "B-T", "B-LT", "B-LTA")
INPUTS = ("1p", "200p", "big")
VARIANTS = ("kyso", "stock", "stock-once", "raw")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# --------------------------------------------------------------------------------------------
# Inputs: hand-written PDF 1.7 files (classic xref table), deterministic byte for byte.

LOREM = (
    "Lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
)


def _page_text(rng: random.Random, page: int, lines: int = 45) -> bytes:
    out = [b"BT /F1 10 Tf 12 TL 56 790 Td"]
    for n in range(lines):
        words = " ".join(rng.choice(LOREM) for _ in range(12))
        out.append(f"(Page {page + 1}, line {n + 1}: {words}) '".encode())
    out.append(b"ET")
    return b"\n".join(out)


def build_pdf(pages: int, image_bytes: int = 0, seed: int = 1) -> bytes:
    """A PDF of ``pages`` A4 pages of Flate-compressed text; with ``image_bytes``, each page
    also draws its own uncompressed RGB image XObject of about that size (random bytes,
    incompressible)."""
    rng = random.Random(seed)
    objects: list[bytes] = []  # object n + 1

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    def stream(head: str, data: bytes) -> bytes:
        return f"<< {head} /Length {len(data)} >>\nstream\n".encode() + data + b"\nendstream"

    catalog = add(b"")  # filled in below
    tree = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    kids = []
    width = 1024
    height = max(1, image_bytes // (width * 3))
    for p in range(pages):
        content = _page_text(rng, p)
        resources = f"/Font << /F1 {font} 0 R >>"
        if image_bytes:
            pixels = rng.randbytes(width * height * 3)
            image = add(
                stream(
                    f"/Type /XObject /Subtype /Image /Width {width} /Height {height} "
                    "/ColorSpace /DeviceRGB /BitsPerComponent 8",
                    pixels,
                )
            )
            resources += f" /XObject << /Im1 {image} 0 R >>"
            content = b"q 483 0 0 322 56 300 cm /Im1 Do Q\n" + content
        contents = add(stream("/Filter /FlateDecode", zlib.compress(content, 6)))
        kids.append(
            add(
                f"<< /Type /Page /Parent {tree} 0 R /MediaBox [0 0 595 842] "
                f"/Resources << {resources} >> /Contents {contents} 0 R >>".encode()
            )
        )
    objects[catalog - 1] = f"<< /Type /Catalog /Pages {tree} 0 R >>".encode()
    kid_refs = " ".join(f"{k} 0 R" for k in kids)
    objects[tree - 1] = f"<< /Type /Pages /Kids [{kid_refs}] /Count {pages} >>".encode()

    out = io.BytesIO()
    out.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{n} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    file_id = hashlib.sha256(f"kyso-bench-{pages}-{image_bytes}-{seed}".encode()).hexdigest()[:32]
    out.write(
        f"trailer\n<< /Size {len(objects) + 1} /Root {catalog} 0 R "
        f"/ID [<{file_id}> <{file_id}>] >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


def make_inputs(folder: Path, names: list[str], big_mb: float) -> dict[str, Path]:
    paths = {}
    for name in names:
        if name == "1p":
            data = build_pdf(1)
        elif name == "200p":
            data = build_pdf(200)
        else:
            pages = 25
            data = build_pdf(pages, image_bytes=int(big_mb * 1e6 / pages))
        path = folder / f"{name}.pdf"
        path.write_bytes(data)
        paths[name] = path
    return paths


# --------------------------------------------------------------------------------------------
# The PKI, the key and the signers under test


@dataclasses.dataclass
class Fixture:
    """Everything a measuring process needs, rebuilt from the data directory in subprocesses."""

    services: Any
    kyso: Any  # DocumentSigner
    handle: Any  # FileKeyHandle of the signer
    pem_dir: Path
    loop: asyncio.AbstractEventLoop
    stock_once: Any = None

    def stock_signer(self) -> Any:
        from pyhanko.sign import signers

        d = self.pem_dir
        return signers.SimpleSigner.load(
            str(d / "key.pem"),
            str(d / "cert.pem"),
            ca_chain_files=(str(d / "issuing.pem"), str(d / "root.pem")),
        )


def settings_for(data_dir: Path) -> Any:
    from kyso.api.settings import Settings

    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data_dir,
        key_passphrase=PASSPHRASE,  # type: ignore[arg-type]
        public_url=PUBLIC_URL,
        locale="en",
    )


def create_pki(data_dir: Path, pem_dir: Path) -> None:
    """A built-in PKI (default key types), an RSA-2048 person key, and PEM copies for stock."""
    from cryptography.hazmat.primitives import serialization

    from kyso.api.services import Services
    from kyso.certs import identity

    services = Services(settings_for(data_dir))
    services.ensure_pki()
    issued = services.pki.issue(
        kind="person",
        subject=identity.person_subject("Nguyễn Văn An", ids=["CCCD:001090000001"]),
        label=LABEL,
        key_type="rsa-2048",
    )
    handle = services.keys.resolve(issued.key_uri)
    pem_dir.mkdir(parents=True, exist_ok=True)
    key_pem = handle.private_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (pem_dir / "key.pem").write_bytes(key_pem)
    os.chmod(pem_dir / "key.pem", 0o600)
    pem = serialization.Encoding.PEM
    (pem_dir / "cert.pem").write_bytes(issued.certificate.public_bytes(pem))
    (pem_dir / "issuing.pem").write_bytes(services.pki.issuing_cert.public_bytes(pem))
    (pem_dir / "root.pem").write_bytes(services.pki.root_cert.public_bytes(pem))


def load_fixture(data_dir: Path, pem_dir: Path) -> Fixture:
    from kyso.api.services import Services

    services = Services(settings_for(data_dir))
    kyso = services.document_signer(f"file:{LABEL}")
    fixture = Fixture(
        services=services,
        kyso=kyso,
        handle=kyso.key,
        pem_dir=pem_dir,
        loop=asyncio.new_event_loop(),
    )
    fixture.stock_once = fixture.stock_signer()
    return fixture


def stock_context(fx: Fixture) -> Any:
    """What a careful pyhanko user would pass for B-LT: the root trusted, the issuing CA, and
    the PKI's revocation data (fetched per signature, as kyso's signer does), no fetching."""
    from asn1crypto import crl as asn1_crl
    from asn1crypto import ocsp as asn1_ocsp
    from asn1crypto import x509 as asn1_x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from pyhanko_certvalidator import ValidationContext

    pki = fx.services.pki
    ocsps, crls = pki.revocation_material([fx.handle.certificate, pki.issuing_cert])

    def asn1(cert: Any) -> Any:
        return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))

    return ValidationContext(
        trust_roots=[asn1(pki.root_cert)],
        other_certs=[asn1(pki.issuing_cert)],
        ocsps=[asn1_ocsp.OCSPResponse.load(o) for o in ocsps],
        crls=[asn1_crl.CertificateList.load(c) for c in crls],
        allow_fetching=False,
        revocation_mode="require",
    )


def sign_kyso(fx: Fixture, source: Path, target: Path, level: str) -> None:
    from kyso.signer.sign import Level, SignOptions

    options = SignOptions(level=Level(level))
    result = fx.loop.run_until_complete(fx.kyso.async_sign(source, target, options))
    assert str(result.level_reached) == level, (result.level_reached, result.warnings)


def sign_stock(fx: Fixture, source: Path, target: Path, level: str, signer: Any) -> None:
    """Stock pyhanko's sync API, file in and file out, as its documentation shows."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers

    long_term = level in ("B-LT", "B-LTA")
    meta = signers.PdfSignatureMetadata(
        field_name="Signature1",
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
        validation_context=stock_context(fx) if long_term else None,
        embed_validation_info=long_term,
        use_pades_lta=level == "B-LTA",
    )
    timestamper = fx.kyso.timestamper if level != "B-B" else None
    with source.open("rb") as inf, target.open("w+b") as outf:
        writer = IncrementalPdfFileWriter(inf)
        signers.sign_pdf(writer, meta, signer=signer, timestamper=timestamper, output=outf)


def raw_cost(fx: Fixture, source: Path) -> None:
    """The floor: read and hash the whole file once, one private-key signature."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    with source.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").digest()
    # about the size of a PAdES signer's signed attributes
    fx.handle.private_key().sign(digest * 8, padding.PKCS1v15(), hashes.SHA256())


def runner(fx: Fixture, variant: str, level: str) -> Callable[[Path, Path], None]:
    if variant == "kyso":
        return lambda s, t: sign_kyso(fx, s, t, level)
    if variant == "stock":
        return lambda s, t: sign_stock(fx, s, t, level, fx.stock_signer())
    if variant == "stock-once":
        return lambda s, t: sign_stock(fx, s, t, level, fx.stock_once)
    return lambda s, t: raw_cost(fx, s)


# --------------------------------------------------------------------------------------------
# Checking outputs


def check_output(fx: Fixture, path: Path, level: str) -> None:
    """pyhanko's verdict on the signature: intact, valid, trusted; timestamps where due."""
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import async_validate_pdf_signature

    with path.open("rb") as f:
        reader = PdfFileReader(f, strict=False)
        sigs = reader.embedded_signatures
        kinds = [s.sig_object_type for s in sigs]
        want = ["/Sig", "/DocTimeStamp"] if level == "B-LTA" else ["/Sig"]
        assert [str(k) for k in kinds] == want, kinds
        status = fx.loop.run_until_complete(
            async_validate_pdf_signature(
                sigs[0],
                signer_validation_context=stock_context(fx),
                ts_validation_context=stock_context(fx),
            )
        )
        assert status.intact and status.valid and status.trusted, status.pretty_print_details()
        assert (status.timestamp_validity is not None) == (level != "B-B"), level
        if level in ("B-LT", "B-LTA"):
            assert reader.root.get("/DSS") is not None, "no DSS at B-LT"


# --------------------------------------------------------------------------------------------
# CPU of the machine and of this process


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine so far (steal and idle excluded), /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    steal = fields[7] if len(fields) > 7 else 0
    return (sum(fields[:8]) - idle - steal) / CLK_TCK


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def wait_until_quiet(limit: float, threshold: float = 0.2, window: float = 3.0) -> float:
    """Wait (at most ``limit`` s) until other processes use < ``threshold`` of one core over
    ``window`` s; returns the last measured share."""
    deadline = time.monotonic() + limit
    while True:
        busy0, own0 = machine_busy(), own_cpu()
        time.sleep(window)
        share = max(0.0, (machine_busy() - busy0) - (own_cpu() - own0)) / window
        if share < threshold or time.monotonic() >= deadline:
            return share


# --------------------------------------------------------------------------------------------
# The timed rounds


@dataclasses.dataclass
class Cell:
    input: str
    size: int
    level: str
    rounds: int
    ms: dict[str, float]  # median per variant
    all_ms: dict[str, list[float]]
    other_cpu: float  # fraction of one core used by other processes during the rounds


def measure_cell(
    fx: Fixture, name: str, source: Path, level: str, rounds: int, variants: list[str], tmp: Path
) -> Cell:
    target = tmp / f"out-{name}.pdf"
    fns = {v: runner(fx, v, level) for v in variants}
    for v, fn in fns.items():  # warm-up, and a check of each variant's output
        fn(source, target)
        if v != "raw":
            check_output(fx, target, level)
        target.unlink(missing_ok=True)
    times: dict[str, list[float]] = {v: [] for v in variants}
    wall0, busy0, own0 = time.perf_counter(), machine_busy(), own_cpu()
    for r in range(rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for v in order:
            t0 = time.perf_counter()
            fns[v](source, target)
            times[v].append((time.perf_counter() - t0) * 1e3)
            target.unlink(missing_ok=True)
    wall = time.perf_counter() - wall0
    others = max(0.0, (machine_busy() - busy0) - (own_cpu() - own0)) / wall
    return Cell(
        input=name,
        size=source.stat().st_size,
        level=level,
        rounds=rounds,
        ms={v: statistics.median(ts) for v, ts in times.items()},
        all_ms=times,
        other_cpu=others,
    )


@dataclasses.dataclass
class Pair:
    """kyso B-B and B-T on one input, alternated round by round."""

    input: str
    size: int
    rounds: int
    wall_ms: dict[str, float]  # median per level
    cpu_ms: dict[str, float]  # median per level, this process's CPU time
    other_cpu: float


def measure_pair(fx: Fixture, name: str, source: Path, rounds: int, tmp: Path) -> Pair:
    """B-B and B-T signatures of ``source`` by kyso, alternated (order flipped every round)."""
    target = tmp / f"pair-{name}.pdf"
    levels = ("B-B", "B-T")
    for level in levels:  # warm-up: each level's reserved size learnt, first token issued
        sign_kyso(fx, source, target, level)
        check_output(fx, target, level)
    wall: dict[str, list[float]] = {lv: [] for lv in levels}
    cpu: dict[str, list[float]] = {lv: [] for lv in levels}
    wall0, busy0, own0 = time.perf_counter(), machine_busy(), own_cpu()
    for r in range(rounds):
        for level in levels if r % 2 == 0 else levels[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            sign_kyso(fx, source, target, level)
            cpu[level].append((time.process_time() - c0) * 1e3)
            wall[level].append((time.perf_counter() - t0) * 1e3)
            target.unlink(missing_ok=True)
    elapsed = time.perf_counter() - wall0
    others = max(0.0, (machine_busy() - busy0) - (own_cpu() - own0)) / elapsed
    return Pair(
        input=name,
        size=source.stat().st_size,
        rounds=rounds,
        wall_ms={lv: statistics.median(v) for lv, v in wall.items()},
        cpu_ms={lv: statistics.median(v) for lv, v in cpu.items()},
        other_cpu=others,
    )


def pair_table(pairs: list[Pair]) -> str:
    rows = [
        "| input | rounds | B-B ms | B-T ms | B-T ÷ B-B | B-B CPU ms | B-T CPU ms "
        "| B-T ÷ B-B (CPU) | others' CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in pairs:
        w, c = p.wall_ms, p.cpu_ms
        rows.append(
            f"| {LABELS[p.input]} ({size_text(p.size)}) | {p.rounds} | {w['B-B']:.1f} "
            f"| {w['B-T']:.1f} | {w['B-T'] / w['B-B']:.2f} | {c['B-B']:.1f} | {c['B-T']:.1f} "
            f"| {c['B-T'] / c['B-B']:.2f} | {p.other_cpu:.0%} |"
        )
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------
# Peak RSS in a fresh process


def rss_child(args: argparse.Namespace) -> int:
    """(subprocess) Sign ``--child-input`` once with ``--child-variant``; print JSON."""
    logging.disable(logging.WARNING)
    fx = load_fixture(Path(args.child_data), Path(args.child_pem))
    source = Path(args.child_input)
    tmp = Path(args.child_tmp)
    small = tmp / "warm.pdf"
    small.write_bytes(build_pdf(1))
    fn = runner(fx, args.child_variant, args.child_level)
    fn(small, tmp / "warm-out.pdf")  # imports, caches, the TSA's first token
    (tmp / "warm-out.pdf").unlink(missing_ok=True)
    reset = True
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        reset = False
    before = _status_kb("VmRSS")
    hwm_before = _status_kb("VmHWM")
    t0 = time.perf_counter()
    fn(source, tmp / "big-out.pdf")
    elapsed = time.perf_counter() - t0
    (tmp / "big-out.pdf").unlink(missing_ok=True)
    peak = _status_kb("VmHWM")
    print(
        json.dumps(
            {
                "rss_before_kb": before,
                "hwm_kb": peak,
                "delta_kb": peak - before,
                "hwm_reset": reset and hwm_before <= before + 1024,
                "ms": elapsed * 1e3,
            }
        )
    )
    return 0


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_rss(
    data_dir: Path, pem_dir: Path, source: Path, variant: str, level: str, tmp: Path
) -> dict[str, Any]:
    child_tmp = tmp / f"rss-{variant}-{level}"
    child_tmp.mkdir()
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child-variant",
        variant,
        "--child-level",
        level,
        "--child-input",
        str(source),
        "--child-data",
        str(data_dir),
        "--child-pem",
        str(pem_dir),
        "--child-tmp",
        str(child_tmp),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    shutil.rmtree(child_tmp, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"RSS child {variant} {level} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------------------------
# The report

LABELS = {"1p": "1 page", "200p": "200 pages", "big": "large"}


def size_text(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def table(cells: list[Cell]) -> str:
    head = (
        "| input | level | kyso ms | kyso sig/s | stock ms | stock (signer once) ms "
        "| raw ms | stock ÷ kyso | kyso ÷ raw | stock ÷ raw | kyso ÷ kyso B-B | others' CPU |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = [head]
    bb = {c.input: c.ms.get("kyso") for c in cells if c.level == "B-B"}
    for c in cells:
        k, s, o, r = (c.ms.get(v, float("nan")) for v in VARIANTS)
        base = bb.get(c.input)
        vs_bb = f"{k / base:.2f}" if base else "–"
        rows.append(
            f"| {LABELS[c.input]} ({size_text(c.size)}) | {c.level} | {k:.1f} | {1e3 / k:,.1f} "
            f"| {s:.1f} | {o:.1f} | {r:.2f} | {s / k:.2f} | {k / r:.1f} | {s / r:.1f} "
            f"| {vs_bb} | {c.other_cpu:.0%} |"
        )
    return "\n".join(rows)


def rss_table(results: list[tuple[str, str, dict[str, Any]]], size: int) -> str:
    rows = [
        "| variant | level | peak RSS − baseline | copies of the file | baseline RSS | ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for variant, level, r in results:
        delta = r["delta_kb"] * 1024
        note = "" if r["hwm_reset"] else " (VmHWM not reset)"
        rows.append(
            f"| {variant} | {level} | {delta / 1e6:.1f} MB{note} | {delta / size:.2f} "
            f"| {r['rss_before_kb'] * 1024 / 1e6:.0f} MB | {r['ms']:.0f} |"
        )
    return "\n".join(rows)


def csv_arg(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        parts = [p for p in text.split(",") if p]
        bad = [p for p in parts if p not in choices]
        if bad or not parts:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}")
        return parts

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--inputs", type=csv_arg(INPUTS), default=list(INPUTS))
    p.add_argument("--levels", type=csv_arg(LEVELS), default=list(LEVELS))
    p.add_argument("--variants", type=csv_arg(VARIANTS), default=list(VARIANTS))
    p.add_argument("--repeat", type=int, default=9, help="rounds per cell (median reported)")
    p.add_argument("--repeat-big", type=int, default=5, help="rounds per cell, large file")
    p.add_argument("--big-mb", type=float, default=52.0, help="size of the large input, MB")
    p.add_argument("--rss-levels", type=csv_arg(LEVELS), default=list(LEVELS))
    p.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    p.add_argument("--json", type=Path, help="also write every measurement as JSON here")
    p.add_argument(
        "--bt-rounds",
        type=int,
        default=30,
        help="rounds of kyso B-B/B-T alternated on the 1-page and 200-page inputs (0: skip)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="before each cell, wait up to this many seconds for other processes to use "
        "< 20%% of one core",
    )
    for name in ("variant", "level", "input", "data", "pem", "tmp"):
        p.add_argument(f"--child-{name}", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not 1 <= args.repeat <= 200 or not 1 <= args.repeat_big <= 50:
        p.error("--repeat must be in [1, 200] and --repeat-big in [1, 50]")
    if not 1 <= args.big_mb <= 500:
        p.error("--big-mb must be in [1, 500]")
    if not 0 <= args.bt_rounds <= 1000:
        p.error("--bt-rounds must be in [0, 1000]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.child_variant:
        return rss_child(args)
    logging.disable(logging.WARNING)  # pyhanko logs failed fetches to the closed port
    started = dt.datetime.now(dt.UTC)
    print(
        f"# kyso signing benchmark, {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        file=sys.stderr,
    )
    cells: list[Cell] = []
    pairs: list[Pair] = []
    rss: list[tuple[str, str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="kyso-bench-sign-") as tmp_name:
        tmp = Path(tmp_name)
        data_dir, pem_dir = tmp / "data", tmp / "pem"
        t0 = time.perf_counter()
        create_pki(data_dir, pem_dir)
        inputs = make_inputs(tmp, args.inputs, args.big_mb)
        print(f"PKI, key and inputs in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        fx = load_fixture(data_dir, pem_dir)
        try:
            for name, source in inputs.items():
                rounds = args.repeat_big if name == "big" else args.repeat
                for level in args.levels:
                    if args.wait_quiet:
                        share = wait_until_quiet(args.wait_quiet)
                        print(f"(others' CPU before the cell: {share:.0%})", file=sys.stderr)
                    cell = measure_cell(fx, name, source, level, rounds, args.variants, tmp)
                    cells.append(cell)
                    print(
                        f"{name} {level}: "
                        + ", ".join(f"{v} {ms:.1f} ms" for v, ms in cell.ms.items())
                        + f"; others' CPU {cell.other_cpu:.0%}",
                        file=sys.stderr,
                        flush=True,
                    )
            for name, source in inputs.items():
                if name == "big" or not args.bt_rounds:
                    continue
                if args.wait_quiet:
                    share = wait_until_quiet(args.wait_quiet)
                    print(f"(others' CPU before the pairs: {share:.0%})", file=sys.stderr)
                pair = measure_pair(fx, name, source, args.bt_rounds, tmp)
                pairs.append(pair)
                print(
                    f"{name} B-B/B-T interleaved: wall {pair.wall_ms}, CPU {pair.cpu_ms}; "
                    f"others' CPU {pair.other_cpu:.0%}",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            fx.loop.close()
        if "big" in inputs and not args.no_rss:
            for level in args.rss_levels:
                for variant in ("kyso", "stock"):
                    r = measure_rss(data_dir, pem_dir, inputs["big"], variant, level, tmp)
                    rss.append((variant, level, r))
                    print(f"RSS {variant} {level}: {r}", file=sys.stderr, flush=True)
            r = measure_rss(data_dir, pem_dir, inputs["big"], "raw", "B-B", tmp)
            rss.append(("raw", "–", r))
            print(f"RSS raw: {r}", file=sys.stderr, flush=True)
        big_size = inputs["big"].stat().st_size if "big" in inputs else 0
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "started": started.isoformat(),
                    "cells": [dataclasses.asdict(c) for c in cells],
                    "pairs": [dataclasses.asdict(p) for p in pairs],
                    "rss": [{"variant": v, "level": lv, **r} for v, lv, r in rss],
                },
                indent=1,
            )
        )
    n_big = f", {args.repeat_big} for the large file" if "big" in args.inputs else ""
    print(f"\nMedian of {args.repeat} rounds{n_big} ({started:%Y-%m-%d} UTC):\n")
    print(table(cells))
    if pairs:
        print(f"\nkyso B-B and B-T alternated round by round, medians ({started:%Y-%m-%d} UTC):\n")
        print(pair_table(pairs))
    if rss:
        print(f"\nPeak RSS signing the large file ({size_text(big_size)}), fresh process each:\n")
        print(rss_table(rss, big_size))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # temp dir removed on kill, too
    sys.exit(main())
