"""``OpenWeights`` and ``AsyncOpenWeights``: one surface, blocking or awaitable.

Every resource method is written once as a coroutine; the client decides what calling
it means. ``AsyncOpenWeights`` returns the awaitable; ``OpenWeights`` runs it on a
private event loop thread and returns the result, so it also works inside notebooks
that already run a loop.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, ClassVar, TypeVar

from openweights.config import Settings
from openweights.sdk.transport import Transport

T = TypeVar("T")


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.stopped = False
        self.thread = threading.Thread(target=self.loop.run_forever, name="openweights-loop",
                                       daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.stopped:  # a stopped loop would never run it: fail instead of hanging
            coro.close()
            raise RuntimeError("this OpenWeights client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.stopped = True
        self.loop.call_soon_threadsafe(self.loop.stop)


class _Client:
    # Every live client, so that @register reaches instances created before it.
    _INSTANCES: ClassVar[weakref.WeakSet[_Client]] = weakref.WeakSet()
    _REGISTERED: ClassVar[dict[str, type]] = {}
    is_async: ClassVar[bool] = False

    def __init__(self, api_key: str | None = None, nats_url: str | None = None, *,
                 settings: Settings | None = None, retry_for_s: float = 60.0) -> None:
        from openweights.sdk.resources import Events, Files, JobsResource, Runs, Secrets, Tokens

        base = settings or Settings()
        if nats_url is not None:
            base = base.model_copy(update={"nats_url": nats_url})
        import os

        key = api_key or os.environ.get("OPENWEIGHTS_API_KEY")
        if key is None:
            from openweights.stack import local_token, read_stack

            local = read_stack(base)
            if local is not None and base.nats_url in (None, local["nats_url"]):
                key = local_token(base)  # the local `ow up` stack's admin token
        self.transport = Transport(base, key, retry_for_s=retry_for_s)
        self.files = Files(self)
        self.jobs = JobsResource(self)
        self.runs = Runs(self)
        self.events = Events(self)
        self.tokens = Tokens(self)
        self.secrets = Secrets(self)
        self._run: Any = None
        for name, cls in self._REGISTERED.items():
            setattr(self, name, cls(self))
        _Client._INSTANCES.add(self)

    @property
    def run(self) -> Any:
        """The current run: inside a job (``OPENWEIGHTS_RUN_ID``) that job's run; outside,
        a script job and run created for the calling script on first use."""
        from openweights.sdk.current_run import CurrentRun

        if self._run is None:
            self._run = CurrentRun(self)
        return self._run

    def call(self, coro: Coroutine[Any, Any, T]) -> Any:
        raise NotImplementedError


class AsyncOpenWeights(_Client):
    """Every call returns an awaitable."""

    is_async = True

    def call(self, coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
        return coro

    async def close(self) -> None:
        if self._run is not None:
            await self._run._finish()
        await self.transport.close()

    async def __aenter__(self) -> AsyncOpenWeights:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class OpenWeights(_Client):
    """Every call blocks until it is done and returns its result."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = _LoopThread()
        super().__init__(*args, **kwargs)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coro)

    def close(self) -> None:
        if self._loop.stopped:
            return
        if self._run is not None:
            atexit.unregister(self._run._at_exit)  # nothing left to run it after close
            self.call(self._run._finish())
        self.call(self.transport.close())
        self._loop.stop()

    def __enter__(self) -> OpenWeights:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
