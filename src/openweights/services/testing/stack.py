"""Run the real services in a background thread (own event loop) for tests and benches.

The services are the same objects their composition roots build; only the process
boundary is left out, so a test can start a stack in milliseconds and use the blocking
SDK against it from the main thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, contextmanager, suppress
from typing import Any

import anyio
from anyio.abc import TaskStatus

from openweights.bootstrap import prepare
from openweights.clock import Clock, utc_now
from openweights.config import Settings
from openweights.services.runtime import Compose, nats_connection


def _composers() -> dict[str, Compose]:
    from openweights.services.api.bootstrap import compose as api
    from openweights.services.projector.bootstrap import compose as projector
    from openweights.services.provisioner.backends.local import LocalBackend
    from openweights.services.provisioner.bootstrap import compose as provisioner_of
    from openweights.services.scheduler.bootstrap import compose as scheduler

    async def provisioner(settings: Settings, stack: AsyncExitStack, nc: Any, js: Any,
                          clock: Clock) -> Any:
        # Other backends (OW_BACKEND=runpod) as the provisioner's own root builds them.
        local = LocalBackend(settings, stop_grace_s=10) if settings.backend == "local" else None
        return await provisioner_of(settings, stack, nc, js, clock, backend=local)

    return {"projector": projector, "api": api, "scheduler": scheduler,
            "provisioner": provisioner}


ALL_SERVICES = ("projector", "api", "scheduler", "provisioner")


@contextmanager
def services_thread(settings: Settings, names: tuple[str, ...] = ("projector", "api"),
                    extra: Compose | None = None, *,
                    clock: Clock = utc_now) -> Iterator[None]:
    """Start ``names`` (and ``extra``, composed like them) on a prepared stack, built by
    their own composition roots and deciding with ``clock``; stop them on exit, in
    reverse order."""
    composers = _composers()
    chosen = [composers[name] for name in names] + ([extra] if extra is not None else [])
    services = _ThreadedServices(settings, chosen, clock)
    thread = threading.Thread(target=services.target, name="ow-services", daemon=True)
    thread.start()
    services.ready.wait(60)
    if services.failure:
        raise services.failure[0]
    try:
        yield
    finally:
        if services.stop:
            # A service that died ended the loop already: raise its error, below.
            with suppress(anyio.RunFinishedError):
                services.stop[0]()
        thread.join(30)
        # The services ran on asyncio (see target); this thread runs no event loop.
        if services.failure and not isinstance(services.failure[0], asyncio.CancelledError):
            raise services.failure[0]


class _ThreadedServices:
    def __init__(self, settings: Settings, composers: list[Compose], clock: Clock) -> None:
        self.settings, self.composers, self.clock = settings, composers, clock
        self.ready = threading.Event()
        self.failure: list[BaseException] = []
        self.stop: list[Callable[[], None]] = []

    def target(self) -> None:
        try:
            anyio.run(self._main, backend="asyncio")
        except BaseException as exc:  # surfaced to the test by services_thread
            self.failure.append(exc)
        finally:
            self.ready.set()

    async def _main(self) -> None:
        await prepare(self.settings)
        async with nats_connection(self.settings, "test-services") as (nc, js):
            scopes: list[tuple[anyio.CancelScope, anyio.Event]] = []
            async with anyio.create_task_group() as tg:
                for compose in self.composers:
                    scope, finished = anyio.CancelScope(), anyio.Event()
                    scopes.append((scope, finished))
                    await tg.start(self._run, compose, nc, js, scope, finished)
                stopped = anyio.Event()

                async def stop_in_reverse() -> None:
                    # Like `ow up`: the provisioner first (its agents still reach the api).
                    for scope, finished in reversed(scopes):
                        scope.cancel()
                        await finished.wait()
                    stopped.set()

                token = anyio.lowlevel.current_token()

                def stop_soon() -> None:
                    tg.start_soon(stop_in_reverse)

                self.stop.append(lambda: anyio.from_thread.run_sync(stop_soon, token=token))
                self.ready.set()
                await stopped.wait()

    async def _run(self, compose: Compose, nc: Any, js: Any, scope: anyio.CancelScope,
                   finished: anyio.Event, *, task_status: TaskStatus[None]) -> None:
        try:
            with scope:
                async with AsyncExitStack() as stack:
                    service = await compose(self.settings, stack, nc, js, self.clock)
                    await service.run(task_status=task_status)
        finally:
            finished.set()
