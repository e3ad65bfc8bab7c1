"""Background jobs: batch verification, sealing, LTV extension, fixity sweeps, renewals, audit
anchoring.

A job is one request over a list of *items* (ids and options, never file bytes); its state
lives in the catalogue's database (tables ``jobs`` and ``job_items``, migration 0003), so every
API replica and every Celery worker sees the same status.  Two runners share that state:

* :class:`InProcessRunner` (the embedded default, no broker configured): a thread pool in the
  API process (``KYSO_JOB_THREADS``);
* :class:`CeleryRunner` (``KYSO_BROKER_URL`` set): one Celery task per item, carrying only the
  job id and the item's number (``kyso.api.celery_app``).

Each item runs through :func:`execute_item`, whichever runner: it *claims* the item (a
conditional update, so a message delivered twice runs once), calls the kind's handler
(``kyso.api.job_handlers``) in the submitter's locale and as the submitter, and records the
result or the error (its message code and parameters, rendered in the reader's language when
the status is read).  Transient failures (store, TSA or database unreachable) are retried with
exponential backoff up to ``KYSO_JOB_MAX_RETRIES`` times.  Handlers that create a version
record a *checkpoint* (the document's latest version) before the work, so a retry after a
crash finds the version the crashed attempt made instead of signing again.

PINs: a personal key's PIN is never written to these tables nor sent through a broker.  Items
of a ``sign`` job carry it in the submitting request; it is kept in this process's memory only
until the item has run, so ``sign`` jobs always run in-process (also when a broker is
configured), and one interrupted by a restart fails (its PIN is gone) instead of resuming.
"""

from __future__ import annotations

import builtins
import contextvars
import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from sqlalchemy.orm import Mapped, Session, mapped_column

from kyso.api.observability import record_job
from kyso.api.principal import Principal
from kyso.api.problems import Problem
from kyso.archive import audit
from kyso.archive.models import Base, Document, DocumentVersion
from kyso.errors import KysoError
from kyso.i18n import current_locale, set_locale, t

if TYPE_CHECKING:
    from kyso.api.services import Services
    from kyso.archive.catalog import Catalog

__all__ = [
    "KINDS",
    "ROLES_FOR",
    "CeleryRunner",
    "InProcessRunner",
    "ItemContext",
    "ItemFailed",
    "ItemStatus",
    "JobItem",
    "JobRecord",
    "JobRunner",
    "JobStatus",
    "JobStore",
    "TransientError",
    "execute_item",
    "make_runner",
]

log = logging.getLogger(__name__)

KINDS = ("verify", "sign", "seal", "extend", "fixity", "renew", "anchor", "deliver")
ROLES_FOR: dict[str, tuple[str, ...]] = {
    "verify": ("verifier", "clerk", "archivist", "official"),
    "sign": ("official",),
    "seal": ("clerk",),
    "extend": ("clerk", "archivist"),
    "fixity": ("archivist", "admin"),
    "renew": ("archivist", "admin"),
    "anchor": (),  # the audit chain is the whole service's: scheduled (system) jobs only
    "deliver": (),  # exchange deliveries (kyso.api.exchange): scheduled (system) jobs only
}
"""Who may submit each kind (any one role), as ``kyso.api.workflow`` decides for one document."""
USER_KINDS = ("verify", "sign", "seal", "extend")
"""Kinds that act on an agency's documents as a user: never a system job."""

MAX_ITEMS = 1000
MAX_ID = 2**31 - 1
"""Ids are 32-bit integers in the catalogue: a larger one is refused (422), never sent to SQL."""
LEASE = dt.timedelta(minutes=10)
"""A running item whose row was not touched for this long is taken to be abandoned (its
worker died) and may be claimed again."""
RETRY_BACKOFF = 2.0
"""Seconds before the first retry; doubled each time, at most :data:`RETRY_BACKOFF_MAX`."""
RETRY_BACKOFF_MAX = 600.0
SYSTEM_ACTOR = "system:jobs"

ItemState = Literal["queued", "running", "retrying", "done", "failed", "cancelled"]
JobState = Literal["queued", "running", "done", "failed", "partial", "cancelled"]
TERMINAL = ("done", "failed", "cancelled")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


# ----------------------------------------------------------------------------- tables


class JobRecord(Base):
    """One job: who asked, for which agency, and how it runs."""

    __tablename__ = "jobs"
    __table_args__ = (
        sa.Index(None, "agency_id", "created_at"),
        sa.CheckConstraint("runner IN ('inprocess', 'celery')", name="runner"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(20))
    agency_id: Mapped[str | None] = mapped_column(sa.String(35))
    actor: Mapped[str] = mapped_column(sa.String(200))
    principal: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    """The submitter (no secret: ids, names, roles), re-created where the item runs."""
    locale: Mapped[str] = mapped_column(sa.String(5))
    runner: Mapped[str] = mapped_column(sa.String(20))
    owner: Mapped[str | None] = mapped_column(sa.String(200))
    """``host:pid`` of the process running an in-process job."""
    total: Mapped[int] = mapped_column(sa.Integer)
    cancelled: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))


class JobItem(Base):
    """One item of a job: its parameters (ids and options), state, result or error."""

    __tablename__ = "job_items"
    __table_args__ = (
        sa.UniqueConstraint("job_id", "seq"),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'retrying', 'done', 'failed', 'cancelled')",
            name="state",
        ),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(sa.Integer)
    params: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    state: Mapped[str] = mapped_column(sa.String(12), default="queued")
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    error_code: Mapped[str | None] = mapped_column(sa.String(100))
    error_params: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    progress_done: Mapped[int | None] = mapped_column(sa.Integer)
    progress_total: Mapped[int | None] = mapped_column(sa.Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow)


# ----------------------------------------------------------------------------- status


@dataclass(frozen=True)
class ItemStatus:
    seq: int
    state: str
    params: dict[str, Any]
    attempts: int
    result: dict[str, Any] | None
    error: str | None
    """The error in the reader's language."""
    error_code: str | None
    progress: tuple[int, int] | None
    updated: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "state": self.state,
            "params": self.params,
            "attempts": self.attempts,
            "result": self.result,
            "error": self.error,
            "error_code": self.error_code,
            "progress": (
                None
                if self.progress is None
                else {"done": self.progress[0], "total": self.progress[1]}
            ),
            "updated": self.updated.isoformat(),
        }


@dataclass(frozen=True)
class JobStatus:
    id: str
    kind: str
    state: JobState
    done: int
    """Items finished (whatever their outcome): ``done / total`` is the progress."""
    succeeded: int
    failed: int
    total: int
    actor: str
    agency: str | None
    created: dt.datetime
    updated: dt.datetime
    runner: str
    items: list[ItemStatus] = field(default_factory=list)

    def as_dict(self, *, with_items: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "done": self.done,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "total": self.total,
            "actor": self.actor,
            "agency": self.agency,
            "runner": self.runner,
            "created": self.created.isoformat(),
            "updated": self.updated.isoformat(),
        }
        if with_items:
            body["items"] = [i.as_dict() for i in self.items]
        return body


def job_state(counts: dict[str, int], total: int) -> JobState:
    """A job's state from how many of its items are in each state."""
    done, failed, cancelled = (
        counts.get("done", 0),
        counts.get("failed", 0),
        counts.get("cancelled", 0),
    )
    if done + failed + cancelled < total:
        started = total - counts.get("queued", 0)
        return "running" if started > 0 else "queued"
    if done == total:
        return "done"
    if done == 0 and failed == 0:
        return "cancelled"
    if done == 0:
        return "failed"
    return "partial"


def error_message(code: str | None, params: dict[str, Any] | None, locale: str) -> str | None:
    if code is None:
        return None
    params = params or {}
    if code == "jobs.item.problem":
        return str(params.get("detail") or t(f"problem.{params.get('slug', 'error')}", locale))
    return t(code, locale=locale, **params)


# ----------------------------------------------------------------------------- validation


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _DocumentItem(_Item):
    document_id: int = Field(ge=1, le=MAX_ID)


class VerifyItem(_DocumentItem):
    version: int | None = Field(None, ge=1, le=MAX_ID)


class SignItem(_DocumentItem):
    key: str = Field(min_length=1, max_length=200)
    pin: SecretStr | None = None
    level: Literal["B-B", "B-T", "B-LT", "B-LTA"] = "B-T"
    placement: dict[str, Any] | None = Field(None, max_length=20)


class SealItem(_DocumentItem):
    level: Literal["B-T", "B-LT", "B-LTA"] = "B-LT"


class ExtendItem(_DocumentItem):
    level: Literal["B-LT", "B-LTA"] = "B-LTA"


class FixityItem(_Item):
    document_id: int | None = Field(None, ge=1, le=MAX_ID)
    """One document's objects; None: a sweep of the whole archive (scheduled jobs only)."""
    sample: int | None = Field(None, ge=0, le=MAX_ID)
    """Sweeps only: re-read this many objects chosen at random (None: all)."""


class RenewItem(_Item):
    within_days: int = Field(180, ge=0, le=36500)
    document_id: int | None = Field(None, ge=1, le=MAX_ID)
    """Only this document (when it is due); None: every due document the submitter may see."""


class AnchorItem(_Item):
    pass


class DeliverItem(_Item):
    message_id: int | None = Field(None, ge=1)
    """One outgoing exchange message; None: every message that is due (the beat entry)."""


ITEM_MODELS: dict[str, type[_Item]] = {
    "verify": VerifyItem,
    "sign": SignItem,
    "seal": SealItem,
    "extend": ExtendItem,
    "fixity": FixityItem,
    "renew": RenewItem,
    "anchor": AnchorItem,
    "deliver": DeliverItem,
}


@dataclass
class Submission:
    kind: str
    params: list[dict[str, Any]]
    pins: dict[int, str]


def validate(kind: str, items: Any, principal: Principal | None) -> Submission:
    """Check a submission: known kind, role allowed, items well-formed (422 problems)."""
    if kind not in KINDS:
        raise Problem(422, "validation", t("jobs.kind.unknown", kind=kind, kinds=", ".join(KINDS)))
    if principal is not None and not principal.has(*ROLES_FOR[kind]):
        raise Problem(403, "forbidden", t("jobs.kind.forbidden", kind=kind))
    if principal is None and kind in USER_KINDS:
        raise Problem(422, "validation", t("jobs.kind.needs_user", kind=kind))
    if not isinstance(items, builtins.list) or not items:
        raise Problem(422, "validation", t("jobs.items.empty"))
    if len(items) > MAX_ITEMS:
        raise Problem(422, "validation", t("jobs.items.too_many", max=MAX_ITEMS))
    model = ITEM_MODELS[kind]
    params: list[dict[str, Any]] = []
    pins: dict[int, str] = {}
    for seq, raw in enumerate(items, 1):
        if not isinstance(raw, dict):
            raise Problem(422, "validation", t("jobs.item.not_object", seq=seq))
        try:
            item = model.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '-'}: {e['msg']}" for e in exc.errors()
            )
            raise Problem(
                422, "validation", t("jobs.item.invalid", seq=seq, problems=problems)
            ) from None
        if isinstance(item, SignItem):
            if item.pin is None or not item.pin.get_secret_value():
                raise Problem(403, "pin-required", t("jobs.sign.pin_required", seq=seq))
            pins[seq] = item.pin.get_secret_value()
        if principal is not None and isinstance(item, FixityItem) and item.document_id is None:
            raise Problem(422, "validation", t("jobs.fixity.document_required", seq=seq))
        params.append(item.model_dump(mode="json", exclude={"pin"}, exclude_none=True))
    return Submission(kind, params, pins)


# ----------------------------------------------------------------------------- the store


def _principal_json(principal: Principal | None) -> dict[str, Any] | None:
    if principal is None:
        return None
    return {
        "user_id": principal.user_id,
        "username": principal.username,
        "agency": principal.agency,
        "roles": sorted(principal.roles),
        "via": principal.via,
        "token_id": principal.token_id,
        "full_name": principal.full_name,
    }


def _principal_from(data: dict[str, Any] | None) -> Principal | None:
    if data is None:
        return None
    return Principal(
        user_id=int(data["user_id"]),
        username=str(data["username"]),
        agency=str(data["agency"]),
        roles=frozenset(data["roles"]),
        via=data.get("via", "session"),
        token_id=data.get("token_id"),
        full_name=str(data.get("full_name", "")),
    )


def _transient_db_error(exc: BaseException) -> bool:
    """A database error worth trying again: connection or lock trouble, or two writers racing
    for the audit chain's next seq (SQLite)."""
    if isinstance(exc, sa.exc.OperationalError):
        return True
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa.exc.IntegrityError) and "audit_events" in str(exc.orig)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Claim:
    """What :meth:`JobStore.claim` found: the item to run, or why not."""

    item: JobItem | None = None
    job: JobRecord | None = None
    busy_for: float | None = None
    """Another worker holds the item: try again in that many seconds."""


class JobStore:
    """The job tables of one catalogue; each method is its own transaction."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self.catalog.session() as s:
            yield s

    def _write(self, fn: Callable[[Session], Any], *, tries: int = 5) -> Any:
        """Run ``fn`` in a transaction, again when the database was busy (SQLite writers)."""
        for attempt in range(tries):
            try:
                with self._tx() as s:
                    return fn(s)
            except sa.exc.SQLAlchemyError as exc:
                if attempt == tries - 1 or not _transient_db_error(exc):
                    raise
                time.sleep(0.05 * (2**attempt))
        raise AssertionError("unreachable")

    # -- writing ---------------------------------------------------------------------------
    def create(self, submission: Submission, *, principal: Principal | None, runner: str) -> str:
        job_id = uuid.uuid4().hex
        actor = principal.actor if principal is not None else SYSTEM_ACTOR
        now = _utcnow()

        def insert(s: Session) -> None:
            s.add(
                JobRecord(
                    id=job_id,
                    kind=submission.kind,
                    agency_id=principal.agency if principal is not None else None,
                    actor=actor,
                    principal=_principal_json(principal),
                    locale=current_locale(),
                    runner=runner,
                    owner=_owner() if runner == "inprocess" else None,
                    total=len(submission.params),
                    cancelled=False,
                    created_at=now,
                )
            )
            s.flush()
            for seq, params in enumerate(submission.params, 1):
                s.add(
                    JobItem(
                        job_id=job_id,
                        seq=seq,
                        params=params,
                        state="queued",
                        attempts=0,
                        updated_at=now,
                    )
                )
            audit.append(
                s,
                actor,
                "job.submit",
                f"job:{job_id}",
                {"kind": submission.kind, "items": len(submission.params), "runner": runner},
            )

        self._write(insert)
        return job_id

    def claim(self, job_id: str, seq: int) -> Claim:
        """Mark the item running (one more attempt) unless it is finished, cancelled or held
        by a live worker."""

        def run(s: Session) -> Claim:
            job = s.get(JobRecord, job_id)
            item = s.scalars(
                sa.select(JobItem).where(JobItem.job_id == job_id, JobItem.seq == seq)
            ).first()
            if job is None or item is None or item.state in TERMINAL:
                return Claim()
            now = _utcnow()
            if job.cancelled:
                item.state, item.updated_at = "cancelled", now
                self._maybe_finish(s, job)
                return Claim()
            if item.state == "running":
                age = now - _aware(item.updated_at)
                if age < LEASE:
                    return Claim(busy_for=(LEASE - age).total_seconds() + 1)
            claimed = s.execute(
                sa.update(JobItem)
                .where(JobItem.id == item.id, JobItem.attempts == item.attempts)
                .values(state="running", attempts=item.attempts + 1, updated_at=now)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return Claim(busy_for=1.0)
            s.refresh(item)
            s.expunge(item)
            s.expunge(job)
            return Claim(item=item, job=job)

        result: Claim = self._write(run)
        return result

    def checkpoint(self, item_id: int, value: dict[str, Any]) -> None:
        def run(s: Session) -> None:
            s.execute(
                sa.update(JobItem)
                .where(JobItem.id == item_id)
                .values(checkpoint=value, updated_at=_utcnow())
            )

        self._write(run)

    def progress(self, item_id: int, done: int, total: int) -> None:
        def run(s: Session) -> None:
            s.execute(
                sa.update(JobItem)
                .where(JobItem.id == item_id, JobItem.state == "running")
                .values(progress_done=done, progress_total=total, updated_at=_utcnow())
            )

        self._write(run)

    def finish(
        self,
        item_id: int,
        state: Literal["done", "failed", "retrying"],
        *,
        result: dict[str, Any] | None = None,
        error: tuple[str, dict[str, Any]] | None = None,
    ) -> None:
        def run(s: Session) -> None:
            item = s.get(JobItem, item_id)
            if item is None or item.state in TERMINAL:
                return
            item.state = state
            item.updated_at = _utcnow()
            if result is not None:
                item.result = result
            if error is not None:
                item.error_code, item.error_params = error
            elif state == "done":
                item.error_code = item.error_params = None
            s.flush()
            if state != "retrying":
                job = s.get(JobRecord, item.job_id)
                if job is not None:
                    self._maybe_finish(s, job)

        self._write(run)

    def _maybe_finish(self, s: Session, job: JobRecord) -> None:
        """Record (and audit, once) the end of the job when no item is left to run."""
        s.flush()
        counts = self._counts(s, job.id)
        if sum(counts.get(k, 0) for k in TERMINAL) < job.total:
            return
        ended = s.execute(
            sa.update(JobRecord)
            .where(JobRecord.id == job.id, JobRecord.finished_at.is_(None))
            .values(finished_at=_utcnow())
        )
        if ended.rowcount == 1:  # type: ignore[attr-defined]
            audit.append(
                s,
                job.actor,
                "job.finish",
                f"job:{job.id}",
                {
                    "kind": job.kind,
                    "state": job_state(counts, job.total),
                    "done": counts.get("done", 0),
                    "failed": counts.get("failed", 0),
                    "cancelled": counts.get("cancelled", 0),
                },
            )

    def cancel(self, job_id: str, *, agency: str | None, actor: str) -> None:
        """Cancel what has not started yet; running items finish."""

        def run(s: Session) -> None:
            job = self._visible(s, job_id, agency)
            if job.finished_at is not None or job.cancelled:
                return
            job.cancelled = True
            s.execute(
                sa.update(JobItem)
                .where(JobItem.job_id == job_id, JobItem.state.in_(("queued", "retrying")))
                .values(state="cancelled", updated_at=_utcnow())
            )
            audit.append(s, actor, "job.cancel", f"job:{job_id}", {"kind": job.kind})
            self._maybe_finish(s, job)

        self._write(run)

    def fail_interrupted(self) -> int:
        """Fail the unfinished items of in-process jobs whose process (on this host) is gone:
        a PIN they needed died with it. The number of jobs ended."""
        host = socket.gethostname()
        with self._tx() as s:
            rows = s.execute(
                sa.select(JobRecord.id, JobRecord.owner).where(
                    JobRecord.runner == "inprocess",
                    JobRecord.finished_at.is_(None),
                    JobRecord.owner.like(f"{host}:%"),
                )
            ).all()
        dead = [job_id for job_id, owner in rows if not _alive(owner)]
        for job_id in dead:

            def run(s: Session, job_id: str = job_id) -> None:
                s.execute(
                    sa.update(JobItem)
                    .where(JobItem.job_id == job_id, JobItem.state.not_in(TERMINAL))
                    .values(
                        state="failed",
                        error_code="jobs.item.interrupted",
                        error_params={},
                        updated_at=_utcnow(),
                    )
                )
                job = s.get(JobRecord, job_id)
                if job is not None:
                    self._maybe_finish(s, job)

            self._write(run)
        return len(dead)

    # -- reading ---------------------------------------------------------------------------
    @staticmethod
    def _counts(s: Session, job_id: str) -> dict[str, int]:
        rows = s.execute(
            sa.select(JobItem.state, sa.func.count())
            .where(JobItem.job_id == job_id)
            .group_by(JobItem.state)
        ).all()
        return {state: int(n) for state, n in rows}

    @staticmethod
    def _visible(s: Session, job_id: str, agency: str | None) -> JobRecord:
        job = s.get(JobRecord, job_id) if isinstance(job_id, str) and len(job_id) <= 32 else None
        if job is None or (agency is not None and job.agency_id != agency):
            raise Problem(404, "not-found", t("jobs.not_found", id=job_id))
        return job

    def status(self, job_id: str, *, agency: str | None, locale: str | None = None) -> JobStatus:
        loc = locale or current_locale()
        with self._tx() as s:
            job = self._visible(s, job_id, agency)
            items = list(
                s.scalars(sa.select(JobItem).where(JobItem.job_id == job_id).order_by(JobItem.seq))
            )
            counts: dict[str, int] = {}
            for item in items:
                counts[item.state] = counts.get(item.state, 0) + 1
            return self._status(job, counts, items, loc)

    def recent(self, agency: str | None, *, limit: int = 50) -> builtins.list[JobStatus]:
        limit = max(1, min(limit, 200))
        with self._tx() as s:
            query = sa.select(JobRecord).order_by(JobRecord.created_at.desc()).limit(limit)
            if agency is not None:
                query = query.where(JobRecord.agency_id == agency)
            jobs = list(s.scalars(query))
            if not jobs:
                return []
            rows = s.execute(
                sa.select(
                    JobItem.job_id, JobItem.state, sa.func.count(), sa.func.max(JobItem.updated_at)
                )
                .where(JobItem.job_id.in_([j.id for j in jobs]))
                .group_by(JobItem.job_id, JobItem.state)
            ).all()
            counts: dict[str, dict[str, int]] = {}
            updated: dict[str, dt.datetime] = {}
            for job_id, state, n, last in rows:
                counts.setdefault(job_id, {})[state] = int(n)
                if last is not None:
                    last = _aware(last)
                    updated[job_id] = max(updated.get(job_id, last), last)
            return [
                self._status(j, counts.get(j.id, {}), [], current_locale(), updated.get(j.id))
                for j in jobs
            ]

    @staticmethod
    def _status(
        job: JobRecord,
        counts: dict[str, int],
        items: builtins.list[JobItem],
        locale: str,
        updated: dt.datetime | None = None,
    ) -> JobStatus:
        created = _aware(job.created_at)
        if items:
            updated = max(_aware(i.updated_at) for i in items)
        return JobStatus(
            id=job.id,
            kind=job.kind,
            state=job_state(counts, job.total),
            done=sum(counts.get(k, 0) for k in TERMINAL),
            succeeded=counts.get("done", 0),
            failed=counts.get("failed", 0),
            total=job.total,
            actor=job.actor,
            agency=job.agency_id,
            created=created,
            updated=max(updated or created, created),
            runner=job.runner,
            items=[
                ItemStatus(
                    seq=i.seq,
                    state=i.state,
                    params=i.params,
                    attempts=i.attempts,
                    result=i.result,
                    error=error_message(i.error_code, i.error_params, locale),
                    error_code=i.error_code,
                    progress=(
                        (i.progress_done or 0, i.progress_total)
                        if i.progress_total is not None
                        else None
                    ),
                    updated=_aware(i.updated_at),
                )
                for i in items
            ],
        )


def _alive(owner: str | None) -> bool:
    if not owner or ":" not in owner:
        return False
    pid = owner.rpartition(":")[2]
    if not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------- running


class ItemFailed(KysoError):
    """The item ran and found something wrong (a corrupt object, a renewal that failed): it
    fails with this message and still keeps what it found."""

    code = "jobs.item.failed"

    def __init__(self, code: str, /, *, result: dict[str, Any], **params: Any) -> None:
        super().__init__(code, **params)
        self.result = result


class TransientError(KysoError):
    """A failure worth trying again later (a handler may raise it on purpose)."""

    code = "jobs.item.transient"


def is_transient(exc: BaseException) -> bool:
    """Whether trying the item again later may succeed."""
    from kyso.archive.errors import StoreUnavailable
    from kyso.signer.errors import TimestampUnavailableError

    if isinstance(exc, TransientError | StoreUnavailable | TimestampUnavailableError):
        return True
    if isinstance(exc, sa.exc.SQLAlchemyError):
        return _transient_db_error(exc)
    return isinstance(exc, ConnectionError | TimeoutError)


def backoff_delay(attempt: int, base: float = RETRY_BACKOFF) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): base, 2·base, 4·base..."""
    return float(min(base * (2 ** max(attempt - 1, 0)), RETRY_BACKOFF_MAX))


def _json_params(params: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, str | int | float | bool) or v is None else str(v)
        for k, v in params.items()
    }


def _error_of(exc: BaseException) -> tuple[str, dict[str, Any]]:
    if isinstance(exc, Problem):
        return "jobs.item.problem", {"status": exc.status, "slug": exc.slug, "detail": exc.detail}
    if isinstance(exc, KysoError):
        return exc.code, _json_params(exc.params)
    return "jobs.item.internal", {"type": type(exc).__name__}


@dataclass
class ItemContext:
    """What a handler gets: the services, who it acts for, the item's parameters, and the
    means to report progress and to make its work happen once."""

    services: Services
    principal: Principal | None
    actor: str
    agency: str | None
    job_id: str
    seq: int
    params: dict[str, Any]
    pin: str | None
    store: JobStore
    item_id: int
    attempt: int
    checkpoint: dict[str, Any] | None
    _last_progress: float = 0.0

    def progress(self, done: int, total: int) -> None:
        """Record the item's own progress (a sweep over many objects); at most once a second,
        and always the last step. It also tells other workers this item is alive."""
        now = time.monotonic()
        if done < total and now - self._last_progress < 1.0:
            return
        self._last_progress = now
        self.store.progress(self.item_id, done, total)

    def once(
        self, document_id: int, kinds: tuple[str, ...], work: Callable[[], Any]
    ) -> dict[str, Any]:
        """Run ``work`` (which adds a version of one of ``kinds`` to the document) unless an
        earlier attempt of this item already did: before the work the document's latest
        version is recorded; on a later attempt, a newer version of the expected kind is that
        earlier attempt's result, returned instead of signing again."""
        latest = _latest_version(self.store.catalog, document_id, self.agency)
        if self.checkpoint is not None and self.checkpoint.get("document_id") == document_id:
            before = self.checkpoint.get("version_id")
            if latest is not None and latest.id != before and latest.kind in kinds:
                return {**version_result(latest), "recovered": True}
        else:
            self.checkpoint = {
                "document_id": document_id,
                "version_id": latest.id if latest is not None else None,
            }
            self.store.checkpoint(self.item_id, self.checkpoint)
        result = work()
        return ingest_result(result)


def _latest_version(
    catalog: Catalog, document_id: int, agency: str | None
) -> DocumentVersion | None:
    """The document's latest version; another agency's document is not found (404)."""
    with catalog.session() as s:
        doc = s.get(Document, document_id)
        if doc is None or (agency is not None and doc.agency_id != agency):
            raise Problem(404, "not-found", t("jobs.document.not_found", id=document_id))
        row = s.scalars(
            sa.select(DocumentVersion)
            .where(DocumentVersion.document_id == document_id)
            .order_by(DocumentVersion.seq.desc())
            .limit(1)
        ).first()
        if row is not None:
            s.expunge(row)
        return row


def version_result(version: DocumentVersion) -> dict[str, Any]:
    return {
        "document_id": version.document_id,
        "version_id": version.id,
        "version": version.seq,
        "kind": version.kind,
        "sha256": version.sha256,
    }


def ingest_result(result: Any) -> dict[str, Any]:
    """The ids an ``IngestResult`` names (what a job item keeps)."""
    return {
        "document_id": result.document_id,
        "version_id": result.version_id,
        "version": result.version_seq,
        "kind": result.kind,
        "sha256": result.sha256,
        "created": result.created,
        "indication": result.indication,
    }


@dataclass(frozen=True)
class Outcome:
    state: str
    """The item's state afterwards (``skipped``: nothing was run by this call)."""
    retry_in: float | None = None
    """Run the item again after this many seconds (a transient failure, or held elsewhere)."""


def execute_item(
    services: Services,
    job_id: str,
    seq: int,
    *,
    pin: str | None = None,
    backoff: float = RETRY_BACKOFF,
    store: JobStore | None = None,
) -> Outcome:
    """Run one item of a job, whichever runner: claim it, run its kind's handler as the
    submitter and in their language, record the result or the error. Safe to call again for
    the same item (a redelivered message): a finished item is not run twice."""
    context = contextvars.copy_context()
    return context.run(
        _execute, services, store or JobStore(services.catalog), job_id, seq, pin, backoff
    )


def _execute(
    services: Services,
    store: JobStore,
    job_id: str,
    seq: int,
    pin: str | None,
    backoff: float,
) -> Outcome:
    from kyso.api.job_handlers import HANDLERS

    claim = store.claim(job_id, seq)
    if claim.busy_for is not None:
        return Outcome("running", retry_in=claim.busy_for)
    if claim.item is None or claim.job is None:
        return Outcome("skipped")
    item, job = claim.item, claim.job
    set_locale(job.locale if job.locale in ("vi", "en") else None)
    principal = _principal_from(job.principal)
    ctx = ItemContext(
        services=services,
        principal=principal,
        actor=job.actor,
        agency=job.agency_id,
        job_id=job.id,
        seq=seq,
        params=dict(item.params),
        pin=pin,
        store=store,
        item_id=item.id,
        attempt=item.attempts,
        checkpoint=item.checkpoint,
    )
    started = time.monotonic()
    try:
        if job.kind == "sign" and pin is None:
            raise KysoError("jobs.item.interrupted")
        result = HANDLERS[job.kind](ctx)
    except Exception as exc:
        error = _error_of(exc)
        if is_transient(exc) and item.attempts <= services.settings.job_max_retries:
            delay = backoff_delay(item.attempts, backoff)
            log.warning(
                "job %s item %s: transient failure (%s), retry %d in %.1fs",
                job_id,
                seq,
                error[0],
                item.attempts,
                delay,
            )
            store.finish(item.id, "retrying", error=error)
            record_job(job.kind, "retrying", time.monotonic() - started)
            return Outcome("retrying", retry_in=delay)
        if error[0] == "jobs.item.internal":
            log.exception("job %s item %s failed", job_id, seq)
        else:
            log.info("job %s item %s failed: %s", job_id, seq, error[0])
        found = exc.result if isinstance(exc, ItemFailed) else None
        store.finish(item.id, "failed", result=found, error=error)
        record_job(job.kind, "failed", time.monotonic() - started)
        return Outcome("failed")
    store.finish(item.id, "done", result=result)
    record_job(job.kind, "ok", time.monotonic() - started)
    return Outcome("done")


# ----------------------------------------------------------------------------- runners


class JobRunner(ABC):
    """Submit jobs and read their status; where the items run is the subclass's business."""

    name: str = ""

    def __init__(self, services: Services) -> None:
        self.services = services

    @property
    def store(self) -> JobStore:
        return JobStore(self.services.catalog)

    def submit(
        self, kind: str, items: builtins.list[dict[str, Any]], *, principal: Principal | None
    ) -> str:
        """Check and record a job, then start it; its id. ``principal`` None: a system job."""
        submission = validate(kind, items, principal)
        return self._start(submission, principal)

    @abstractmethod
    def _start(self, submission: Submission, principal: Principal | None) -> str: ...

    def status(self, job_id: str, *, agency: str | None) -> JobStatus:
        """The job with its items; another agency's job is not found (404).
        ``agency`` None: any job (the operator)."""
        return self.store.status(job_id, agency=agency)

    def list(self, agency: str | None, limit: int = 50) -> builtins.list[JobStatus]:
        """The agency's latest jobs, newest first (without their items)."""
        return self.store.recent(agency, limit=limit)

    def cancel(self, job_id: str, *, agency: str | None, actor: str) -> JobStatus:
        """Cancel the items not started yet."""
        self.store.cancel(job_id, agency=agency, actor=actor)
        return self.store.status(job_id, agency=agency)

    def close(self) -> None:  # noqa: B027 (optional: only runners holding threads need it)
        """Stop taking work (in-process items already running finish)."""


class InProcessRunner(JobRunner):
    """Items run in a thread pool of this process: the embedded default."""

    name = "inprocess"

    def __init__(
        self,
        services: Services,
        *,
        threads: int | None = None,
        backoff: float = RETRY_BACKOFF,
    ) -> None:
        super().__init__(services)
        self.backoff = backoff
        self._pool = ThreadPoolExecutor(
            max_workers=threads or services.settings.job_threads, thread_name_prefix="kyso-job"
        )
        self._pins: dict[tuple[str, int], str] = {}
        self._db_failures: dict[tuple[str, int], int] = {}
        self._waiting = 0
        self._lock = threading.Lock()
        self._timers: set[threading.Timer] = set()
        self._closed = False
        try:
            ended = self.store.fail_interrupted()
        except sa.exc.SQLAlchemyError:
            log.warning("could not check for interrupted in-process jobs", exc_info=True)
        else:
            if ended:
                log.warning("%d in-process job(s) interrupted by a restart were failed", ended)

    def _start(self, submission: Submission, principal: Principal | None) -> str:
        job_id = self.store.create(submission, principal=principal, runner=self.name)
        self.run(job_id, range(1, len(submission.params) + 1), submission.pins)
        return job_id

    def run(self, job_id: str, seqs: Any, pins: dict[int, str] | None = None) -> None:
        """Queue items of a recorded job (with the PINs they need, kept in memory only)."""
        with self._lock:
            for seq, value in (pins or {}).items():
                self._pins[(job_id, seq)] = value
        for seq in seqs:
            with self._lock:
                self._waiting += 1
            self._pool.submit(self._run, job_id, seq)

    def queue_depth(self) -> int:
        """Items waiting to run: queued in the pool, or waiting for a retry."""
        with self._lock:
            return self._waiting + len(self._timers)

    def _run(self, job_id: str, seq: int) -> None:
        with self._lock:
            self._waiting -= 1
            pin = self._pins.get((job_id, seq))
        try:
            outcome = execute_item(self.services, job_id, seq, pin=pin, backoff=self.backoff)
        except Exception as exc:  # the job tables themselves unreachable
            with self._lock:
                tries = self._db_failures[(job_id, seq)] = (
                    self._db_failures.get((job_id, seq), 0) + 1
                )
            if is_transient(exc) and tries <= self.services.settings.job_max_retries:
                log.warning("job %s item %s: job tables unreachable, will retry", job_id, seq)
                outcome = Outcome("running", retry_in=backoff_delay(tries, self.backoff))
            else:
                log.exception("job %s item %s could not run", job_id, seq)
                outcome = Outcome("failed")
        if outcome.retry_in is not None and not self._closed:
            timer = threading.Timer(outcome.retry_in, self._resubmit, args=(job_id, seq))
            timer.daemon = True
            with self._lock:
                self._timers.add(timer)
            timer.start()
            return
        with self._lock:
            self._pins.pop((job_id, seq), None)
            self._db_failures.pop((job_id, seq), None)

    def _resubmit(self, job_id: str, seq: int) -> None:
        with self._lock:
            me = threading.current_thread()
            self._timers = {t for t in self._timers if t.is_alive() and t is not me}
        if not self._closed:
            with self._lock:
                self._waiting += 1
            self._pool.submit(self._run, job_id, seq)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            for timer in self._timers:
                timer.cancel()
            self._timers.clear()
            self._pins.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


class CeleryRunner(JobRunner):
    """Items run as Celery tasks on the workers (``KYSO_BROKER_URL``); ``sign`` jobs, whose
    items need a PIN, run in this process (the PIN never goes through the broker)."""

    name = "celery"

    def __init__(self, services: Services, app: Any = None) -> None:
        super().__init__(services)
        if app is None:
            from kyso.api.celery_app import make_celery

            app = make_celery(services.settings)
        self.app = app
        self._local: InProcessRunner | None = None
        self._local_lock = threading.Lock()

    @property
    def local(self) -> InProcessRunner:
        with self._local_lock:
            if self._local is None:
                self._local = InProcessRunner(self.services)
            return self._local

    def _start(self, submission: Submission, principal: Principal | None) -> str:
        if submission.pins:
            return self.local._start(submission, principal)
        from kyso.api.celery_app import ITEM_TASK

        job_id = self.store.create(submission, principal=principal, runner=self.name)
        sent = 0
        try:
            for seq in range(1, len(submission.params) + 1):
                self.app.send_task(ITEM_TASK, args=[job_id, seq])
                sent = seq
        except Exception as exc:  # kombu raises its own and socket errors alike
            log.error("broker unreachable, job %s not started: %s", job_id, type(exc).__name__)
            self._fail_unsent(job_id, sent + 1, len(submission.params))
            raise Problem(503, "jobs-unavailable", t("jobs.broker.unavailable")) from None
        return job_id

    def _fail_unsent(self, job_id: str, first: int, last: int) -> None:
        for seq in range(first, last + 1):
            claim = self.store.claim(job_id, seq)
            if claim.item is not None:
                self.store.finish(claim.item.id, "failed", error=("jobs.broker.unavailable", {}))

    def close(self) -> None:
        if self._local is not None:
            self._local.close()


def make_runner(services: Services) -> JobRunner:
    """Celery when ``KYSO_BROKER_URL`` is set, else the in-process pool."""
    if services.settings.broker_url:
        return CeleryRunner(services)
    return InProcessRunner(services)
