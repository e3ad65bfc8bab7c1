"""kyso.aio.run_sync: the synchronous API works whether or not the thread runs a loop."""

from __future__ import annotations

import asyncio
import threading

from kyso.aio import run_sync


async def _where() -> tuple[str, int]:
    await asyncio.sleep(0)
    return threading.current_thread().name, 42


def test_without_a_running_loop_runs_in_this_thread() -> None:
    name, value = run_sync(_where())
    assert value == 42 and name == threading.current_thread().name


async def test_inside_a_running_loop_runs_in_a_worker_thread() -> None:
    # asyncio.run here would raise "cannot be called from a running event loop"
    name, value = run_sync(_where())
    assert value == 42 and name.startswith("kyso-run-sync")


def test_exceptions_reach_the_caller() -> None:
    async def fail() -> None:
        raise ValueError("boom")

    async def inside() -> None:
        try:
            run_sync(fail())
        except ValueError as exc:
            assert str(exc) == "boom"
        else:
            raise AssertionError("no exception")

    asyncio.run(inside())
