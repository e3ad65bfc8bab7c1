"""The archive's audit log: append-only, hash-chained, anchored in RFC 3161 timestamps.

Every event's ``hash`` is the SHA-256 of the canonical JSON (sorted keys, no spaces, UTF-8) of
``{seq, at, actor, action, subject, details, prev_hash}``, and ``prev_hash`` is the previous
event's hash (64 zeros for the first).  Editing a row, deleting one or reordering them breaks
the chain at that row.  Someone who rewrites the *whole* tail consistently is caught by the
anchors: :func:`anchor` asks a TSA for a token over the head hash, and :func:`verify` checks,
offline, that every anchored hash is still the hash of the event at that seq and that every
token is a valid timestamp over it, signed by a TSA that chains to the given trust roots.

:func:`append` runs inside the caller's session, so an event commits (or rolls back) with the
change it records.  On PostgreSQL a transaction-scoped advisory lock serialises appenders; on
SQLite writers are serialised by the database, and two appenders racing for the same ``seq``
make one of them fail on the primary key instead of forking the chain.  The head is read once
per transaction: the next events of the same transaction are chained from the event it last
appended (still held under that lock, so no other writer can have moved the head; see
:func:`_known_head`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa
from asn1crypto import cms, tsp
from cryptography import x509
from sqlalchemy.orm import Session

from kyso.archive.metadata import CatalogError
from kyso.archive.models import AuditAnchor, AuditEvent

__all__ = [
    "GENESIS",
    "AuditError",
    "AuditVerification",
    "BrokenLink",
    "anchor",
    "append",
    "event_hash",
    "verify",
]

GENESIS = "0" * 64
_LOCK_KEY = 0x6B79736F_61756474  # "kysoaudt": the advisory lock of the chain's head


class AuditError(CatalogError):
    code = "archive.audit.error"


class _LocalTSA(Protocol):
    def respond(self, request_der: bytes) -> bytes: ...


class _RemoteTSA(Protocol):
    def timestamp(self, digest: bytes, hash_name: str = "sha256") -> Any: ...


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(
    *, seq: int, at: str, actor: str, action: str, subject: str, details_json: str, prev_hash: str
) -> str:
    """The hash of one event (``details_json`` as stored, i.e. canonical JSON)."""
    payload = canonical_json(
        {
            "seq": seq,
            "at": at,
            "actor": actor,
            "action": action,
            "subject": subject,
            "details": details_json,
            "prev_hash": prev_hash,
        }
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _row_hash(event: AuditEvent) -> str:
    return event_hash(
        seq=event.seq,
        at=event.at,
        actor=event.actor,
        action=event.action,
        subject=event.subject,
        details_json=event.details_json,
        prev_hash=event.prev_hash,
    )


def _lock_head(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})


def head(session: Session) -> AuditEvent | None:
    """The last event of the chain, or None when it is empty."""
    return session.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).first()


_HEAD_INFO = "kyso.audit.head"
"""``session.info`` key: (the root transaction, the event :func:`append` added last in it)."""


def _known_head(session: Session) -> AuditEvent | None:
    """The event this session's current transaction appended last, when it is still the head
    for certain: the transaction that appended it holds the head's lock until it ends (the
    advisory lock on PostgreSQL; on SQLite the write lock its INSERT took), so no other writer
    can have appended since.  None when it must be read again: another transaction (the
    session was committed or rolled back since), a savepoint rolled back (the event is no
    longer persistent; its advisory lock, taken in the savepoint, is released with it), or
    a connection in autocommit mode (every statement its own transaction: no lock held)."""
    known = session.info.get(_HEAD_INFO)
    if known is None:
        return None
    transaction, event = known
    if transaction is not session.get_transaction() or not sa.inspect(event).persistent:
        return None
    return event


def append(
    session: Session,
    actor: str,
    action: str,
    subject: str,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an event after the current head, in ``session``'s transaction.

    The first event of a transaction takes the head's lock and reads the head (two
    statements); the next ones chain from the previous event in memory (see
    :func:`_known_head`), so each costs its INSERT only."""
    last = _known_head(session)
    if last is None:
        _lock_head(session)
        last = head(session)
    seq = 1 if last is None else last.seq + 1
    prev = GENESIS if last is None else last.hash
    details_json = canonical_json(details or {})
    at = _now()
    event = AuditEvent(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        subject=subject,
        details_json=details_json,
        prev_hash=prev,
    )
    event.hash = _row_hash(event)
    session.add(event)
    session.flush()
    transaction = session.get_transaction()
    autocommit = session.connection().get_execution_options().get("isolation_level")
    if transaction is not None and autocommit != "AUTOCOMMIT":
        session.info[_HEAD_INFO] = (transaction, event)
    else:
        session.info.pop(_HEAD_INFO, None)
    return event


# -- anchors --------------------------------------------------------------------------------------


def _token_from_tsa(tsa: _LocalTSA | _RemoteTSA, digest: bytes) -> bytes:
    from kyso.certs.tsa_client import BadReplyError, build_request, check_response

    if hasattr(tsa, "respond"):
        request = build_request(digest)
        response = tsa.respond(request.dump())
        try:
            token = check_response(response, request)
        except BadReplyError as e:
            raise AuditError("archive.audit.tsa_failed", detail=str(e)) from e
        return bytes(token.dump())
    reply = tsa.timestamp(digest)
    return bytes(reply.dump())


def anchor(session: Session, tsa: _LocalTSA | _RemoteTSA) -> AuditAnchor | None:
    """Timestamp the current head hash (RFC 3161) and store the token; None if the log is empty.

    ``tsa`` is the built-in :class:`~kyso.certs.tsa.TimeStampAuthority` (anything with
    ``respond(request_der) -> response_der``) or a :class:`~kyso.certs.tsa_client.TSAClient`.
    """
    _lock_head(session)
    last = head(session)
    if last is None:
        return None
    token = _token_from_tsa(tsa, bytes.fromhex(last.hash))
    row = AuditAnchor(
        event_seq=last.seq, head_hash=last.hash, tsa_token=token, at=dt.datetime.now(dt.UTC)
    )
    session.add(row)
    session.flush()
    return row


# -- verification ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokenLink:
    """A problem found in the chain; ``code`` is a catalogue key, ``params`` its values."""

    kind: str
    """``altered``, ``missing``, ``link``, ``anchor_token``, ``anchor_mismatch``."""
    seq: int
    code: str
    params: dict[str, Any] = field(default_factory=dict)
    anchor_id: int | None = None

    def message(self, locale: str | None = None) -> str:
        from kyso.i18n import t

        return t(self.code, locale=locale, seq=self.seq, **self.params)


@dataclass
class AuditVerification:
    events: int = 0
    anchors: int = 0
    head_seq: int = 0
    problems: list[BrokenLink] = field(default_factory=list)
    last_anchor_time: dt.datetime | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_broken(self) -> BrokenLink | None:
        """The earliest problem in chain order (by seq; chain problems before anchor ones)."""
        if not self.problems:
            return None
        return min(self.problems, key=lambda p: (p.seq, p.anchor_id is not None))


def _check_token(
    token_der: bytes, head_hash: str, trust_roots: Iterable[x509.Certificate]
) -> tuple[str | None, dt.datetime | None]:
    """(problem, genTime): the token must be a valid timestamp over ``head_hash``."""
    from kyso.certs.tsa_client import BadReplyError, build_request, check_response

    try:
        token = cms.ContentInfo.load(token_der)
        info = token["content"]["encap_content_info"]["content"].parsed
        imprint = info["message_imprint"]
        algorithm = imprint["hash_algorithm"]["algorithm"].native
        hashed = imprint["hashed_message"].native
        nonce = info["nonce"].native
        gen_time = info["gen_time"].native
    except Exception as e:
        return f"unreadable token ({type(e).__name__})", None
    if algorithm != "sha256" or hashed != bytes.fromhex(head_hash):
        return "the token is over another hash", gen_time
    if nonce is None:  # a TSA that does not echo nonces: ask for none either
        request = tsp.TimeStampReq({"version": "v1", "message_imprint": imprint, "cert_req": True})
    else:
        request = build_request(hashed, nonce=nonce)
    response = tsp.TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": token})
    try:
        check_response(response.dump(), request, trust=list(trust_roots))
    except BadReplyError as e:
        return str(e), gen_time
    return None, gen_time


def verify(
    session: Session, trust_roots: Iterable[x509.Certificate], *, require_anchor: bool = False
) -> AuditVerification:
    """Check the whole chain and every anchor, offline.  ``trust_roots``: the TSA's roots."""
    roots = list(trust_roots)
    result = AuditVerification()
    expected_prev = GENESIS
    expected_seq = 1
    hashes: dict[int, str] = {}
    for event in session.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq)):
        result.events += 1
        if event.seq != expected_seq:
            result.problems.append(
                BrokenLink(
                    "missing",
                    expected_seq,
                    "archive.audit.broken.missing",
                    {"next": event.seq},
                )
            )
        elif event.prev_hash != expected_prev:
            result.problems.append(BrokenLink("link", event.seq, "archive.audit.broken.link"))
        if _row_hash(event) != event.hash:
            result.problems.append(BrokenLink("altered", event.seq, "archive.audit.broken.altered"))
        hashes[event.seq] = event.hash
        expected_prev = event.hash
        expected_seq = event.seq + 1
        result.head_seq = event.seq
    for row in session.scalars(sa.select(AuditAnchor).order_by(AuditAnchor.id)):
        result.anchors += 1
        at_seq = hashes.get(row.event_seq)
        if at_seq is None:
            result.problems.append(
                BrokenLink(
                    "missing",
                    row.event_seq,
                    "archive.audit.broken.anchored_missing",
                    anchor_id=row.id,
                )
            )
        elif at_seq != row.head_hash:
            result.problems.append(
                BrokenLink(
                    "anchor_mismatch",
                    row.event_seq,
                    "archive.audit.broken.anchor_mismatch",
                    anchor_id=row.id,
                )
            )
        problem, gen_time = _check_token(bytes(row.tsa_token), row.head_hash, roots)
        if problem is not None:
            result.problems.append(
                BrokenLink(
                    "anchor_token",
                    row.event_seq,
                    "archive.audit.broken.anchor_token",
                    {"detail": problem},
                    anchor_id=row.id,
                )
            )
        elif gen_time is not None and (
            result.last_anchor_time is None or gen_time > result.last_anchor_time
        ):
            result.last_anchor_time = gen_time
    if require_anchor and result.events and result.anchors == 0:
        result.problems.append(
            BrokenLink("anchor_token", result.head_seq, "archive.audit.broken.no_anchor")
        )
    return result
