"""What every service's composition root shares: settings, logging, connections.

A service rides through an outage of its servers: nats-py reconnects on its own, and a
service that fails because NATS or Postgres went away (or is still coming back) waits
with backoff and composes itself again in the same process, instead of exiting into a
crash loop of its supervisor.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Protocol

import anyio
import asyncpg
import nats
import nats.errors
import nats.js.errors
import structlog
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.js import JetStreamContext

from openweights.adapters.nats.servers import connect_options
from openweights.backoff import Backoff
from openweights.clock import Clock, utc_now
from openweights.config import Settings
from openweights.logs import configure_logging
from openweights.stack import resolve

log = structlog.get_logger("service")

# Errors that mean a server went away or is not back yet, not a bug in the service: it
# composes itself again after a backoff. (OSError includes refused connections, our
# Unavailable and nats' TimeoutError.) Anything else ends the process, and its
# supervisor restarts it with backoff.
SERVER_GONE: tuple[type[BaseException], ...] = (
    OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError, nats.errors.ConnectionClosedError,
    nats.errors.NoServersError, nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError, nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
)
# How long closing one resource may take when its server is gone.
CLOSE_S = 10.0


def server_gone(exc: BaseException) -> bool:
    """Whether ``exc`` (or, for a task group's error, one of its errors) is an outage."""
    if isinstance(exc, BaseExceptionGroup):
        return any(server_gone(e) for e in exc.exceptions)
    return isinstance(exc, SERVER_GONE)


class NatsErrors:
    """nats-py's error callback: one line per error, not its traceback per reconnect try,
    and fewer as an outage goes on (the 1st, 2nd, 4th, 8th... since the last connect)."""

    def __init__(self, service: str) -> None:
        self.service, self.count = service, 0

    async def on_error(self, exc: Exception) -> None:
        self.count += 1
        if self.count & (self.count - 1) == 0:
            log.warning("nats.error", service=self.service, errors=self.count,
                        error=f"{type(exc).__name__}: {exc}")

    def reset(self) -> None:
        self.count = 0


@asynccontextmanager
async def nats_connection(settings: Settings, name: str, *,
                          on_reconnect: Callable[[], object] | None = None) -> AsyncIterator[
        tuple[Client, JetStreamContext]]:
    errors = NatsErrors(name)

    async def on_disconnect() -> None:
        log.warning("nats.disconnected", service=name)

    async def reconnected() -> None:
        log.info("nats.reconnected", service=name, errors=errors.count)
        errors.reset()
        if on_reconnect is not None:
            on_reconnect()

    assert settings.nats_url is not None, "resolve() the settings first"
    # Retries forever, the first connect too: a service started during an outage waits.
    nc = await nats.connect(
        **connect_options(settings.nats_url), name=f"ow-{name}-{os.getpid()}",
        max_reconnect_attempts=-1, reconnect_time_wait=0.5, error_cb=errors.on_error,
        disconnected_cb=on_disconnect, reconnected_cb=reconnected,
    )
    try:
        yield nc, nc.jetstream(timeout=settings.request_timeout_s)
    finally:
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + CLOSE_S):
            await nc.drain() if nc.is_connected else await nc.close()


class Service(Protocol):
    async def run(self, *, task_status: TaskStatus[None] = ...) -> None: ...


class Compose(Protocol):
    """A service's composition root: opens what the service needs on ``stack`` (closed in
    reverse order when the service ends) and returns the service, ready to run."""

    async def __call__(self, settings: Settings, stack: AsyncExitStack, nc: Client,
                       js: JetStreamContext, clock: Clock) -> Service: ...


def closing(stack: AsyncExitStack, aclose: Callable[[], Awaitable[object]]) -> None:
    """Close with ``aclose`` when ``stack`` unwinds, even while being cancelled."""
    async def shielded() -> None:
        # Bounded: a close that waits on a server that is gone must not hold up the rest.
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + CLOSE_S):
            await aclose()

    stack.push_async_callback(shielded)


def run_service(name: str, compose: Compose, *, restart_on_reconnect: bool = False) -> None:
    """Run the service ``compose`` builds under plain asyncio until SIGTERM/SIGINT, then
    cancel it cleanly and close what it opened, in reverse.

    With ``restart_on_reconnect`` (a service that decides from a fold of the log) it is
    composed afresh after NATS reconnects instead of trusting a fold that lived through a
    server restart (a replay takes seconds). The projector resumes from its checkpoint
    and the provisioner keeps its agents, so they just carry on.

    Plain asyncio, not uvloop: spawning processes is ~4x slower under uvloop here.
    """
    settings = resolve(Settings(), need_database=True)
    configure_logging(settings.log_json)

    async def supervised() -> None:
        async with anyio.create_task_group() as tg:
            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        log.info("service.stopping", service=name, signal=signum)
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            await serve(settings, name, compose, restart_on_reconnect=restart_on_reconnect)
            tg.cancel_scope.cancel()

    anyio.run(supervised, backend="asyncio")


async def serve(settings: Settings, name: str, compose: Compose, *,
                restart_on_reconnect: bool = False) -> None:
    """Compose and run the service until it ends; compose it again after an outage (with
    backoff) and, with ``restart_on_reconnect``, after every NATS reconnect."""
    backoff = Backoff(first_s=0.25, max_s=5.0, healthy_s=30.0)
    while True:
        began = anyio.current_time()
        try:
            again = await _serve_once(settings, name, compose, restart_on_reconnect)
        except Exception as exc:
            if not server_gone(exc):
                raise
            delay = backoff.delay(anyio.current_time() - began)
            log.warning("service.interrupted", service=name, retry_in_s=delay,
                        error=_describe(exc))
            await anyio.sleep(delay)  # a backoff: the servers are being restarted
            continue
        if not again:
            return
        backoff.reset()


async def _serve_once(settings: Settings, name: str, compose: Compose,
                      restart_on_reconnect: bool) -> bool:
    """Run one composition; True when NATS reconnected and it should be composed again."""
    reconnected = anyio.Event()
    async with AsyncExitStack() as stack:
        nc, js = await stack.enter_async_context(nats_connection(
            settings, name, on_reconnect=reconnected.set if restart_on_reconnect else None))
        service = await compose(settings, stack, nc, js, utc_now)
        async with anyio.create_task_group() as tg:
            async def end_on_reconnect() -> None:
                await reconnected.wait()
                log.warning("service.recomposing", service=name,
                            reason="NATS reconnected: its fold is folded afresh")
                tg.cancel_scope.cancel()

            tg.start_soon(end_on_reconnect)
            await service.run()
            tg.cancel_scope.cancel()
    return reconnected.is_set()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"
