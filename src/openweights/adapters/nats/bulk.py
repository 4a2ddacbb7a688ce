"""A lean bulk read of a stream on a connection of its own, for ``ow replay``.

Why not nats-py here (the project prefers a well-kept library): a replay reads the
whole log once, and nats-py's per-message delivery (its regex parser, a ``Msg`` and its
header dict per message, the subscription's pending queue and task, a callback
coroutine) was over half of the replay's fold phase. ``bench/replay.py`` measures a
read of 1M events (505k messages) whose callback only counts at ~4.1 µs of client CPU
per message through nats-py's ordered consumer, row (a), and ~1.3 µs through this
reader, row (a''): the frames of a whole chunk of bytes become :class:`StoredMessage`
batches in one loop (:mod:`openweights.adapters.nats.wire`). Live readers (``follow``)
keep using nats-py through :func:`openweights.adapters.nats.reader.read_stream`.

It drives the consumer nats-py's ``ordered_consumer=True`` creates (ephemeral push,
ack none, flow control and heartbeats, memory storage, one replica), answers flow
control once the messages before it were handed over, and on a gap in the consumer
sequence starts a new consumer after the last message handed over (never silent loss).
URLs as ``nats.connect(url)`` reads them: ``nats://`` or ``tls://`` (TLS also when the
server requires it), ``user:password@`` or ``token@``. Not supported: nkeys and creds
files, a TLS-first handshake, websockets, a list of servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import ssl
from typing import Any
from urllib.parse import urlparse

import anyio

from openweights.adapters.nats import wire
from openweights.adapters.nats.reader import OnBatch, ReadStats, StoredMessage
from openweights.errors import (
    InvalidRequest,
    NotFound,
    OpenWeightsError,
    StackUnavailable,
    Unavailable,
)

READ_SIZE = 8 << 20   # take everything buffered at once (StreamReader holds <= 2 * LIMIT)
LIMIT = 1 << 20
MAX_RESTARTS = 3      # consumers started in a row without a message delivered
STREAM_NOT_FOUND = 10059


class ReadFailed(Unavailable):
    """The stream could not be read to the end; the message says why."""


class _Connection:
    """One NATS connection: frames out, parsed frames in; answers PING itself."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = wire.Parser()

    @classmethod
    async def open(cls, url: str, timeout_s: float) -> _Connection:
        uri = urlparse(url if "://" in url else f"nats://{url}")
        host, port = uri.hostname or "127.0.0.1", uri.port or 4222
        try:
            with anyio.fail_after(timeout_s):
                reader, writer = await asyncio.open_connection(host, port, limit=LIMIT)
                conn = cls(reader, writer)
                try:
                    await conn._handshake(uri.scheme == "tls", host, uri.username, uri.password)
                except BaseException:
                    writer.close()
                    raise
        except OpenWeightsError:
            raise  # the server answered (an Unavailable is a ConnectionError, an OSError)
        except (OSError, TimeoutError) as exc:
            raise StackUnavailable(f"cannot connect to nats-server at {host}:{port}: "
                                   f"{exc or 'timed out'}") from exc
        return conn

    async def _handshake(self, tls: bool, host: str, user: str | None,
                         password: str | None) -> None:
        line = await self.reader.readline()
        if not line.startswith(b"INFO "):
            raise ReadFailed(f"expected INFO from nats-server, got {line[:80]!r}")
        info = json.loads(line[5:])
        if tls or info.get("tls_required"):
            await self.writer.start_tls(ssl.create_default_context(), server_hostname=host)
        if not info.get("headers"):
            raise ReadFailed("this nats-server does not support headers (needs >= 2.2)")
        options: dict[str, Any] = {"verbose": False, "pedantic": False, "lang": "python3",
                                   "version": "openweights-bulk", "protocol": 1,
                                   "headers": True, "no_responders": True,
                                   "name": "openweights bulk read"}
        if user is not None and password is not None:
            options |= {"user": user, "pass": password}
        elif user is not None:
            options["auth_token"] = user
        self.send(wire.connect_line(options), b"PING\r\n")
        while True:
            _, controls = await self.receive()
            if any(c.kind is wire.Kind.PONG for c in controls):
                return

    def send(self, *frames: bytes) -> None:
        self.writer.write(b"".join(frames))

    async def receive(self) -> tuple[list[StoredMessage], list[wire.Control]]:
        # read() does not yield while bytes are buffered, and they nearly always are
        # during a bulk read: without this the caller's other tasks (a COPY of what was
        # read...) would wait for the end of the stream.
        await asyncio.sleep(0)
        data = await self.reader.read(READ_SIZE)
        if not data:
            raise ReadFailed("nats-server closed the connection")
        msgs, controls = self.parser.feed(data)
        for c in controls:
            if c.kind is wire.Kind.PING:
                self.send(b"PONG\r\n")
            elif c.kind is wire.Kind.ERROR:
                raise ReadFailed(f"nats-server: {c.text}")
        return msgs, controls

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def _inbox() -> str:
    return f"_INBOX.{secrets.token_hex(11)}"


def _check_stream_name(stream: str) -> str:
    if not stream or any(ch in stream for ch in " \t\r\n.*>"):
        raise InvalidRequest(f"not a stream name: {stream!r}")
    return stream


class _OrderedRead:
    """The consumer side: create, restart after a gap, cut at the stop, delete."""

    def __init__(self, conn: _Connection, stream: str, on_batch: OnBatch, *,
                 filter_subjects: list[str] | None, start_seq: int, stop_seq: int | None,
                 stop_time_ns: int | None, timeout_s: float, heartbeat_s: float) -> None:
        self.conn, self.stream, self.on_batch = conn, _check_stream_name(stream), on_batch
        self.filter_subjects, self.stop_seq, self.stop_time_ns = (
            filter_subjects, stop_seq, stop_time_ns)
        self.timeout_s, self.heartbeat_s = timeout_s, heartbeat_s
        self.stats = ReadStats(last_seq=start_seq - 1)
        self.api_inbox, self.sid = _inbox(), 1
        self.consumers: list[str] = []  # created on the server, deleted at the end
        self.unanswered: set[int] = set()  # sids whose CONSUMER.CREATE has no answer yet
        self.created = False
        self.restarts = 0
        conn.send(wire.sub(f"{self.api_inbox}.*", 1))

    async def run(self) -> ReadStats:
        self.start()
        while True:
            try:
                # asyncio's own timeout: an anyio scope per chunk costs a lookup of the
                # running library each time, and this reader is asyncio's streams anyway.
                async with asyncio.timeout(
                        3 * self.heartbeat_s if self.created else self.timeout_s):
                    msgs, controls = await self.conn.receive()
            except TimeoutError:
                if not self.created:
                    raise ReadFailed(f"JetStream did not answer within {self.timeout_s} s "
                                     f"(creating a consumer on {self.stream})") from None
                self.restart("no heartbeat for three intervals")
                continue
            done, answer, gap = False, [], ""
            for c in controls:
                match c.kind:
                    case wire.Kind.REPLY if c.sid == 1:
                        done |= self.created_reply(c)
                    case wire.Kind.FLOW_CONTROL:
                        answer.append(wire.pub(c.reply))
                    case wire.Kind.HEARTBEAT if "Nats-Consumer-Stalled" in c.headers:
                        answer.append(wire.pub(c.headers["Nats-Consumer-Stalled"]))
                    case wire.Kind.GAP:
                        gap = c.text
                    case wire.Kind.STATUS:
                        raise ReadFailed(f"consumer on {self.stream}: {c.status} {c.text}")
            if msgs:
                done |= await self.deliver(msgs)
            if answer:  # only now: everything delivered before them was handed over
                self.conn.send(*answer)
            if done:
                return self.stats
            if gap:
                self.restart(gap)

    def start(self) -> None:
        """A consumer from the message after the last one handed over."""
        self.sid += 1
        self.created = False
        deliver = _inbox()
        config: dict[str, Any] = {
            "deliver_subject": deliver, "deliver_policy": "by_start_sequence",
            "opt_start_seq": self.stats.last_seq + 1, "ack_policy": "none", "max_deliver": 1,
            "flow_control": True, "idle_heartbeat": int(self.heartbeat_s * 1e9),
            "mem_storage": True, "num_replicas": 1, "inactive_threshold": int(60e9)}
        if self.filter_subjects and len(self.filter_subjects) == 1:
            config["filter_subject"] = self.filter_subjects[0]
        elif self.filter_subjects:
            config["filter_subjects"] = self.filter_subjects
        request = json.dumps({"stream_name": self.stream, "config": config}).encode()
        self.unanswered.add(self.sid)
        self.conn.parser.follow(self.sid)
        self.conn.send(wire.sub(deliver, self.sid),
                       wire.pub(f"$JS.API.CONSUMER.CREATE.{self.stream}", request,
                                reply=f"{self.api_inbox}.{self.sid}"))

    def restart(self, why: str) -> None:
        self.restarts += 1
        if self.restarts > MAX_RESTARTS:
            raise ReadFailed(f"reading {self.stream} after seq {self.stats.last_seq}: {why}, "
                             f"{MAX_RESTARTS} consumers in a row delivered nothing")
        self.conn.send(wire.unsub(self.sid))
        self.start()

    def created_reply(self, c: wire.Control) -> bool:
        """Handle a CONSUMER.CREATE answer; True when there is nothing to read."""
        self.unanswered.discard(int(c.subject.rpartition(".")[2]))
        if c.status == 503:
            raise ReadFailed("JetStream is not enabled on this nats-server (no responders)")
        body = json.loads(c.data)
        if "error" in body:
            err = body["error"]
            if err.get("err_code") == STREAM_NOT_FOUND:
                raise NotFound(f"no stream {self.stream!r} on this nats-server")
            raise ReadFailed(f"creating a consumer on {self.stream}: {err.get('description')} "
                             f"(JetStream error {err.get('err_code')})")
        self.consumers.append(body["name"])
        if not c.subject.endswith(f".{self.sid}"):
            return False  # the answer for a consumer we already replaced
        self.created = True
        return int(body.get("num_pending", 0)) == 0 and int(body["delivered"]["consumer_seq"]) == 0

    async def deliver(self, msgs: list[StoredMessage]) -> bool:
        """Hand over what is before the stop; True when the read is done."""
        self.restarts = 0
        stop_seq, stop_ns = self.stop_seq, self.stop_time_ns
        done = False
        caught_up = self.conn.parser.caught_up_at
        if caught_up is not None:
            msgs, done = msgs[:caught_up + 1], True
        if (stop_seq is not None and msgs[-1].seq >= stop_seq) or (
                stop_ns is not None and msgs[-1].ts_ns > stop_ns):
            keep = 0
            while keep < len(msgs) and (stop_seq is None or msgs[keep].seq <= stop_seq) and (
                    stop_ns is None or msgs[keep].ts_ns <= stop_ns):
                keep += 1
            done = done or keep < len(msgs) or msgs[-1].seq == stop_seq
            msgs = msgs[:keep]
        if msgs:
            await self.on_batch(msgs)
            self.stats.last_seq = msgs[-1].seq
            self.stats.messages += len(msgs)
        return done

    async def delete_consumers(self) -> None:
        """Best effort (they also vanish after ``inactive_threshold`` without interest).

        A read can be done before the server said which consumer it created (the
        deliveries may come first): that answer is awaited, to name the consumer.
        """
        self.conn.send(wire.unsub(self.sid))
        with anyio.move_on_after(self.timeout_s):
            while self.unanswered:
                _, controls = await self.conn.receive()
                for c in controls:
                    if c.kind is wire.Kind.REPLY and c.sid == 1:
                        with contextlib.suppress(OpenWeightsError):
                            self.created_reply(c)
            for name in self.consumers:
                self.conn.send(wire.pub(f"$JS.API.CONSUMER.DELETE.{self.stream}.{name}",
                                        reply=f"{self.api_inbox}.0"))
            answered = 0
            while answered < len(self.consumers):
                _, controls = await self.conn.receive()
                answered += sum(c.kind is wire.Kind.REPLY and c.subject.endswith(".0")
                                for c in controls)


async def bulk_read(url: str, stream: str, on_batch: OnBatch, *,
                    filter_subjects: list[str] | None = None, start_seq: int = 1,
                    stop_seq: int | None = None, stop_time_ns: int | None = None,
                    timeout_s: float = 5.0, heartbeat_s: float = 5.0) -> ReadStats:
    """Deliver the stored messages of ``stream`` from ``start_seq`` to ``on_batch`` in
    order, until caught up (as :func:`~openweights.adapters.nats.reader.read_stream`
    without ``follow``): stops after ``stop_seq``, or before the first message stored
    after ``stop_time_ns``.

    Raises :class:`~openweights.errors.NotFound` for a missing stream,
    :class:`~openweights.errors.StackUnavailable` when nats-server cannot be reached,
    and :class:`ReadFailed` when the server refused or stopped answering.
    """
    stats = ReadStats(last_seq=start_seq - 1)
    if stop_seq is not None and stop_seq < start_seq:
        return stats
    conn = await _Connection.open(url, timeout_s)
    try:
        read = _OrderedRead(conn, stream, on_batch, filter_subjects=filter_subjects,
                            start_seq=start_seq, stop_seq=stop_seq, stop_time_ns=stop_time_ns,
                            timeout_s=timeout_s, heartbeat_s=heartbeat_s)
        try:
            return await read.run()
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(
                    OSError, ReadFailed, wire.ProtocolError):
                await read.delete_consumers()
    finally:
        with anyio.CancelScope(shield=True):
            await conn.close()
