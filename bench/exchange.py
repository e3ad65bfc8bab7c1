"""Exchange between two kyso instances: documents delivered end to end per second, and what
the edXML packaging costs next to sending the raw PDF.

Setup: two fresh data directories, each with its own development PKI (EC P-256), SQLite
catalogue and local object store; agency A (``000.00.00.H41``) on instance A, agency B
(``000.00.00.H42``) on instance B; each trusts the other's root and knows the other's agency
as a peer.  Instance B is a real ``kyso serve`` subprocess on 127.0.0.1 (one uvicorn
worker); instance A is this process (its ``deliver`` calls are the worker).

**End to end** (``--documents`` N): one document of A is uploaded, signed (B-B), registered
and sealed (B-LT) through the workflow; N-1 more catalogue records share its sealed PDF with
numbers of their own (so N distinct DocumentIds; the PDF signatures are verified in full on
every arrival).  Then, timed: ``send`` of each (edXML from the catalogue, signed by A's seal
key, archived, queued) and ``deliver`` of all of them by ``--workers`` threads (POST to B;
B parses, checks the XML signature and the attachment digest, verifies the PDF's
signatures, files the incoming document with its arrival number and report, signs and
returns the 01 status; A checks the status and records it).  Documents/s = N ÷ (send +
deliver wall time), every one delivered with 01 (checked).

**Packaging vs raw PDF** (unsigned PDFs of several sizes, ``bench/sign.py``'s generator):
bytes on the wire (edXML vs PDF), ``write_edxml`` (build + XML-DSig signature, attachment
base64-streamed), ``parse_edxml`` (defused streaming read, base64 decode to a temporary file,
signature and trust check, digests), and an HTTP POST of each (the PDF raw vs the edXML) to
a sink endpoint on a local uvicorn (body read, discarded).  Medians of ``--repeat`` runs.

    .venv/bin/python bench/exchange.py                         # 20 documents, 2 workers
    .venv/bin/python bench/exchange.py --documents 50 --workers 4 --repeat 5
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder would come first on sys.path, where bench/http.py
# shadows the standard library's ``http``: put the repository root there instead.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402

from bench.sign import build_pdf  # noqa: E402

PASSPHRASE = "kyso bench passphrase (not a secret)"
A = "000.00.00.H41"
B = "000.00.00.H42"
HOST = "127.0.0.1"
META = {
    "type": "Công văn",
    "subject": "Về việc đo tốc độ trao đổi văn bản điện tử giữa các cơ quan",
    "symbol": "UBND-VP",
    "place": "Hà Nội",
    "signer": "Nguyễn Văn An",
    "position": "Chủ tịch",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def settings_for(data_dir: Path, port: int) -> Any:
    from kyso.api.settings import Settings

    return Settings(
        _env_file=None,
        data_dir=data_dir,
        key_passphrase=PASSPHRASE,
        public_url=f"http://{HOST}:{port}",
        locale="en",
        ca_key_type="ec-p256",
        archive_verify_offline=True,
    )


def make_instance(data_dir: Path, port: int, code: str) -> Any:
    """Services with a PKI, agency ``code`` with an official (personal key) and a clerk, and
    a seal key."""
    from argon2 import PasswordHasher

    from kyso.api.accounts import issue_personal_key
    from kyso.api.exchange import ExchangeSettings
    from kyso.api.services import Services
    from kyso.certs import identity
    from kyso.certs.keys import slug_label

    services = Services(settings_for(data_dir, port))
    services.ensure_pki()
    services.__dict__["exchange_settings"] = ExchangeSettings(
        _env_file=None, dispatch="none", timeout=120
    )
    accounts = services.accounts
    accounts.hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    accounts.create_agency(code, f"Cơ quan {code}", actor="bench")
    issued = services.pki.issue(
        kind="org",
        subject=identity.organisation_subject(f"Cơ quan {code}", ids=["MST:0100000001"]),
        label=slug_label(f"seal-{code}"),
        key_type="ec-p256",
        public_url=services.settings.public_url,
        actor="bench",
    )
    accounts.set_agency_key(code, issued.key_uri, actor="bench")
    users = {}
    for role in ("official", "clerk"):
        uid = accounts.create_user(
            code,
            f"{role}-{code.lower()}",
            f"{role} {code}",
            password="Mật khẩu đủ dài cho bench!",
            roles=[role],
            pin="246810",
            actor="bench",
        )
        users[role] = accounts.principal_for_user(uid)
    issue_personal_key(
        services,
        users["official"].user_id,
        pin="246810",
        ids=["CCCD:001090000001"],
        title="Chủ tịch",
        key_type="ec-p256",
        actor="bench",
    )
    return services, users


def seal_pem(services: Any, code: str) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    ref = services.accounts.agency_key(code)
    return str(services.keys.resolve(ref).certificate.public_bytes(Encoding.PEM).decode())


def documents(services: Any, users: dict[str, Any], n: int, work: Path) -> list[int]:
    """One sealed document through the workflow, then n-1 records sharing its PDF."""
    import sqlalchemy as sa

    from kyso.api import workflow
    from kyso.archive.models import Document, DocumentVersion

    path = work / "source.pdf"
    path.write_bytes(build_pdf(2, seed=7) + f"\n% {uuid.uuid4().hex}\n".encode())
    official, clerk = users["official"], users["clerk"]
    doc = workflow.upload(services, official, path, META).document_id
    [key] = services.accounts.keys_of(official.user_id)
    workflow.sign_as_person(services, official, doc, key=key, pin="246810", level="B-B")
    workflow.register(services, clerk, doc)
    workflow.seal(services, clerk, doc, level="B-LT")
    from kyso.api.exchange import _metadata_of

    with services.catalog.session() as s:
        row = s.get(Document, doc)
        meta = _metadata_of(row)
        sealed = s.execute(
            sa.select(DocumentVersion)
            .where(DocumentVersion.document_id == doc)
            .order_by(DocumentVersion.seq.desc())
            .limit(1)
        ).scalar_one()
        key_, sha, size = sealed.object_key, sealed.sha256, sealed.size
    ids = [doc]
    for i in range(1, n):
        meta.code_number = str(1000 + i)
        meta.document_id = None
        other = services.catalog.add_document(meta.validate(), actor="bench")
        services.catalog.add_version(other, "sealed", key_, sha, size, actor="bench")
        ids.append(other)
    return ids


def start_server(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYSO_")}
    env.update(
        KYSO_DATA_DIR=str(data_dir),
        KYSO_KEY_PASSPHRASE=PASSPHRASE,
        KYSO_PUBLIC_URL=f"http://{HOST}:{port}",
        KYSO_LOCALE="en",
        KYSO_ARCHIVE_VERIFY_OFFLINE="true",
        KYSO_CA_KEY_TYPE="ec-p256",
        KYSO_EXCHANGE_DISPATCH="none",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "kyso", "serve", "--host", HOST, "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"kyso serve exited:\n{log.read_text()}")
        try:
            if httpx.get(f"http://{HOST}:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"kyso serve did not come up:\n{log.read_text()}")


def end_to_end(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from kyso.api import exchange

    port_a, port_b = free_port(), free_port()
    a, users_a = make_instance(tmp / "a", port_a, A)
    b, _ = make_instance(tmp / "b", port_b, B)
    a.add_trust_anchors(b.pki.root_path)
    b.add_trust_anchors(a.pki.root_path)
    exchange.add_peer(
        a, B, f"http://{HOST}:{port_b}/api/v1/exchange", seal_pem(b, B), actor="bench"
    )
    exchange.add_peer(
        b, A, f"http://{HOST}:{port_a}/api/v1/exchange", seal_pem(a, A), actor="bench"
    )
    b.catalog.close()
    ids = documents(a, users_a, args.documents, tmp)
    print(f"{len(ids)} sealed documents ready", file=sys.stderr)
    server = start_server(tmp / "b", port_b, tmp / "b.log")
    try:
        clerk = users_a["clerk"]
        started = time.perf_counter()
        messages = [exchange.send(a, clerk, doc, [B])[0]["id"] for doc in ids]
        sent = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            results = list(pool.map(lambda m: exchange.deliver(a, m), messages))
        done = time.perf_counter()
    finally:
        server.terminate()
        server.wait(20)
    bad = [r for r in results if r["state"] != "delivered"]
    if bad:
        log = (tmp / "b.log").read_text(errors="replace")
        raise SystemExit(f"not delivered: {bad[:3]}\n{log[-4000:]}")
    codes = {exchange.message(a, clerk, m)["answer_code"] for m in messages}
    if codes != {"01"}:
        raise SystemExit(f"answers: {codes}")
    n = len(ids)
    # For scale: the PDF verification alone (the library call B makes on each arrival).
    from kyso.signer.verify import VerifyPolicy, verify

    pdf = tmp / "sealed.pdf"
    a.archive.get(ids[0], pdf, actor="bench")
    policy = VerifyPolicy.from_services(b, offline=True)
    timings = []
    for _ in range(3):
        t0 = time.perf_counter()
        verify(pdf, policy)
        timings.append(time.perf_counter() - t0)
    return {
        "verify_ms": 1000 * statistics.median(timings),
        "documents": n,
        "workers": args.workers,
        "send_s": sent - started,
        "deliver_s": done - sent,
        "total_s": done - started,
        "docs_per_s": n / (done - started),
        "send_per_doc_ms": 1000 * (sent - started) / n,
        "deliver_per_doc_ms": 1000 * (done - sent) / n,
    }


class Sink:
    """A uvicorn app that reads a POST body and discards it."""

    def __init__(self) -> None:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def sink(request: Request) -> Response:
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
            return Response(str(size))

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                Starlette(routes=[Route("/", sink, methods=["POST"])]),
                host=HOST,
                port=self.port,
                log_level="warning",
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Sink:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def packaging(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    import datetime as dt

    from kyso.api.services import Services
    from kyso.certs import identity
    from kyso.exchange.edxml import Attachment, MessageHeader, Organ, parse_edxml, write_edxml

    services = Services(settings_for(tmp / "p", free_port()))
    services.ensure_pki()
    issued = services.pki.issue(
        kind="org",
        subject=identity.organisation_subject("Cơ quan đo", ids=["MST:0100000002"]),
        label="seal-bench",
        key_type="ec-p256",
        public_url=services.settings.public_url,
        actor="bench",
    )
    key = services.keys.resolve(issued.key_uri)
    roots = [services.pki.root_cert]
    header = MessageHeader(
        from_organ=Organ(A, "Cơ quan A"),
        to=(Organ(B, "Cơ quan B"),),
        code_number="15",
        code_notation="UBND-VP",
        promulgation_date=dt.date(2026, 11, 22),
        document_type=18,
        type_name="Công văn",
        subject="Đo chi phí đóng gói edXML",
        document_id=f"{A},2026/11/22,15/UBND-VP",
    )
    rows = []
    with Sink() as sink, httpx.Client(timeout=120) as client:
        for mb in args.sizes:
            pdf = tmp / f"{mb}.pdf"
            pages = max(1, int(mb * 4))
            pdf.write_bytes(build_pdf(pages, image_bytes=int(mb * 1024 * 1024 / pages), seed=3))
            edxml = tmp / f"{mb}.edxml"
            build: list[float] = []
            parse: list[float] = []
            post_raw: list[float] = []
            post_edxml: list[float] = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                with edxml.open("wb") as out:
                    write_edxml(out, header, [Attachment(name="vb.pdf", path=pdf)], signing_key=key)
                build.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                with parse_edxml(edxml, trust_roots=roots) as message:
                    if not message.verdict.accepted:
                        raise SystemExit(f"edXML not accepted: {message.verdict.codes}")
                parse.append(time.perf_counter() - t0)
                for source, times, kind in (
                    (pdf, post_raw, "application/pdf"),
                    (edxml, post_edxml, "application/xml"),
                ):
                    data = source.read_bytes()
                    t0 = time.perf_counter()
                    reply = client.post(
                        f"http://{HOST}:{sink.port}/",
                        content=io.BytesIO(data).getvalue(),
                        headers={"Content-Type": kind},
                    )
                    times.append(time.perf_counter() - t0)
                    if int(reply.text) != len(data):
                        raise SystemExit("sink size mismatch")
            rows.append(
                {
                    "pdf_bytes": pdf.stat().st_size,
                    "edxml_bytes": edxml.stat().st_size,
                    "build_ms": 1000 * statistics.median(build),
                    "parse_ms": 1000 * statistics.median(parse),
                    "post_raw_ms": 1000 * statistics.median(post_raw),
                    "post_edxml_ms": 1000 * statistics.median(post_edxml),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--documents", type=int, default=20, help="documents sent end to end")
    p.add_argument("--workers", type=int, default=2, help="delivery threads on the sender")
    p.add_argument("--repeat", type=int, default=3, help="runs per packaging size")
    p.add_argument(
        "--sizes",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[0.1, 1.0, 10.0],
        help="PDF sizes in MB for the packaging comparison",
    )
    p.add_argument("--part", choices=["all", "e2e", "packaging"], default="all")
    args = p.parse_args(argv)
    command = "bench/exchange.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    load = os.getloadavg()[0]
    print(
        f"load average before the run: {load:.2f} (2 cores: compare runs near 0)", file=sys.stderr
    )
    with tempfile.TemporaryDirectory(prefix="kyso-bench-exchange-") as tmp:
        if args.part in ("all", "e2e"):
            e2e = end_to_end(args, Path(tmp) / "e2e")
            print("\n### Exchange end to end (two instances on loopback)\n")
            print(
                "| documents | delivery threads | send (package, sign, archive) | deliver "
                "(POST, verify, file, 01 back) | of which: PDF verification alone | total "
                "| documents/s |"
            )
            print("|---:|---:|---:|---:|---:|---:|---:|")
            print(
                f"| {e2e['documents']} | {e2e['workers']} | {e2e['send_per_doc_ms']:.0f} ms/doc "
                f"| {e2e['deliver_per_doc_ms']:.0f} ms/doc | {e2e['verify_ms']:.0f} ms "
                f"| {e2e['total_s']:.1f} s "
                f"| **{e2e['docs_per_s']:.2f}** |"
            )
        if args.part in ("all", "packaging"):
            rows = packaging(args, Path(tmp) / "pack")
            print("\n### edXML packaging vs the raw PDF (medians)\n")
            print("| PDF | edXML | size × | build+sign | parse+check | POST raw PDF | POST edXML |")
            print("|---:|---:|---:|---:|---:|---:|---:|")
            for r in rows:
                print(
                    f"| {r['pdf_bytes'] / 1e6:.2f} MB | {r['edxml_bytes'] / 1e6:.2f} MB "
                    f"| {r['edxml_bytes'] / r['pdf_bytes']:.2f} | {r['build_ms']:.0f} ms "
                    f"| {r['parse_ms']:.0f} ms | {r['post_raw_ms']:.0f} ms "
                    f"| {r['post_edxml_ms']:.0f} ms |"
                )
    print(f"\nload average before the run: {load:.2f}")
    print(f"\ncommand: `.venv/bin/python {command.strip()}`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
