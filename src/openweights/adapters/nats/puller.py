"""A durable pull consumer driven over the raw protocol, with one ack per batch.

One outstanding ``CONSUMER.MSG.NEXT`` request at a time; messages land in a callback
(no per-message future, ~150k msg/s here against ~30k for ``fetch()``). The consumer
uses ``AckPolicy.ALL``: acking the last message of a batch acks the batch, which the
caller does only after it committed what the batch produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from openweights.adapters.nats.reader import StoredMessage, parse_ack_reply


class Puller:
    def __init__(self, nc: Client, js: JetStreamContext, stream: str, durable: str, *,
                 filter_subjects: list[str] | None = None, batch: int = 2000,
                 expires_s: float = 5.0) -> None:
        self.nc, self.js, self.stream, self.durable = nc, js, stream, durable
        self.filter_subjects = filter_subjects
        self.batch, self.expires_ns = batch, int(expires_s * 1e9)
        self._buffer: list[Msg] = []
        self._wake = asyncio.Event()  # per batch: asyncio's, without anyio's lookup
        self._outstanding = 0
        self._inbox = ""
        self._last_reply: str | None = None
        self._heard = 0.0  # when the outstanding request last sent anything, status or not
        self._silence_s = expires_s + 1.0

    async def open(self, start_seq: int) -> None:
        """(Re)create the consumer at ``start_seq``: the caller's checkpoint is the truth."""
        with contextlib.suppress(NotFoundError):
            await self.js.delete_consumer(self.stream, self.durable)
        await self.js.add_consumer(self.stream, ConsumerConfig(
            durable_name=self.durable, ack_policy=AckPolicy.ALL,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq,
            filter_subjects=self.filter_subjects, max_ack_pending=-1, ack_wait=60.0,
            max_waiting=16))
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(self._inbox, cb=self._on_msg)
        await self._request()

    async def _request(self) -> None:
        self._outstanding = self.batch
        self._heard = anyio.current_time()
        body = json.dumps({"batch": self.batch, "expires": self.expires_ns}).encode()
        await self.nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.durable}",
                              body, reply=self._inbox)

    async def _on_msg(self, msg: Msg) -> None:
        self._heard = anyio.current_time()
        if not msg.reply:  # a status: 404 no messages, 408 request expired, 409 ...
            await self._request()
            return
        self._buffer.append(msg)
        self._outstanding -= 1
        if self._outstanding <= 0:
            await self._request()
        self._wake.set()

    async def batches(self) -> AsyncIterator[list[StoredMessage]]:
        """Whatever arrived since the last batch (at least one message), forever."""
        while True:
            # Watchdog, not a wait for a condition: a pull request dies with its server
            # (restart, failover) without a status reply, so ask again after a silence.
            # Only a true silence: a live request ends in a 408 status every `expires`,
            # and re-asking past one would stack requests up to max_waiting, where every
            # further one is refused (409) and re-asked at once, a busy loop.
            try:
                async with asyncio.timeout_at(self._heard + self._silence_s):
                    await self._wake.wait()
            except TimeoutError:
                if anyio.current_time() >= self._heard + self._silence_s:
                    await self._request()
                continue
            self._wake = asyncio.Event()
            msgs, self._buffer = self._buffer, []
            if not msgs:
                continue
            self._last_reply = msgs[-1].reply
            out = []
            for m in msgs:
                seq, ts, _ = parse_ack_reply(m.reply)
                out.append(StoredMessage(seq, ts, m.subject, m.data))
            yield out

    async def ack(self) -> None:
        """Ack everything delivered up to the last batch handed out."""
        if self._last_reply is not None:
            await self.nc.publish(self._last_reply, b"+ACK")

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            if getattr(self, "_sub", None) is not None:
                await self._sub.unsubscribe()
