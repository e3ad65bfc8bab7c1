"""Running kyso's coroutines from synchronous code.

pyHanko's signing and validation are coroutines; kyso's synchronous API (``sign``, ``verify``,
``register``…) runs them with :func:`run_sync`.  ``asyncio.run`` refuses to start when the
calling thread already runs an event loop — an async web handler, a notebook, a test driving a
browser through Playwright's sync API — so there the coroutine runs in a worker thread of its
own, where ``asyncio.run`` may start its loop.  The caller blocks either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion and return its result (see the module's docstring)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kyso-run-sync") as pool:
        return pool.submit(asyncio.run, coro).result()
