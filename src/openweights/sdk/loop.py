"""The blocking client's private event loop thread.

``OpenWeights`` runs each coroutine of the async API here and waits for its result, so it
works the same in a plain script and inside a notebook that already runs a loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import suppress
from typing import Any, TypeVar

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def twin(of: Callable[..., Any]) -> Callable[[F], F]:
    """Mark a blocking method as the twin of the async API's ``of``: it takes the same
    parameters and only delegates, so it shares ``of``'s documentation."""

    def mark(fn: F) -> F:
        fn.__doc__ = of.__doc__
        return fn

    return mark


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.stopped = False
        self.thread = threading.Thread(target=self.loop.run_forever, name="openweights-loop",
                                       daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop; block until it returns (or raises).

        Raises ``RuntimeError`` once the client is closed."""
        if self.stopped:  # a stopped loop would never run it: fail instead of hanging
            coro.close()
            raise RuntimeError("this OpenWeights client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Iterate an async iterator of the async API from the calling thread."""
        try:
            while True:
                try:
                    yield self.run(_next(agen))
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(agen, "aclose", None)  # async generators release what they hold
            # Still running after Ctrl-C, or the client closed: closing it closes the rest.
            if aclose is not None and threading.current_thread() is not self.thread:
                with suppress(RuntimeError):
                    self.run(aclose())

    def stop(self) -> None:
        self.stopped = True
        self.loop.call_soon_threadsafe(self.loop.stop)


async def _next(agen: AsyncIterator[T]) -> T:
    return await anext(agen)
