"""The api service: a NATS micro service that validates commands and answers queries.

Requests arrive on ``<ns>api.<org>.<endpoint>`` (queue group ``api``, so instances share
the load); the organization is the subject's second token. Each request is handled in
its own task, so one slow query never holds up the others.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import asyncpg
import msgspec
import nats.micro
import structlog
from anyio.abc import TaskGroup, TaskStatus
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.micro.service import EndpointConfig, Request, ServiceConfig

from openweights.adapters.files.factory import open_file_store
from openweights.adapters.nats.eventlog import EventLog
from openweights.adapters.nats.fold import LiveFold
from openweights.adapters.postgres.db import create_pool
from openweights.adapters.projected import ProjectionWatcher
from openweights.api import protocol
from openweights.config import Settings
from openweights.errors import InvalidRequest, OpenWeightsError, PayloadTooLarge, Unavailable
from openweights.events import Actor
from openweights.subjects import Subjects
from services.api.commands import Executor

log = structlog.get_logger("api")

Handler = Callable[["Context", Any], Awaitable[Any]]


class Context(msgspec.Struct, frozen=True):
    """Who asks: the organization (from the subject) and the acting party."""

    org: str
    actor: Actor
    raw: Any = None  # the micro Request, for raw-payload endpoints


class ApiService:
    def __init__(self, settings: Settings, nc: Client, js: JetStreamContext) -> None:
        self.settings, self.nc, self.js = settings, nc, js
        self.subjects = Subjects(settings.namespace)
        self.fold = LiveFold(nc, js, self.subjects)
        self.log = EventLog(nc, js, self.subjects, timeout=settings.request_timeout_s)
        self.executor = Executor(self.log, self.fold, self.subjects)
        self.watcher = ProjectionWatcher(nc, self.subjects)
        self.handlers: dict[str, Handler] = {}
        # Upload chunks must reach the instance holding the upload's spool file.
        self.instance = secrets.token_hex(6)
        self.pool: asyncpg.Pool
        self._tg: TaskGroup

    def route(self, endpoint: str) -> Callable[[Handler], Handler]:
        def wrap(fn: Handler) -> Handler:
            self.handlers[endpoint] = fn
            return fn
        return wrap

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        from services.api import agents, files, jobs, runs

        assert self.settings.database_url is not None
        self.pool = await create_pool(self.settings.database_url, min_size=2, max_size=8)
        self.files = await open_file_store(self.settings, self.js)
        try:
            for module in (jobs, runs, files, agents):
                module.install(self)
            await self.watcher.start(self.pool)
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await tg.start(self.fold.run)
                service = await nats.micro.add_service(self.nc, ServiceConfig(
                    name="openweights-api", version="0.1.0",
                    description="openweights commands and queries"))
                for endpoint in (*protocol.ENDPOINTS, protocol.UPLOAD_CHUNK):
                    pinned = endpoint in protocol.INSTANCE_ENDPOINTS
                    subject = self.subjects.api("*", endpoint)
                    await service.add_endpoint(EndpointConfig(
                        name=endpoint.replace(".", "-"), handler=self._dispatcher(endpoint),
                        subject=f"{subject}.{self.instance}" if pinned else subject,
                        queue_group=f"api-{self.instance}" if pinned else "api"))
                log.info("api.started", seq=self.fold.seq, endpoints=len(self.handlers))
                task_status.started()
                try:
                    await anyio.sleep_forever()
                finally:
                    with anyio.CancelScope(shield=True):
                        await service.stop()
        finally:
            with anyio.CancelScope(shield=True):
                await self.watcher.stop()
                await self.files.close()
                await self.pool.close()

    def _dispatcher(self, endpoint: str) -> Callable[[Request], Awaitable[None]]:
        async def dispatch(req: Request) -> None:
            self._tg.start_soon(self._handle, endpoint, req)
        return dispatch

    async def _handle(self, endpoint: str, req: Request) -> None:
        try:
            org = req.subject.split(".")[1]
            ctx = Context(org=org, actor=Actor("client", ""), raw=req)
            if endpoint == protocol.UPLOAD_CHUNK:
                body: Any = req.data
            else:
                if len(req.data) > protocol.MAX_REQUEST_BYTES:
                    raise PayloadTooLarge(
                        f"request of {len(req.data)} bytes exceeds "
                        f"{protocol.MAX_REQUEST_BYTES}; upload large data as a file")
                body = _decode(endpoint, req.data)
                if body.v != protocol.PROTOCOL_VERSION:
                    raise InvalidRequest(f"protocol version {body.v} is not supported "
                                         f"(this service speaks {protocol.PROTOCOL_VERSION})")
                if body.min_seq:
                    await self._wait_projected(body.min_seq)
            result = await self.handlers[endpoint](ctx, body)
            seq = 0
            if isinstance(result, Seq):
                result, seq = result.value, result.seq
            if isinstance(result, Raw):
                await req.respond(result.data, headers=result.headers)
                return
            await req.respond(protocol.encoder.encode(protocol.Reply(ok=result, seq=seq)))
        except OpenWeightsError as exc:
            await self._error(req, exc.code, exc.message)
        except Exception as exc:  # a bug must not kill the service; the caller learns of it
            log.exception("api.handler_failed", endpoint=endpoint)
            await self._error(req, "internal", f"internal error in {endpoint}: {exc}")

    async def _error(self, req: Request, code: str, message: str) -> None:
        body = protocol.Reply(error=protocol.ErrorBody(code=code, message=message))
        await req.respond(protocol.encoder.encode(body))

    async def _wait_projected(self, seq: int) -> None:
        with anyio.move_on_after(self.settings.request_timeout_s / 2) as scope:
            await self.watcher.wait_projected(seq)
        if scope.cancelled_caught:
            raise Unavailable(f"read models are behind log position {seq}; retry shortly")


class Seq(msgspec.Struct):
    """A handler's result that caused appends up to ``seq``."""

    value: Any
    seq: int


class Raw(msgspec.Struct):
    data: bytes
    headers: dict[str, str] | None = None


def _decode(endpoint: str, data: bytes) -> protocol.Request:
    try:
        return protocol.DECODERS[endpoint].decode(data)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid {endpoint} request: {exc}") from None
    except msgspec.DecodeError:
        raise InvalidRequest(f"invalid {endpoint} request: not JSON") from None
