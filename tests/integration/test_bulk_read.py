"""The lean bulk reader on a real nats-server, checked against nats-py's ordered consumer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from openweights.adapters.embedded import EmbeddedNats, free_port
from openweights.adapters.nats import bulk
from openweights.adapters.nats.bulk import bulk_read
from openweights.adapters.nats.reader import StoredMessage, read_stream
from openweights.adapters.nats.server_config import NatsAuthConfig
from openweights.errors import InvalidRequest, NotFound, StackUnavailable

pytestmark = pytest.mark.anyio


class Collect:
    def __init__(self) -> None:
        self.msgs: list[StoredMessage] = []
        self.batches = 0

    async def __call__(self, batch: list[StoredMessage]) -> None:
        self.msgs += batch
        self.batches += 1


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[Client]:
    conn = await nats.connect(nats_server.url)
    yield conn
    await conn.close()


async def _stream(nc: Client, n: int, size: int = 40) -> str:
    """A stream of ``n`` messages on ``<name>.0..4``; every third carries headers."""
    name = f"B{uuid.uuid4().hex[:10]}"
    js = nc.jetstream()
    await js.add_stream(name=name, subjects=[f"{name}.>"])
    acks = [await js.publish(f"{name}.{i % 5}", b"%08d" % i + b"x" * (size - 8),
                             headers={"K": str(i)} if i % 3 == 0 else None)
            for i in range(n)] if n <= 200 else await _publish_fast(nc, name, n, size)
    assert len(acks) == n
    return name


async def _publish_fast(nc: Client, name: str, n: int, size: int) -> list[object]:
    js = nc.jetstream(publish_async_max_pending=4000)
    for i in range(n):
        await js.publish_async(f"{name}.{i % 5}", b"%08d" % i + b"x" * (size - 8),
                               headers={"K": str(i)} if i % 3 == 0 else None)
    await js.publish_async_completed()
    return [None] * n


async def _reference(nc: Client, stream: str, **kwargs: object) -> list[StoredMessage]:
    got = Collect()
    await read_stream(nc, nc.jetstream(), stream, got, **kwargs)  # type: ignore[arg-type]
    return got.msgs


async def _consumers(nc: Client, stream: str) -> int:
    return int((await nc.jetstream().stream_info(stream)).state.consumer_count)


async def test_reads_everything_in_order_as_nats_py_does(nats_server: EmbeddedNats,
                                                         nc: Client) -> None:
    stream = await _stream(nc, 150)
    got = Collect()
    stats = await bulk_read(nats_server.url, stream, got)
    assert await _consumers(nc, stream) == 0  # deleted, not left to time out
    assert [m.seq for m in got.msgs] == list(range(1, 151))
    assert got.msgs == await _reference(nc, stream)
    assert got.msgs[3].data.startswith(b"00000003")  # headers are not part of the data
    assert (stats.last_seq, stats.messages) == (150, 150)


async def test_start_and_stop_seq(nats_server: EmbeddedNats, nc: Client) -> None:
    stream = await _stream(nc, 60)
    got = Collect()
    stats = await bulk_read(nats_server.url, stream, got, start_seq=11, stop_seq=20)
    assert [m.seq for m in got.msgs] == list(range(11, 21))
    assert (stats.last_seq, stats.messages) == (20, 10)
    assert got.msgs == await _reference(nc, stream, start_seq=11, stop_seq=20)
    none = Collect()
    assert (await bulk_read(nats_server.url, stream, none, start_seq=61)).messages == 0
    assert (await bulk_read(nats_server.url, stream, none, start_seq=5, stop_seq=4)).last_seq == 4
    assert none.batches == 0


async def test_stop_time_ns_stops_before_the_first_later_message(nats_server: EmbeddedNats,
                                                                  nc: Client) -> None:
    stream = await _stream(nc, 30)
    first = Collect()
    await bulk_read(nats_server.url, stream, first, stop_seq=12)
    cut = first.msgs[-1].ts_ns
    got = Collect()
    stats = await bulk_read(nats_server.url, stream, got, stop_time_ns=cut)
    assert got.msgs and all(m.ts_ns <= cut for m in got.msgs)
    assert got.msgs == await _reference(nc, stream, stop_time_ns=cut)
    assert stats.last_seq == got.msgs[-1].seq >= 12


async def test_filter_subjects(nats_server: EmbeddedNats, nc: Client) -> None:
    stream = await _stream(nc, 50)
    for filters in ([f"{stream}.1"], [f"{stream}.1", f"{stream}.3"], [f"{stream}.9"]):
        got = Collect()
        await bulk_read(nats_server.url, stream, got, filter_subjects=filters)
        assert {m.subject for m in got.msgs} == set(filters) & {m.subject for m in got.msgs}
        assert len(got.msgs) == 10 * len(set(filters) - {f"{stream}.9"})
        assert got.msgs == await _reference(nc, stream, filter_subjects=filters)
    got = Collect()
    await bulk_read(nats_server.url, stream, got, filter_subjects=[f"{stream}.2"], stop_seq=30)
    assert [m.seq for m in got.msgs] == [3, 8, 13, 18, 23, 28]


async def test_an_empty_stream_calls_nothing_and_leaves_no_consumer(
        nats_server: EmbeddedNats, nc: Client) -> None:
    stream = await _stream(nc, 0)
    got = Collect()
    stats = await bulk_read(nats_server.url, stream, got)
    assert (stats.last_seq, stats.messages, got.batches) == (0, 0, 0)
    assert await _consumers(nc, stream) == 0


async def test_flow_control_over_a_large_stream(nats_server: EmbeddedNats, nc: Client,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # 20k messages of 4 kB (80 MB) are more than the server sends without a flow-control
    # answer; small reads make the reader hand over (and answer) in many small steps.
    stream = await _stream(nc, 20_000, size=4000)
    monkeypatch.setattr(bulk, "READ_SIZE", 256 << 10)
    monkeypatch.setattr(bulk, "LIMIT", 128 << 10)
    seen: list[int] = []

    async def check(batch: list[StoredMessage]) -> None:
        seen.extend(m.seq for m in batch)
        assert all(int(m.data[:8]) == m.seq - 1 for m in batch)

    stats = await bulk_read(nats_server.url, stream, check)
    assert seen == list(range(1, 20_001))
    assert stats.messages == 20_000
    assert await _consumers(nc, stream) == 0


async def test_a_lost_delivery_restarts_the_consumer_after_the_last_handed_over(
        nats_server: EmbeddedNats, nc: Client) -> None:
    stream = await _stream(nc, 3000, size=200)
    conn = await bulk._Connection.open(nats_server.url, 5.0)
    seen: list[int] = []

    async def lose_one(batch: list[StoredMessage]) -> None:
        seen.extend(m.seq for m in batch)
        if len(seen) == len(batch):  # after the first batch, "lose" the next delivery
            conn.parser._next_cseq += 1

    try:
        read = bulk._OrderedRead(conn, stream, lose_one, filter_subjects=None, start_seq=1,
                                 stop_seq=None, stop_time_ns=None, timeout_s=5.0,
                                 heartbeat_s=5.0)
        stats = await read.run()
        assert len(read.consumers) >= 2
        await read.delete_consumers()
    finally:
        await conn.close()
    assert seen == list(range(1, 3001))
    assert stats.messages == 3000
    assert await _consumers(nc, stream) == 0


async def test_a_missing_or_bad_stream_is_a_clear_error(nats_server: EmbeddedNats) -> None:
    with pytest.raises(NotFound, match="no stream 'NOPE_"):
        await bulk_read(nats_server.url, f"NOPE_{uuid.uuid4().hex[:6]}", Collect())
    with pytest.raises(InvalidRequest, match="not a stream name"):
        await bulk_read(nats_server.url, "A.B", Collect())


async def test_no_server_is_stack_unavailable() -> None:
    with pytest.raises(StackUnavailable, match="cannot connect"):
        await bulk_read(f"nats://127.0.0.1:{free_port()}", "S", Collect(), timeout_s=2)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    home = Path(tmp_path_factory.mktemp("bulk-auth"))
    server = EmbeddedNats(home / "nats", auth=NatsAuthConfig.load_or_create(
        home / "auth.json")).start()
    yield server
    server.stop()


async def test_credentials_in_the_url(auth_server: EmbeddedNats) -> None:
    conn = await nats.connect(auth_server.url_for("svc"))
    try:
        stream = await _stream(conn, 20)
        got = Collect()
        await bulk_read(auth_server.url_for("svc"), stream, got)
        assert got.msgs == await _reference(conn, stream)
    finally:
        await conn.close()
    wrong = auth_server.url_for("svc").replace("svc:", "svc:x")
    with pytest.raises(bulk.ReadFailed, match=r"(?i)authorization"):
        await bulk_read(wrong, stream, Collect())
