"""The Celery app of kyso's workers: ``celery -A kyso.api.celery_app worker`` (and ``beat``).

Built from :class:`~kyso.api.settings.Settings` (``KYSO_BROKER_URL``: ``redis://…`` or
``amqp://…``) when first asked for, never at import time.  Messages are JSON and carry only a
job id and an item number (``kyso.jobs.item``) or a scheduled kind with its options
(``kyso.jobs.scheduled``): never file bytes, never a PIN.  Job state lives in the catalogue's
database (:mod:`kyso.api.jobs`), not in a result backend.

Delivery: ``task_acks_late`` with ``worker_prefetch_multiplier=1`` and
``task_reject_on_worker_lost``, so a message whose worker died is delivered again; the item's
row decides whether it still needs running (a finished item is skipped; a version the dead
attempt made is found through the item's checkpoint instead of signing again).  Transient
failures are retried with exponential backoff (``KYSO_JOB_MAX_RETRIES``).

Each worker process builds its :class:`~kyso.api.services.Services` once (when the process
starts, ``worker_process_init``, or at its first task): keys are opened with
``KYSO_KEY_PASSPHRASE`` (a worker never prompts). Pools: ``prefork`` or ``solo`` only
(pyhanko's sync API runs its own event loop: no gevent/eventlet).

Beat (``celery -A kyso.api.celery_app beat``): a fixity sweep (on a sample) and an LTV
renewal daily, audit anchoring hourly; intervals from ``KYSO_BEAT_*`` (:class:`BeatSettings`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from celery import Celery, Task
from celery.signals import setup_logging, worker_process_init
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kyso.api.jobs import (
    RETRY_BACKOFF,
    JobStore,
    backoff_delay,
    execute_item,
    is_transient,
    validate,
)
from kyso.api.settings import Settings, get_settings
from kyso.errors import KysoError

if TYPE_CHECKING:
    from kyso.api.services import Services

__all__ = [
    "ITEM_TASK",
    "SCHEDULED_TASK",
    "BeatSettings",
    "beat_schedule",
    "get_app",
    "make_celery",
    "worker_services",
]

log = logging.getLogger(__name__)

ITEM_TASK = "kyso.jobs.item"
SCHEDULED_TASK = "kyso.jobs.scheduled"
QUEUE = "kyso"


class BeatSettings(BaseSettings):
    """What beat schedules (``KYSO_BEAT_…``); an interval of 0 turns that entry off."""

    model_config = SettingsConfigDict(
        env_prefix="KYSO_BEAT_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    fixity_hours: float = Field(24.0, ge=0, description="Fixity sweep every … hours.")
    fixity_sample: int | None = Field(
        100, ge=0, description="Objects re-read per sweep, chosen at random (unset: all)."
    )
    renew_hours: float = Field(24.0, ge=0, description="LTV renewal every … hours.")
    renew_within_days: int = Field(
        180, ge=0, description="Renew what stops being verifiable within … days."
    )
    anchor_hours: float = Field(1.0, ge=0, description="Anchor the audit chain every … hours.")
    exchange_minutes: float = Field(
        1.0, ge=0, description="Deliver the exchange messages that are due every … minutes."
    )


def beat_schedule(beat: BeatSettings) -> dict[str, dict[str, Any]]:
    """The periodic jobs, as Celery's ``beat_schedule``."""
    entries: dict[str, dict[str, Any]] = {}

    def add(name: str, hours: float, kind: str, item: dict[str, Any]) -> None:
        if hours > 0:
            entries[name] = {
                "task": SCHEDULED_TASK,
                "schedule": dt.timedelta(hours=hours),
                "args": (kind, item),
                "options": {"queue": QUEUE},
            }

    sample = {} if beat.fixity_sample is None else {"sample": beat.fixity_sample}
    add("kyso-fixity-sweep", beat.fixity_hours, "fixity", sample)
    add("kyso-ltv-renewal", beat.renew_hours, "renew", {"within_days": beat.renew_within_days})
    add("kyso-audit-anchor", beat.anchor_hours, "anchor", {})
    add("kyso-exchange-deliver", beat.exchange_minutes / 60, "deliver", {})
    return entries


_services_lock = threading.Lock()


def worker_services(app: Celery) -> Services:
    """This process's services (built once, at the first need)."""
    with _services_lock:
        services: Services | None = getattr(app, "kyso_services", None)
        if services is None:
            from kyso.api.services import Services

            services = Services(app.kyso_settings)
            app.kyso_services = services
        return services


def make_celery(
    settings: Settings,
    *,
    services: Services | None = None,
    beat: BeatSettings | None = None,
    retry_backoff: float = RETRY_BACKOFF,
    **conf: Any,
) -> Celery:
    """A Celery app for ``settings`` with kyso's two tasks.

    :param services: use these (tests, or a process that already has them) instead of
        building them in each worker process.
    :param retry_backoff: seconds before the first retry of a transient failure.
    :param conf: extra Celery settings (a test's queue names, broker transport options).
    """
    if not settings.broker_url:
        raise KysoError("jobs.worker.no_broker")
    app = Celery("kyso", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
        broker_connection_retry_on_startup=True,
        timezone="UTC",
        enable_utc=True,
        beat_schedule=beat_schedule(beat or BeatSettings()),
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        worker_hijack_root_logger=False,
    )
    app.conf.update(conf)
    app.kyso_settings = settings
    if services is not None:
        app.kyso_services = services

    @app.task(name=ITEM_TASK, bind=True, max_retries=None, shared=False)
    def run_item(self: Task, job_id: str, seq: int) -> str:
        """Run one job item (its row says whether it still needs running)."""
        try:
            outcome = execute_item(
                worker_services(app), str(job_id), int(seq), backoff=retry_backoff
            )
        except Exception as exc:  # the job tables themselves unreachable: try again later
            if not is_transient(exc) or self.request.retries >= settings.job_max_retries:
                raise
            delay = backoff_delay(self.request.retries + 1, retry_backoff)
            log.warning(
                "job %s item %s: job tables unreachable, retry in %.1fs", job_id, seq, delay
            )
            raise self.retry(countdown=delay, max_retries=None) from None
        if outcome.retry_in is not None:
            raise self.retry(countdown=outcome.retry_in, max_retries=None)
        return outcome.state

    @app.task(name=SCHEDULED_TASK, bind=True, max_retries=None, shared=False)
    def scheduled(self: Task, kind: str, item: dict[str, Any]) -> str:
        """A periodic job of the system (beat): recorded, then run here."""
        services = worker_services(app)
        store = JobStore(services.catalog)
        job_id = store.create(validate(kind, [item], None), principal=None, runner="celery")
        outcome = execute_item(services, job_id, 1, backoff=retry_backoff, store=store)
        if outcome.retry_in is not None:
            run_item.apply_async(args=[job_id, 1], countdown=outcome.retry_in)
        log.info("scheduled %s job %s: %s", kind, job_id, outcome.state)
        return job_id

    return app


_app: Celery | None = None
_app_lock = threading.Lock()


def get_app() -> Celery:
    """The app of ``celery -A kyso.api.celery_app``, from the environment's settings."""
    global _app
    with _app_lock:
        if _app is None:
            _app = make_celery(get_settings())
            worker_process_init.connect(_open_services, weak=False)
            setup_logging.connect(_configure_logging, weak=False)
        return _app


def _configure_logging(**_signal: Any) -> None:
    """Workers and beat log like ``kyso serve``: one redacting handler (text or JSON lines)."""
    from kyso.api.observability import configure_logging

    if _app is not None:
        configure_logging(_app.kyso_settings)


def _open_services(**_signal: Any) -> None:
    """In each new worker process: build the services and open the keys now, so a wrong
    passphrase shows when the worker starts, not at its first job."""
    if _app is None:
        return
    services = worker_services(_app)
    services.catalog.revision()
    if services.pki.exists():
        services.pki.tsa_key()
    log.info("worker process %d: services ready", os.getpid())


def __getattr__(name: str) -> Any:
    # ``celery -A kyso.api.celery_app`` looks for ``app`` (then ``celery``) in the module.
    if name in ("app", "celery"):
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
