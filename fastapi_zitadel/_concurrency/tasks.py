"""One task per key at a time, tracked until it ends: the one registry of the library's tasks.

Work behind the request (a JWKS refresh, hybrid mode's introspection of a token already
served, a service user's token renewal) must never hold up its request nor be left behind:
an untracked task can be garbage-collected while it runs, and one pending when its loop
closes ends as "Task was destroyed but it is pending!". Every task is kept (per event loop)
until it finishes; ``aclose`` cancels and awaits those still running.

Concurrent misses for one key share one call (``run``): when a popular token's entry lapses,
hundreds of requests can miss at once, and ZITADEL Cloud answers that many introspections
with 429s. Every caller, the first included, waits on one shared result that cannot be
cancelled, or a waiter cancelled (its client went away) would cancel the call for all the
others; its cancellation takes effect when the shared call ends, which its deadline bounds.
This spares a herd of a thousand callers a thousand ``asyncio.shield`` wrappers (a future and
a callback each). A caller wanting a task's result by a deadline of its own uses ``joined``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from fastapi_zitadel._concurrency.per_loop import PerLoop
from fastapi_zitadel._exceptions import IdentityProviderUnavailable

__all__ = ["KeyedTasks", "joined"]

T = TypeVar("T")


class _SharedResult(asyncio.Future):  # type: ignore[type-arg]
    """A future that its waiters' cancellations do not cancel (see the module docstring)."""

    def cancel(self, msg: object = None) -> bool:
        return False


class _Running(Generic[T]):
    """One loop's tasks: the current one per key, every unfinished one (with the result its
    ``run`` callers share), and the calls waiting for the loop's next pass (``start_soon``)."""

    __slots__ = ("all", "by_key", "drain", "soon")

    def __init__(self) -> None:
        self.by_key: dict[Hashable, asyncio.Task[T]] = {}
        self.all: dict[asyncio.Task[T], _SharedResult] = {}
        self.soon: dict[Hashable, Callable[[], Awaitable[T]]] = {}
        self.drain: asyncio.Handle | None = None


class KeyedTasks(Generic[T]):
    def __init__(self) -> None:
        self._tasks: PerLoop[_Running[T]] = PerLoop(_Running)
        self.joined = 0  # ``run`` callers that waited for a task already running

    async def run(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        """The result of the task for ``key``, started with ``call()`` if none runs; every
        caller waits on one shared result (see the module docstring)."""
        tasks = self._tasks.get()
        task = tasks.by_key.get(key)
        if task is None:
            task = self.start(key, call)
        else:
            self.joined += 1
        value: T = await tasks.all[task]
        return value

    def running(self, key: Hashable) -> asyncio.Task[T] | None:
        tasks = self._tasks.peek()
        return None if tasks is None else tasks.by_key.get(key)

    def scheduled(self, key: Hashable) -> bool:
        """Whether a task for ``key`` runs, or is to start in the next pass of the loop."""
        tasks = self._tasks.peek()
        return tasks is not None and (key in tasks.by_key or key in tasks.soon)

    def in_flight(self) -> int:
        """Tasks running, and calls waiting to start."""
        tasks = self._tasks.peek()
        return 0 if tasks is None else len(tasks.all) + len(tasks.soon)

    def start(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        """The task running for ``key``, or a new one running ``call()`` (a call waiting in
        ``start_soon`` for ``key`` starts now instead)."""
        tasks = self._tasks.get()
        task = tasks.by_key.get(key)
        if task is None:
            call = tasks.soon.pop(key, call)
            task = tasks.by_key[key] = asyncio.ensure_future(call())
            tasks.all[task] = _SharedResult()
            task.add_done_callback(lambda done: _finished(tasks, key, done))
        return task

    def start_soon(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> bool:
        """Start ``call()`` for ``key`` in the loop's next pass unless one runs or waits for
        ``key``; whether taken. Costs the caller a dict insert: the task is made outside its
        request."""
        tasks = self._tasks.get()
        if key in tasks.by_key or key in tasks.soon:
            return False
        tasks.soon[key] = call
        if tasks.drain is None:
            tasks.drain = asyncio.get_running_loop().call_soon(self._start_waiting, tasks)
        return True

    def _start_waiting(self, tasks: _Running[T]) -> None:
        tasks.drain = None
        while tasks.soon:
            key, call = next(iter(tasks.soon.items()))
            self.start(key, call)

    def forget(self, key: Hashable) -> None:
        """Later ``start`` calls begin a new task; the running one finishes (tracked), a
        waiting one is dropped."""
        tasks = self._tasks.peek()
        if tasks is not None:
            tasks.by_key.pop(key, None)
            tasks.soon.pop(key, None)

    def forget_all(self) -> None:
        tasks = self._tasks.peek()
        if tasks is not None:
            tasks.by_key.clear()
            tasks.soon.clear()

    async def aclose(self) -> None:
        """Cancel the running loop's tasks (and those waiting to start); wait until they end."""
        tasks = self._tasks.peek()
        if tasks is None:
            return
        if tasks.drain is not None:
            tasks.drain.cancel()
            tasks.drain = None
        tasks.soon.clear()
        running = list(tasks.all)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def joined(task: asyncio.Task[T], timeout: float, *, what: str) -> T:
    """``task``'s result within ``timeout`` seconds, for work a request needs from the IdP
    (``what``, as messages name it). Giving up does not cancel the task (others may share
    it); not ending in time, or cancelled by a close, is ``IdentityProviderUnavailable`` (a
    503, never a 401); a cancellation of the caller itself stays the caller's."""
    try:
        return await asyncio.wait_for(asyncio.shield(task), timeout=max(timeout, 0.0))
    except asyncio.TimeoutError:
        raise IdentityProviderUnavailable(f"{what} did not end in time", retry_after=1.0) from None
    except asyncio.CancelledError:
        if not task.cancelled():
            raise  # the caller was cancelled, not the task
        raise IdentityProviderUnavailable(
            f"{what} was cancelled (closing)", retry_after=1.0
        ) from None


def _finished(tasks: _Running[Any], key: Hashable, done: asyncio.Task[Any]) -> None:
    if tasks.by_key.get(key) is done:
        del tasks.by_key[key]
    result = tasks.all.pop(done)
    if done.cancelled():
        result.set_exception(asyncio.CancelledError())
    elif (failure := done.exception()) is not None:  # retrieved: never "never retrieved"
        result.set_exception(failure)
    else:
        result.set_result(done.result())
    result.exception()  # marked retrieved, also when nobody waits for it
