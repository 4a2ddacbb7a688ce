"""The api service: a NATS micro service that validates commands and answers queries.

Requests arrive on ``<ns>api.<org>.<principal>.<endpoint>`` (queue group ``api``, so
instances share the load); the organization is the subject's second token. Each request
is handled in its own task, so one slow query never holds up the others. Everything it
uses comes built from :mod:`openweights.services.api.bootstrap`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import nats.micro
import structlog
from anyio.abc import TaskGroup, TaskStatus
from nats.aio.msg import Msg
from nats.micro.service import EndpointConfig, Request, ServiceConfig

from openweights.adapters.nats.callout import AuthCallout
from openweights.api import protocol
from openweights.services.api import refusal
from openweights.services.api.callout import ExpiryWatch
from openweights.services.api.context import Deps, Handler
from openweights.services.api.dispatch import handle
from openweights.services.api.loggate import LogGate
from openweights.services.api.tenancy import whoami

log = structlog.get_logger("api")


class ApiService:
    def __init__(self, deps: Deps, routes: dict[str, Handler],
                 callout: AuthCallout | None = None, expiry: ExpiryWatch | None = None,
                 gate: LogGate | None = None) -> None:
        self.deps, self.routes, self.callout, self.expiry = deps, routes, callout, expiry
        self.gate = gate  # the log gate (loggate.py), where this instance runs it
        self._tg: TaskGroup

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        d = self.deps
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await tg.start(d.fold.run)
            if self.gate is not None:
                await tg.start(self.gate.run)
            if self.callout is not None:  # after the fold: tokens must be known first
                await tg.start(self.callout.run)
            if self.expiry is not None:
                await tg.start(self.expiry.run)
            service = await nats.micro.add_service(d.nc, ServiceConfig(
                name="openweights-api", version="0.1.0",
                description="openweights commands and queries"))
            for endpoint, handler in self.routes.items():
                pinned = endpoint in protocol.INSTANCE_ENDPOINTS
                subject = d.subjects.api("*", "*", endpoint)
                await service.add_endpoint(EndpointConfig(
                    name=endpoint.replace(".", "-"), handler=self._dispatcher(endpoint, handler),
                    subject=f"{subject}.{d.instance}" if pinned else subject,
                    queue_group=f"api-{d.instance}" if pinned else "api"))
            who = await d.nc.subscribe(d.subjects.whoami("*"), queue="api", cb=self._whoami)
            why = await d.nc.subscribe(d.subjects.refusal("*"), queue="api", cb=self._why)
            log.info("api.started", seq=d.fold.seq, endpoints=len(self.routes))
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    await who.unsubscribe()
                    await why.unsubscribe()
                    await service.stop()

    def _dispatcher(self, endpoint: str, handler: Handler) -> Callable[[Request], Awaitable[None]]:
        async def dispatch(req: Request) -> None:
            self._tg.start_soon(handle, self.deps, handler, endpoint, req)
        return dispatch

    async def _why(self, msg: Msg) -> None:
        await refusal.answer(self.deps, msg)

    async def _whoami(self, msg: Msg) -> None:
        if msg.reply:
            body = whoami(self.deps, msg.subject.rsplit(".", 1)[-1])
            await msg.respond(protocol.encoder.encode(body))
