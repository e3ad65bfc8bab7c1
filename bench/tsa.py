"""TSA throughput and latency over HTTP on loopback, next to baselines measured in the same run.

For each configuration (service key type x ``kyso serve --workers`` x client concurrency) this
script:

1. creates a fresh temporary data directory with its own development PKI (the TSA key of the
   chosen type), starts a real ``kyso serve`` subprocess on a free 127.0.0.1 port and waits for
   ``/healthz`` (and for every worker to finish starting);
2. measures two baselines in this process while the server is idle: the raw private-key
   signature rate of the TSA key (``cryptography``, one thread) and the in-process
   ``TimeStampAuthority.respond()`` rate (one thread);
3. runs a load generator in a *separate process* (its own GIL; it still competes for the same
   cores): N concurrent keep-alive HTTP/1.1 connections on asyncio (uvloop when installed),
   each POSTing distinct ``TimeStampReq`` (sha256 imprint, 64-bit nonce, certReq true) for a
   bounded time and count, recording each request's latency and checking each reply is
   ``200`` with PKIStatus granted;
4. verifies a sample of replies fully (status, nonce, imprint, unique serials) and one with
   ``openssl ts -verify`` against the PKI's root.

Every run is repeated ``--repeat`` times (interleaved) and the table reports the median run.
The server's process group is terminated on exit, error or Ctrl-C.

    .venv/bin/python bench/tsa.py                       # ec-p256, 1 worker, 16 clients, 10 s
    .venv/bin/python bench/tsa.py --key-type ec-p256,rsa-2048 --workers 1,2 \\
        --concurrency 8,16,32 --repeat 3                # the matrix in BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import platform
import resource
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
PASSPHRASE = "kyso bench passphrase (not a secret)"
KEY_TYPES = ("ec-p256", "rsa-2048")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# --------------------------------------------------------------------------------------------
# Requests: a DER TimeStampReq written by hand (checked against asn1crypto at start-up), so the
# client spends as little CPU as possible building them.
#
# TimeStampReq ::= SEQUENCE { version INTEGER 1, messageImprint SEQUENCE { AlgorithmIdentifier
#   { sha256, NULL }, OCTET STRING (32) }, nonce INTEGER (8 bytes, positive), certReq TRUE }

_SHA256_ALG = bytes.fromhex("300d06096086480165030402010500")
_IMPRINT_HEAD = b"\x30\x31" + _SHA256_ALG + b"\x04\x20"
_REQ_HEAD = b"\x30\x43\x02\x01\x01" + _IMPRINT_HEAD
_NONCE_HEAD = b"\x02\x08"
_CERT_REQ = b"\x01\x01\xff"
_GRANTED_STATUS = b"\x30\x03\x02\x01\x00"


def make_request(digest: bytes, nonce: int) -> bytes:
    """DER TimeStampReq for a sha256 ``digest`` and a nonce in [2**56, 2**63)."""
    return _REQ_HEAD + digest + _NONCE_HEAD + nonce.to_bytes(8, "big") + _CERT_REQ


def request_factory() -> Callable[[], bytes]:
    """Distinct requests: random digests, nonces = random 63-bit base + a counter."""
    counter = itertools.count()
    base = (1 << 56) + (secrets.randbits(54) << 1)

    def make() -> bytes:
        n = next(counter)
        return make_request(
            hashlib.sha256(n.to_bytes(8, "big") + base.to_bytes(8)).digest(), base + n
        )

    return make


def check_request_encoding() -> None:
    from asn1crypto import tsp

    der = make_request(b"\x11" * 32, (1 << 62) + 12345)
    req = tsp.TimeStampReq.load(der, strict=True)
    assert req.dump(force=True) == der, "hand-written TimeStampReq is not DER"
    assert req["nonce"].native == (1 << 62) + 12345 and req["cert_req"].native is True


def is_granted(body: bytes) -> bool:
    """Cheap check that a DER TimeStampResp starts with PKIStatusInfo { granted }."""
    return _GRANTED_STATUS in body[:10]


# --------------------------------------------------------------------------------------------
# The load generator (runs in its own process)


@dataclasses.dataclass
class ClientConfig:
    port: int
    concurrency: int
    duration: float
    warmup: float
    max_requests: int
    timeout: float
    client: str  # "raw" or "httpx"
    ramp: float  # seconds over which the connections are opened (raw client)
    samples: int


@dataclasses.dataclass
class _State:
    cfg: ClientConfig
    make: Callable[[], bytes]
    measuring: bool = False
    stop: bool = False
    count: int = 0
    latencies: list[float] = dataclasses.field(default_factory=list)
    errors: int = 0
    rejected: int = 0
    error_kinds: dict[str, int] = dataclasses.field(default_factory=dict)
    samples: list[tuple[bytes, bytes]] = dataclasses.field(default_factory=list)
    last_done: float = 0.0

    def record(self, sent_measuring: bool, req: bytes, status: int, body: bytes, t0: float) -> None:
        t1 = time.perf_counter()
        if not sent_measuring:
            return
        self.last_done = t1
        if status != 200:
            self.errors += 1
            self.error_kinds[f"HTTP {status}"] = self.error_kinds.get(f"HTTP {status}", 0) + 1
            return
        if not is_granted(body):
            self.rejected += 1
        self.latencies.append(t1 - t0)
        n = len(self.latencies)
        if len(self.samples) < self.cfg.samples and (n <= 3 or n % 997 == 0):
            self.samples.append((req, body))
        if n + self.errors >= self.cfg.max_requests:
            self.stop = True

    def failed(self, sent_measuring: bool, exc: BaseException) -> None:
        if sent_measuring:
            self.errors += 1
            kind = type(exc).__name__
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


async def _raw_worker(st: _State, delay: float) -> None:
    """One keep-alive HTTP/1.1 connection on asyncio streams, one request in flight."""
    cfg = st.cfg
    await asyncio.sleep(delay)
    head = (
        f"POST /tsa HTTP/1.1\r\nHost: {HOST}:{cfg.port}\r\n"
        "Content-Type: application/timestamp-query\r\nContent-Length: {}\r\n\r\n"
    )
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while not st.stop:
        if writer is None:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(HOST, cfg.port), cfg.timeout
                )
            except (OSError, TimeoutError) as exc:
                st.failed(st.measuring, exc)
                await asyncio.sleep(0.05)
                continue
        assert reader is not None and writer is not None
        req = st.make()
        measuring = st.measuring
        t0 = time.perf_counter()
        try:
            writer.write(head.format(len(req)).encode() + req)
            raw_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), cfg.timeout)
            lines = raw_head.split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            length = 0
            close = False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            body = await asyncio.wait_for(reader.readexactly(length), cfg.timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            st.failed(measuring, exc)
            writer.close()
            writer = None
            continue
        st.record(measuring, req, status, body, t0)
        if close:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def _httpx_worker(st: _State, client: Any) -> None:
    """Same, through httpx.AsyncClient (keep-alive pool shared by all workers)."""
    import httpx

    url = f"http://{HOST}:{st.cfg.port}/tsa"
    headers = {"Content-Type": "application/timestamp-query"}
    while not st.stop:
        req = st.make()
        measuring = st.measuring
        t0 = time.perf_counter()
        try:
            resp = await client.post(url, content=req, headers=headers)
        except httpx.HTTPError as exc:
            st.failed(measuring, exc)
            await asyncio.sleep(0.01)
            continue
        st.record(measuring, req, resp.status_code, resp.content, t0)


async def _load(cfg: ClientConfig) -> dict[str, Any]:
    st = _State(cfg, request_factory())
    client: Any = None
    if cfg.client == "httpx":
        import httpx

        limits = httpx.Limits(
            max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency
        )
        client = httpx.AsyncClient(limits=limits, timeout=cfg.timeout)
        tasks = [asyncio.create_task(_httpx_worker(st, client)) for _ in range(cfg.concurrency)]
    else:
        step = cfg.ramp / cfg.concurrency
        tasks = [asyncio.create_task(_raw_worker(st, i * step)) for i in range(cfg.concurrency)]
    try:
        await asyncio.sleep(cfg.warmup)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        st.measuring = True
        deadline = start + cfg.duration
        while not st.stop and time.perf_counter() < deadline:
            await asyncio.sleep(0.02)
        st.stop = True
        end_send = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), cfg.timeout + 5)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        for task in tasks:
            task.cancel()
        if client is not None:
            await client.aclose()
    end = max(st.last_done, end_send)
    return {
        "start": start,  # perf_counter is CLOCK_MONOTONIC: comparable across processes
        "end": end,
        "elapsed": end - start,
        "latencies": st.latencies,
        "errors": st.errors,
        "rejected": st.rejected,
        "error_kinds": st.error_kinds,
        "client_cpu": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
        "samples": st.samples,
    }


def _client_main(cfg: ClientConfig, conn: multiprocessing.connection.Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    try:
        try:
            import uvloop

            result = uvloop.run(_load(cfg))
        except ImportError:
            result = asyncio.run(_load(cfg))
        conn.send(("ok", result))
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_load(cfg: ClientConfig) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_client_main, args=(cfg, child), daemon=True)
    proc.start()
    child.close()
    done = False
    try:
        limit = cfg.warmup + cfg.duration + cfg.timeout + 60
        if not parent.poll(limit):
            raise RuntimeError(f"load generator gave no result within {limit:.0f} s")
        kind, payload = parent.recv()
        done = True
        if kind != "ok":
            raise RuntimeError(f"load generator failed: {payload}")
        return payload
    finally:
        if done:  # it has answered and is exiting; on error or Ctrl-C, stop it now
            proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


# --------------------------------------------------------------------------------------------
# The server


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _proc_tree(pid: int) -> list[int]:
    """pid and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def machine_cpu() -> tuple[float, float, float]:
    """(busy, idle, steal) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0
    busy = sum(fields[:8]) - idle - steal
    return busy / CLK_TCK, idle / CLK_TCK, steal / CLK_TCK


class CpuSampler:
    """Samples server-tree and machine CPU every ``interval`` s in a thread, for a time window."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pids = _proc_tree(pid)
        self.interval = interval
        self.samples: list[tuple[float, tuple[float, ...], tuple[float, float, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _server_cpu(self) -> tuple[float, ...]:
        """CPU seconds of each server process (pid order of :attr:`pids`)."""
        out = []
        for p in self.pids:
            try:
                with open(f"/proc/{p}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                out.append(0.0)
                continue
            out.append((int(fields[11]) + int(fields[12])) / CLK_TCK)  # utime, stime
        return tuple(out)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self._server_cpu(), machine_cpu()))
            self._stop.wait(self.interval)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def window(self, start: float, end: float) -> tuple[list[float], float, float, float]:
        """Per-process server CPU seconds and machine (busy, idle, steal) seconds between the
        samples nearest ``start`` and ``end``, scaled to the window."""
        first = min(self.samples, key=lambda s: abs(s[0] - start))
        last = min(self.samples, key=lambda s: abs(s[0] - end))
        span = (last[0] - first[0]) or 1.0
        scale = (end - start) / span
        busy, idle, steal = (b - a for a, b in zip(first[2], last[2], strict=True))
        procs = [(b - a) * scale for a, b in zip(first[1], last[1], strict=True)]
        return procs, busy * scale, idle * scale, steal * scale


@dataclasses.dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the workers too
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def server_env(data_dir: Path, port: int, key_type: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYSO_")}
    env.update(
        KYSO_DATA_DIR=str(data_dir),
        KYSO_KEY_PASSPHRASE=PASSPHRASE,
        KYSO_PUBLIC_URL=f"http://{HOST}:{port}",
        KYSO_LOCALE="en",
        KYSO_SERVICE_KEY_TYPE=key_type,
        KYSO_LOG_LEVEL="info",
    )
    return env


@contextlib.contextmanager
def running_server(
    data_dir: Path, key_type: str, workers: int, extra_args: list[str], log: Path
) -> Iterator[Server]:
    import httpx

    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "kyso",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        *extra_args,
    ]
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            cmd,
            env=server_env(data_dir, port, key_type),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Server(proc, port, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"kyso serve exited {proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"kyso serve did not come up:\n{log.read_text()}")
            try:
                if httpx.get(f"http://{HOST}:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        # Every worker opens its keys before accepting: wait until all say so (bounded).
        while time.monotonic() < deadline:
            if log.read_text(errors="replace").count("Application startup complete") >= workers:
                break
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# Baselines (in this process, server idle)


def make_pki(data_dir: Path, key_type: str) -> Any:
    from kyso.api.services import Services
    from kyso.api.settings import Settings

    settings = Settings(
        _env_file=None,
        data_dir=data_dir,
        key_passphrase=PASSPHRASE,
        public_url=f"http://{HOST}:8000",
        locale="en",
        service_key_type=key_type,
    )
    services = Services(settings)
    services.ensure_pki()
    return services


def _rate(fn: Callable[[], object], seconds: float) -> float:
    for _ in range(20):
        fn()
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(20):
            fn()
        n += 20
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def baselines(services: Any, serials_path: Path, seconds: float) -> tuple[float, float]:
    """(raw signatures/s of the TSA key, in-process respond()/s), one thread each."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    from kyso.certs.tsa import SQLiteSerialSource, TimeStampAuthority

    handle = services.pki.tsa_key()
    key = handle.private_key()
    data = secrets.token_bytes(250)  # about the size of a token's signed attributes
    sign: Callable[[], object]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        sign = lambda: key.sign(data, ec.ECDSA(hashes.SHA256()))  # noqa: E731
    else:
        assert isinstance(key, rsa.RSAPrivateKey)
        sign = lambda: key.sign(data, padding.PKCS1v15(), hashes.SHA256())  # noqa: E731
    tsa = TimeStampAuthority(
        key=handle, policy=services.tsa_policy, serials=SQLiteSerialSource(serials_path)
    )
    make = request_factory()
    assert is_granted(tsa.respond(make()))
    return _rate(sign, seconds), _rate(lambda: tsa.respond(make()), seconds)


# --------------------------------------------------------------------------------------------
# Checking replies


def verify_samples(samples: list[tuple[bytes, bytes]], services: Any, tmp: Path) -> str:
    """Full checks of the sampled replies, and ``openssl ts -verify`` on one of them."""
    from asn1crypto import cms, tsp
    from cryptography.hazmat.primitives.serialization import Encoding

    from kyso.certs.tsa import TimeStampResponse

    if not samples:
        raise AssertionError("no sampled replies to verify")
    serials = set()
    for req_der, resp_der in samples:
        req = tsp.TimeStampReq.load(req_der)
        resp = TimeStampResponse.load(resp_der)
        assert resp["status"]["status"].native == "granted", resp["status"].native
        token = resp["time_stamp_token"]
        assert isinstance(token, cms.ContentInfo)
        info = token["content"]["encap_content_info"]["content"].parsed
        assert info["nonce"].native == req["nonce"].native, "nonce mismatch"
        assert info["message_imprint"].dump() == req["message_imprint"].dump(), "imprint"
        assert len(token["content"]["certificates"]) >= 1, "certReq true but no certificate"
        serials.add(info["serial_number"].native)
    assert len(serials) == len(samples), "duplicate serial numbers"
    openssl = shutil.which("openssl")
    if openssl is None:
        return f"{len(samples)} sampled replies checked; openssl not installed"
    req_der, resp_der = samples[-1]
    (tmp / "q.tsq").write_bytes(req_der)
    (tmp / "r.tsr").write_bytes(resp_der)
    (tmp / "untrusted.pem").write_bytes(services.pki.issuing_cert.public_bytes(Encoding.PEM))
    proc = subprocess.run(
        [
            openssl,
            "ts",
            "-verify",
            "-queryfile",
            str(tmp / "q.tsq"),
            "-in",
            str(tmp / "r.tsr"),
            "-CAfile",
            str(services.pki.root_path),
            "-untrusted",
            str(tmp / "untrusted.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0 or "Verification: OK" not in proc.stdout:
        raise AssertionError(f"openssl ts -verify failed:\n{proc.stdout}{proc.stderr}")
    return f"{len(samples)} sampled replies checked; openssl ts -verify: OK"


# --------------------------------------------------------------------------------------------
# Runs and the report


@dataclasses.dataclass
class Run:
    key_type: str
    workers: int
    concurrency: int
    repeat: int
    tokens_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    errors: int
    rejected: int
    client_cpu: float  # fraction of one core
    server_cpu: float  # fraction of one core (all server processes)
    server_cpu_split: str  # per busy server process, in % of one core ("76+75")
    other_cpu: float  # fraction of one core used by processes outside the benchmark
    machine_idle: float  # fraction of all cores' time idle during the window
    machine_steal: float  # fraction stolen by the hypervisor
    raw_sign_per_s: float
    respond_per_s: float
    verified: str

    @property
    def vs_raw(self) -> float:
        return self.tokens_per_s / self.raw_sign_per_s

    @property
    def vs_respond(self) -> float:
        return self.tokens_per_s / self.respond_per_s


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[idx]


def one_run(
    args: argparse.Namespace,
    server: Server,
    services: Any,
    key_type: str,
    workers: int,
    concurrency: int,
    repeat: int,
    tmp: Path,
) -> Run:
    raw, respond = baselines(services, tmp / "bench-serials.sqlite3", args.baseline_seconds)
    cfg = ClientConfig(
        port=server.port,
        concurrency=concurrency,
        duration=args.duration,
        warmup=args.warmup,
        max_requests=args.max_requests,
        timeout=args.timeout,
        client=args.client,
        ramp=args.ramp,
        samples=20,
    )
    with CpuSampler(server.proc.pid) as sampler:
        result = run_load(cfg)
    procs, busy, idle, steal = sampler.window(result["start"], result["end"])
    elapsed = result["elapsed"]
    # The processes doing the work (uvicorn's supervisor and helpers idle): their CPU each.
    split = "+".join(f"{c / elapsed:.0%}".rstrip("%") for c in procs if c / elapsed >= 0.05)
    lat = sorted(result["latencies"])
    verified = verify_samples(result["samples"], services, tmp)
    if result["error_kinds"]:
        print(f"    errors: {result['error_kinds']}", file=sys.stderr)
    return Run(
        key_type=key_type,
        workers=workers,
        concurrency=concurrency,
        repeat=repeat,
        tokens_per_s=(len(lat) - result["rejected"]) / elapsed,
        p50_ms=percentile(lat, 50) * 1e3,
        p90_ms=percentile(lat, 90) * 1e3,
        p99_ms=percentile(lat, 99) * 1e3,
        max_ms=(lat[-1] if lat else float("nan")) * 1e3,
        requests=len(lat),
        errors=result["errors"],
        rejected=result["rejected"],
        client_cpu=result["client_cpu"] / elapsed,
        server_cpu=sum(procs) / elapsed,
        server_cpu_split=split,
        other_cpu=max(0.0, busy - sum(procs) - result["client_cpu"]) / elapsed,
        machine_idle=idle / (busy + idle + steal),
        machine_steal=steal / (busy + idle + steal),
        raw_sign_per_s=raw,
        respond_per_s=respond,
        verified=verified,
    )


HEADER = (
    "| key | workers | clients | tokens/s | p50 ms | p90 ms | p99 ms | max ms | errors "
    "| client CPU | server CPU | others' CPU | raw sign/s | respond()/s "
    "| HTTP÷raw | HTTP÷respond |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def row(r: Run, label: str = "") -> str:
    server_cpu = f"{r.server_cpu:.0%}"
    if "+" in r.server_cpu_split:
        server_cpu += f" ({r.server_cpu_split})"
    return (
        f"| {r.key_type}{label} | {r.workers} | {r.concurrency} | {r.tokens_per_s:,.0f} "
        f"| {r.p50_ms:.2f} | {r.p90_ms:.2f} | {r.p99_ms:.2f} | {r.max_ms:.1f} "
        f"| {r.errors + r.rejected} | {r.client_cpu:.0%} | {server_cpu} "
        f"| {r.other_cpu:.0%} "
        f"| {r.raw_sign_per_s:,.0f} | {r.respond_per_s:,.0f} | {r.vs_raw:.2f} "
        f"| {r.vs_respond:.2f} |"
    )


def median_run(runs: list[Run]) -> Run:
    """The run with the median throughput (a real run, not a mix of runs)."""
    ordered = sorted(runs, key=lambda r: r.tokens_per_s)
    return ordered[(len(ordered) - 1) // 2]


def csv_arg(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    return lambda text: [kind(part) for part in text.split(",") if part]


def key_type_arg(text: str) -> str:
    if text not in KEY_TYPES:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(KEY_TYPES)}")
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each run")
    p.add_argument(
        "--concurrency",
        type=csv_arg(int),
        default=[16],
        help="concurrent clients (comma list: 8,16,32)",
    )
    p.add_argument(
        "--workers", type=csv_arg(int), default=[1], help="kyso serve --workers (comma list: 1,2)"
    )
    p.add_argument(
        "--key-type",
        type=csv_arg(key_type_arg),
        default=["ec-p256"],
        help="TSA key type: ec-p256, rsa-2048 (comma list)",
    )
    p.add_argument(
        "--ramp",
        type=float,
        default=0.5,
        help="open the connections one by one over this many seconds (within the warm-up)",
    )
    p.add_argument("--repeat", type=int, default=1, help="runs per configuration (median shown)")
    p.add_argument("--max-requests", type=int, default=200_000, help="request cap per run")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    p.add_argument(
        "--baseline-seconds",
        type=float,
        default=1.5,
        help="seconds for each in-process baseline, measured before every run",
    )
    p.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="load generator: raw asyncio streams (default) or httpx.AsyncClient",
    )
    p.add_argument(
        "--server-args", default="", help="extra arguments for kyso serve, e.g. '--access-log'"
    )
    p.add_argument("--json", type=Path, help="also write every run as JSON here")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.duration > 600 or args.repeat < 1 or args.repeat > 20:
        p.error("--duration must be in (0, 600] and --repeat in [1, 20]")
    if any(c < 1 or c > 1024 for c in args.concurrency) or any(w < 1 for w in args.workers):
        p.error("--concurrency must be in [1, 1024] and --workers >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    check_request_encoding()
    extra = shlex.split(args.server_args)
    runs: list[Run] = []
    started = dt.datetime.now(dt.UTC)
    print(
        f"# kyso TSA benchmark, {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, client={args.client}",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory(prefix="kyso-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for key_type in args.key_type:
            data_dir = tmp / key_type / "data"
            t0 = time.perf_counter()
            services = make_pki(data_dir, key_type)
            print(f"{key_type}: PKI created in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            for workers in args.workers:
                log = tmp / key_type / f"server-w{workers}.log"
                with running_server(data_dir, key_type, workers, extra, log) as server:
                    for repeat, concurrency in itertools.product(
                        range(args.repeat), args.concurrency
                    ):
                        r = one_run(
                            args, server, services, key_type, workers, concurrency, repeat, tmp
                        )
                        runs.append(r)
                        print(row(r, f" #{repeat + 1}"), file=sys.stderr, flush=True)
                    print(f"    {runs[-1].verified}", file=sys.stderr)
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    dataclasses.asdict(r) | {"vs_raw": r.vs_raw, "vs_respond": r.vs_respond}
                    for r in runs
                ],
                indent=1,
            )
        )
    print(
        f"\nMedian of {args.repeat} run(s) per configuration "
        f"({args.duration:g} s each, {started:%Y-%m-%d} UTC):\n"
    )
    print(HEADER)
    groups: dict[tuple[str, int, int], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.key_type, r.workers, r.concurrency), []).append(r)
    for group in groups.values():
        print(row(median_run(group)))
    if args.repeat > 1:
        print("\nAll runs:\n")
        print(HEADER)
        for r in runs:
            print(row(r, f" #{r.repeat + 1}"))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on kill, too
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: server stopped", file=sys.stderr)
        sys.exit(130)
