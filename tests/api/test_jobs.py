"""Background jobs run in-process (no broker): progress, per-item errors in the reader's
language, idempotency after a crash, retries with backoff, tenancy, PINs never stored.

The Celery runner with a real worker is in ``test_jobs_celery.py`` (it reuses the helpers
here)."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from kyso.api import job_handlers, workflow
from kyso.api.jobs import (
    LEASE,
    InProcessRunner,
    JobItem,
    JobRecord,
    JobRunner,
    JobStatus,
    JobStore,
    backoff_delay,
    execute_item,
    make_runner,
)
from kyso.api.principal import Principal
from kyso.api.problems import Problem
from kyso.api.services import Services
from kyso.archive.errors import StoreUnavailable
from kyso.archive.models import AuditEvent, DocumentVersion
from kyso.i18n import set_locale, t
from tests.api.service_helpers import PIN, make_agency_with_users
from tests.conftest import make_settings
from tests.signer.helpers import make_pdf

AGENCY_A = "000.00.00.H41"
AGENCY_B = "000.00.00.H42"


@dataclass
class World:
    """One data directory with a built-in PKI, two agencies and their users."""

    services: Services
    a: dict[str, Principal]
    b: dict[str, Principal]
    key: str
    """Agency A's official's personal key (PIN: ``PIN``)."""
    tmp: Path

    def upload(self, who: Principal | None = None, *, pages: int = 1) -> int:
        """A new draft of ``who``'s agency (default: A's official); its document id."""
        who = who or self.a["official"]
        path = self.tmp / f"{uuid.uuid4().hex}.pdf"
        path.write_bytes(make_pdf(pages) + f"% {uuid.uuid4().hex}\n".encode())
        result = workflow.upload(
            self.services,
            who,
            path,
            {
                "subject": "Về việc thử nghiệm công việc nền",
                "type_name": "Công văn",
                "organ_name": "Ủy ban nhân dân thử nghiệm",
                "symbol": "UBND-VP",
            },
        )
        return result.document_id

    def registered(self) -> int:
        """A document of A signed by its official and numbered by its clerk."""
        doc = self.upload()
        workflow.sign_as_person(
            self.services, self.a["official"], doc, key=self.key, pin=PIN, level="B-T"
        )
        workflow.register(self.services, self.a["clerk"], doc)
        return doc

    def sealed(self) -> int:
        doc = self.registered()
        workflow.seal(self.services, self.a["clerk"], doc, level="B-LT")
        return doc

    def versions(self, document_id: int) -> list[str]:
        with self.services.catalog.session() as s:
            return list(
                s.scalars(
                    sa.select(DocumentVersion.kind)
                    .where(DocumentVersion.document_id == document_id)
                    .order_by(DocumentVersion.seq)
                )
            )


def make_world(tmp: Path, **settings: Any) -> World:
    services = Services(make_settings(tmp / "data", **settings))
    services.ensure_pki()
    a = make_agency_with_users(services, AGENCY_A, seal_key=True, personal_key=True)
    b = make_agency_with_users(services, AGENCY_B)
    key = services.accounts.keys_of(a["official"][0].user_id)[0]
    return World(
        services,
        {role: p for role, (p, _) in a.items()},
        {role: p for role, (p, _) in b.items()},
        key,
        tmp,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("jobs"))


@pytest.fixture()
def runner(world: World) -> Iterator[InProcessRunner]:
    r = InProcessRunner(world.services, backoff=0.1)
    yield r
    r.close()


def wait(runner: JobRunner, job_id: str, *, agency: str | None, timeout: float = 60) -> JobStatus:
    """The job's status once it has finished (fail after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        status = runner.status(job_id, agency=agency)
        if status.state not in ("queued", "running"):
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {status.state} after {timeout}s: {status.as_dict()}")
        time.sleep(0.05)


def audit_actions(services: Services, subject: str) -> list[str]:
    with services.catalog.session() as s:
        return list(
            s.scalars(
                sa.select(AuditEvent.action)
                .where(AuditEvent.subject == subject)
                .order_by(AuditEvent.seq)
            )
        )


def gated(kind: str, gate: threading.Event, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make ``kind``'s handler wait for ``gate`` from its second item on; the items started."""
    real = job_handlers.HANDLERS[kind]
    started: list[int] = []

    def handler(ctx: Any) -> dict[str, Any]:
        started.append(ctx.seq)
        if ctx.seq > 1:
            assert gate.wait(30)
        return real(ctx)

    monkeypatch.setitem(job_handlers.HANDLERS, kind, handler)
    return started


def jobs_counted(kind: str, outcome: str) -> float:
    from kyso.api.observability import JOBS

    return float(JOBS.labels(kind=kind, outcome=outcome)._value.get())


# ------------------------------------------------------------------------------- the basics


def test_the_embedded_default_is_the_in_process_runner(world: World) -> None:
    assert world.services.settings.broker_url is None
    runner = make_runner(world.services)
    try:
        assert isinstance(runner, InProcessRunner)
    finally:
        runner.close()


def test_verify_job_progress_and_errors_per_item_in_the_readers_language(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = [world.upload(), world.upload()]
    theirs = world.upload(world.b["official"])
    gate = threading.Event()
    started = gated("verify", gate, monkeypatch)
    runner = InProcessRunner(world.services, threads=1)
    verifier = world.a["verifier"]
    ok_before, failed_before = jobs_counted("verify", "ok"), jobs_counted("verify", "failed")
    try:
        set_locale("en")
        job = runner.submit(
            "verify",
            [
                {"document_id": ours[0]},
                {"document_id": 999_999},
                {"document_id": theirs},
                {"document_id": ours[1], "version": 1},
            ],
            principal=verifier,
        )
        # the first item runs, the second waits at the gate: progress 1 of 4
        deadline = time.monotonic() + 30
        while len(started) < 2 or runner.status(job, agency=AGENCY_A).done < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        status = runner.status(job, agency=AGENCY_A)
        assert (status.state, status.done, status.total) == ("running", 1, 4)
        assert status.items[0].state == "done" and status.items[3].state == "queued"
        assert started == [1, 2]
        assert runner.queue_depth() == 2  # items 3 and 4 wait for the one thread
        gate.set()
        status = wait(runner, job, agency=AGENCY_A)
    finally:
        set_locale(None)
        runner.close()
    assert (status.state, status.done, status.succeeded, status.failed) == ("partial", 4, 2, 2)
    done = status.items[0]
    assert done.result is not None
    assert done.result["document_id"] == ours[0] and done.result["report_id"] > 0
    assert done.result["version"] == 1
    assert status.items[3].result is not None and status.items[3].result["version"] == 1
    unknown, other = status.items[1], status.items[2]
    assert unknown.state == other.state == "failed"
    # another agency's document is answered exactly like an unknown one (English: submitter's)
    assert unknown.error == t("workflow.document.not_found", locale="en", id=999_999)
    assert other.error == t("workflow.document.not_found", locale="en", id=theirs)
    # the job's end is audited once, with its outcome
    assert audit_actions(world.services, f"job:{job}") == ["job.submit", "job.finish"]
    # and every item is counted in the metrics
    assert jobs_counted("verify", "ok") - ok_before == 2
    assert jobs_counted("verify", "failed") - failed_before == 2


def test_library_errors_are_shown_in_the_readers_language(world: World) -> None:
    """An error with a message code is stored as code + parameters and rendered per reader."""
    runner = InProcessRunner(world.services)
    doc = world.upload()
    try:
        job = runner.submit("extend", [{"document_id": doc}], principal=world.a["clerk"])
        wait(runner, job, agency=AGENCY_A)
        store = runner.store
        with world.services.catalog.session() as s:
            s.execute(
                sa.update(JobItem)
                .where(JobItem.job_id == job)
                .values(error_code="jobs.fixity.damaged", error_params={"missing": 1, "corrupt": 2})
            )
        vi = store.status(job, agency=AGENCY_A, locale="vi").items[0].error
        en = store.status(job, agency=AGENCY_A, locale="en").items[0].error
    finally:
        runner.close()
    assert vi == t("jobs.fixity.damaged", locale="vi", missing=1, corrupt=2)
    assert en == t("jobs.fixity.damaged", locale="en", missing=1, corrupt=2)
    assert vi != en


def test_sign_seal_extend_jobs_and_the_pin_is_never_stored(world: World) -> None:
    services = world.services
    runner = InProcessRunner(services)
    docs = [world.upload(), world.upload()]
    try:
        job = runner.submit(
            "sign",
            [{"document_id": d, "key": world.key, "pin": PIN, "level": "B-T"} for d in docs],
            principal=world.a["official"],
        )
        signed = wait(runner, job, agency=AGENCY_A)
        assert signed.state == "done", signed.as_dict()
        assert [i.result["kind"] for i in signed.items if i.result] == ["person_signed"] * 2
        for d in docs:
            workflow.register(services, world.a["clerk"], d)
        sealed = wait(
            runner,
            runner.submit("seal", [{"document_id": d} for d in docs], principal=world.a["clerk"]),
            agency=AGENCY_A,
        )
        assert sealed.state == "done", sealed.as_dict()
        extended = wait(
            runner,
            runner.submit("extend", [{"document_id": docs[0]}], principal=world.a["archivist"]),
            agency=AGENCY_A,
        )
        assert extended.state == "done", extended.as_dict()
    finally:
        runner.close()
    assert world.versions(docs[0]) == [
        "draft",
        "person_signed",
        "registered",
        "sealed",
        "ltv_extended",
    ]
    assert world.versions(docs[1]) == ["draft", "person_signed", "registered", "sealed"]
    # the PIN is in no job row and no audit event
    with services.catalog.engine.connect() as conn:
        for table in ("jobs", "job_items", "audit_events"):
            rows = conn.execute(sa.text(f"SELECT * FROM {table}")).all()
            assert rows
            assert PIN not in json.dumps([list(map(str, r)) for r in rows])
        params = (
            conn.execute(sa.select(JobItem.params).where(JobItem.job_id == job)).scalars().all()
        )
    assert all("pin" not in p for p in params)


def test_a_wrong_pin_fails_the_item_not_the_service(world: World) -> None:
    runner = InProcessRunner(world.services)
    doc = world.upload()
    try:
        set_locale("en")
        status = wait(
            runner,
            runner.submit(
                "sign",
                [{"document_id": doc, "key": world.key, "pin": "000000"}],
                principal=world.a["official"],
            ),
            agency=AGENCY_A,
        )
    finally:
        set_locale(None)
        runner.close()
    assert status.state == "failed"
    assert status.items[0].error_code == "jobs.item.problem"
    assert status.items[0].error
    assert world.versions(doc) == ["draft"]
    # a correct PIN afterwards still works (one wrong PIN does not lock)
    workflow.sign_as_person(world.services, world.a["official"], doc, key=world.key, pin=PIN)


# ------------------------------------------------------------------------------- idempotency


def test_an_item_delivered_twice_runs_once(world: World, runner: InProcessRunner) -> None:
    doc = world.sealed()
    job = runner.submit("extend", [{"document_id": doc}], principal=world.a["clerk"])
    first = wait(runner, job, agency=AGENCY_A)
    assert first.state == "done"
    again = execute_item(world.services, job, 1)
    assert again.state == "skipped"
    assert world.versions(doc).count("ltv_extended") == 1
    assert runner.status(job, agency=AGENCY_A).items[0].attempts == 1


def test_a_retry_after_a_crash_does_not_sign_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker dies after the new version was archived but before the item was recorded:
    the redelivered item finds that version (its checkpoint) instead of extending again."""
    services = world.services
    doc = world.sealed()
    store = JobStore(services.catalog)
    from kyso.api.jobs import Submission

    job = store.create(
        Submission("extend", [{"document_id": doc, "level": "B-LTA"}], {}),
        principal=world.a["clerk"],
        runner="inprocess",
    )

    class Crash(BaseException):
        pass

    real_finish = JobStore.finish

    def crash(self: JobStore, item_id: int, state: str, **kw: Any) -> None:
        if state == "done":
            raise Crash
        real_finish(self, item_id, state, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(JobStore, "finish", crash)
    with pytest.raises(Crash):
        execute_item(services, job, 1)
    monkeypatch.setattr(JobStore, "finish", real_finish)
    assert world.versions(doc)[-1] == "ltv_extended"
    item = store.status(job, agency=None).items[0]
    assert item.state == "running"

    # redelivered at once: another worker may still hold it, so it waits (nothing runs)
    held = execute_item(services, job, 1)
    assert held.state == "running" and held.retry_in is not None and held.retry_in > 60
    # after the lease the item is taken to be abandoned and run again: nothing new is signed
    with services.catalog.session() as s:
        s.execute(
            sa.update(JobItem)
            .where(JobItem.job_id == job)
            .values(updated_at=dt.datetime.now(dt.UTC) - LEASE - dt.timedelta(seconds=5))
        )
    again = execute_item(services, job, 1)
    assert again.state == "done"
    assert world.versions(doc).count("ltv_extended") == 1
    status = store.status(job, agency=None)
    result = status.items[0].result
    assert result is not None and result["recovered"] is True and result["kind"] == "ltv_extended"
    assert status.items[0].attempts == 2


# ------------------------------------------------------------------------------- retries


def flaky(kind: str, failures: int, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """``kind``'s handler raises StoreUnavailable ``failures`` times, then works; the times
    of every call."""
    real = job_handlers.HANDLERS[kind]
    calls: list[float] = []

    def handler(ctx: Any) -> dict[str, Any]:
        calls.append(time.monotonic())
        if len(calls) <= failures:
            raise StoreUnavailable("archive.storage.unavailable", reason="test: store offline")
        return real(ctx)

    monkeypatch.setitem(job_handlers.HANDLERS, kind, handler)
    return calls


def test_transient_errors_are_retried_with_exponential_backoff(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = world.upload()
    calls = flaky("fixity", 2, monkeypatch)
    runner = InProcessRunner(world.services, backoff=0.2)
    try:
        job = runner.submit("fixity", [{"document_id": doc}], principal=world.a["archivist"])
        status = wait(runner, job, agency=AGENCY_A)
    finally:
        runner.close()
    assert status.state == "done", status.as_dict()
    assert status.items[0].attempts == 3
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.2 * 0.9
    assert calls[2] - calls[1] >= 0.4 * 0.9
    assert [backoff_delay(n, 2.0) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert backoff_delay(30, 2.0) == 600.0


def test_a_transient_error_that_persists_fails_after_the_retries(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(world.services.settings, "job_max_retries", 2)
    doc = world.upload()
    calls = flaky("fixity", 100, monkeypatch)
    runner = InProcessRunner(world.services, backoff=0.05)
    try:
        job = runner.submit("fixity", [{"document_id": doc}], principal=world.a["archivist"])
        status = wait(runner, job, agency=AGENCY_A)
    finally:
        runner.close()
    assert status.state == "failed"
    assert len(calls) == 3 and status.items[0].attempts == 3
    assert status.items[0].error_code == "archive.storage.unavailable"


# ------------------------------------------------------------------------------- tenancy


def test_another_agencys_job_is_not_found(world: World, runner: InProcessRunner) -> None:
    doc = world.upload()
    job = runner.submit("verify", [{"document_id": doc}], principal=world.a["verifier"])
    wait(runner, job, agency=AGENCY_A)
    for call in (
        lambda: runner.status(job, agency=AGENCY_B),
        lambda: runner.cancel(job, agency=AGENCY_B, actor="user:x@" + AGENCY_B),
        lambda: runner.status("not-a-job-id" * 5, agency=AGENCY_A),
    ):
        with pytest.raises(Problem) as caught:
            call()
        assert caught.value.status == 404
    assert job in [j.id for j in runner.list(AGENCY_A)]
    assert job not in [j.id for j in runner.list(AGENCY_B)]
    assert runner.status(job, agency=None).agency == AGENCY_A  # the operator sees all


def test_a_renewal_touches_only_the_submitters_agency(world: World) -> None:
    """Agency B's archivist renews with a window wide enough for everything: nothing of A."""
    doc = world.sealed()
    runner = InProcessRunner(world.services)
    try:
        theirs = wait(
            runner,
            runner.submit("renew", [{"within_days": 36500}], principal=world.b["archivist"]),
            agency=AGENCY_B,
        )
        assert theirs.state == "done", theirs.as_dict()
        assert theirs.items[0].result is not None
        assert theirs.items[0].result["renewed"] == []
        assert world.versions(doc)[-1] == "sealed"
        with pytest.raises(Problem):  # naming A's document does not help
            runner.submit("renew", [{"document_id": "x"}], principal=world.b["archivist"])
        named = wait(
            runner,
            runner.submit(
                "renew",
                [{"within_days": 36500, "document_id": doc}],
                principal=world.b["archivist"],
            ),
            agency=AGENCY_B,
        )
        assert named.state == "failed"
        assert named.items[0].error == t("jobs.document.not_found", id=doc)
        ours = wait(
            runner,
            runner.submit(
                "renew",
                [{"within_days": 36500, "document_id": doc}],
                principal=world.a["archivist"],
            ),
            agency=AGENCY_A,
        )
    finally:
        runner.close()
    assert ours.state == "done", ours.as_dict()
    assert ours.items[0].result is not None
    renewed = ours.items[0].result["renewed"]
    assert [r["document_id"] for r in renewed] == [doc]
    assert world.versions(doc)[-1] == "ltv_extended"


# ------------------------------------------------------------------------------- submitting


@pytest.mark.parametrize(
    ("kind", "items", "role", "status", "slug"),
    [
        ("frobnicate", [{}], "admin", 422, "validation"),
        ("verify", [], "verifier", 422, "validation"),
        ("verify", {"document_id": 1}, "verifier", 422, "validation"),
        ("verify", ["1"], "verifier", 422, "validation"),
        ("verify", [{"document_id": 0}], "verifier", 422, "validation"),
        ("verify", [{"document_id": 1, "bytes": "JVBERi0="}], "verifier", 422, "validation"),
        ("verify", [{"document_id": 1}] * 1001, "verifier", 422, "validation"),
        ("verify", [{"document_id": 1}], "admin", 403, "forbidden"),
        ("seal", [{"document_id": 1}], "official", 403, "forbidden"),
        ("sign", [{"document_id": 1, "key": "k"}], "official", 403, "pin-required"),
        ("sign", [{"document_id": 1, "key": "k", "pin": ""}], "official", 403, "pin-required"),
        (
            "sign",
            [{"document_id": 1, "key": "k", "pin": "1", "level": "X"}],
            "official",
            422,
            "validation",
        ),
        ("fixity", [{}], "archivist", 422, "validation"),
        ("fixity", [{"document_id": 1}], "clerk", 403, "forbidden"),
        ("renew", [{"within_days": -1}], "archivist", 422, "validation"),
        ("anchor", [{}], "admin", 403, "forbidden"),
    ],
)
def test_bad_submissions_are_problems(
    world: World,
    runner: InProcessRunner,
    kind: str,
    items: Any,
    role: str,
    status: int,
    slug: str,
) -> None:
    before = len(runner.list(None, 200))
    with pytest.raises(Problem) as caught:
        runner.submit(kind, items, principal=world.a[role])
    assert (caught.value.status, caught.value.slug) == (status, slug)
    assert caught.value.detail
    assert len(runner.list(None, 200)) == before  # nothing recorded


def test_user_kinds_are_never_system_jobs(world: World, runner: InProcessRunner) -> None:
    with pytest.raises(Problem) as caught:
        runner.submit("verify", [{"document_id": 1}], principal=None)
    assert caught.value.status == 422


# ------------------------------------------------------------------------------- archive jobs


def test_fixity_of_a_document_finds_a_corrupt_object(world: World, runner: InProcessRunner) -> None:
    services = world.services
    doc = world.registered()
    archivist = world.a["archivist"]
    good = wait(
        runner,
        runner.submit("fixity", [{"document_id": doc}], principal=archivist),
        agency=AGENCY_A,
    )
    assert good.state == "done", good.as_dict()
    found = good.items[0].result
    assert found is not None and found["passed"] is True
    assert found["checked"] == found["ok"] >= 3  # three versions and their reports
    assert good.items[0].progress == (found["checked"], found["checked"])
    assert "fixity.document" in audit_actions(services, f"document:{doc}")

    with services.catalog.session() as s:
        key = s.scalars(
            sa.select(DocumentVersion.object_key).where(
                DocumentVersion.document_id == doc, DocumentVersion.seq == 2
            )
        ).one()
    path = Path(services.settings.archive_store_url) / key
    assert path.is_file()
    os.chmod(path, 0o600)
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    try:
        set_locale("en")
        bad = wait(
            runner,
            runner.submit("fixity", [{"document_id": doc}], principal=archivist),
            agency=AGENCY_A,
        )
    finally:
        set_locale(None)
        data[100] ^= 0x01
        path.write_bytes(bytes(data))
    assert bad.state == "failed"
    item = bad.items[0]
    assert item.error == t("jobs.fixity.damaged", locale="en", missing=0, corrupt=1)
    assert item.result is not None and item.result["corrupt"] == [key]


def test_system_jobs_sweep_renew_and_anchor(world: World, runner: InProcessRunner) -> None:
    world.upload()
    sweep = wait(runner, runner.submit("fixity", [{"sample": 2}], principal=None), agency=None)
    assert sweep.state == "done", sweep.as_dict()
    assert sweep.agency is None and sweep.actor == "system:jobs"
    found = sweep.items[0].result
    assert found is not None and found["checked"] == 2 and found["passed"] is True
    renew = wait(runner, runner.submit("renew", [{"within_days": 0}], principal=None), agency=None)
    assert renew.state == "done", renew.as_dict()
    anchor = wait(runner, runner.submit("anchor", [{}], principal=None), agency=None)
    assert anchor.state == "done", anchor.as_dict()
    assert anchor.items[0].result is not None and anchor.items[0].result["event_seq"] > 0
    verified = world.services.catalog.verify_audit(
        world.services.trust_store("dev").certificates, require_anchor=True
    )
    assert verified.ok
    # system jobs are no agency's
    assert sweep.id not in [j.id for j in runner.list(AGENCY_A)]


def test_cancel_stops_what_has_not_started(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = [world.upload() for _ in range(3)]
    gate = threading.Event()
    gated("verify", gate, monkeypatch)
    runner = InProcessRunner(world.services, threads=1)
    try:
        job = runner.submit(
            "verify", [{"document_id": d} for d in docs], principal=world.a["verifier"]
        )
        deadline = time.monotonic() + 30
        while runner.status(job, agency=AGENCY_A).items[1].state != "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        status = runner.cancel(job, agency=AGENCY_A, actor=world.a["verifier"].actor)
        assert [i.state for i in status.items] == ["done", "running", "cancelled"]
        gate.set()
        status = wait(runner, job, agency=AGENCY_A)
    finally:
        gate.set()
        runner.close()
    assert [i.state for i in status.items] == ["done", "done", "cancelled"]
    assert status.state == "partial" and status.done == 3
    assert audit_actions(world.services, f"job:{job}") == ["job.submit", "job.cancel", "job.finish"]


def test_jobs_interrupted_by_a_restart_fail_instead_of_hanging(world: World) -> None:
    store = JobStore(world.services.catalog)
    from kyso.api.jobs import Submission

    job = store.create(
        Submission("verify", [{"document_id": 1}, {"document_id": 2}], {}),
        principal=world.a["verifier"],
        runner="inprocess",
    )
    import socket
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    with world.services.catalog.session() as s:
        s.execute(
            sa.update(JobRecord)
            .where(JobRecord.id == job)
            .values(owner=f"{socket.gethostname()}:{int(dead.stdout)}")
        )
    InProcessRunner(world.services).close()  # a new process starting
    status = store.status(job, agency=AGENCY_A, locale="en")
    assert status.state == "failed"
    assert [i.error for i in status.items] == [t("jobs.item.interrupted", locale="en")] * 2


# ------------------------------------------------------------------------------- PostgreSQL


def test_jobs_on_postgresql(tmp_path: Path) -> None:
    from tests.archive.test_migrations import catalog_for

    with catalog_for("postgresql", tmp_path) as catalog:
        services = Services(make_settings(tmp_path / "data"))
        services.ensure_pki()
        services.__dict__["catalog"] = catalog
        a = make_agency_with_users(services, AGENCY_A, roles=("official", "verifier", "archivist"))
        w = World(services, {r: p for r, (p, _) in a.items()}, {}, "", tmp_path)
        docs = [w.upload(), w.upload()]
        runner = InProcessRunner(services)
        try:
            job = runner.submit(
                "verify",
                [{"document_id": docs[0]}, {"document_id": docs[1]}, {"document_id": 424242}],
                principal=w.a["verifier"],
            )
            status = wait(runner, job, agency=AGENCY_A)
            fixity = wait(
                runner,
                runner.submit(
                    "fixity", [{"document_id": d} for d in docs], principal=w.a["archivist"]
                ),
                agency=AGENCY_A,
            )
            anchor = wait(runner, runner.submit("anchor", [{}], principal=None), agency=None)
        finally:
            runner.close()
        assert catalog.dialect == "postgresql"
        assert (status.state, status.succeeded, status.failed) == ("partial", 2, 1)
        assert fixity.state == "done" and anchor.state == "done"
        assert [j.id for j in runner.list(AGENCY_A)][:2] == [fixity.id, job]
        with pytest.raises(Problem):
            runner.status(job, agency=AGENCY_B)


def test_a_handler_for_every_kind() -> None:
    from kyso.api.jobs import KINDS, ROLES_FOR

    assert set(job_handlers.HANDLERS) == set(KINDS) == set(ROLES_FOR)
    callables: list[Callable[..., Any]] = list(job_handlers.HANDLERS.values())
    assert all(callable(h) for h in callables)


# ------------------------------------------------------------------------------- HTTP


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from kyso.api.app import create_app

    with TestClient(create_app(services=world.services)) as c:
        yield c
    if "jobs" in world.services.__dict__:
        world.services.jobs.close()


def http_wait(client: Any, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        reply = client.get(f"/api/v1/jobs/{job_id}", headers=headers)
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        if body["state"] not in ("queued", "running"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def test_the_jobs_api(world: World, client: Any) -> None:
    from tests.api.service_helpers import bearer

    doc = world.upload()
    verifier = bearer(world.services, world.a["verifier"])
    other = bearer(world.services, world.b["verifier"])
    reply = client.post(
        "/api/v1/jobs",
        json={"kind": "verify", "items": [{"document_id": doc}, {"document_id": 2**31 - 1}]},
        headers={**verifier, "Accept-Language": "en"},
    )
    assert reply.status_code == 202, reply.text
    job_id = reply.json()["id"]
    assert reply.headers["location"] == f"/api/v1/jobs/{job_id}"
    assert reply.json()["total"] == 2
    body = http_wait(client, verifier, job_id)
    assert (body["state"], body["done"], body["total"]) == ("partial", 2, 2)
    assert body["items"][0]["result"]["document_id"] == doc
    assert body["items"][1]["state"] == "failed" and body["items"][1]["error"]
    listed = client.get("/api/v1/jobs", headers=verifier).json()["jobs"]
    assert job_id in [j["id"] for j in listed] and "items" not in listed[0]

    # another agency: not found, not listed
    reply = client.get(f"/api/v1/jobs/{job_id}", headers=other)
    assert reply.status_code == 404
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert job_id not in [j["id"] for j in client.get("/api/v1/jobs", headers=other).json()["jobs"]]
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=other).status_code == 404
    assert client.get("/api/v1/jobs/" + "x" * 65, headers=verifier).status_code in (404, 422)


@pytest.mark.parametrize(
    ("role", "body", "status", "slug"),
    [
        (None, {"kind": "verify", "items": [{"document_id": 1}]}, 401, "unauthenticated"),
        ("admin", {"kind": "verify", "items": [{"document_id": 1}]}, 403, "forbidden"),
        ("verifier", {"kind": "seal", "items": [{"document_id": 1}]}, 403, "forbidden"),
        ("archivist", {"kind": "fixity", "items": [{}]}, 422, "validation"),
        ("archivist", {"kind": "anchor", "items": [{}]}, 403, "forbidden"),
        ("verifier", {"kind": "verify", "items": []}, 422, "validation"),
        ("verifier", {"kind": "verify", "items": [{"document_id": 2**31}]}, 422, "validation"),
        ("verifier", {"kind": "verify", "items": [{"document_id": 1, "x": 1}]}, 422, "validation"),
        ("verifier", {"kind": "verify"}, 422, "validation"),
        ("verifier", {"kind": "nope", "items": [{}]}, 422, "validation"),
        (
            "official",
            {"kind": "sign", "items": [{"document_id": 1, "key": "k"}]},
            403,
            "pin-required",
        ),
    ],
)
def test_bad_job_requests_are_problems(
    world: World, client: Any, role: str | None, body: dict[str, Any], status: int, slug: str
) -> None:
    from tests.api.service_helpers import bearer

    headers = bearer(world.services, world.a[role]) if role else {}
    reply = client.post("/api/v1/jobs", json=body, headers=headers)
    assert reply.status_code == status, reply.text
    assert reply.json()["type"].endswith("/" + slug)


def test_cancel_over_http_needs_the_kinds_roles(world: World, client: Any) -> None:
    from tests.api.service_helpers import bearer

    doc = world.upload()
    archivist = bearer(world.services, world.a["archivist"])
    job_id = client.post(
        "/api/v1/jobs", json={"kind": "fixity", "items": [{"document_id": doc}]}, headers=archivist
    ).json()["id"]
    http_wait(client, archivist, job_id)
    verifier = bearer(world.services, world.a["verifier"])
    assert client.get(f"/api/v1/jobs/{job_id}", headers=verifier).status_code == 200
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=verifier).status_code == 403
    reply = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=archivist)
    assert reply.status_code == 200 and reply.json()["state"] == "done"  # nothing left to cancel


def unreachable_once(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The job tables answer ``JobStore.claim`` with a connection error the first time."""
    real = JobStore.claim
    calls: list[float] = []

    def claim(self: JobStore, job_id: str, seq: int) -> Any:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise sa.exc.OperationalError("SELECT 1", {}, ConnectionError("database went away"))
        return real(self, job_id, seq)

    monkeypatch.setattr(JobStore, "claim", claim)
    return calls


def test_the_job_tables_unreachable_for_a_moment(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = world.upload()
    runner = InProcessRunner(world.services, backoff=0.2)
    calls = unreachable_once(monkeypatch)
    try:
        job = runner.submit("fixity", [{"document_id": doc}], principal=world.a["archivist"])
        status = wait(runner, job, agency=AGENCY_A)
    finally:
        runner.close()
    assert status.state == "done", status.as_dict()
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.2 * 0.9
