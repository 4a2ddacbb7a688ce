"""The api service: a NATS micro service that validates commands and answers queries.

Requests arrive on ``<ns>api.<org>.<endpoint>`` (queue group ``api``, so instances share
the load); the organization is the subject's second token. Each request is handled in
its own task, so one slow query never holds up the others.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import asyncpg
import msgspec
import nats.errors
import nats.js.errors
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
from openweights.services.api import auth
from openweights.services.api.auth import Principal
from openweights.services.api.commands import Executor
from openweights.subjects import Subjects

log = structlog.get_logger("api")

Handler = Callable[["Context", Any], Awaitable[Any]]


class Context(msgspec.Struct, frozen=True):
    """Who asks: the organization and principal (from the subject, bound by NATS
    permissions to the connection's token), and the raw request."""

    org: str
    principal: Principal
    raw: Any = None  # the micro Request, for raw-payload endpoints

    @property
    def actor(self) -> Actor:
        return self.principal.actor


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
        self.whoami: Callable[[Any], Awaitable[None]]
        # org -> its decrypted secrets, for the worker starting one of its jobs (tenancy).
        self.org_secrets: Callable[[str], dict[str, str]]
        # Disconnects a revoked token's live connections (set when the callout runs).
        self.kick: Callable[[str], Awaitable[int]] = _no_kick
        self._tg: TaskGroup

    def route(self, endpoint: str) -> Callable[[Handler], Handler]:
        def wrap(fn: Handler) -> Handler:
            self.handlers[endpoint] = fn
            return fn
        return wrap

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        from openweights.services.api import agents, files, jobs, runs, tenancy

        assert self.settings.database_url is not None
        self.pool = await create_pool(self.settings.database_url, min_size=2, max_size=8)
        self.files = await open_file_store(self.settings, self.js)
        try:
            for module in (jobs, runs, files, agents, tenancy):
                module.install(self)
            await self.watcher.start(self.pool)
            async with contextlib.AsyncExitStack() as stack, anyio.create_task_group() as tg:
                self._tg = tg
                callout = None
                if self.settings.auth and self.settings.nats_auth_file is not None:
                    from openweights.services.api import callout as callout_module

                    nc_auth, nc_sys = await stack.enter_async_context(
                        callout_module.callout_connections(self))
                    callout = callout_module.install(self, nc_auth, nc_sys)
                await tg.start(self.fold.run)
                if callout is not None:  # after the fold: tokens must be known first
                    await tg.start(callout.run)
                service = await nats.micro.add_service(self.nc, ServiceConfig(
                    name="openweights-api", version="0.1.0",
                    description="openweights commands and queries"))
                for endpoint in (*protocol.ENDPOINTS, protocol.UPLOAD_CHUNK):
                    pinned = endpoint in protocol.INSTANCE_ENDPOINTS
                    subject = self.subjects.api("*", "*", endpoint)
                    await service.add_endpoint(EndpointConfig(
                        name=endpoint.replace(".", "-"), handler=self._dispatcher(endpoint),
                        subject=f"{subject}.{self.instance}" if pinned else subject,
                        queue_group=f"api-{self.instance}" if pinned else "api"))
                whoami = await self.nc.subscribe(self.subjects.whoami("*"), queue="api",
                                                 cb=self.whoami)
                log.info("api.started", seq=self.fold.seq, endpoints=len(self.handlers))
                task_status.started()
                try:
                    await anyio.sleep_forever()
                finally:
                    with anyio.CancelScope(shield=True):
                        await whoami.unsubscribe()
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
        seen = 0  # the log position this reply reflects
        try:
            _, org, principal_id = req.subject.split(".", 3)[:3]
            principal = auth.resolve(self.settings.auth, org, principal_id,
                                     self.fold.get(org, "token", principal_id))
            auth.check_endpoint(principal, endpoint)
            ctx = Context(org=org, principal=principal, raw=req)
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
                    seen = await self._wait_projected(body.min_seq)
            result = await self.handlers[endpoint](ctx, body)
            seq = seen
            if isinstance(result, Seq):
                result, seq = result.value, result.seq
            if isinstance(result, Raw):
                await _respond(req, result.data, result.headers)
                return
            await _respond(req, protocol.encoder.encode(protocol.Reply(ok=result, seq=seq)))
        except OpenWeightsError as exc:
            await self._error(req, exc.code, exc.message)
        except asyncpg.DataError as exc:  # a value Postgres refuses: the request's fault
            await self._error(req, InvalidRequest.code, f"invalid {endpoint} request: {exc}")
        except _OUTAGES as exc:  # Postgres or JetStream away: retryable, the SDK retries
            log.warning("api.dependency_unavailable", endpoint=endpoint, error=str(exc))
            await self._error(req, Unavailable.code, f"{endpoint}: a backing store is "
                              f"unavailable ({type(exc).__name__}); retry shortly")
        except Exception as exc:  # a bug must not kill the service; the caller learns of it
            log.exception("api.handler_failed", endpoint=endpoint)
            await self._error(req, "internal", f"internal error in {endpoint}: {exc}")

    async def _error(self, req: Request, code: str, message: str) -> None:
        body = protocol.Reply(error=protocol.ErrorBody(code=code, message=message))
        await _respond(req, protocol.encoder.encode(body))

    async def _wait_projected(self, seq: int) -> int:
        """Wait until the read models include ``seq`` (negative: the log's last position
        now, which every message stored before this request precedes); return it."""
        with anyio.move_on_after(self.settings.request_timeout_s / 2) as scope:
            if seq < 0:
                seq = await self.log.last_seq()
            await self.watcher.wait_projected(seq)
        if scope.cancelled_caught:
            raise Unavailable(f"read models are behind log position {seq}; retry shortly")
        return seq


class Seq(msgspec.Struct):
    """A handler's result that caused appends up to ``seq``."""

    value: Any
    seq: int


class Raw(msgspec.Struct):
    data: bytes
    headers: dict[str, str] | None = None


async def _respond(req: Request, data: bytes, headers: dict[str, str] | None = None) -> None:
    try:
        await req.respond(data, headers=headers)
    except ValueError:
        # A publish without a reply subject: nobody to answer. Raising here would end
        # the service's task group, so one stray message would stop the api.
        log.warning("api.no_reply_subject", subject=req.subject)


_OUTAGES = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError, nats.errors.TimeoutError,
            nats.errors.ConnectionClosedError, nats.js.errors.ServiceUnavailableError)


async def _no_kick(token_id: str) -> int:
    return 0


def _decode(endpoint: str, data: bytes) -> protocol.Request:
    try:
        body: protocol.Request = protocol.DECODERS[endpoint].decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid {endpoint} request: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec raises the latter itself
        raise InvalidRequest(f"invalid {endpoint} request: not JSON") from None
    except RecursionError:  # msgspec's answer to JSON nested deeper than it recurses
        raise InvalidRequest(f"invalid {endpoint} request: nested too deeply") from None
    # Postgres stores no NUL in text or jsonb: an appended one would stop the projector
    # at that event for good. In JSON a NUL can only be written as this escape.
    # Deeper values decode, then break what walks them later (Postgres' codecs, error
    # messages): bounded here. Only a payload with that many brackets can be that deep.
    if data.count(b"{") + data.count(b"[") > protocol.MAX_NESTING and _deeper_than(
            msgspec.json.decode(data), protocol.MAX_NESTING):
        raise InvalidRequest(f"invalid {endpoint} request: values may nest at most "
                             f"{protocol.MAX_NESTING} deep")
    if b"\\u0000" in data and _has_nul(msgspec.json.decode(data)):
        raise InvalidRequest(f"invalid {endpoint} request: text may not contain NUL (\\u0000)")
    for name in body.__struct_fields__:  # an instant must exist in UTC (Postgres keeps it so)
        value = getattr(body, name)
        if isinstance(value, datetime) and value.tzinfo is not None:
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise InvalidRequest(f"invalid {endpoint} request: {name} {value.isoformat()} "
                                     "is out of range") from None
    return body


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict | list):
            if depth == limit:
                return True
            stack += [(x, depth + 1) for x in (v.values() if isinstance(v, dict) else v)]
    return False


def _has_nul(value: Any) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str) and "\x00" in v:
            return True
        if isinstance(v, dict):
            stack += [*v, *v.values()]
        elif isinstance(v, list):
            stack += v
    return False
