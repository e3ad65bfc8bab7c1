"""Schemathesis against the app's own OpenAPI schema: no request it can build gives a 5xx, and
every error reply is an RFC 9457 problem (``application/problem+json``).

The service is the document API tests' full stack (a built-in PKI, a catalogue on the real
PostgreSQL, two agencies with one user per role, seal and personal keys) plus, in agency A, one
user holding every role. Documents at each stage exist (ids 1..4 are A's, so the small ids
Hypothesis likes hit real rows, and B's rows are "other agencies' ids"). Every operation of the
schema is fuzzed by two callers, that user's Bearer token and no credentials at all, in both
generation modes (data the schema allows, and data it forbids), with a fixed number of examples
and derandomized Hypothesis: the run is the same on every CI run and takes about a minute.

Requests go to the app in-process through schemathesis' ASGI transport (the same app object the
stack's TestClient started). An exception the app lets escape is what a client sees as a 500, and
is reported as one, with the request and the kyso frames it went through.

Nothing is excluded (no route streams without end or needs a real socket): the schema's
operations are counted and each one must have been called. What the schema does not describe
is not reached: the web UI's pages (``kyso.api.web``, ``include_in_schema=False``).
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.python import asgi

from kyso.api.principal import ROLES
from tests.api.service_helpers import bearer, make_user
from tests.api.workflow_fixtures import Stack, stack

#: Examples per operation, mode and caller. Small on purpose (CI time): the aim is the error
#: paths every route shares (ids, bodies, auth), not exhaustive search. Dig deeper locally with
#: ``KYSO_FUZZ_EXAMPLES=40`` (about 5 minutes on 2 busy cores; it found the out-of-range ids
#: and NUL bytes PostgreSQL refuses).
EXAMPLES = int(os.environ.get("KYSO_FUZZ_EXAMPLES", "6"))
#: Success and redirects may be anything (a PDF, a zip, a page...): only errors must be problems
SUCCESS_ONLY = range(200, 400)


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(
        tmp_path_factory.mktemp("schema-fuzz"), catalog="postgresql", verify_rate_limit=10**6
    ) as made:
        for stage in ("draft", "person_signed", "registered", "sealed"):
            made.to_stage(made.a, stage)
        made.to_stage(made.b, "draft")
        yield made


@pytest.fixture(scope="module")
def all_roles(fuzz_stack: Stack) -> dict[str, str]:
    principal, _ = make_user(fuzz_stack.services, fuzz_stack.a, "fuzz-every-role", ROLES)
    return bearer(fuzz_stack.services, principal)


@pytest.fixture(scope="module")
def schema(fuzz_stack: Stack) -> Any:
    app = fuzz_stack.client.app
    loaded = schemathesis.openapi.from_dict(fuzz_stack.client.get("/openapi.json").json())
    loaded.app = app
    return loaded


def _content_type(reply: Any) -> str:
    """The Content-Type of a schemathesis Response (headers are lists of values)."""
    values = {k.lower(): v for k, v in reply.headers.items()}.get("content-type") or [""]
    return str(values[0])


def _describe(case: Any, reply: Any) -> str:
    body = reply.content[:2000].decode(errors="replace")
    return (
        f"{case.method} {case.formatted_path} query={case.query!r} "
        f"body={str(case.body)[:500]!r} -> {reply.status_code} "
        f"{_content_type(reply)}: {body}"
    )


def _check(case: Any, reply: Any, failures: list[str]) -> None:
    if reply.status_code >= 500:
        failures.append("5xx: " + _describe(case, reply))
        return
    if reply.status_code in SUCCESS_ONLY:
        return
    content_type = _content_type(reply)
    if not content_type.startswith("application/problem+json"):
        failures.append("not a problem: " + _describe(case, reply))
        return
    try:
        problem = json.loads(reply.content)
    except ValueError:
        failures.append("problem not JSON: " + _describe(case, reply))
        return
    if problem.get("status") != reply.status_code or not problem.get("type"):
        failures.append("problem without type/status: " + _describe(case, reply))


def _fuzz(
    operation: Any,
    mode: GenerationMode,
    client: Any,
    headers: dict[str, str],
    called: dict[str, int],
    failures: list[str],
) -> None:
    """``EXAMPLES`` derandomized cases of ``operation`` in ``mode``, sent with ``headers``."""

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        called[operation.label] = called.get(operation.label, 0) + 1
        try:
            reply = case.call(session=client, headers=headers)
        except Exception as exc:  # the app raised: the client got a 500
            where = traceback.extract_tb(exc.__traceback__)
            frames = [f"{f.filename}:{f.lineno} {f.name}" for f in where if "/kyso/" in f.filename]
            failures.append(
                f"500 (unhandled {type(exc).__name__}: {str(exc)[:300]}): {case.method} "
                f"{case.formatted_path} query={case.query!r} body={str(case.body)[:300]!r} "
                f"auth={bool(headers)} at {' <- '.join(reversed(frames))}"
            )
            return
        _check(case, reply, failures)

    try:
        run()
    except Unsatisfiable:
        # Negative mode of an operation that takes nothing (no parameters, no body): there is
        # no invalid request to build. Positive mode still calls it.
        if mode is not GenerationMode.NEGATIVE:
            raise


def test_every_operation_without_5xx(
    fuzz_stack: Stack, schema: Any, all_roles: dict[str, str]
) -> None:
    app: Any = fuzz_stack.client.app
    client = asgi.get_client(app)  # not entered: the stack runs the lifespan
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30, [op.label for op in operations]
    failures: list[str] = []
    called: dict[str, int] = {}
    started = time.monotonic()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for headers in (all_roles, {}):
                _fuzz(operation, mode, client, headers, called, failures)
    elapsed = time.monotonic() - started
    print(f"{sum(called.values())} requests over {len(called)} operations in {elapsed:.1f} s")
    assert set(called) == {op.label for op in operations}
    # the fuzzing did not lock its own caller out (revoked its token, disabled it): the
    # authenticated half reached the routes, not just the 401 of the auth dependency
    me = fuzz_stack.client.get("/api/v1/agencies/me", headers=all_roles)
    assert me.status_code == 200, me.text
    assert not failures, "\n".join(failures)
