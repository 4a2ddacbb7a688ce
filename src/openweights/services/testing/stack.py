"""Run the real services in a background thread (own event loop) for tests and benches.

The services are the same objects their composition roots build; only the process
boundary is left out, so a test can start a stack in milliseconds and use the blocking
SDK against it from the main thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import anyio
from anyio.abc import TaskStatus

from openweights.bootstrap import prepare
from openweights.config import Settings


def _factories() -> dict[str, Callable[[Settings, Any, Any], Any]]:
    from openweights.services.api.service import ApiService
    from openweights.services.projector.projector import Projector
    from openweights.services.provisioner.backends.local import LocalBackend
    from openweights.services.provisioner.provisioner import Provisioner
    from openweights.services.scheduler.scheduler import Scheduler

    def provisioner(settings: Settings, nc: Any, js: Any) -> Provisioner:
        return Provisioner(settings, nc, js, LocalBackend(settings, stop_grace_s=10))

    return {"projector": Projector, "api": ApiService, "scheduler": Scheduler,
            "provisioner": provisioner}


ALL_SERVICES = ("projector", "api", "scheduler", "provisioner")


@contextmanager
def services_thread(settings: Settings, names: tuple[str, ...] = ("projector", "api"),
                    extra: Callable[[Settings, Any, Any], Any] | None = None) -> Iterator[None]:
    """Start ``names`` (and ``extra``) on a prepared stack; stop them on exit."""
    ready = threading.Event()
    failure: list[BaseException] = []
    stop: list[Callable[[], None]] = []

    async def main() -> None:
        from openweights.services.runtime import nats_connection

        await prepare(settings)
        async with nats_connection(settings, "test-services") as (nc, js):
            factories = _factories()
            services = [factories[name](settings, nc, js) for name in names]
            if extra is not None:
                services.append(extra(settings, nc, js))
            scopes: list[anyio.CancelScope] = []
            done: list[anyio.Event] = []
            async with anyio.create_task_group() as tg:
                for service in services:
                    scope, finished = anyio.CancelScope(), anyio.Event()
                    scopes.append(scope)
                    done.append(finished)
                    await tg.start(_run, service, scope, finished)
                stopped = anyio.Event()

                async def stop_in_reverse() -> None:
                    # Like `ow up`: the provisioner first (its agents still reach the api).
                    for scope, finished in zip(reversed(scopes), reversed(done), strict=True):
                        scope.cancel()
                        await finished.wait()
                    stopped.set()

                token = anyio.lowlevel.current_token()
                stop.append(lambda: anyio.from_thread.run_sync(
                    lambda: tg.start_soon(stop_in_reverse), token=token))
                ready.set()
                await stopped.wait()

    async def _run(service: Any, scope: anyio.CancelScope, finished: anyio.Event, *,
                   task_status: TaskStatus[None]) -> None:
        try:
            with scope:
                await service.run(task_status=task_status)
        finally:
            finished.set()

    def target() -> None:
        try:
            anyio.run(main, backend="asyncio")
        except BaseException as exc:  # surfaced to the test below
            failure.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=target, name="ow-services", daemon=True)
    thread.start()
    ready.wait(60)
    if failure:
        raise failure[0]
    try:
        yield
    finally:
        if stop:
            # A service that died ended the loop already: raise its error, below.
            with suppress(anyio.RunFinishedError):
                stop[0]()
        thread.join(30)
        # The services ran on asyncio (see target); this thread runs no event loop.
        if failure and not isinstance(failure[0], asyncio.CancelledError):
            raise failure[0]
