"""Reading the log in order, fast.

nats-py's ``fetch()``/``next_msg()`` await a future per message (28-45k msg/s here); a
callback on an ordered push consumer runs at ~140k msg/s, so every reader here is built
on that callback and hands the caller batches. A one-off read of a whole stream (``ow
replay``) goes through :mod:`openweights.adapters.nats.bulk` instead, which skips
nats-py's per-message delivery altogether.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from openweights.eventlog import OnBatch, StoredMessage


@dataclass
class ReadStats:
    last_seq: int = 0
    messages: int = 0


async def read_stream(
    nc: Client,
    js: JetStreamContext,
    stream: str,
    on_batch: OnBatch,
    *,
    filter_subjects: list[str] | None = None,
    start_seq: int = 1,
    stop_seq: int | None = None,
    stop_time_ns: int | None = None,
    follow: bool = False,
    started: Callable[[], None] | None = None,
) -> ReadStats:
    """Deliver stored messages from ``start_seq`` to ``on_batch`` in order.

    Stops after ``stop_seq``, before the first message stored after ``stop_time_ns``,
    or (unless ``follow``) once caught up with the stream. With ``follow`` it keeps
    delivering new messages until cancelled; ``started`` is called once caught up.
    """
    stats = ReadStats(last_seq=start_seq - 1)
    info = await js.stream_info(stream)
    end = info.state.last_seq if stop_seq is None else min(stop_seq, info.state.last_seq)
    if not follow and end < start_seq:
        return stats
    deliveries = _Deliveries(stop_seq, stop_time_ns, follow)
    config = ConsumerConfig(filter_subjects=filter_subjects or None,
                            opt_start_seq=start_seq, deliver_policy=DeliverPolicy.BY_START_SEQUENCE)
    sub = await js.subscribe(filter_subjects[0] if filter_subjects else ">", stream=stream,
                             cb=deliveries.on_msg, ordered_consumer=True, config=config,
                             pending_msgs_limit=-1, pending_bytes_limit=-1)
    try:
        await _hand_out(sub, deliveries, on_batch, stats, follow, started)
        return stats
    finally:
        with anyio.CancelScope(shield=True):
            await sub.unsubscribe()


class _Deliveries:
    """What the ordered consumer delivered and was not handed out yet, and whether the
    read caught up with the stream (``caught_up``) or reached its end (``done``)."""

    __slots__ = ("buffer", "caught_up", "done", "follow", "stop_seq", "stop_time_ns", "wake")

    def __init__(self, stop_seq: int | None, stop_time_ns: int | None, follow: bool) -> None:
        self.stop_seq, self.stop_time_ns, self.follow = stop_seq, stop_time_ns, follow
        self.buffer: list[StoredMessage] = []
        self.wake = anyio.Event()
        self.caught_up = self.done = False

    async def on_msg(self, msg: Msg) -> None:
        if self.done:
            return
        seq, ts, pending = parse_ack_reply(msg.reply)
        stop_seq = self.stop_seq
        if (stop_seq is not None and seq > stop_seq) or (
                self.stop_time_ns is not None and ts > self.stop_time_ns):
            self.done = True
        else:
            self.buffer.append(StoredMessage(seq, ts, msg.subject, msg.data))
            if pending == 0 or (stop_seq is not None and seq >= stop_seq):
                self.caught_up = True
                self.done = self.done or not self.follow or (
                    stop_seq is not None and seq >= stop_seq)
        self.wake.set()


async def _hand_out(sub: object, deliveries: _Deliveries, on_batch: OnBatch, stats: ReadStats,
                    follow: bool, started: Callable[[], None] | None) -> None:
    """Hand what arrives to ``on_batch`` in batches until the read is done (or, with
    ``follow``, cancelled); ``started`` once caught up."""
    announced = False
    if await _nothing_to_read(sub):
        if not follow:
            return
        announced = True
        if started is not None:
            started()
    while True:
        await deliveries.wake.wait()
        deliveries.wake = anyio.Event()
        batch, deliveries.buffer = deliveries.buffer, []
        if batch:
            await on_batch(batch)
            stats.last_seq = batch[-1].seq
            stats.messages += len(batch)
        if deliveries.caught_up and not announced:
            announced = True
            if started is not None:
                started()
        if deliveries.done and not deliveries.buffer:
            return


async def _nothing_to_read(sub: object) -> bool:
    info = await sub.consumer_info()  # type: ignore[attr-defined]
    # Count deliveries (consumer_seq): a filtered consumer advances its stream_seq past
    # messages it skips without delivering any, and waiting for one would never end.
    return int(info.num_pending) == 0 and int(info.delivered.consumer_seq) == 0


def parse_ack_reply(reply: str) -> tuple[int, int, int]:
    """``(stream_seq, timestamp_ns, num_pending)`` from a JetStream delivery's reply subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` (the v1
    form; v2 adds a domain and account hash in front, so count from the end).
    """
    parts = reply.split(".")
    return int(parts[-4]), int(parts[-2]), int(parts[-1])
