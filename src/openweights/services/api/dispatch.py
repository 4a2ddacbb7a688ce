"""One request, end to end: who asks, what they ask, the handler's answer or a typed error.

Foreign exceptions are translated into the package's error codes here, at the edge: a
value Postgres refuses is the request's fault, an outage of a backing store is
retryable, anything else is a bug reported as ``internal`` (and logged) without
stopping the service.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import nats.errors
import nats.js.errors
import structlog
from nats.micro.service import Request

from openweights.api import protocol
from openweights.domain.aggregates import TOKEN
from openweights.errors import (
    InvalidRequest,
    OpenWeightsError,
    PayloadTooLarge,
    ReplyTooLarge,
    Unavailable,
)
from openweights.services.api import auth
from openweights.services.api.context import Context, Deps, Handler, Page, Raw, Seq

log = structlog.get_logger("api")
# Room left in a message for its headers and framing: a reply's body gets the rest.
REPLY_HEADROOM = 4096

# A stream leader cut off or being elected answers none of these; the SDK's retry (same
# request id: applied at most once) rides through what a 500 "internal" would not.
_OUTAGES = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError, nats.errors.TimeoutError,
            nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError,
            nats.errors.NoRespondersError, nats.errors.FlushTimeoutError,
            nats.js.errors.NoStreamResponseError, nats.js.errors.ServiceUnavailableError)


async def handle(d: Deps, handler: Handler, endpoint: str, req: Request) -> None:
    """Answer ``req`` (on ``<ns>api.<org>.<principal>.<endpoint>``) with ``handler``."""
    try:
        ctx, body, seen = await _admit(d, endpoint, req)
        result = await handler(d, ctx, body)
        seq = seen  # the log position this reply reflects
        if isinstance(result, Seq):
            result, seq = result.value, result.seq
        if isinstance(result, Raw):
            await _respond(d, endpoint, req, result.data, result.headers)
            return
        reply = (protocol.Reply(ok=result.items, seq=seq, next=result.next)
                 if type(result) is Page else protocol.Reply(ok=result, seq=seq))
        await _respond(d, endpoint, req, protocol.encoder.encode(reply))
    except OpenWeightsError as exc:
        await _error(d, endpoint, req, exc.code, exc.message)
    except asyncpg.DataError as exc:  # a value Postgres refuses: the request's fault
        await _error(d, endpoint, req, InvalidRequest.code, f"invalid {endpoint} request: {exc}")
    except _OUTAGES as exc:  # Postgres or JetStream away: retryable, the SDK retries
        log.warning("api.dependency_unavailable", endpoint=endpoint, error=str(exc))
        await _error(d, endpoint, req, Unavailable.code, f"{endpoint}: a backing store is "
                     f"unavailable ({type(exc).__name__}); retry shortly")
    except Exception as exc:  # a bug must not kill the service; the caller learns of it
        log.exception("api.handler_failed", endpoint=endpoint)
        await _error(d, endpoint, req, "internal", f"internal error in {endpoint}: {exc}")


async def _admit(d: Deps, endpoint: str, req: Request) -> tuple[Context, Any, int]:
    """Who asks (checked against the endpoint), the decoded request, and the log
    position it asked to read at (``min_seq``), waited for."""
    _, org, principal_id = req.subject.split(".", 3)[:3]
    principal = auth.resolve(d.settings.auth, org, principal_id,
                             d.fold.get(org, TOKEN, principal_id), d.clock())
    auth.check_endpoint(principal, endpoint)
    ctx = Context(org=org, principal=principal, raw=req)
    if endpoint == protocol.UPLOAD_CHUNK:
        return ctx, req.data, 0
    if len(req.data) > protocol.MAX_REQUEST_BYTES:
        raise PayloadTooLarge(f"request of {len(req.data)} bytes exceeds "
                              f"{protocol.MAX_REQUEST_BYTES}; upload large data as a file")
    body = decode(endpoint, req.data)
    if body.v != protocol.PROTOCOL_VERSION:
        raise InvalidRequest(f"protocol version {body.v} is not supported "
                             f"(this service speaks {protocol.PROTOCOL_VERSION})")
    seen = await d.reads.wait_projected(body.min_seq) if body.min_seq else 0
    return ctx, body, seen


async def _error(d: Deps, endpoint: str, req: Request, code: str, message: str) -> None:
    body = protocol.Reply(error=protocol.ErrorBody(code=code, message=message))
    await _respond(d, endpoint, req, protocol.encoder.encode(body))


async def _respond(d: Deps, endpoint: str, req: Request, data: bytes,
                   headers: dict[str, str] | None = None) -> None:
    limit = d.nc.max_payload - REPLY_HEADROOM
    if len(data) > limit:  # the server would refuse it: say so instead (no traceback)
        log.warning("api.reply_too_large", endpoint=endpoint, bytes=len(data), limit=limit)
        data, headers = _too_large(endpoint, len(data), limit), None
    try:
        await req.respond(data, headers=headers)
    except ValueError:
        # A publish without a reply subject: nobody to answer. Raising here would end
        # the service's task group, so one stray message would stop the api.
        log.warning("api.no_reply_subject", subject=req.subject)


def _too_large(endpoint: str, size: int, limit: int) -> bytes:
    message = (f"the reply to {endpoint} would be {size} bytes, over the {limit} one message "
               "may carry (the server's max_payload): ask for less (a smaller limit, fewer "
               "keys), or read the large value on its own, page by page (events.list, "
               "events.latest with keys, files.read)")
    return protocol.encoder.encode(protocol.Reply(
        error=protocol.ErrorBody(code=ReplyTooLarge.code, message=message)))


def decode(endpoint: str, data: bytes) -> protocol.Request:
    """The request ``data`` holds. Raises :class:`InvalidRequest` naming what is wrong."""
    try:
        body: protocol.Request = protocol.DECODERS[endpoint].decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid {endpoint} request: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec raises the latter itself
        raise InvalidRequest(f"invalid {endpoint} request: not JSON") from None
    except RecursionError:  # msgspec's answer to JSON nested deeper than it recurses
        raise InvalidRequest(f"invalid {endpoint} request: nested too deeply") from None
    # Deeper values decode, then break what walks them later (Postgres' codecs, error
    # messages): bounded here. Only a payload with that many brackets can be that deep.
    if data.count(b"{") + data.count(b"[") > protocol.MAX_NESTING and _deeper_than(
            msgspec.json.decode(data), protocol.MAX_NESTING):
        raise InvalidRequest(f"invalid {endpoint} request: values may nest at most "
                             f"{protocol.MAX_NESTING} deep")
    # Postgres stores no NUL in text or jsonb: an appended one would stop the projector
    # at that event for good. In JSON a NUL can only be written as this escape.
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
