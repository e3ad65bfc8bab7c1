"""Running it in production: request ids, structured logs and Prometheus metrics.

* Every HTTP request gets an id: the caller's ``X-Request-ID`` when it is a sane token, else a
  fresh one; it is echoed in the response, kept in ``request.state.request_id`` and in a context
  variable, so every log line written while serving the request carries it.
* :func:`configure_logging` (called by ``kyso serve`` and the Celery worker) installs one root
  handler: JSON lines when ``KYSO_LOG_FORMAT=json`` (one access line per request: method, route
  template, status, duration, request id, actor), text otherwise. A redaction filter on that
  handler masks secrets defensively: the values of the secret settings, ``Authorization``
  headers, ``kyso_…`` API tokens, and any field named like a password, PIN, passphrase, key,
  token, cookie or secret. Bodies and query strings are never logged.
* Metrics (prometheus_client) live in a registry per app, so several apps in one process (tests)
  never collide. Domain counters (signatures, verifications, jobs) are process-wide and are
  recorded through :func:`record_signature`, :func:`record_verification` and
  :func:`record_job`, from the web layer or a worker alike.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from kyso.api.settings import Settings

REQUEST_ID_HEADER = "X-Request-ID"
ACCESS_LOGGER = "kyso.access"
_ID_OK = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

request_id_var: ContextVar[str | None] = ContextVar("kyso_request_id", default=None)

log = logging.getLogger(__name__)
access_log = logging.getLogger(ACCESS_LOGGER)


def current_request_id() -> str | None:
    """The id of the request being served in this context (None outside a request)."""
    return request_id_var.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


def _accept_request_id(value: str | None) -> str:
    """The caller's id when it is a short printable token, else a new one (no log injection)."""
    if value and _ID_OK.fullmatch(value):
        return value
    return new_request_id()


# -- metrics ----------------------------------------------------------------------------------

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
JOB_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

# Process-wide domain metrics, created unregistered and added to every app's registry (a
# collector may sit in several registries; each registry refuses only its own duplicates).
SIGNATURES = Counter("kyso_signatures", "Signatures made, by outcome.", ["outcome"], registry=None)
VERIFICATIONS = Counter(
    "kyso_verifications", "Verifications, by ETSI indication.", ["indication"], registry=None
)
JOBS = Counter(
    "kyso_jobs", "Job items finished, by kind and outcome.", ["kind", "outcome"], registry=None
)
JOB_SECONDS = Histogram(
    "kyso_job_duration_seconds",
    "Time to run one job item, by kind.",
    ["kind"],
    buckets=JOB_BUCKETS,
    registry=None,
)
_DOMAIN: tuple[Collector, ...] = (SIGNATURES, VERIFICATIONS, JOBS, JOB_SECONDS)


def _label(value: str, *, limit: int = 40) -> str:
    """A bounded label value: metrics must not grow a series per odd input."""
    value = str(value).strip() or "unknown"
    return value[:limit]


def record_signature(outcome: str) -> None:
    """Count a signature attempt: ``ok``, ``bad-pin``, ``failed``, ...."""
    SIGNATURES.labels(outcome=_label(outcome)).inc()


def record_verification(indication: str) -> None:
    """Count a verification by its indication (TOTAL_PASSED, TOTAL_FAILED, INDETERMINATE)."""
    VERIFICATIONS.labels(indication=_label(indication)).inc()


def record_job(kind: str, outcome: str, seconds: float) -> None:
    """Count one finished job item and its duration."""
    JOBS.labels(kind=_label(kind), outcome=_label(outcome)).inc()
    JOB_SECONDS.labels(kind=_label(kind)).observe(max(0.0, seconds))


class QueueDepthCollector(Collector):
    """``kyso_job_queue_depth``: asked of the job runner at each scrape (a callback gauge)."""

    def __init__(self, source: Callable[[], int | None]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "kyso_job_queue_depth", "Job items waiting to run (broker queue or thread pool)."
        )
        try:
            depth = self._source()
        except Exception:  # a scrape must not fail because the broker is down
            log.warning("queue depth unavailable", exc_info=True)
            depth = None
        if depth is not None:
            gauge.add_metric([], float(depth))
        yield gauge


class AppMetrics:
    """The metrics of one app: its own registry, request histogram and the domain counters."""

    def __init__(self, queue_depth: Callable[[], int | None] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Histogram(
            "kyso_http_request_duration_seconds",
            "HTTP request latency, by method, route template and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        for collector in _DOMAIN:
            self.registry.register(collector)
        if queue_depth is not None:
            self.registry.register(QueueDepthCollector(queue_depth))

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def app_metrics(app: Any) -> AppMetrics:
    """The metrics :func:`install` attached to ``app``."""
    metrics: AppMetrics = app.state.metrics
    return metrics


def _queue_depth_of(app: FastAPI) -> Callable[[], int | None]:
    """Items waiting: the job runner's own answer (``queue_depth()``) when it has one, else
    the length of the Celery queue on a Redis broker; None (no sample) otherwise."""
    clients: dict[str, Any] = {}

    def depth() -> int | None:
        services = getattr(app.state, "services", None)
        if services is None:
            return None
        runner = services.__dict__.get("jobs")  # only a runner that exists: never build one
        probe = getattr(runner, "queue_depth", None)
        if callable(probe):
            return int(probe())
        url = services.settings.broker_url
        if url and url.startswith(("redis://", "rediss://")):
            import redis

            from kyso.api.celery_app import QUEUE

            if url not in clients:
                clients[url] = redis.Redis.from_url(
                    url, socket_timeout=1.0, socket_connect_timeout=1.0
                )
            return int(clients[url].llen(QUEUE))
        return None

    return depth


def serve_worker_metrics(port: int, *, addr: str) -> Any:
    """Serve the domain metrics of a Celery worker at ``http://addr:port/metrics``.

    Call it once in the worker's main process (Celery's ``worker_init`` signal). Job items
    run in prefork children: when ``PROMETHEUS_MULTIPROC_DIR`` is set (before any import of
    prometheus_client, in every process) the children's values are summed from that
    directory; otherwise only this process's own values are served (``--pool solo``).
    Returns the server (``.shutdown()`` stops it)."""
    import os

    from prometheus_client import start_http_server

    registry = CollectorRegistry(auto_describe=True)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        for collector in _DOMAIN:
            registry.register(collector)
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server


# -- logging ------------------------------------------------------------------------------------

_SENSITIVE_NAME = re.compile(
    r"(pass(word|phrase|wd)?|(^|_)pin($|_)|secret|token|cookie|authori[sz]ation|api[_-]?key|"
    r"private[_-]?key|^key$|_key$|csrf|session)",
    re.I,
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization headers / bearer credentials
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [REDACTED]"),
    # kyso API tokens: kyso_<id>_<secret>
    (re.compile(r"\bkyso_\d+_[A-Za-z0-9_-]+"), "kyso_[REDACTED]"),
    # credentials in URLs: scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@", re.I), r"\1[REDACTED]@"),
    # name=value / name: value pairs whose name says secret
    (
        re.compile(
            r"(?i)\b((?:[a-z0-9_-]*(?:password|passphrase|passwd|secret|token|cookie|"
            r"api[_-]?key|csrf)[a-z0-9_-]*|(?:[a-z0-9-]*_)?pin(?:_[a-z0-9_-]*)?))"
            r"(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&]+)"
        ),
        r"\1\2[REDACTED]",
    ),
)
REDACTED = "[REDACTED]"


def _secret_values(settings: Settings | None) -> list[str]:
    """The secret settings' values (passphrase, PIN, secret key, passwords inside URLs)."""
    if settings is None:
        return []
    from urllib.parse import unquote, urlsplit

    values: list[str] = []
    for name in ("key_passphrase", "pkcs11_pin", "secret_key"):
        secret = getattr(settings, name, None)
        if secret is not None:
            values.append(secret.get_secret_value())
    for name in ("archive_db", "archive_store", "broker_url", "rate_limit_url"):
        url = getattr(settings, name, None)
        if url:
            try:
                password = urlsplit(url).password
            except ValueError:
                password = None
            if password:
                values += [password, unquote(password)]
    # short values would mask ordinary words; the patterns still catch them by name
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


class RedactingFilter(logging.Filter):
    """Masks secrets in a record before any handler formats it.

    The message is formatted once (``msg % args``) and scrubbed; extra fields named like a
    secret are replaced; string extras are scrubbed too. Never drops a record."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {
                k: REDACTED if _SENSITIVE_NAME.search(str(k)) else self._value(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return type(value)(self._value(v) for v in value)
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict | tuple):
            # mask secret-named entries of dicts before they are formatted into the text
            record.args = self._value(record.args)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what there is
            message = str(record.msg)
        record.msg = self.scrub(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        record.exc_info = None  # the scrubbed text is what gets written
        for name, value in list(record.__dict__.items()):
            if name in _RECORD_ATTRS:
                continue
            if _SENSITIVE_NAME.search(name) and name not in _SAFE_EXTRAS:
                record.__dict__[name] = REDACTED
            else:
                record.__dict__[name] = self._value(value)
        return True


# uvicorn's ``color_message`` repeats the message with terminal colour codes
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "color_message",
}
# extra fields of the access line whose names look sensitive but are not
_SAFE_EXTRAS = frozenset({"request_id"})


class RequestIdFilter(logging.Filter):
    """Adds the current request id to every record (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _RECORD_ATTRS and not name.startswith("_"):
                entry[name] = value
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")


_HANDLER_MARK = "_kyso_handler"


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> logging.Handler:
    """Send every log record through one redacting handler on the root logger.

    JSON lines when ``settings.log_format == "json"`` (with one access line per request),
    text otherwise. Replaces the console handlers of the root logger (``basicConfig``'s, or
    its own from an earlier call), so calling it again reconfigures rather than duplicates.
    Returns the handler."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        # ours from an earlier call, and plain console handlers (``basicConfig``); others
        # (a test runner's capture, an operator's file handler) stay
        if getattr(handler, _HANDLER_MARK, False) or type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactingFilter(_secret_values(settings)))
    json_lines = settings.log_format == "json"
    handler.setFormatter(JSONFormatter() if json_lines else TextFormatter())
    root.addHandler(handler)
    root.setLevel(_level(settings.log_level))
    # the access line is the JSON log's business; text mode keeps uvicorn's --access-log
    access_log.setLevel(logging.INFO if json_lines else logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # chatter
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        # let their records reach the one handler (and its redaction) instead of their own
        logger = logging.getLogger(name)
        for own in list(logger.handlers):
            logger.removeHandler(own)
        logger.propagate = True
    return handler


def _level(name: str) -> int:
    level = logging.getLevelName(name.upper())
    return level if isinstance(level, int) else logging.INFO


# -- the middleware -------------------------------------------------------------------------------


class ObservabilityMiddleware:
    """Pure ASGI middleware (no body buffering): request id, access line, latency histogram."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = _accept_request_id(incoming)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = request_id_var.set(request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [
                    (k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            method = scope.get("method", "")
            self.metrics.requests.labels(method=method, route=template, status=str(status)).observe(
                elapsed
            )
            if access_log.isEnabledFor(logging.INFO):
                principal = state.get("principal")
                access_log.info(
                    "%s %s %s",
                    method,
                    template,
                    status,
                    extra={
                        "method": method,
                        "route": template,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "request_id": request_id,
                        "actor": getattr(principal, "actor", None),
                    },
                )
            request_id_var.reset(token)


def install(app: FastAPI) -> None:
    """Add the request-id, logging and metrics middleware to ``app`` (and its registry)."""
    metrics = AppMetrics(queue_depth=_queue_depth_of(app))
    app.state.metrics = metrics
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
