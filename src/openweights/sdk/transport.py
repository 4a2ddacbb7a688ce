"""Requests to the api service, with retries through outages and typed errors.

Every call carries a request id that stays the same across its retries, so a command
whose reply was lost is not applied twice. Transient failures (no responder, timeout,
reconnecting) are retried with jittered exponential backoff up to ``retry_for_s``;
anything else is raised at once as the package's own typed error.
"""

from __future__ import annotations

import os
import random
import socket
import uuid
from typing import Any

import anyio
import msgspec
import nats
import nats.errors
from nats.aio.client import Client

from openweights.api import protocol
from openweights.config import Settings
from openweights.errors import OpenWeightsError, StackUnavailable, Unavailable, from_wire
from openweights.stack import resolve
from openweights.subjects import Subjects

_TRANSIENT = (nats.errors.NoRespondersError, nats.errors.TimeoutError,
              nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError)


class Transport:
    def __init__(self, settings: Settings, api_key: str | None = None,
                 retry_for_s: float = 60.0) -> None:
        self.settings = settings
        self.api_key = api_key
        self.subjects = Subjects(settings.namespace)
        self.org = settings.default_org
        self.retry_for_s = retry_for_s
        self.seen_seq = 0  # the newest log position this client caused: read-your-writes
        self.nc: Client | None = None

    async def connect(self) -> Client:
        if self.nc is not None and not self.nc.is_closed:
            return self.nc
        settings = resolve(self.settings)
        try:
            self.nc = await nats.connect(
                settings.nats_url, name=f"ow-sdk-{socket.gethostname()}-{os.getpid()}",
                max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=5,
                allow_reconnect=True, token=self.api_key)
        except Exception as exc:  # nats-py raises unrelated types for "cannot connect"
            raise StackUnavailable(
                f"cannot reach openweights at {settings.nats_url} ({exc}); is `ow up` running?"
            ) from exc
        return self.nc

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.drain()
        self.nc = None

    def subject(self, endpoint: str) -> str:
        return self.subjects.api(self.org, endpoint)

    async def call(self, endpoint: str, *, read: bool = False, **fields: Any) -> Any:
        """Send ``endpoint`` a request built from ``fields``; return its result."""
        request_type = protocol.ENDPOINTS[endpoint]
        try:
            body = request_type(request_id=uuid.uuid4().hex,
                                min_seq=self.seen_seq if read else 0, **fields)
        except (TypeError, msgspec.ValidationError) as exc:
            from openweights.errors import InvalidRequest

            raise InvalidRequest(f"invalid arguments for {endpoint}: {exc}") from None
        payload = protocol.encoder.encode(body)
        delay, deadline = 0.1, anyio.current_time() + self.retry_for_s
        while True:
            msg = await self.request(self.subject(endpoint), payload)
            try:
                return self.unwrap(msg.data)
            except OpenWeightsError as exc:
                # The same request id again: a retried command is applied at most once.
                if not exc.retryable or anyio.current_time() + delay > deadline:
                    raise
                await anyio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)

    def unwrap(self, data: bytes) -> Any:
        try:
            reply = protocol.reply_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise OpenWeightsError(f"malformed reply from the api service: {exc}") from None
        if reply.error is not None:
            raise from_wire(reply.error.code, reply.error.message)
        self.seen_seq = max(self.seen_seq, reply.seq)
        return reply.ok

    async def request(self, subject: str, payload: bytes,
                      headers: dict[str, str] | None = None) -> Any:
        nc = await self.connect()
        delay, deadline = 0.1, anyio.current_time() + self.retry_for_s
        while True:
            try:
                return await nc.request(subject, payload, timeout=self.settings.request_timeout_s,
                                        headers=headers)
            except _TRANSIENT as exc:
                if anyio.current_time() + delay > deadline:
                    raise Unavailable(f"the api service did not answer {subject} for "
                                      f"{self.retry_for_s:.0f} s ({type(exc).__name__})") from exc
                await anyio.sleep(delay * (0.5 + random.random()))  # backoff between retries
                delay = min(delay * 2, 5.0)
