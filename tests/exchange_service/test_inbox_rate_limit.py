"""The peer endpoints (``POST /api/v1/exchange/inbox`` and ``/status``, no account) take at
most ``KYSO_EXCHANGE_INBOX_RATE_LIMIT`` messages a minute from one client address: the next one
is answered 429 problem+json with ``Retry-After`` before its body is read; 0 is no limit.  A
sending kyso treats that 429 as a transient failure and delivers later."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from kyso.api import exchange
from tests.exchange_service.conftest import A1, B1, Instance


@pytest.fixture
def limited(pair: tuple[Instance, Instance]) -> Iterator[tuple[Instance, Instance]]:
    """B's exchange settings as they were after the test (the pair is shared)."""
    _, b = pair
    saved = exchange.exchange_settings(b.services)
    try:
        yield pair
    finally:
        b.services.__dict__["exchange_settings"] = saved


def _limit(instance: Instance, per_minute: int) -> None:
    settings = exchange.exchange_settings(instance.services)
    instance.services.__dict__["exchange_settings"] = settings.model_copy(
        update={"inbox_rate_limit": per_minute}
    )


def _junk(instance: Instance, path: str) -> httpx.Response:
    """A message the inbox refuses (not XML, 415) once it reads it: it still counts."""
    return httpx.post(
        f"{instance.url}/api/v1/exchange{path}",
        content=b"not a message",
        headers={"Content-Type": "text/plain"},
        timeout=30,
    )


def test_the_message_after_the_limit_gets_429_with_retry_after(
    limited: tuple[Instance, Instance],
) -> None:
    _, b = limited
    _limit(b, 3)
    # documents and statuses count together, per address
    answers = [_junk(b, "/inbox"), _junk(b, "/status"), _junk(b, f"/inbox?to={B1}")]
    assert [r.status_code for r in answers] == [415, 415, 415]
    for path in ("/inbox", "/status"):
        refused = _junk(b, path)
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        seconds = int(refused.headers["retry-after"])
        assert 1 <= seconds <= 60
        body = refused.json()
        assert body["status"] == 429 and body["type"].endswith("/rate-limited")
        assert body["retry_after"] == seconds and "3" in body["detail"]


def test_zero_is_no_limit(limited: tuple[Instance, Instance]) -> None:
    _, b = limited
    _limit(b, 0)
    statuses = {_junk(b, "/inbox").status_code for _ in range(150)}  # more than the default
    assert statuses == {415}


def test_a_sender_refused_with_429_delivers_later(limited: tuple[Instance, Instance]) -> None:
    """429 is in ``kyso.api.exchange._TRANSIENT_HTTP``: the message goes back to ``queued``
    (not ``failed``), and the next attempt, once the receiver takes messages again, delivers
    it."""
    a, b = limited
    assert 429 in exchange._TRANSIENT_HTTP
    doc = a.sealed_document(A1)
    reply = a.api("POST", "/send", A1, "clerk", json={"document_id": doc, "recipients": [B1]})
    assert reply.status_code == 202, reply.text
    [sent] = reply.json()["messages"]
    _limit(b, 1)
    assert _junk(b, "/inbox").status_code == 415  # uses up this address's minute
    first = exchange.deliver(a.services, sent["id"])
    assert first["state"] == "queued", first
    assert "HTTP 429" in (first["error"] or "")
    _limit(b, 0)
    again = exchange.deliver(a.services, sent["id"], force=True)
    assert again["state"] == "delivered", again
