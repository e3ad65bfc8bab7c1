"""Running kyso's coroutines from synchronous code.

pyHanko's signing and validation are coroutines; kyso's synchronous API (``sign``, ``verify``,
``register``…) runs them with :func:`run_sync`.  ``asyncio.run`` refuses to start when the
calling thread already runs an event loop — an async web handler, a notebook, a test driving a
browser through Playwright's sync API — so there the coroutine runs in a worker thread of its
own, where ``asyncio.run`` may start its loop.  The caller blocks either way.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion and return its result (see the module's docstring)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kyso-run-sync") as pool:
        return pool.submit(asyncio.run, coro).result()


def sync_twin(coroutine_function: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """The synchronous form of a coroutine function ``async_<name>``, named ``<name>``: the
    same parameters (for type checkers too), run to completion by :func:`run_sync` (from any
    thread).  Written once so that a twin cannot forget to pass on a parameter."""

    def twin(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(coroutine_function(*args, **kwargs))

    functools.update_wrapper(twin, coroutine_function)  # module, signature (``__wrapped__``)
    twin.__name__ = coroutine_function.__name__.removeprefix("async_")
    twin.__qualname__ = coroutine_function.__qualname__.removeprefix("async_")
    twin.__doc__ = (
        f"Synchronous twin of :func:`{coroutine_function.__name__}` (any thread: "
        ":func:`kyso.aio.run_sync`)."
    )
    return twin
