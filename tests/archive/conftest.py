"""Fixtures of the archive's storage tests.

* ``moto_endpoint``: a moto S3 server (``python -m moto.server``) in a child process on
  127.0.0.1 and a free port, for the whole session, reached through the real HTTP path (a
  child process keeps the server's memory out of the tracemalloc measurements);
* ``s3_store``: an :class:`S3Store` on a fresh object-lock bucket of that server;
* ``local_store``: a :class:`LocalStore` in a temporary directory (with a clock the test can
  move);
* ``store``: both of them, for the contract every backend keeps.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from kyso.archive.storage import LocalStore, ObjectStore, S3Store, open_store

ACCESS, SECRET = "kyso-test", "kyso-test-secret"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a moto S3 server running for the session."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"moto server did not start: {log.read_text(errors='replace')[-2000:]}"
                    ) from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def moto_url(endpoint: str, bucket: str | None = None) -> str:
    bucket = bucket or f"kyso-test-{uuid.uuid4().hex[:12]}"
    return f"s3://{ACCESS}:{SECRET}@{endpoint}/{bucket}?secure=false&region=us-east-1"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def local_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def local_store(local_root: Path, clock: Clock) -> LocalStore:
    return LocalStore(local_root, now=clock)


@pytest.fixture
def s3_store(moto_endpoint: str) -> S3Store:
    store = open_store(moto_url(moto_endpoint))
    assert isinstance(store, S3Store)
    store.ensure_bucket()
    return store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    if request.param == "local":
        return request.getfixturevalue("local_store")  # type: ignore[no-any-return]
    return request.getfixturevalue("s3_store")  # type: ignore[no-any-return]
