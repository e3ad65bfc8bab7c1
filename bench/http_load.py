"""Signing and verification over HTTP next to the library, measured in the same run.

**Verify**: the public endpoint ``POST /api/v1/verify`` (the PDF as multipart field ``file``,
the JSON report back) of a real ``kyso serve`` subprocess on 127.0.0.1, against the library
call it wraps, ``kyso.signer.verify.verify(path, policy)`` in this process, on the same file.

**Sign**: ``POST /api/v1/documents/{id}/sign`` (an official's signature with a key bound to
them and their PIN, at the route's default level B-T) against the function the route calls,
``kyso.api.workflow.sign_as_person``, in this process. A document version takes one person
signature, so each call signs a *fresh draft*: before each measurement, drafts are uploaded
through the library (``workflow.upload``, not timed) — enough for the measurement's duration
judged from the warm-up rate, the same way for both sides; if they run out early the
measurement ends there and the rate is over the time it took (the "drafts ran out" column
says so). Two keys, measured apart:

- ``personal``: the key in a PKCS#12 file encrypted with the user's PIN (``kyso users
  issue-key``): every signature unlocks it, PBKDF2 by design;
- ``server``: a key of the server's key store bound to the user: the PIN is checked against
  its argon2 hash instead.

The "key open" column is ``kyso.api.accounts.open_signing_key`` alone (PIN check and key
unlock, no signing), median of a few calls in this process: signing proper is the rest.

Steps:

1. in a process of its own, a fresh data directory and development PKI (public URL = the
   server's port), one RSA-2048 person key in the server's store and a 1-page PDF
   (``bench/sign.py``'s generator) signed with it at PAdES B-LT; an agency and an official
   with a PIN, an RSA-2048 PIN-protected personal key, the server key bound to them, and an
   API token;
2. ``kyso serve`` with ``KYSO_VERIFY_RATE_LIMIT`` raised out of the way, one uvicorn worker
   unless ``--workers`` says otherwise, access log off (as by default);
3. rounds, interleaved: **library** — one thread, sequential, for ``--duration`` seconds; then
   **HTTP** — an asyncio client in this process (httpx, keep-alive) with ``--concurrency``
   requests in flight, for ``--duration`` seconds, each reply checked (verify: 200, JSON, the
   expected indication; sign: 200 and a ``person_signed`` version). Requests/s, p50 and p99 of
   each; the ratio is HTTP req/s ÷ library calls/s of the same round. The tables show the
   median round.

"others' CPU" is what processes outside this benchmark and its server used during the round
(% of one core): compare runs only when it is near 0 %.

    .venv/bin/python bench/http_load.py         # verify and sign, 3 rounds × 8 s, 1 and 2 clients
    .venv/bin/python bench/http_load.py --what sign --keys server --concurrency 1 --rounds 5
    .venv/bin/python bench/http_load.py --concurrency 1,2,4 --workers 2 --rounds 5 --duration 10
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and this module would shadow
# the standard library's ``http``: put the repository root there instead.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

from bench.sign import build_pdf  # noqa: E402

HOST = "127.0.0.1"
PASSPHRASE = "kyso bench passphrase (not a secret)"
LEVEL = "B-LT"
SIGN_LEVEL = "B-T"  # the sign route's default
AGENCY = "000.00.00.H41"
PIN = "246810"  # the bench official's signing PIN (not a secret)
SERVER_KEY = "bench-http"  # the person key of the server's store (also signs the verify PDF)
META = {
    "type": "Quyết định",
    "subject": "Quyết định về việc phê duyệt kế hoạch chuyển đổi số năm 2026",
    "symbol": "QĐ-UBND",
    "place": "Hà Nội",
    "signer": "Nguyễn Văn An",
    "position": "Chủ tịch",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET = 0.80


# -- CPU accounting ------------------------------------------------------------------------------


def machine_busy() -> float:
    """Busy CPU seconds of the machine so far (idle, iowait and steal excluded)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    steal = fields[7] if len(fields) > 7 else 0
    return (sum(fields[:8]) - idle - steal) / CLK_TCK


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


@contextlib.contextmanager
def cpu_window(server_pid: int) -> Iterator[dict[str, float]]:
    """Fills in wall seconds, this process's, the server's and other processes' CPU."""
    out: dict[str, float] = {}
    m0, o0, s0, t0 = machine_busy(), own_cpu(), tree_cpu(server_pid), time.perf_counter()
    yield out
    m1, o1, s1, t1 = machine_busy(), own_cpu(), tree_cpu(server_pid), time.perf_counter()
    wall = t1 - t0
    out.update(
        wall=wall,
        own=(o1 - o0) / wall,
        server=(s1 - s0) / wall,
        others=max(0.0, (m1 - m0) - (o1 - o0) - (s1 - s0)) / wall,
    )


# -- fixture ------------------------------------------------------------------------------------


def settings(data_dir: Path, port: int) -> Any:
    from kyso.api.settings import Settings

    return Settings.model_validate(
        {
            "data_dir": data_dir,
            "key_passphrase": PASSPHRASE,
            "public_url": f"http://{HOST}:{port}",
            "locale": "en",
        }
    )


def make_signed_pdf(data_dir: Path, port: int, folder: Path) -> Path:
    """A fresh PKI and a 1-page PDF signed once at B-LT."""
    from kyso.api.services import Services
    from kyso.certs import identity
    from kyso.signer.sign import Level, SignOptions

    services = Services(settings(data_dir, port))
    services.ensure_pki()
    services.pki.issue(
        kind="person",
        subject=identity.person_subject(
            "Người Ký Thử", ids=["CCCD:001090000777"], organisation="UBND Quận Long Biên"
        ),
        label="bench-http",
        key_type="rsa-2048",
    )
    source = folder / "1p.pdf"
    source.write_bytes(build_pdf(1))
    target = folder / "1p-signed.pdf"
    signer = services.document_signer("file:bench-http")
    result = asyncio.run(signer.async_sign(source, target, SignOptions(level=Level(LEVEL))))
    assert str(result.level_reached) == LEVEL, result
    return target


def make_signer_account(data_dir: Path, port: int, folder: Path) -> None:
    """An agency and its official with a PIN, a PIN-protected personal key and the server key
    bound to them, and an API token; written to ``folder/account.json`` (a benchmark's
    throw-away account: the token is not a secret worth keeping)."""
    from kyso.api.accounts import canonical_key_ref, issue_personal_key
    from kyso.api.services import Services

    services = Services(settings(data_dir, port))
    accounts = services.accounts
    actor = "bench:setup"
    accounts.create_agency(AGENCY, "UBND Quận Long Biên", actor=actor)
    user_id = accounts.create_user(
        AGENCY,
        "bench-official",
        "Nguyễn Văn An",
        password="Mật khẩu của bài đo đủ dài!",
        roles=["official"],
        pin=PIN,
        actor=actor,
    )
    personal = issue_personal_key(
        services,
        user_id,
        pin=PIN,
        ids=["CCCD:001090000888"],
        title="Chủ tịch",
        key_type="rsa-2048",
        actor=actor,
    ).key_uri
    server = canonical_key_ref(services, f"file:{SERVER_KEY}")
    accounts.bind_key(user_id, server, actor=actor)
    _, token = accounts.create_token(user_id, "bench", roles=["official"], actor=actor)
    keys = {"personal": personal, "server": server}
    account = {"user_id": user_id, "token": token, "keys": keys}
    (folder / "account.json").write_text(json.dumps(account))


@dataclasses.dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    command: list[str]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@contextlib.contextmanager
def running_server(data_dir: Path, port: int, workers: int, log: Path) -> Iterator[Server]:
    import httpx

    env = {k: v for k, v in os.environ.items() if not k.startswith("KYSO_")}
    env.update(
        KYSO_DATA_DIR=str(data_dir),
        KYSO_KEY_PASSPHRASE=PASSPHRASE,
        KYSO_PUBLIC_URL=f"http://{HOST}:{port}",
        KYSO_LOCALE="en",
        KYSO_VERIFY_RATE_LIMIT=str(10**9),
    )
    command = [sys.executable, "-m", "kyso", "serve", "--host", HOST, "--port", str(port)]
    command += ["--workers", str(workers)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Server(proc, f"http://{HOST}:{port}", log, command)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"kyso serve exited {proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"kyso serve did not come up:\n{log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        while time.monotonic() < deadline:  # every worker has opened its keys
            if log.read_text(errors="replace").count("Application startup complete") >= workers:
                break
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


# -- measurements ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    rate: float  # per second
    p50: float  # ms
    p99: float  # ms
    count: int
    errors: int
    cpu: dict[str, float]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def measure_library(
    run: Callable[[], str], expected: str, duration: float, server_pid: int
) -> Result:
    latencies: list[float] = []
    errors = 0
    with cpu_window(server_pid) as cpu:
        end = time.perf_counter() + duration
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            indication = run()
            latencies.append((time.perf_counter() - t0) * 1000)
            errors += indication != expected
    return Result(
        len(latencies) / cpu["wall"],
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        len(latencies),
        errors,
        cpu,
    )


async def _http_load(
    url: str, body: bytes, expected: str, concurrency: int, duration: float
) -> tuple[list[float], int]:
    import httpx

    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        end = time.perf_counter() + duration

        async def one_client() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                reply = await client.post(url, files={"file": ("doc.pdf", body, "application/pdf")})
                latencies.append((time.perf_counter() - t0) * 1000)
                try:
                    ok = reply.status_code == 200 and reply.json()["indication"] == expected
                except (ValueError, KeyError):
                    ok = False
                errors += not ok

        await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return latencies, errors


def measure_http(
    server: Server, body: bytes, expected: str, concurrency: int, duration: float
) -> Result:
    url = server.url + "/api/v1/verify"
    with cpu_window(server.proc.pid) as cpu:
        latencies, errors = asyncio.run(_http_load(url, body, expected, concurrency, duration))
    return Result(
        len(latencies) / cpu["wall"],
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        len(latencies),
        errors,
        cpu,
    )


@dataclasses.dataclass
class Signing:
    """What both sides of the signing measurement share: this process's services and the
    official (library side), the server and the token (HTTP side)."""

    services: Any
    principal: Any
    token: str
    keys: dict[str, str]

    def drafts(self, count: int) -> list[int]:
        """``count`` fresh drafts of the official (uploaded through the library, untimed)."""
        from kyso.api import workflow

        ids = []
        with tempfile.TemporaryDirectory(prefix="kyso-bench-drafts-") as tmp:
            for _ in range(count):
                path = Path(tmp) / "draft.pdf"
                path.write_bytes(build_pdf(1) + f"\n% {uuid.uuid4().hex}\n".encode())
                ids.append(workflow.upload(self.services, self.principal, path, META).document_id)
        return ids

    def sign_library(self, key: str, document_id: int) -> bool:
        from kyso.api import workflow

        result = workflow.sign_as_person(
            self.services, self.principal, document_id, key=key, pin=PIN, level=SIGN_LEVEL
        )
        return bool(result.kind == "person_signed" and result.document_id == document_id)

    def open_key_ms(self, key: str, times: int = 5) -> float:
        """Median milliseconds of opening ``key`` with the PIN (no signing)."""
        from kyso.api.accounts import open_signing_key

        spent = []
        for _ in range(times):
            t0 = time.perf_counter()
            open_signing_key(self.services, self.principal, key, PIN)
            spent.append((time.perf_counter() - t0) * 1000)
        return statistics.median(spent)

    def open_breakdown_ms(self, times: int = 5) -> dict[str, float]:
        """Median milliseconds of the parts of opening the server key: the argon2 PIN check
        and loading the key from the server's store (``services.keys.resolve``)."""
        accounts, keys = self.services.accounts, self.services.keys
        parts: dict[str, Callable[[], object]] = {
            "argon2 PIN check": lambda: accounts.check_pin(self.principal.user_id, PIN),
            "server store load": lambda: keys.resolve(self.keys["server"]),
        }
        out = {}
        for name, call in parts.items():
            spent = []
            for _ in range(times):
                t0 = time.perf_counter()
                call()
                spent.append((time.perf_counter() - t0) * 1000)
            out[name] = statistics.median(spent)
        return out


@dataclasses.dataclass
class SignResult(Result):
    ran_out: bool = False


def needed(rate: float, duration: float, concurrency: int) -> int:
    """Drafts for ``duration`` seconds at ``rate``/s, with a margin."""
    return int(rate * duration * 1.4) + 2 * concurrency + 2


def measure_sign_library(
    signing: Signing, key: str, drafts: list[int], duration: float, server_pid: int
) -> SignResult:
    latencies: list[float] = []
    errors = 0
    with cpu_window(server_pid) as cpu:
        end = time.perf_counter() + duration
        while drafts and time.perf_counter() < end:
            document_id = drafts.pop()
            t0 = time.perf_counter()
            try:
                ok = signing.sign_library(key, document_id)
            except Exception as exc:  # counted, shown once
                print(f"library signing failed: {exc!r}", file=sys.stderr)
                ok = False
            latencies.append((time.perf_counter() - t0) * 1000)
            errors += not ok
        ran_out = not drafts and time.perf_counter() < end
    return SignResult(
        len(latencies) / cpu["wall"],
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        len(latencies),
        errors,
        cpu,
        ran_out,
    )


async def _http_sign(
    url: str, token: str, key: str, drafts: list[int], concurrency: int, duration: float
) -> tuple[list[float], int, bool]:
    import httpx

    latencies: list[float] = []
    errors = 0
    ran_out = False
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    body = {"key": key, "pin": PIN, "level": SIGN_LEVEL}
    async with httpx.AsyncClient(timeout=120, limits=limits, headers=headers) as client:
        end = time.perf_counter() + duration

        async def one_client() -> None:
            nonlocal errors, ran_out
            while time.perf_counter() < end:
                if not drafts:
                    ran_out = True
                    return
                document_id = drafts.pop()
                t0 = time.perf_counter()
                reply = await client.post(f"{url}/api/v1/documents/{document_id}/sign", json=body)
                latencies.append((time.perf_counter() - t0) * 1000)
                try:
                    data = reply.json()
                    ok = reply.status_code == 200 and data["kind"] == "person_signed"
                    ok = ok and data["document_id"] == document_id
                except (ValueError, KeyError):
                    ok = False
                if not ok and errors == 0:
                    print(
                        f"HTTP signing failed: {reply.status_code} {reply.text[:300]}",
                        file=sys.stderr,
                    )
                errors += not ok

        await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return latencies, errors, ran_out


def measure_sign_http(
    server: Server,
    signing: Signing,
    key: str,
    drafts: list[int],
    concurrency: int,
    duration: float,
) -> SignResult:
    with cpu_window(server.proc.pid) as cpu:
        latencies, errors, ran_out = asyncio.run(
            _http_sign(server.url, signing.token, key, drafts, concurrency, duration)
        )
    return SignResult(
        len(latencies) / cpu["wall"],
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        len(latencies),
        errors,
        cpu,
        ran_out,
    )


# -- report ---------------------------------------------------------------------------------------


def pct(x: float) -> str:
    return f"{x * 100:.0f}%"


def cpu_ms(result: Result, who: str) -> float:
    """CPU milliseconds per file/request of ``who`` (steadier than rates on a busy machine)."""
    return result.cpu[who] * result.cpu["wall"] / max(result.count, 1) * 1000


def table(rows: list[tuple[int, Result, Result]], workers: int) -> str:
    lines = [
        "| clients | workers | library files/s | library p50 ms | library p99 ms "
        "| HTTP req/s | HTTP p50 ms | HTTP p99 ms | HTTP ÷ library | library CPU ms/file "
        "| server CPU ms/req | errors | server CPU | client CPU | others' CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for clients, lib, http in rows:
        lines.append(
            f"| {clients} | {workers} | {lib.rate:.1f} | {lib.p50:.1f} | {lib.p99:.1f} "
            f"| {http.rate:.1f} | {http.p50:.1f} | {http.p99:.1f} | {http.rate / lib.rate:.2f} "
            f"| {cpu_ms(lib, 'own'):.0f} | {cpu_ms(http, 'server'):.0f} "
            f"| {lib.errors + http.errors} | {pct(http.cpu['server'])} | {pct(http.cpu['own'])} "
            f"| {pct(max(lib.cpu['others'], http.cpu['others']))} |"
        )
    return "\n".join(lines)


def sign_table(rows: list[tuple[str, int, SignResult, SignResult, float]], workers: int) -> str:
    lines = [
        "| key | clients | workers | library sig/s | library p50 ms | library p99 ms "
        "| HTTP req/s | HTTP p50 ms | HTTP p99 ms | HTTP ÷ library | key open ms "
        "| library CPU ms/sig | server CPU ms/req | errors | drafts ran out | others' CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for key, clients, lib, http, opening in rows:
        ran_out = ", ".join(n for n, r in (("library", lib), ("HTTP", http)) if r.ran_out)
        lines.append(
            f"| {key} | {clients} | {workers} | {lib.rate:.2f} | {lib.p50:.0f} | {lib.p99:.0f} "
            f"| {http.rate:.2f} | {http.p50:.0f} | {http.p99:.0f} | {http.rate / lib.rate:.2f} "
            f"| {opening:.0f} | {cpu_ms(lib, 'own'):.0f} | {cpu_ms(http, 'server'):.0f} "
            f"| {lib.errors + http.errors} | {ran_out or 'no'} "
            f"| {pct(max(lib.cpu['others'], http.cpu['others']))} |"
        )
    return "\n".join(lines)


def csv_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=csv_ints, default=[1, 2], help="clients in flight")
    p.add_argument("--workers", type=int, default=1, help="kyso serve --workers")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median shown)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per side")
    p.add_argument(
        "--what",
        type=lambda text: [x for x in text.split(",") if x],
        default=["verify", "sign"],
        help="verify, sign or both (comma-separated)",
    )
    p.add_argument(
        "--keys",
        type=lambda text: [x for x in text.split(",") if x],
        default=["server", "personal"],
        help="signing keys: server (argon2-checked PIN), personal (PIN-encrypted PKCS#12)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="first wait up to S seconds for other processes to use < 20%% of one core",
    )
    return p.parse_args(argv)


def wait_until_quiet(limit: float, threshold: float = 0.2, window: float = 3.0) -> float:
    """Wait (at most ``limit`` s) until other processes use < ``threshold`` of one core."""
    deadline = time.monotonic() + limit
    while True:
        busy, own = machine_busy(), own_cpu()
        time.sleep(window)
        share = max(0.0, (machine_busy() - busy) - (own_cpu() - own)) / window
        if share < threshold or time.monotonic() > deadline:
            return share


def median_round(pairs: list[tuple[Any, Any]]) -> tuple[Any, Any]:
    ratios = [h.rate / lib.rate if lib.rate else 0.0 for lib, h in pairs]
    median = statistics.median_low(ratios)
    return pairs[ratios.index(median)]


def run_verify(
    args: argparse.Namespace, services: Any, signed: Path, server: Server
) -> tuple[str, list[tuple[int, Result, Result]]]:
    from kyso.signer.verify import VerifyPolicy, verify

    body = signed.read_bytes()
    # what the route uses, built once: offline (an anonymous caller's file makes the server
    # fetch nothing), so both sides do the same work
    policy = VerifyPolicy.from_services(services, offline=True)
    indication = verify(signed, policy).indication
    expected = str(getattr(indication, "value", indication))

    def library() -> str:
        indication = verify(signed, policy).indication
        return str(getattr(indication, "value", indication))

    # warm-up both sides (imports, caches, connections)
    measure_library(library, expected, args.warmup, server.proc.pid)
    measure_http(server, body, expected, max(args.concurrency), args.warmup)
    rounds: dict[int, list[tuple[Result, Result]]] = {c: [] for c in args.concurrency}
    for n in range(args.rounds):
        for clients in args.concurrency:
            lib = measure_library(library, expected, args.duration, server.proc.pid)
            http = measure_http(server, body, expected, clients, args.duration)
            rounds[clients].append((lib, http))
            print(
                f"verify round {n + 1} clients {clients}: library {lib.rate:.1f}/s, "
                f"HTTP {http.rate:.1f}/s (ratio {http.rate / lib.rate:.2f}, "
                f"errors {lib.errors + http.errors}, server CPU while the library "
                f"ran {pct(lib.cpu['server'])}, others' CPU "
                f"{pct(max(lib.cpu['others'], http.cpu['others']))})",
                file=sys.stderr,
            )
    rows = [(clients, *median_round(pairs)) for clients, pairs in rounds.items()]
    return expected, rows


def run_sign(
    args: argparse.Namespace, signing: Signing, server: Server
) -> list[tuple[str, int, SignResult, SignResult, float]]:
    rows = []
    pid = server.proc.pid
    for name in args.keys:
        key = signing.keys[name]
        opening = signing.open_key_ms(key)
        # warm-up both sides, and a first judgement of the rate the drafts are counted for
        warm = measure_sign_library(signing, key, signing.drafts(3), args.warmup, pid)
        measure_sign_http(server, signing, key, signing.drafts(3), max(args.concurrency), 60)
        rate = max(warm.rate, 0.5)
        rounds: dict[int, list[tuple[SignResult, SignResult]]] = {c: [] for c in args.concurrency}
        for n in range(args.rounds):
            for clients in args.concurrency:
                drafts = signing.drafts(needed(rate, args.duration, 1))
                lib = measure_sign_library(signing, key, drafts, args.duration, pid)
                rate = max(rate, lib.rate)
                drafts = signing.drafts(needed(rate * clients, args.duration, clients))
                http = measure_sign_http(server, signing, key, drafts, clients, args.duration)
                rounds[clients].append((lib, http))
                print(
                    f"sign ({name} key) round {n + 1} clients {clients}: library "
                    f"{lib.rate:.2f}/s, HTTP {http.rate:.2f}/s (ratio {http.rate / lib.rate:.2f}, "
                    f"errors {lib.errors + http.errors}, ran out: library {lib.ran_out}, "
                    f"HTTP {http.ran_out}, others' CPU "
                    f"{pct(max(lib.cpu['others'], http.cpu['others']))})",
                    file=sys.stderr,
                )
        for clients, pairs in rounds.items():
            lib, http = median_round(pairs)
            rows.append((name, clients, lib, http, opening))
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--prepare"]:
        data, port, folder = Path(argv[1]), int(argv[2]), Path(argv[3])
        make_signed_pdf(data, port, folder)
        make_signer_account(data, port, folder)
        return 0
    args = parse_args(argv)
    if args.wait_quiet:
        share = wait_until_quiet(args.wait_quiet)
        print(f"others' CPU before the run: {pct(share)}", file=sys.stderr)
    from kyso.api.services import Services

    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    verify_rows: list[tuple[int, Result, Result]] = []
    sign_rows: list[tuple[str, int, SignResult, SignResult, float]] = []
    expected = ""
    parts: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="kyso-bench-http-") as tmp_name:
        tmp = Path(tmp_name)
        with contextlib.closing(__import__("socket").socket()) as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        data = tmp / "data"
        print(
            f"preparing a PKI, a signed 1-page PDF ({LEVEL}) and an official ...", file=sys.stderr
        )
        # in a process of its own: this one then holds only what a server holds (the
        # settings, the trust, the verifier), not the garbage of creating a PKI and signing
        subprocess.run(
            [sys.executable, __file__, "--prepare", str(data), str(port), str(tmp)], check=True
        )
        signed = tmp / "1p-signed.pdf"
        account = json.loads((tmp / "account.json").read_text())
        services = Services(settings(data, port))
        signing = Signing(
            services,
            services.accounts.principal_for_user(account["user_id"]),
            account["token"],
            account["keys"],
        )
        with running_server(data, port, args.workers, tmp / "server.log") as server:
            print(f"server: {shlex.join(server.command[1:])}", file=sys.stderr)
            if "verify" in args.what:
                expected, verify_rows = run_verify(args, services, signed, server)
            if "sign" in args.what:
                sign_rows = run_sign(args, signing, server)
                parts = signing.open_breakdown_ms()
    command = "python bench/http_load.py " + shlex.join(argv)
    print(f"\n```sh\n{command.strip()}\n```\n")
    print(
        f"Started {started}; {os.cpu_count()} CPUs; load average before the run "
        f"{load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f} (1/5/15 min).\n"
    )
    worst = []
    if verify_rows:
        print(
            f"Verification (`POST /api/v1/verify`, JSON report) of a 1-page PDF signed once at "
            f"{LEVEL}, verdict {expected} every time; median round of {args.rounds}.\n"
        )
        print(table(verify_rows, args.workers))
        low = min(http.rate / lib.rate for _, lib, http in verify_rows)
        worst.append(low)
        print(
            f"\nVerify: HTTP ≥ {TARGET:.0%} of the library rate: "
            f"{'met' if low >= TARGET else 'NOT met'} (lowest {low:.2f}).\n"
        )
    if sign_rows:
        print(
            f"Person signature (`POST /api/v1/documents/{{id}}/sign`, {SIGN_LEVEL}, RSA-2048) of "
            f"fresh 1-page drafts against `workflow.sign_as_person` in-process; median round of "
            f"{args.rounds}. key open = `open_signing_key` alone (PIN check + unlock).\n"
        )
        print(sign_table(sign_rows, args.workers))
        print(
            "\nOpening the server key, by part (median of 5, in-process): "
            + ", ".join(f"{name} {ms:.0f} ms" for name, ms in parts.items())
            + "."
        )
        low = min(http.rate / lib.rate for _, _, lib, http, _ in sign_rows)
        worst.append(low)
        print(
            f"\nSign: HTTP ≥ {TARGET:.0%} of the library rate: "
            f"{'met' if low >= TARGET else 'NOT met'} (lowest {low:.2f})."
        )
    verdict = "met" if worst and min(worst) >= TARGET else "NOT met"
    print(f"\nTarget HTTP ≥ {TARGET:.0%} of the library rate overall: {verdict}.")
    results = [r for _, lib, http in verify_rows for r in (lib, http)]
    results += [r for _, _, lib, http, _ in sign_rows for r in (lib, http)]
    return 0 if all(r.errors == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
