"""Background jobs on Celery with a REAL worker and a real broker (no eager mode).

Redis at ``KYSO_TEST_REDIS_URL`` (the test fails when it is missing); every app here uses its
own queue and key prefix, so parallel runs do not see each other's messages.  Most tests run a
worker thread (``celery.contrib.testing.worker.start_worker``, solo pool) in this process, so
handlers can be made to fail on purpose.  Two run ``celery -A kyso.api.celery_app worker`` as a
child process configured only by the environment, without a terminal: prefork pool on Redis,
and a smoke run on RabbitMQ (AMQP at 127.0.0.1:5672; in a child process because kombu's event
loop is per process, and a second in-process worker on another transport would share it).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun

from kyso.api.celery_app import (
    ITEM_TASK,
    QUEUE,
    SCHEDULED_TASK,
    BeatSettings,
    beat_schedule,
    make_celery,
)
from kyso.api.jobs import LEASE, CeleryRunner, JobItem, JobStore, Submission, execute_item
from kyso.api.problems import Problem
from kyso.i18n import t
from tests.api.service_helpers import PIN
from tests.api.test_jobs import AGENCY_A, AGENCY_B, World, flaky, make_world, wait
from tests.conftest import PASSPHRASE, make_settings

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"


def redis_url() -> str:
    url = os.environ.get("KYSO_TEST_REDIS_URL")
    if not url:
        pytest.fail("KYSO_TEST_REDIS_URL is not set (run the tests through .ci/run)")
    return url


def celery_app_for(world: World, broker: str) -> tuple[Celery, str]:
    """A Celery app on ``broker`` with a queue (and Redis key prefix) of its own."""
    name = f"kyso-test-{uuid.uuid4().hex[:10]}"
    conf: dict[str, Any] = {"task_default_queue": name}
    if broker.startswith("redis"):
        conf["broker_transport_options"] = {"global_keyprefix": f"{name}:"}
    settings = world.services.settings.model_copy(update={"broker_url": broker})
    return make_celery(settings, services=world.services, retry_backoff=0.2, **conf), name


@pytest.fixture(scope="module")
def cworld(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("celery-jobs"), broker_url=redis_url())


@pytest.fixture(scope="module")
def app(cworld: World) -> Iterator[Celery]:
    app, _ = celery_app_for(cworld, redis_url())
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        yield app


@pytest.fixture()
def runner(cworld: World, app: Celery) -> Iterator[CeleryRunner]:
    r = CeleryRunner(cworld.services, app=app)
    yield r
    r.close()


class Finished:
    """Task runs this worker finished: (task name, args, return value)."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, list[Any], Any]] = []
        self.lock = threading.Lock()

    def __call__(self, sender: Any = None, args: Any = None, retval: Any = None, **_: Any) -> None:
        with self.lock:
            self.runs.append((sender.name, list(args or ()), retval))

    def wait_for(self, count: int, timeout: float = 30) -> list[tuple[str, list[Any], Any]]:
        deadline = time.monotonic() + timeout
        while len(self.runs) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"only {len(self.runs)} of {count} task runs after {timeout}s")
            time.sleep(0.05)
        return self.runs


@pytest.fixture()
def finished() -> Iterator[Finished]:
    seen = Finished()
    task_postrun.connect(seen, weak=False)
    yield seen
    task_postrun.disconnect(seen)


# ------------------------------------------------------------------------------- configuration


def test_the_app_follows_the_rules(cworld: World) -> None:
    assert isinstance(make_celery(cworld.services.settings), Celery)
    conf = make_celery(cworld.services.settings).conf
    assert conf.task_acks_late is True and conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json" and list(conf.accept_content) == ["json"]
    assert conf.task_ignore_result is True
    assert conf.broker_url == redis_url()
    with pytest.raises(Exception) as caught:
        make_celery(make_settings(cworld.tmp / "nobroker"))
    assert getattr(caught.value, "code", None) == "jobs.worker.no_broker"


def test_the_beat_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    schedule = beat_schedule(BeatSettings(_env_file=None))
    assert set(schedule) == {
        "kyso-fixity-sweep",
        "kyso-ltv-renewal",
        "kyso-audit-anchor",
        "kyso-exchange-deliver",
    }
    assert schedule["kyso-exchange-deliver"]["schedule"] == dt.timedelta(minutes=1)
    assert schedule["kyso-exchange-deliver"]["args"] == ("deliver", {})
    assert schedule["kyso-fixity-sweep"]["schedule"] == dt.timedelta(days=1)
    assert schedule["kyso-fixity-sweep"]["args"] == ("fixity", {"sample": 100})
    assert schedule["kyso-ltv-renewal"]["schedule"] == dt.timedelta(days=1)
    assert schedule["kyso-ltv-renewal"]["args"] == ("renew", {"within_days": 180})
    assert schedule["kyso-audit-anchor"]["schedule"] == dt.timedelta(hours=1)
    assert schedule["kyso-audit-anchor"]["args"] == ("anchor", {})
    assert {e["task"] for e in schedule.values()} == {SCHEDULED_TASK}
    assert {e["options"]["queue"] for e in schedule.values()} == {QUEUE}
    # intervals from the environment; 0 turns an entry off
    monkeypatch.setenv("KYSO_BEAT_FIXITY_HOURS", "0")
    monkeypatch.setenv("KYSO_BEAT_ANCHOR_HOURS", "0.25")
    monkeypatch.setenv("KYSO_BEAT_RENEW_WITHIN_DAYS", "30")
    monkeypatch.setenv("KYSO_BEAT_EXCHANGE_MINUTES", "0")
    changed = beat_schedule(BeatSettings(_env_file=None))
    assert set(changed) == {"kyso-ltv-renewal", "kyso-audit-anchor"}
    assert changed["kyso-audit-anchor"]["schedule"] == dt.timedelta(minutes=15)
    assert changed["kyso-ltv-renewal"]["args"] == ("renew", {"within_days": 30})


def test_an_unreachable_broker_is_a_503_and_the_items_fail(cworld: World) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = cworld.services.settings.model_copy(
        update={"broker_url": f"redis://127.0.0.1:{port}/0"}
    )
    app = make_celery(settings, services=cworld.services, task_publish_retry=False)
    runner = CeleryRunner(cworld.services, app=app)
    doc = cworld.upload()
    with pytest.raises(Problem) as caught:
        runner.submit("verify", [{"document_id": doc}], principal=cworld.a["verifier"])
    assert caught.value.status == 503
    [job] = runner.list(AGENCY_A, 1)
    assert job.kind == "verify" and job.state == "failed"
    status = runner.status(job.id, agency=AGENCY_A)
    assert status.items[0].error_code == "jobs.broker.unavailable"


# ------------------------------------------------------------------------------- on a worker


def test_items_run_on_the_worker_with_progress_and_errors(
    cworld: World, runner: CeleryRunner
) -> None:
    docs = [cworld.registered(), cworld.registered()]
    job = runner.submit(
        "seal",
        [{"document_id": docs[0]}, {"document_id": 999_999}, {"document_id": docs[1]}],
        principal=cworld.a["clerk"],
    )
    status = wait(runner, job, agency=AGENCY_A)
    assert status.runner == "celery"
    assert (status.state, status.done, status.total, status.failed) == ("partial", 3, 3, 1)
    assert [i.state for i in status.items] == ["done", "failed", "done"]
    assert status.items[1].error == t("jobs.document.not_found", id=999_999)
    for doc in docs:
        assert cworld.versions(doc)[-1] == "sealed"
    with pytest.raises(Problem) as caught:
        runner.status(job, agency=AGENCY_B)
    assert caught.value.status == 404


def test_person_signing_runs_in_process_so_the_pin_never_reaches_the_broker(
    cworld: World, runner: CeleryRunner, finished: Finished
) -> None:
    doc = cworld.upload()
    job = runner.submit(
        "sign",
        [{"document_id": doc, "key": cworld.key, "pin": PIN}],
        principal=cworld.a["official"],
    )
    status = wait(runner, job, agency=AGENCY_A)
    assert status.state == "done", status.as_dict()
    assert status.runner == "inprocess"
    assert cworld.versions(doc) == ["draft", "person_signed"]
    assert finished.runs == []  # nothing went through the broker


def test_a_message_delivered_twice_runs_once(
    cworld: World, runner: CeleryRunner, app: Celery, finished: Finished
) -> None:
    doc = cworld.sealed()
    job = runner.submit("extend", [{"document_id": doc}], principal=cworld.a["clerk"])
    assert wait(runner, job, agency=AGENCY_A).state == "done"
    app.send_task(ITEM_TASK, args=[job, 1])
    runs = finished.wait_for(2)
    assert [r[2] for r in runs] == ["done", "skipped"]
    assert cworld.versions(doc).count("ltv_extended") == 1
    assert runner.status(job, agency=AGENCY_A).items[0].attempts == 1


def test_a_redelivery_after_a_worker_crash_does_not_sign_again(
    cworld: World, app: Celery, finished: Finished, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = cworld.services
    doc = cworld.sealed()
    store = JobStore(services.catalog)
    job = store.create(
        Submission("extend", [{"document_id": doc}], {}),
        principal=cworld.a["clerk"],
        runner="celery",
    )

    class Crash(BaseException):
        pass

    real_finish = JobStore.finish

    def crash(self: JobStore, item_id: int, state: str, **kw: Any) -> None:
        if state == "done":
            raise Crash
        real_finish(self, item_id, state, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(JobStore, "finish", crash)
    with pytest.raises(Crash):  # the first worker dies after archiving the new version
        execute_item(services, job, 1)
    monkeypatch.setattr(JobStore, "finish", real_finish)
    with services.catalog.session() as s:  # ... and its lease runs out
        s.execute(
            sa.update(JobItem)
            .where(JobItem.job_id == job)
            .values(updated_at=dt.datetime.now(dt.UTC) - LEASE - dt.timedelta(seconds=5))
        )
    app.send_task(ITEM_TASK, args=[job, 1])  # the broker delivers the message again
    assert finished.wait_for(1)[0][2] == "done"
    status = store.status(job, agency=AGENCY_A)
    assert status.state == "done"
    result = status.items[0].result
    assert result is not None and result["recovered"] is True
    assert cworld.versions(doc).count("ltv_extended") == 1


def test_transient_errors_are_retried_by_the_worker_with_backoff(
    cworld: World, runner: CeleryRunner, finished: Finished, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = cworld.upload()
    calls = flaky("fixity", 2, monkeypatch)
    job = runner.submit("fixity", [{"document_id": doc}], principal=cworld.a["archivist"])
    status = wait(runner, job, agency=AGENCY_A)
    assert status.state == "done", status.as_dict()
    assert status.items[0].attempts == 3 and len(calls) == 3
    assert calls[1] - calls[0] >= 0.2 * 0.9
    assert calls[2] - calls[1] >= 0.4 * 0.9
    # each retry is a new delivery of the same task (Celery's retry, with its countdown)
    runs = finished.wait_for(3)
    assert [r[1] for r in runs] == [[job, 1]] * 3


def test_the_worker_retries_when_the_job_tables_are_unreachable(
    cworld: World, runner: CeleryRunner, finished: Finished, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.api.test_jobs import unreachable_once

    doc = cworld.upload()
    calls = unreachable_once(monkeypatch)
    job = runner.submit("fixity", [{"document_id": doc}], principal=cworld.a["archivist"])
    status = wait(runner, job, agency=AGENCY_A)
    assert status.state == "done", status.as_dict()
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.2 * 0.9
    assert [r[1] for r in finished.wait_for(2)] == [[job, 1]] * 2


def test_a_scheduled_job_runs_as_the_system(
    cworld: World, runner: CeleryRunner, app: Celery, finished: Finished
) -> None:
    app.send_task(SCHEDULED_TASK, args=["anchor", {}])
    [(name, args, job_id)] = finished.wait_for(1)
    assert (name, args) == (SCHEDULED_TASK, ["anchor", {}])
    status = runner.status(job_id, agency=None)
    assert (status.kind, status.state, status.agency) == ("anchor", "done", None)
    assert status.items[0].result is not None and status.items[0].result["event_seq"] > 0
    with pytest.raises(Problem):  # no agency sees system jobs
        runner.status(job_id, agency=AGENCY_A)


# ------------------------------------------------------------------------------- real processes


@contextmanager
def worker_process(
    world: World, broker: str, queue: str, pool: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``celery -A kyso.api.celery_app worker`` in a child process, configured only by the
    environment (the passphrase too), without a terminal, consuming ``queue``."""
    settings = world.services.settings
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KYSO_")},
        "KYSO_DATA_DIR": str(settings.data_dir),
        "KYSO_KEY_PASSPHRASE": PASSPHRASE,
        "KYSO_BROKER_URL": broker,
        "KYSO_PUBLIC_URL": settings.public_url,
        "KYSO_LOCALE": "en",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "kyso.api.celery_app",
                "worker",
                "--pool",
                pool,
                "--concurrency",
                "1",
                "-Q",
                queue,
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
        )
    try:
        yield proc
    except BaseException:
        print(log.read_text(errors="replace")[-4000:])
        raise
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_worker_command_with_the_prefork_pool(cworld: World, tmp_path: Path) -> None:
    """Redis broker, prefork pool: the services are built in the pool's child process."""
    broker = redis_url()
    app, queue = celery_app_for(cworld, broker)
    app.conf.broker_transport_options = {}
    runner = CeleryRunner(cworld.services, app=app)
    log = tmp_path / "worker.log"
    try:
        with worker_process(cworld, broker, queue, "prefork", log) as proc:
            proc_pid = proc.pid
            doc = cworld.upload()
            job = runner.submit(
                "fixity",
                [{"document_id": doc}, {"document_id": 999_999}],
                principal=cworld.a["archivist"],
            )
            status = wait(runner, job, agency=AGENCY_A, timeout=90)
            anchor = runner.submit("anchor", [{}], principal=None)
            anchored = wait(runner, anchor, agency=None, timeout=60)
    finally:
        import redis

        redis.Redis.from_url(broker).delete(queue)
    assert (status.state, status.succeeded, status.failed) == ("partial", 1, 1), status.as_dict()
    assert status.items[0].result is not None and status.items[0].result["passed"] is True
    assert anchored.state == "done"
    text = log.read_text(errors="replace")
    assert "kyso.jobs.item" in text
    assert "services ready" in text  # built in the pool's child, when it started
    assert f"worker process {proc_pid}:" not in text  # ... not in the main process
    assert PASSPHRASE not in text


def test_a_smoke_run_on_rabbitmq(cworld: World, tmp_path: Path) -> None:
    """The same worker command on RabbitMQ (solo pool)."""
    app, queue = celery_app_for(cworld, RABBITMQ)
    runner = CeleryRunner(cworld.services, app=app)
    try:
        with worker_process(cworld, RABBITMQ, queue, "solo", tmp_path / "worker.log"):
            doc = cworld.upload()
            job = runner.submit("verify", [{"document_id": doc}], principal=cworld.a["verifier"])
            status = wait(runner, job, agency=AGENCY_A, timeout=90)
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)
    assert status.state == "done", status.as_dict()
    assert status.runner == "celery"
    assert status.items[0].result is not None and status.items[0].result["version"] == 1
