"""Verification over HTTP next to the library, measured in the same run.

The public endpoint ``POST /api/v1/verify`` (the PDF as multipart field ``file``, the JSON
report back) of a real ``kyso serve`` subprocess on 127.0.0.1, against the library call it
wraps, ``kyso.signer.verify.verify(path, policy)`` in this process, on the same file:

1. a fresh data directory and development PKI (public URL = the server's port, so any
   revocation fetch reaches the server in both cases), one RSA-2048 person key, and a 1-page
   PDF (``bench/sign.py``'s generator) signed once at PAdES B-LT;
2. ``kyso serve`` with ``KYSO_VERIFY_RATE_LIMIT`` raised out of the way, one uvicorn worker
   unless ``--workers`` says otherwise, access log off (as by default);
3. rounds, interleaved: **library** — one thread, sequential, ``verify`` with the policy
   built once the way the route builds it (``VerifyPolicy.from_services``), for
   ``--duration`` seconds; then **HTTP** — an asyncio client in this process (httpx, keep-alive)
   with ``--concurrency`` requests in flight, for ``--duration`` seconds, each reply checked
   (200, JSON, the expected indication). Requests/s, p50 and p99 of each; the ratio is
   HTTP req/s ÷ library files/s of the same round. The table shows the median round.

"others' CPU" is what processes outside this benchmark and its server used during the round
(% of one core): compare runs only when it is near 0 %.

    .venv/bin/python bench/http_load.py                         # 3 rounds × 8 s, 1 and 2 clients
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
import os  # noqa: E402
import shlex  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

from bench.sign import build_pdf  # noqa: E402

HOST = "127.0.0.1"
PASSPHRASE = "kyso bench passphrase (not a secret)"
LEVEL = "B-LT"
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--prepare"]:
        make_signed_pdf(Path(argv[1]), int(argv[2]), Path(argv[3]))
        return 0
    args = parse_args(argv)
    if args.wait_quiet:
        share = wait_until_quiet(args.wait_quiet)
        print(f"others' CPU before the run: {pct(share)}", file=sys.stderr)
    from kyso.api.services import Services
    from kyso.signer.verify import VerifyPolicy, verify

    with tempfile.TemporaryDirectory(prefix="kyso-bench-http-") as tmp_name:
        tmp = Path(tmp_name)
        with contextlib.closing(__import__("socket").socket()) as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        data = tmp / "data"
        print(f"preparing a PKI and a signed 1-page PDF ({LEVEL}) ...", file=sys.stderr)
        # in a process of its own: this one then holds only what a server holds (the
        # settings, the trust, the verifier), not the garbage of creating a PKI and signing
        subprocess.run(
            [sys.executable, __file__, "--prepare", str(data), str(port), str(tmp)], check=True
        )
        signed = tmp / "1p-signed.pdf"
        body = signed.read_bytes()
        services = Services(settings(data, port))
        policy = VerifyPolicy.from_services(services)  # what the route uses, built once
        expected = verify(signed, policy).indication
        expected = getattr(expected, "value", expected)

        def library() -> str:
            indication = verify(signed, policy).indication
            return str(getattr(indication, "value", indication))

        with running_server(data, port, args.workers, tmp / "server.log") as server:
            print(f"server: {shlex.join(server.command[1:])}", file=sys.stderr)
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
                        f"round {n + 1} clients {clients}: library {lib.rate:.1f}/s, "
                        f"HTTP {http.rate:.1f}/s (ratio {http.rate / lib.rate:.2f}, "
                        f"errors {lib.errors + http.errors}, server CPU while the library "
                        f"ran {pct(lib.cpu['server'])}, others' CPU "
                        f"{pct(max(lib.cpu['others'], http.cpu['others']))})",
                        file=sys.stderr,
                    )
    rows = []
    for clients, pairs in rounds.items():
        ratios = [h.rate / lib.rate for lib, h in pairs]
        median = statistics.median_low(ratios)
        lib, http = pairs[ratios.index(median)]
        rows.append((clients, lib, http))
    command = "python bench/http_load.py " + shlex.join(argv)
    print(f"\n```sh\n{command.strip()}\n```\n")
    print(
        f"Verification (`POST /api/v1/verify`, JSON report) of a 1-page PDF signed once at "
        f"{LEVEL}, verdict {expected} every time; median round of {args.rounds}.\n"
    )
    print(table(rows, args.workers))
    worst = min(http.rate / lib.rate for _, lib, http in rows)
    verdict = "met" if worst >= TARGET else "NOT met"
    print(f"\nTarget HTTP ≥ {TARGET:.0%} of the library rate: {verdict} (lowest {worst:.2f}).")
    return 0 if all(lib.errors + http.errors == 0 for _, lib, http in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
