"""Archive speed: ingest and retrieval against the raw SDK, and catalogue search at scale.

Ingest and retrieval (``--part io``), one thread, sequentially, every document distinct bytes
(storage is content-addressed: the same bytes twice would be a no-op), the variants of one
document timed back to back in an order that flips every document:

* **S3** (a moto server started here on 127.0.0.1, as ``tests/archive/conftest.py`` does,
  reached over real HTTP; object-lock buckets on both sides):

  - *raw put*: ``Minio.put_object`` of the file with its ``x-amz-checksum-sha256`` header
    (what object-lock buckets on real servers require), into a bucket of its own;
  - *store.put*: ``S3Store.put`` (hash, a conditional PUT — ``If-None-Match: *`` — with
    SHA-256 + MD5, then the read-back GET that re-hashes what the server now serves and whose
    headers describe the new version); *store.put, no read-back*: the same with
    ``readback=false`` (for servers that verify the checksum themselves: AWS S3, MinIO —
    not moto, so this row measures the cost only): the PUT alone;
  - *Archive.put, no verify*: the whole ingest on a PostgreSQL catalogue (fresh schema,
    dropped afterwards): duplicate checks, the object, its hash check, the document, version
    and audit rows in one transaction;
  - *Archive.put, verify*: the same with kyso's verifier on signed files (PAdES B-LT, one
    RSA-2048 signature of a fresh built-in PKI; the report's JSON stored as an object and a
    row): the difference is pyhanko's verification, not the archive;
  - retrieval: *raw get* (``get_object`` streamed into a file, fsync), *store.get* (one GET
    hashed while streaming, temp file, fsync, rename only when the hash matches, fsync of the
    folder) and *Archive.get* (the same plus the catalogue read and the access-log row).

* **local** (``LocalStore`` in a temporary directory, SQLite catalogue): *raw copy* is
  ``shutil.copyfile`` + fsync of the file + rename (+ fsync of the folder); then
  ``LocalStore.put``, ``Archive.put`` (no verify), and for retrieval a raw copy + fsync
  against ``LocalStore.get`` and ``Archive.get``.

Before the timed documents of a set, every variant handles one document untimed (a put: a
document of its own; a read: the set's first), so that one-time costs of the process (the
first ``DocumentMetadata.validate`` imports the register rules, ~1-2 s; connection pools)
are not counted.
MB/s = bytes ÷ the summed time of that variant; documents/s = documents ÷ the same time.

Search (``--part search``): the real ``documents`` and ``case_files`` tables (migrated by
Alembic, in a dedicated PostgreSQL schema dropped afterwards, or a temporary SQLite file),
filled with generated Decree 30 metadata: ~300 agencies (13-character and dotted codes),
eight document types with their symbols, numbers counted per agency and year, Vietnamese
subjects with diacritics from templates and 60 topics, dates over ten years, case files.
PostgreSQL is bulk-loaded with COPY (indexes dropped and re-created from their own
definitions afterwards, then VACUUM ANALYZE, the state autovacuum reaches); SQLite through
``executemany`` with its FTS5 triggers.
PostgreSQL's narrow search table (``documents_search``, migration 0007) is filled the way
the migration fills it, in one statement after the COPY (its trigger off meanwhile).
Then ``Catalog.search`` (the first page of 20 and the total — exact up to
``catalog.COUNT_CAP``, "more than" beyond — as the CLI and the API call it) is timed for
``--queries`` random queries of each kind:

* number + symbol + agency of an existing document;
* one to four subject words with diacritics (``chuyển đổi số``), and the same without
  (``chuyen doi so``);
* the same words within one agency's archive (``tenant``, as the API and the web pages
  always search);
* a one-month date range;
* a case file (its FileCode).

Rows are loaded in steps (``--rows 100000,1000000``): the same schema grows from one size to
the next.  ``--explain`` writes EXPLAIN ANALYZE of one query of each kind at each size.

    .venv/bin/python bench/archive.py                     # everything (10-20 minutes)
    .venv/bin/python bench/archive.py --part io --docs 100
    .venv/bin/python bench/archive.py --part search --rows 100000 --sqlite-rows 100000
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import importlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this folder comes first on sys.path, where a module named like one of the
# standard library's would hide it: import bench modules from the package root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_sign: Any = importlib.import_module("bench.sign")
build_pdf: Callable[..., bytes] = _sign.build_pdf
machine_busy: Callable[[], float] = _sign.machine_busy
own_cpu: Callable[[], float] = _sign.own_cpu
wait_until_quiet: Callable[..., float] = _sign.wait_until_quiet

ACCESS, SECRET = "kyso-bench", "kyso-bench-secret"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


# --------------------------------------------------------------------------------------------
# helpers


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


SERVER_PIDS: list[int] = []
"""Processes of this benchmark that are not its children yet (the moto server)."""


def servers_cpu() -> float:
    total = 0.0
    for pid in SERVER_PIDS:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _sign.CLK_TCK
    return total


class CpuWatch:
    """Share of one core that processes outside this benchmark used (the moto server is
    counted as the benchmark's; PostgreSQL's server processes are not, so "others' CPU" of
    PostgreSQL rows includes the database's own work)."""

    def __init__(self) -> None:
        self.wall, self.busy = time.perf_counter(), machine_busy()
        self.own = own_cpu() + servers_cpu()

    def others(self) -> float:
        wall = time.perf_counter() - self.wall
        used = (machine_busy() - self.busy) - (own_cpu() + servers_cpu() - self.own)
        return max(0.0, used) / wall if wall > 0 else 0.0


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server(log: Path) -> Iterator[str]:
    import httpx

    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
        )
    SERVER_PIDS.append(proc.pid)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        SERVER_PIDS.remove(proc.pid)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def pg_schema(url: str, prefix: str) -> Iterator[tuple[str, Any]]:
    """A fresh PostgreSQL schema and a migrated Catalog in it; dropped afterwards."""
    import sqlalchemy as sa

    from kyso.archive.catalog import Catalog

    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = Catalog(url).engine
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    catalog = Catalog(url, schema=schema)
    try:
        catalog.migrate()
        yield schema, catalog
    finally:
        catalog.close()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


# --------------------------------------------------------------------------------------------
# ingest and retrieval


@dataclass
class Timings:
    seconds: dict[str, float] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, seconds: float, size: int) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.count[name] = self.count.get(name, 0) + 1
        self.bytes[name] = self.bytes.get(name, 0) + size

    def mbs(self, name: str) -> float:
        return self.bytes[name] / 1e6 / self.seconds[name]

    def docs(self, name: str) -> float:
        return self.count[name] / self.seconds[name]


def run_interleaved(
    items: list[Any], variants: dict[str, Callable[[Any], int]], timings: Timings
) -> None:
    """Each item through every variant back to back; the order rotates with the item."""
    names = list(variants)
    for i, item in enumerate(items):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            fn = variants[name]
            t0 = time.perf_counter()
            size = fn(item)
            timings.add(name, time.perf_counter() - t0, size)


def warm_up(item: Any, variants: dict[str, Callable[[Any], int]]) -> None:
    """Each variant once on ``item``, untimed: one-time costs of a process (imports done on
    first use, such as the register rules ``DocumentMetadata.validate`` loads, connection
    pools, prepared plans) stay out of the rates, which describe a running service."""
    for fn in variants.values():
        fn(item)


def make_files(folder: Path, count: int, image_bytes: int, pages: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        path = folder / f"doc-{seed}-{i:05d}.pdf"
        path.write_bytes(build_pdf(pages, image_bytes=image_bytes, seed=seed * 100_000 + i))
        files.append(path)
    return files


def bench_meta(i: int) -> Any:
    from kyso.archive.metadata import DocumentMetadata

    return DocumentMetadata(
        organ_id="000.00.00.H41",
        organ_name="UBND tỉnh Nghệ An",
        code_number=i + 1,
        code_notation="QĐ-UBND",
        issued_date=dt.date(2025, 1, 1) + dt.timedelta(days=i % 365),
        type_name="Quyết định",
        subject=f"Quyết định về việc phê duyệt kế hoạch số {i + 1}",
        signer_full_name="Nguyễn Văn An",
    )


def signed_files(folder: Path, drafts: list[Path]) -> tuple[list[Path], Callable[[Path], Any]]:
    """Each draft signed (PAdES B-LT, RSA-2048, fresh built-in PKI) and kyso's verifier."""
    from cryptography import x509

    from kyso.signer.verify import VerifyPolicy, verify

    data_dir, pem_dir = folder / "data", folder / "pem"
    _sign.create_pki(data_dir, pem_dir)
    fx = _sign.load_fixture(data_dir, pem_dir)
    out = []
    for draft in drafts:
        target = folder / f"signed-{draft.name}"
        _sign.sign_kyso(fx, draft, target, "B-LT")
        out.append(target)
    root = x509.load_pem_x509_certificate((pem_dir / "root.pem").read_bytes())
    policy = VerifyPolicy(trust_roots=(root,), offline=True)

    def verifier(path: Path) -> dict[str, Any]:
        report = verify(path, policy).to_dict()
        if report.get("indication") != "TOTAL_PASSED":
            raise RuntimeError(f"run void: verification says {report.get('indication')}")
        return report

    return out, verifier


def raw_copy(source: Path, folder: Path) -> int:
    """A careful raw local write: copy, fsync, rename, fsync the folder."""
    target = folder / hashlib.sha256(source.name.encode()).hexdigest()
    tmp = target.with_suffix(".part")
    shutil.copyfile(source, tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(target)
    fsync_dir(folder)
    return source.stat().st_size


def stream_to_file(stream: Any, target: Path) -> int:
    size = 0
    with target.open("wb") as out:
        while chunk := stream.read(1024 * 1024):
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size


@dataclass
class IoRow:
    backend: str
    files: str
    variant: str
    docs: int
    mbs: float
    docs_s: float
    baseline: str
    ratio: float
    others: float


def io_rows(
    backend: str, files: str, t: Timings, baseline: str, variants: list[str], others: float
) -> list[IoRow]:
    rows = []
    for name in variants:
        rows.append(
            IoRow(
                backend,
                files,
                name,
                t.count[name],
                t.mbs(name),
                t.docs(name),
                baseline,
                t.mbs(name) / t.mbs(baseline),
                others,
            )
        )
    return rows


def bench_io(args: argparse.Namespace, tmp: Path) -> list[IoRow]:
    from minio import Minio

    from kyso.archive.catalog import Catalog
    from kyso.archive.ingest import Archive
    from kyso.archive.storage import LocalStore, S3Store, open_store

    rows: list[IoRow] = []
    sets = {
        f"{args.small_kb} kB": make_files(tmp / "small", args.docs, args.small_kb * 1000, 1, 1),
        f"{args.big_mb} MB": make_files(
            tmp / "big", args.big_docs, args.big_mb * 1_000_000 // 4, 4, 2
        ),
    }
    # one untimed document per set (distinct bytes) to warm every variant up: see warm_up
    warm = {
        label: make_files(tmp / "warm" / str(i), 1, len(files[0].read_bytes()) // 2, 1, 7 + i)[0]
        for i, (label, files) in enumerate(sets.items())
    }
    drafts = make_files(tmp / "tosign", args.verified_docs, args.small_kb * 1000, 1, 3)
    signed, verifier = signed_files(tmp / "signing", drafts)
    print(f"inputs ready: {', '.join(f'{len(v)} × {k}' for k, v in sets.items())}, "
          f"{len(signed)} signed", file=sys.stderr)  # fmt: skip
    counter = iter(range(10**9))

    with (
        moto_server(tmp / "moto.log") as endpoint,
        pg_schema(args.pg_url, "kyso_bench_io") as (_, catalog),
        pg_schema(args.pg_url, "kyso_bench_io") as (_, catalog_verified),
        pg_schema(args.pg_url, "kyso_bench_io") as (_, catalog_trusting),
    ):
        client = Minio(endpoint, access_key=ACCESS, secret_key=SECRET, secure=False)
        client.make_bucket("raw", object_lock=True)

        def s3(bucket: str, readback: bool = True) -> S3Store:
            store = open_store(
                f"s3://{ACCESS}:{SECRET}@{endpoint}/{bucket}?secure=false&region=us-east-1"
                + ("" if readback else "&readback=false")
            )
            assert isinstance(store, S3Store)
            store.ensure_bucket()
            return store

        store_only = s3("store")
        store_trusting = s3("store-nrb", readback=False)
        archived = Archive(catalog, s3("archive"), verifier=None)
        # no read-back: a catalogue of its own too (the same bytes would be a no-op)
        trusting = Archive(catalog_trusting, s3("archive-nrb", readback=False), verifier=None)
        # a catalogue of its own: the same signed bytes go through both Archive variants
        verified = Archive(catalog_verified, s3("verified"), verifier=verifier)
        keys: dict[Path, tuple[str, int]] = {}  # file → (key, document id)

        def raw_put(path: Path) -> int:
            data = path.read_bytes()
            digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
            client.put_object(
                "raw",
                path.name,
                io.BytesIO(data),
                len(data),
                metadata={"x-amz-checksum-sha256": digest},
            )
            return len(data)

        def store_put(path: Path) -> int:
            return store_only.put(path).size

        def store_put_trusting(path: Path) -> int:
            return store_trusting.put(path).size

        def archive_put_trusting(path: Path) -> int:
            result = trusting.put(path, bench_meta(next(counter)), actor="bench")
            assert result.created
            return result.size

        def archive_put(path: Path, archive: Any = archived) -> int:
            result = archive.put(path, bench_meta(next(counter)), actor="bench", verify=True)
            assert result.created
            keys[path] = (result.object_key, result.document_id)
            return result.size

        out = tmp / "out"
        out.mkdir(exist_ok=True)
        for label, files in sets.items():
            t = Timings()
            watch = CpuWatch()
            puts = {
                "raw put_object": raw_put,
                "S3Store.put": store_put,
                "S3Store.put, no read-back": store_put_trusting,
                "Archive.put": archive_put,
                "Archive.put, no read-back": archive_put_trusting,
            }
            warm_up(warm[label], puts)
            run_interleaved(files, puts, t)
            rows += io_rows("S3 (moto)", label, t, "raw put_object", list(puts), watch.others())
            # retrieval of what was just written

            def raw_get(path: Path) -> int:
                response = client.get_object("raw", path.name)
                try:
                    return stream_to_file(response, out / "raw.pdf")
                finally:
                    response.close()
                    response.release_conn()

            def store_get(path: Path) -> int:
                key, _ = keys[path]
                return store_only.get(key, out / "store.pdf").size

            def archive_get(path: Path) -> int:
                _, doc = keys[path]
                return archived.get(doc, out / "archive.pdf", actor="bench").size

            gets = {"raw get_object": raw_get, "S3Store.get": store_get, "Archive.get": archive_get}
            warm_up(files[0], gets)
            t = Timings()
            watch = CpuWatch()
            run_interleaved(files, gets, t)
            rows += io_rows(
                "S3 (moto), read",
                label,
                t,
                "raw get_object",
                ["raw get_object", "S3Store.get", "Archive.get"],
                watch.others(),
            )

        # verification on: signed files
        t = Timings()
        watch = CpuWatch()
        label = f"{args.small_kb} kB signed"
        run_interleaved(
            signed,
            {
                "raw put_object": raw_put,
                "Archive.put": archive_put,
                "Archive.put + verify": lambda p: archive_put(p, verified),
            },
            t,
        )
        rows += io_rows(
            "S3 (moto)",
            label,
            t,
            "raw put_object",
            ["raw put_object", "Archive.put", "Archive.put + verify"],
            watch.others(),
        )

    # local directory
    local_root = tmp / "local"
    raw_dir = local_root / "raw"
    raw_dir.mkdir(parents=True)
    lstore = LocalStore(local_root / "store")
    lcatalog = Catalog(f"sqlite:///{local_root / 'catalog.sqlite3'}")
    lcatalog.migrate()
    larchive = Archive(lcatalog, LocalStore(local_root / "archive"), verifier=None)
    lkeys: dict[Path, tuple[str, int]] = {}

    def local_store_put(path: Path) -> int:
        return lstore.put(path).size

    def local_archive_put(path: Path) -> int:
        result = larchive.put(path, bench_meta(next(counter)), actor="bench")
        lkeys[path] = (result.object_key, result.document_id)
        return result.size

    lout = tmp / "lout"
    lout.mkdir(exist_ok=True)
    for label, files in sets.items():
        local_puts = {
            "raw copy+fsync": lambda p: raw_copy(p, raw_dir),
            "LocalStore.put": local_store_put,
            "Archive.put": local_archive_put,
        }
        warm_up(warm[label], local_puts)
        t = Timings()
        watch = CpuWatch()
        run_interleaved(files, local_puts, t)
        rows += io_rows(
            "local",
            label,
            t,
            "raw copy+fsync",
            ["raw copy+fsync", "LocalStore.put", "Archive.put"],
            watch.others(),
        )

        def raw_read(path: Path) -> int:
            stored = raw_dir / hashlib.sha256(path.name.encode()).hexdigest()
            with stored.open("rb") as src:
                return stream_to_file(src, lout / "raw.pdf")

        def local_get(path: Path) -> int:
            key, _ = lkeys[path]
            return larchive.store.get(key, lout / "store.pdf").size

        def local_archive_get(path: Path) -> int:
            _, doc = lkeys[path]
            return larchive.get(doc, lout / "archive.pdf", actor="bench").size

        local_gets = {
            "raw read+write+fsync": raw_read,
            "LocalStore.get": local_get,
            "Archive.get": local_archive_get,
        }
        warm_up(files[0], local_gets)
        t = Timings()
        watch = CpuWatch()
        run_interleaved(files, local_gets, t)
        rows += io_rows(
            "local, read",
            label,
            t,
            "raw read+write+fsync",
            ["raw read+write+fsync", "LocalStore.get", "Archive.get"],
            watch.others(),
        )
    lcatalog.close()
    return rows


def io_table(rows: list[IoRow]) -> str:
    lines = [
        "| backend | files | variant | docs | MB/s | docs/s | ÷ raw | others' CPU |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.backend} | {r.files} | {r.variant} | {r.docs} | {r.mbs:.1f} | "
            f"{r.docs_s:.1f} | {r.ratio:.2f} | {r.others:.0%} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# generated catalogue metadata

PROVINCES = [
    ("H41", "UBND tỉnh Nghệ An", "UBND"),
    ("H37", "UBND quận Long Biên", "UBND"),
    ("G06", "Bộ Nội vụ", "BNV"),
    ("G09", "Bộ Tài chính", "BTC"),
    ("G10", "Bộ Kế hoạch và Đầu tư", "BKHĐT"),
    ("G12", "Bộ Giáo dục và Đào tạo", "BGDĐT"),
    ("H29", "Sở Tài chính Hà Nội", "STC"),
    ("H31", "Sở Nội vụ Hải Phòng", "SNV"),
    ("H46", "Sở Y tế Thừa Thiên Huế", "SYT"),
    ("H79", "Sở Thông tin và Truyền thông TP. Hồ Chí Minh", "STTTT"),
    ("H48", "Sở Xây dựng Đà Nẵng", "SXD"),
    ("H92", "Sở Tư pháp Cần Thơ", "STP"),
]
TYPES = [
    ("Quyết định", "QĐ", 30),
    ("Công văn", None, 35),
    ("Thông báo", "TB", 10),
    ("Kế hoạch", "KH", 8),
    ("Tờ trình", "TTr", 5),
    ("Báo cáo", "BC", 7),
    ("Nghị quyết", "NQ", 2),
    ("Chỉ thị", "CT", 3),
]
ACTIONS = [
    "về việc phê duyệt",
    "về việc ban hành",
    "về việc triển khai",
    "về việc tăng cường",
    "về việc điều chỉnh",
    "về việc tổ chức",
    "về việc kiện toàn",
    "về việc thành lập",
    "về việc giao chỉ tiêu",
    "về việc hướng dẫn thực hiện",
    "về việc kiểm tra",
    "về việc tổng kết",
]
TOPICS = [
    "kế hoạch chuyển đổi số",
    "dự toán ngân sách nhà nước",
    "quy chế làm việc của Ủy ban nhân dân",
    "phương án phòng chống thiên tai",
    "chương trình mục tiêu quốc gia xây dựng nông thôn mới",
    "đề án vị trí việc làm",
    "kế hoạch cải cách hành chính",
    "danh mục dự án đầu tư công trung hạn",
    "công tác phòng, chống dịch bệnh",
    "quy hoạch sử dụng đất",
    "bảo đảm an toàn giao thông",
    "công tác thi đua, khen thưởng",
    "tuyển dụng công chức, viên chức",
    "nâng lương thường xuyên",
    "đào tạo, bồi dưỡng cán bộ",
    "bảo vệ môi trường khu công nghiệp",
    "hỗ trợ hộ nghèo, hộ cận nghèo",
    "kiểm tra công tác văn thư, lưu trữ",
    "chữ ký số chuyên dùng",
    "hệ thống quản lý văn bản và điều hành",
    "cơ sở dữ liệu quốc gia về dân cư",
    "giải quyết thủ tục hành chính trên môi trường điện tử",
    "quản lý tài sản công",
    "xử lý vi phạm hành chính về xây dựng",
    "giá đất cụ thể",
    "thu hồi đất để thực hiện dự án",
    "bồi thường, hỗ trợ, tái định cư",
    "phát triển du lịch bền vững",
    "an sinh xã hội",
    "xây dựng trường học đạt chuẩn quốc gia",
    "khám bệnh, chữa bệnh bảo hiểm y tế",
    "tiêm chủng mở rộng",
    "phòng cháy, chữa cháy",
    "quốc phòng, an ninh",
    "tuyển chọn và gọi công dân nhập ngũ",
    "kỳ thi tốt nghiệp trung học phổ thông",
    "sắp xếp đơn vị hành chính cấp xã",
    "tinh giản biên chế",
    "thực hành tiết kiệm, chống lãng phí",
    "phòng, chống tham nhũng",
    "tiếp công dân, giải quyết khiếu nại, tố cáo",
    "phổ biến, giáo dục pháp luật",
    "cấp giấy chứng nhận quyền sử dụng đất",
    "trồng rừng thay thế",
    "nước sạch và vệ sinh môi trường nông thôn",
    "hỗ trợ doanh nghiệp nhỏ và vừa",
    "xúc tiến thương mại",
    "khuyến nông, khuyến ngư",
    "ứng phó với biến đổi khí hậu",
    "lễ hội truyền thống",
    "bảo tồn di tích lịch sử - văn hóa",
    "thể dục thể thao quần chúng",
    "chăm sóc sức khỏe người cao tuổi",
    "bình đẳng giới và vì sự tiến bộ của phụ nữ",
    "phòng, chống ma túy",
    "công tác dân tộc, tôn giáo",
    "đường giao thông liên xã",
    "hạ tầng số và dữ liệu số",
    "điều chỉnh mức thu học phí",
    "bảo hiểm xã hội tự nguyện",
]
PLACES = ["", " trên địa bàn tỉnh", " năm {year}", " giai đoạn {year}-{next}", " tại Đà Nẵng",
          " của Sở Nội vụ", " quý {quarter} năm {year}", ""]  # fmt: skip
SIGNERS = ["Nguyễn Văn An", "Trần Thị Bích", "Lê Hoàng Đức", "Phạm Minh Châu", "Hoàng Thu Hà",
           "Vũ Đình Khải", "Đặng Quốc Hưng", "Bùi Thị Lan", "Đỗ Mạnh Hùng",
           "Ngô Thanh Tâm"]  # fmt: skip
FIRST_YEAR, YEARS = 2016, 10


@dataclass
class Agency:
    code: str
    name: str
    short: str


def make_agencies(rng: random.Random, count: int) -> list[Agency]:
    agencies = []
    for i in range(count):
        prov, name, short = PROVINCES[i % len(PROVINCES)]
        # odd: the 13-character form; even: the dotted form
        code = f"000.{i // 100:02d}.{i % 100:02d}.{prov}" if i % 2 else f"{prov}.{i:02d}"
        agencies.append(Agency(code, f"{name} ({i})", short))
    rng.shuffle(agencies)
    return agencies


@dataclass
class Generated:
    agencies: list[Agency]
    case_codes: list[tuple[int, str]] = field(default_factory=list)  # (id, FileCode)
    samples: list[tuple[str, str, str]] = field(default_factory=list)  # number, symbol, agency
    next_id: int = 1
    next_case: int = 1
    numbers: dict[tuple[str, int], int] = field(default_factory=dict)


def case_rows(gen: Generated, rng: random.Random, count: int) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.UTC)
    rows = []
    for _ in range(count):
        agency = rng.choice(gen.agencies)
        year = FIRST_YEAR + rng.randrange(YEARS)
        cid = gen.next_case
        gen.next_case += 1
        notation = f"{cid:06d}"
        rows.append(
            {
                "id": cid,
                "agency_id": agency.code,
                "organ_id": agency.code,
                "file_catalog": year,
                "file_notation": notation,
                "title": f"Hồ sơ {rng.choice(TOPICS)} năm {year}",
                "maintenance": rng.choice(["Vĩnh viễn", "10 năm", "20 năm", "5 năm"]),
                "rights": rng.choice(["Công khai", "Hạn chế"]),
                "creator": None,
                "language": "Tiếng Việt",
                "start_date": dt.date(year, 1, 1),
                "end_date": dt.date(year, 12, 31),
                "description": None,
                "created_at": now,
                "created_by": "bench",
            }
        )
        gen.case_codes.append((cid, f"{agency.code}.{year}.{notation}"))
    return rows


# fmt: off
DOC_COLUMNS = [
    "id", "direction", "agency_id", "case_file_id", "document_id", "organ_id", "organ_name",
    "doc_ordinal", "type_name", "code_number", "code_notation", "issued_date", "subject",
    "subject_folded", "language", "page_amount", "description", "signer_position",
    "signer_full_name", "signer_folded", "recipients", "urgency", "secrecy", "issued_amount",
    "due_date", "arrival_date", "arrival_number", "to_places", "trace", "created_at", "created_by",
]
# fmt: on


def document_rows(gen: Generated, rng: random.Random, count: int) -> Iterator[tuple[Any, ...]]:
    from kyso.archive.metadata import fold

    now = dt.datetime.now(dt.UTC)
    type_weights = [w for _, _, w in TYPES]
    folded_signers = {s: fold(s) for s in SIGNERS}
    cases = gen.case_codes
    for _ in range(count):
        agency = rng.choice(gen.agencies)
        type_name, abbrev, _ = rng.choices(TYPES, type_weights)[0]
        issued = dt.date(FIRST_YEAR, 1, 1) + dt.timedelta(days=rng.randrange(YEARS * 365))
        key = (agency.code, issued.year)
        number = gen.numbers.get(key, 0) + 1
        gen.numbers[key] = number
        symbol = f"{abbrev}-{agency.short}" if abbrev else f"{agency.short}-VP"
        place = rng.choice(PLACES).format(
            year=issued.year, next=issued.year + 4, quarter=rng.randint(1, 4)
        )
        subject = f"{type_name} {rng.choice(ACTIONS)} {rng.choice(TOPICS)}{place}"
        signer = rng.choice(SIGNERS)
        doc_id = gen.next_id
        gen.next_id += 1
        code_number = f"{number:02d}"
        if rng.random() < 0.002 and len(gen.samples) < 5000:
            gen.samples.append((code_number, symbol, agency.code))
        case_id = rng.choice(cases)[0] if cases and rng.random() < 0.6 else None
        yield (
            doc_id,
            "outgoing",
            agency.code,
            case_id,
            None,
            agency.code,
            agency.name,
            None,
            type_name,
            code_number,
            symbol,
            issued,
            subject,
            fold(subject),
            "Tiếng Việt",
            rng.randint(1, 12),
            None,
            "Chủ tịch",
            signer,
            folded_signers[signer],
            "[]",
            None,
            None,
            None,
            None,
            None,
            None,
            "[]",
            "[]",
            now,
            "bench",
        )


# --------------------------------------------------------------------------------------------
# loading


def pg_load(catalog: Any, gen: Generated, rng: random.Random, rows: int, cases: int) -> float:
    """COPY ``cases`` case files and ``rows`` documents; indexes dropped and re-created."""
    t0 = time.perf_counter()
    raw = catalog.engine.raw_connection()
    try:
        conn = raw.driver_connection
        with conn.cursor() as cur:
            cur.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                "AND tablename IN ('documents', 'case_files', 'documents_search') "
                "AND indexname NOT LIKE 'pk_%' AND indexname NOT LIKE 'uq_%' "
                "AND indexname NOT LIKE '%_pkey'"
            )
            indexes = cur.fetchall()
            for name, _ in indexes:
                cur.execute(f'DROP INDEX "{name}"')
            # the search table (migration 0007) is filled below in one statement, as the
            # migration fills it, instead of row by row by its trigger
            cur.execute("ALTER TABLE documents DISABLE TRIGGER documents_search_sync")
            case_data = case_rows(gen, rng, cases)
            if case_data:
                names = list(case_data[0])
                with cur.copy(f"COPY case_files ({', '.join(names)}) FROM STDIN") as copy:
                    for case in case_data:
                        copy.write_row([case[n] for n in names])
            with cur.copy(f"COPY documents ({', '.join(DOC_COLUMNS)}) FROM STDIN") as copy:
                for row in document_rows(gen, rng, rows):
                    copy.write_row(row)
            cur.execute(
                "INSERT INTO documents_search (id, issued_date, agency_id, subject_tsv) "
                "SELECT d.id, d.issued_date, d.agency_id, "
                "to_tsvector('simple'::regconfig, d.subject_folded) FROM documents d "
                "WHERE NOT EXISTS (SELECT 1 FROM documents_search s WHERE s.id = d.id)"
            )
            cur.execute("ALTER TABLE documents ENABLE TRIGGER documents_search_sync")
            for _, definition in indexes:
                cur.execute(definition)
            for table, column in (("documents", "id"), ("case_files", "id")):
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                    f"(SELECT max({column}) FROM {table}))"
                )
        conn.commit()
        # the steady state autovacuum reaches after a bulk insert: statistics and the
        # visibility map (which index-only scans need)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE documents")
            cur.execute("VACUUM ANALYZE documents_search")
            cur.execute("VACUUM ANALYZE case_files")
        conn.autocommit = False
    finally:
        raw.close()
    return time.perf_counter() - t0


def sqlite_load(catalog: Any, gen: Generated, rng: random.Random, rows: int, cases: int) -> float:
    t0 = time.perf_counter()
    raw = catalog.engine.raw_connection()
    try:
        cur = raw.cursor()
        case_data = case_rows(gen, rng, cases)
        if case_data:
            names = list(case_data[0])
            cur.executemany(
                f"INSERT INTO case_files ({', '.join(names)}) "
                f"VALUES ({', '.join('?' for _ in names)})",
                [tuple(r[n] for n in names) for r in case_data],
            )
        cur.executemany(
            f"INSERT INTO documents ({', '.join(DOC_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in DOC_COLUMNS)})",
            (
                tuple(v.isoformat() if isinstance(v, dt.date) else v for v in row)
                for row in document_rows(gen, rng, rows)
            ),
        )
        raw.commit()
        cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------------
# queries


KINDS = (
    "number+symbol+agency",
    "word (accents)",
    "word (no accents)",
    "word, one agency's archive",
    "date range",
    "case",
)
WORDS = [
    "chuyển đổi số",
    "ngân sách",
    "thiên tai",
    "nông thôn mới",
    "cải cách hành chính",
    "tham nhũng",
    "đất",
    "biên chế",
    "môi trường",
    "văn thư",
    "chữ ký số",
    "khen thưởng",
    "du lịch",
    "học phí",
    "quyết định phê duyệt",
    "di tích",
    "biến đổi khí hậu",
    "giao thông",
    "dân cư",
    "tái định cư",
]


def query_args(kind: str, gen: Generated, rng: random.Random) -> dict[str, Any]:
    from kyso.archive.metadata import fold

    if kind == "number+symbol+agency":
        number, symbol, agency = rng.choice(gen.samples)
        return {"number": number, "symbol": symbol, "agency": agency}
    if kind == "word (accents)":
        return {"query": rng.choice(WORDS)}
    if kind == "word (no accents)":
        return {"query": fold(rng.choice(WORDS))}
    if kind == "word, one agency's archive":  # what the API and the web pages ask (tenant)
        return {"query": rng.choice(WORDS), "tenant": rng.choice(gen.agencies).code}
    if kind == "date range":
        start = dt.date(FIRST_YEAR, 1, 1) + dt.timedelta(days=rng.randrange(YEARS * 365 - 31))
        return {"date_from": start, "date_to": start + dt.timedelta(days=30)}
    if kind == "case":
        return {"case": rng.choice(gen.case_codes)[1]}
    raise ValueError(kind)


@dataclass
class SearchRow:
    database: str
    rows: int
    kind: str
    queries: int
    p50: float
    p95: float
    max: float
    mean_total: float
    others: float


def run_queries(
    catalog: Any, gen: Generated, rng: random.Random, database: str, rows: int, count: int
) -> list[SearchRow]:
    out = []
    for kind in KINDS:
        for _ in range(5):  # warm-up
            catalog.search(**query_args(kind, gen, rng))
        times, totals = [], []
        watch = CpuWatch()
        for _ in range(count):
            kw = query_args(kind, gen, rng)
            t0 = time.perf_counter()
            page = catalog.search(**kw)
            times.append((time.perf_counter() - t0) * 1000)
            totals.append(page.total)
            if kind == "number+symbol+agency" and page.total < 1:
                raise RuntimeError(f"run void: {kw} found nothing")
        out.append(
            SearchRow(
                database,
                rows,
                kind,
                count,
                pct(times, 0.5),
                pct(times, 0.95),
                max(times),
                statistics.fmean(totals),
                watch.others(),
            )
        )
        print(f"  {database} {rows:,} {kind}: p50 {out[-1].p50:.1f} ms, "
              f"p95 {out[-1].p95:.1f} ms", file=sys.stderr)  # fmt: skip
    return out


def explain(catalog: Any, gen: Generated, rng: random.Random, target: Path, label: str) -> None:
    """EXPLAIN ANALYZE of the statements ``Catalog.search`` sends, one query of each kind."""
    import sqlalchemy as sa

    statements: list[tuple[str, Any]] = []

    def capture(*args: Any) -> None:  # before_cursor_execute(conn, cursor, statement, params, …)
        statements.append((args[2], args[3]))

    with target.open("a", encoding="utf-8") as out:
        for kind in KINDS:
            kw = query_args(kind, gen, rng)
            statements.clear()
            sa.event.listen(catalog.engine, "before_cursor_execute", capture)
            try:
                catalog.search(**kw)
            finally:
                sa.event.remove(catalog.engine, "before_cursor_execute", capture)
            raw = catalog.engine.raw_connection()
            try:
                cur = raw.cursor()
                for statement, params in statements:
                    if not statement.lstrip().upper().startswith("SELECT"):
                        continue
                    cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
                    plan = "\n".join(r[0] for r in cur.fetchall())
                    out.write(f"## {label} — {kind} {kw}\n\n{statement}\n\n{plan}\n\n")
                raw.rollback()
            finally:
                raw.close()


def bench_search(args: argparse.Namespace, tmp: Path) -> list[SearchRow]:
    from kyso.archive.catalog import Catalog

    rows: list[SearchRow] = []
    steps = sorted(args.rows)
    if steps:
        rng = random.Random(42)
        gen = Generated(make_agencies(rng, 300))
        loaded = 0
        with pg_schema(args.pg_url, "kyso_bench_search") as (schema, catalog):
            for target in steps:
                add = target - loaded
                seconds = pg_load(catalog, gen, rng, add, max(1, add // 50))
                loaded = target
                print(f"PostgreSQL: {loaded:,} rows in schema {schema} "
                      f"(+{add:,} in {seconds:.0f} s)", file=sys.stderr)  # fmt: skip
                rows += run_queries(catalog, gen, rng, "PostgreSQL", loaded, args.queries)
                if args.explain:
                    explain(catalog, gen, rng, args.explain, f"PostgreSQL {loaded:,}")
    if args.sqlite_rows:
        rng = random.Random(43)
        gen = Generated(make_agencies(rng, 300))
        catalog = Catalog(f"sqlite:///{tmp / 'search.sqlite3'}")
        try:
            catalog.migrate()
            seconds = sqlite_load(
                catalog, gen, rng, args.sqlite_rows, max(1, args.sqlite_rows // 50)
            )
            print(f"SQLite: {args.sqlite_rows:,} rows ({seconds:.0f} s)", file=sys.stderr)
            rows += run_queries(catalog, gen, rng, "SQLite", args.sqlite_rows, args.queries)
        finally:
            catalog.close()
    return rows


def search_table(rows: list[SearchRow]) -> str:
    lines = [
        "| database | rows | query | queries | p50 ms | p95 ms | max ms | mean hits | others' CPU |",  # noqa: E501
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.database} | {r.rows:,} | {r.kind} | {r.queries} | {r.p50:.1f} | "
            f"{r.p95:.1f} | {r.max:.1f} | {r.mean_total:,.0f} | {r.others:.0%} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--part", choices=("all", "io", "search"), default="all")
    p.add_argument("--docs", type=int, default=200, help="small documents (default 200)")
    p.add_argument("--small-kb", type=int, default=100, help="size of a small document")
    p.add_argument("--big-docs", type=int, default=6, help="large documents (default 6)")
    p.add_argument("--big-mb", type=int, default=20, help="size of a large document")
    p.add_argument("--verified-docs", type=int, default=40, help="signed documents")
    p.add_argument(
        "--rows",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[100_000, 1_000_000],
        help="PostgreSQL catalogue sizes, grown in steps (default 100000,1000000)",
    )
    p.add_argument("--sqlite-rows", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=200, help="queries of each kind")
    p.add_argument("--pg-url", default=os.environ.get("KYSO_TEST_POSTGRES_URL", DEFAULT_PG))
    p.add_argument("--explain", type=Path, help="append EXPLAIN ANALYZE plans to this file")
    p.add_argument("--wait-quiet", type=float, default=0, help="wait up to N s for a quiet machine")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.wait_quiet:
        share = wait_until_quiet(args.wait_quiet)
        print(f"others' CPU before the run: {share:.0%} of one core", file=sys.stderr)
    results: dict[str, Any] = {"started": dt.datetime.now(dt.UTC).isoformat()}
    with tempfile.TemporaryDirectory(prefix="kyso-bench-archive-") as name:
        tmp = Path(name)
        if args.part in ("all", "io"):
            io_results = bench_io(args, tmp)
            print("\n### Ingest and retrieval\n")
            print(io_table(io_results))
            results["io"] = [r.__dict__ for r in io_results]
        if args.part in ("all", "search"):
            search_results = bench_search(args, tmp)
            print("\n### Search (Catalog.search: first page of 20 and the total)\n")
            print(search_table(search_results))
            results["search"] = [r.__dict__ for r in search_results]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
