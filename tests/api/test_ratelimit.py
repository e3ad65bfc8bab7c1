"""The public rate limits counted in Redis (``KYSO_RATE_LIMIT_URL``, else a Redis broker): every
process that uses the same Redis counts against the same limit, per limiter name and client
address, in a sliding window whose keys expire; an unreachable Redis falls back to counting in
the process (a warning, no error).  Needs the Redis at ``KYSO_TEST_REDIS_URL``; every test
uses key prefixes of its own, so parallel test runs never meet."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from kyso.api import ratelimit
from kyso.api.app import create_app
from kyso.api.ratelimit import (
    RateLimiter,
    RedisCounts,
    RedisRateLimiter,
    rate_limit_redis_url,
)
from kyso.api.services import Services
from tests.api.workflow_fixtures import fresh_pdf
from tests.conftest import free_port, make_settings


def redis_url() -> str:
    url = os.environ.get("KYSO_TEST_REDIS_URL")
    if not url:
        pytest.fail("KYSO_TEST_REDIS_URL is not set (run the tests through .ci/run)")
    return url


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    made = f"kyso-test:{uuid.uuid4().hex}:rl"
    yield made
    client = redis.Redis.from_url(redis_url())
    try:
        keys = list(client.scan_iter(match=f"{made}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url(), decode_responses=True)
    yield client
    client.close()


def counts(url: str | None = None) -> Iterator[RedisCounts]:
    made = RedisCounts(url or redis_url())
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def shared() -> Iterator[RedisCounts]:
    yield from counts()


@pytest.fixture
def other() -> Iterator[RedisCounts]:
    """A second connection pool to the same Redis: what another process has."""
    yield from counts()


def test_two_processes_count_together(shared: RedisCounts, other: RedisCounts, prefix: str) -> None:
    one = RedisRateLimiter(shared, "verify-api", 3, prefix=prefix)
    two = RedisRateLimiter(other, "verify-api", 3, prefix=prefix)
    assert one.hit("10.0.0.1") == 0 and one.hit("10.0.0.1") == 0
    assert two.hit("10.0.0.1") == 0  # the third of the minute, wherever it arrives
    wait = two.hit("10.0.0.1")
    assert 0 < wait <= 60
    assert 0 < one.hit("10.0.0.1") <= 60
    assert not two.allow("10.0.0.1")
    # the counting was Redis's, not the in-process fallback's
    assert one._log == {} and two._log == {}


def test_addresses_and_limiters_count_apart(
    shared: RedisCounts, other: RedisCounts, prefix: str, raw: redis.Redis
) -> None:
    api = RedisRateLimiter(shared, "verify-api", 1, prefix=prefix)
    inbox = RedisRateLimiter(other, "exchange-inbox", 1, prefix=prefix)
    assert api.hit("10.0.0.1") == 0
    assert api.hit("10.0.0.1") > 0
    assert api.hit("10.0.0.2") == 0  # another address has its own count
    assert inbox.hit("10.0.0.1") == 0  # another limiter too
    assert inbox.hit("10.0.0.1") > 0
    assert sorted(raw.scan_iter(match=f"{prefix}:*")) == [
        f"{prefix}:exchange-inbox:10.0.0.1",
        f"{prefix}:verify-api:10.0.0.1",
        f"{prefix}:verify-api:10.0.0.2",
    ]
    # the limit of the call wins over the limiter's own; 0 is no limit
    assert api.hit("10.0.0.1", 2) == 0
    assert api.hit("10.0.0.1", 0) == 0
    assert api.hit("10.0.0.1", 2) > 0


def test_the_window_slides_on_a_given_clock(shared: RedisCounts, prefix: str) -> None:
    limiter = RedisRateLimiter(shared, "verify-api", 2, window=60, prefix=prefix)
    assert limiter.hit("a", now=1000) == 0 and limiter.hit("a", now=1000) == 0
    assert limiter.hit("a", now=1000) == pytest.approx(60, abs=0.01)
    assert limiter.hit("b", now=1000) == 0
    assert limiter.hit("a", now=1030) == pytest.approx(30, abs=0.01)
    assert limiter.hit("a", now=1060.5) == 0  # the first two left the window
    assert limiter.hit("a", now=1061) == 0
    assert limiter.hit("a", now=1061.5) == pytest.approx(59, abs=0.01)  # 1060.5 leaves first
    assert limiter.hit("a", now=1120.4) == pytest.approx(0.1, abs=0.01)
    assert limiter.hit("a", now=1120.5) == 0  # the window is (now - 60, now]


def test_the_window_slides_on_redis_clock(shared: RedisCounts, prefix: str) -> None:
    limiter = RedisRateLimiter(shared, "verify-api", 2, window=1.0, prefix=prefix)
    assert limiter.hit("a") == 0
    time.sleep(0.4)
    assert limiter.hit("a") == 0
    wait = limiter.hit("a")
    assert 0.3 < wait <= 0.6  # the first one leaves the window a second after it came
    time.sleep(wait + 0.05)
    assert limiter.hit("a") == 0  # the first left; the second is still in
    assert 0 < limiter.hit("a") <= 0.4


def test_keys_expire_a_window_after_the_last_call(
    shared: RedisCounts, prefix: str, raw: redis.Redis
) -> None:
    limiter = RedisRateLimiter(shared, "verify-page", 5, window=1.0, prefix=prefix)
    assert limiter.hit("10.1.2.3") == 0
    key = f"{prefix}:verify-page:10.1.2.3"
    assert raw.zcard(key) == 1
    assert 0 < raw.pttl(key) <= 1000
    assert limiter.hit("10.1.2.3") == 0
    assert raw.zcard(key) == 2
    time.sleep(1.2)
    assert raw.exists(key) == 0


def test_refused_calls_are_not_stored(shared: RedisCounts, prefix: str, raw: redis.Redis) -> None:
    limiter = RedisRateLimiter(shared, "verify-api", 2, prefix=prefix)
    for _ in range(2):
        assert limiter.hit("x") == 0
    for _ in range(5):
        assert limiter.hit("x") > 0
    assert raw.zcard(f"{prefix}:verify-api:x") == 2  # a key never grows past the limit


def test_redis_down_still_limits_in_process(
    prefix: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ratelimit, "REDIS_PAUSE", 0.0)  # try Redis on every call
    url = f"redis://:s3cret-pass@127.0.0.1:{free_port()}/0"  # nothing listens there
    down = RedisCounts(url)
    try:
        limiter = RedisRateLimiter(down, "verify-api", 2, prefix=prefix)
        caplog.set_level(logging.WARNING, logger="kyso.api.ratelimit")
        started = time.monotonic()
        assert limiter.hit("10.0.0.1") == 0 and limiter.hit("10.0.0.1") == 0
        assert 0 < limiter.hit("10.0.0.1") <= 60
        assert limiter.hit("10.0.0.2") == 0
        assert time.monotonic() - started < 2
        assert set(limiter._log) == {"10.0.0.1", "10.0.0.2"}  # counted here
        warnings = [r for r in caplog.records if r.name == "kyso.api.ratelimit"]
        assert len(warnings) == 1  # once a minute, not once a call
        message = warnings[0].getMessage()
        assert "Redis" in message and f"127.0.0.1:{url.rsplit(':', 1)[1]}" in message
        assert "s3cret-pass" not in message
    finally:
        down.close()


def _start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed")
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            probe.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    probe.close()
    return proc


def test_redis_is_used_again_once_it_answers(
    prefix: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(ratelimit, "REDIS_PAUSE", 0.3)
    port = free_port()
    down = RedisCounts(f"redis://127.0.0.1:{port}/0")
    limiter = RedisRateLimiter(down, "verify-api", 1, prefix=prefix)
    proc: subprocess.Popen[bytes] | None = None
    try:
        assert limiter.hit("a") == 0 and limiter.hit("a") > 0  # in process
        assert "a" in limiter._log
        proc = _start_redis(port, tmp_path)
        assert limiter.hit("b") == 0  # still paused: in process
        assert "b" in limiter._log
        time.sleep(0.35)
        assert limiter.hit("c") == 0 and limiter.hit("c") > 0
        assert "c" not in limiter._log  # counted in Redis
        assert redis.Redis(port=port).zcard(f"{prefix}:verify-api:c") == 1
    finally:
        down.close()
        if proc is not None:
            proc.terminate()
            proc.wait(10)


def test_which_redis_the_settings_name(tmp_path: Path) -> None:
    def url(**values: Any) -> str | None:
        return rate_limit_redis_url(make_settings(tmp_path, **values))

    assert url() is None
    assert url(broker_url="amqp://mq//") is None
    assert url(broker_url="redis://redis:6379/0") == "redis://redis:6379/0"
    assert url(broker_url="rediss://redis:6380/0") == "rediss://redis:6380/0"
    assert url(broker_url="redis://redis/0", rate_limit_url="redis://rl/1") == "redis://rl/1"
    assert url(broker_url="amqp://mq//", rate_limit_url="redis://rl/1") == "redis://rl/1"
    assert url(broker_url="redis://redis/0", rate_limit_url="memory") is None
    with pytest.raises(ValueError, match="memory"):
        make_settings(tmp_path, rate_limit_url="http://redis:6379")


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("ratelimit-data")
    Services(make_settings(data, ca_key_type="ec-p256")).ensure_pki()
    return data


def _verify(client: TestClient) -> int:
    reply = client.post(
        "/api/v1/verify", files={"file": ("van-ban.pdf", fresh_pdf(), "application/pdf")}
    )
    if reply.status_code == 429:
        body = reply.json()
        assert body["type"].endswith("/rate-limited")
        assert int(reply.headers["retry-after"]) == body["retry_after"] >= 1
    return reply.status_code


def _apps(data: Path, count: int = 2, **settings: Any) -> list[Services]:
    """The services of API processes on the same data (each its own app and state)."""
    return [
        Services(make_settings(data, ca_key_type="ec-p256", verify_rate_limit=3, **settings))
        for _ in range(count)
    ]


def test_two_apps_on_one_redis_share_the_public_limit(
    pki_dir: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "KEY_PREFIX", prefix)
    first, second = _apps(pki_dir, rate_limit_url=redis_url())
    with (
        TestClient(create_app(services=first)) as one,
        TestClient(create_app(services=second)) as two,
    ):
        assert [_verify(one), _verify(one), _verify(two)] == [200, 200, 200]
        assert _verify(two) == 429
        assert _verify(one) == 429
        assert isinstance(app_limiter_of(one, "verify-api"), RedisRateLimiter)


def test_two_apps_without_redis_count_alone(
    pki_dir: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same as above with ``memory``: what the shared count changes (even with a Redis
    broker, which the limits would otherwise use)."""
    monkeypatch.setattr(ratelimit, "KEY_PREFIX", prefix)
    first, second = _apps(pki_dir, broker_url=redis_url(), rate_limit_url="memory")
    one, two = TestClient(create_app(services=first)), TestClient(create_app(services=second))
    assert [_verify(one) for _ in range(3)] == [200] * 3
    assert [_verify(two) for _ in range(3)] == [200] * 3
    assert _verify(one) == 429 and _verify(two) == 429
    limiter = app_limiter_of(one, "verify-api")
    assert type(limiter) is RateLimiter


def test_the_broker_redis_is_used_and_a_changed_url_rebuilds(
    pki_dir: Path, prefix: str, monkeypatch: pytest.MonkeyPatch, raw: redis.Redis
) -> None:
    monkeypatch.setattr(ratelimit, "KEY_PREFIX", prefix)
    (services,) = _apps(pki_dir, 1, broker_url=redis_url())
    client = TestClient(create_app(services=services), client=("192.0.2.7", 50000))
    assert _verify(client) == 200
    assert raw.zcard(f"{prefix}:verify-api:192.0.2.7") == 1
    monkeypatch.setattr(services.settings, "rate_limit_url", "memory")
    assert [_verify(client) for _ in range(3)] == [200] * 3  # a fresh in-process count
    assert type(app_limiter_of(client, "verify-api")) is RateLimiter
    assert raw.zcard(f"{prefix}:verify-api:192.0.2.7") == 1


def app_limiter_of(client: TestClient, name: str) -> RateLimiter:
    limiters: dict[str, RateLimiter] = client.app.state.kyso_rate_limiters  # type: ignore[attr-defined]
    return limiters[name]
