"""What every service's composition root shares: settings, logging, connections."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Protocol

import anyio
import nats
import structlog
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.js import JetStreamContext

from openweights.clock import Clock, utc_now
from openweights.config import Settings
from openweights.logs import configure_logging
from openweights.stack import resolve

log = structlog.get_logger("service")


@asynccontextmanager
async def nats_connection(settings: Settings, name: str, *,
                          restart_on_reconnect: bool = False) -> AsyncIterator[
        tuple[Client, JetStreamContext]]:
    async def on_disconnect() -> None:
        log.warning("nats.disconnected", service=name)

    async def on_reconnect() -> None:
        # A service that decides from a fold of the log restarts instead of trusting a
        # fold that lived through a server restart (a replay takes seconds); the
        # supervisor (`ow up`) starts it again. The projector resumes from its checkpoint
        # and the provisioner keeps its agents, so they stay up.
        if restart_on_reconnect:
            log.warning("nats.reconnected_restarting", service=name)
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            log.info("nats.reconnected", service=name)

    assert settings.nats_url is not None, "resolve() the settings first"
    nc = await nats.connect(
        settings.nats_url, name=f"ow-{name}-{os.getpid()}",
        max_reconnect_attempts=-1, reconnect_time_wait=0.5,
        disconnected_cb=on_disconnect, reconnected_cb=on_reconnect,
    )
    try:
        yield nc, nc.jetstream(timeout=settings.request_timeout_s)
    finally:
        with anyio.CancelScope(shield=True):
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
        with anyio.CancelScope(shield=True):
            await aclose()

    stack.push_async_callback(shielded)


def run_service(name: str, compose: Compose, *, restart_on_reconnect: bool = False) -> None:
    """Run the service ``compose`` builds under plain asyncio until SIGTERM/SIGINT, then
    cancel it cleanly and close what it opened, in reverse.

    Plain asyncio, not uvloop: spawning processes is ~4x slower under uvloop here.
    """
    settings = resolve(Settings(), need_database=True)
    configure_logging(settings.log_json)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            nc, js = await stack.enter_async_context(
                nats_connection(settings, name, restart_on_reconnect=restart_on_reconnect))
            service = await compose(settings, stack, nc, js, utc_now)
            await service.run()

    async def supervised() -> None:
        async with anyio.create_task_group() as tg:
            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        log.info("service.stopping", service=name, signal=signum)
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            await main()
            tg.cancel_scope.cancel()

    anyio.run(supervised, backend="asyncio")
