"""A hand-written nats-py client with a valid token of org A (issue 5, Enforcement).

It subscribes to everything it can think of while org B works (submits jobs, logs
events and output lines, uploads, manages tokens and secrets) and must not receive a
single message of B; what it publishes to B's or the JetStream API's subjects gets no
reply and appends nothing to any stream.
"""

from __future__ import annotations

from typing import Any

import anyio
import nats
import nats.errors
import pytest

from openweights.api import protocol
from tests.tenancy.conftest import (
    B,
    Errors,
    World,
    populate,
    raw_connect,
    wait_flushed,
)

pytestmark = pytest.mark.anyio


def spy_patterns(ns: str) -> list[str]:
    return [">", f"{ns}live.{B}.>", f"{ns}live.>", "_INBOX.>", f"{ns}livelog.>",
            f"{ns}livelog.{B}.>", f"{ns}.>", f"{ns}.{B}.>", "$JS.API.>", "$JS.>", "$JS.ACK.>",
            "$O.>", "$KV.>", "$SYS.>", f"{ns}api.>", f"{ns}api.{B}.>", f"{ns}whoami.>",
            f"{ns}log.>", f"{ns}hb.>", f"{ns}agent.>", f"{ns}agent.{B}.>", "*", "*.>",
            f"{ns}live.*.job.>", f"{ns}livelog.*.*.*"]


async def test_a_raw_client_of_a_receives_nothing_of_b_while_b_works(
        world: World, tmp_path: Any) -> None:
    ns = world.ns
    errors = Errors()
    a = await raw_connect(world, world.tokens["a_admin"], errors)
    foreign: list[tuple[str, str]] = []
    own: list[str] = []
    sentinel, line_sentinel = anyio.Event(), anyio.Event()

    def spy(pattern: str) -> Any:
        async def cb(msg: Any) -> None:
            foreign.append((pattern, msg.subject))
        return cb

    async def on_own(msg: Any) -> None:
        own.append(msg.subject)
        if b"a-sentinel" in msg.data:
            sentinel.set()

    async def on_own_line(msg: Any) -> None:
        if msg.data == b"a-line-sentinel\n":
            line_sentinel.set()

    # The services' user sees what B's work puts on the wire: proof that there was some.
    svc = await nats.connect(str(world.settings.nats_url), allow_reconnect=False)
    seen_by_svc: list[str] = []

    async def on_b(msg: Any) -> None:
        seen_by_svc.append(msg.subject)

    for pattern in (f"{ns}live.{B}.>", f"{ns}livelog.{B}.>", f"_INBOX.{world.tid('b_admin')}.>"):
        await svc.subscribe(pattern, cb=on_b)
    await wait_flushed(svc)
    await a.subscribe(f"{ns}live.orgA.>", cb=on_own)
    await a.subscribe(f"{ns}livelog.orgA.>", cb=on_own_line)
    spies = [await a.subscribe(pattern, cb=spy(pattern)) for pattern in spy_patterns(ns)]
    await wait_flushed(a)
    # B works, through the SDK and a worker's raw publishes (in a thread: the SDK blocks).
    data = await anyio.to_thread.run_sync(populate, world, tmp_path)
    b = world.ow("b_admin")
    await anyio.to_thread.run_sync(lambda: b.jobs.cancel(data.job_b))
    # Then A does something of its own; live messages come in stream order, so once A
    # has it, every earlier message of the events stream that could reach A has.
    ow_a = world.ow("a_admin")
    await anyio.to_thread.run_sync(lambda: ow_a.jobs.submit(
        id_prefix="sentinel", script="s", docker_image="i", params={"s": "a-sentinel"}))
    with anyio.fail_after(5):
        await sentinel.wait()
    # Log lines are republished by another stream, in order only among themselves: a
    # line of A's, stored after B's, is the same for them. (Heartbeats are not
    # republished; a direct publish of B's was on A's connection before B's call returned.)
    a_worker = await anyio.to_thread.run_sync(world.worker_token, "orgA", "wA")
    wa = await raw_connect(world, a_worker)
    await wa.publish(world.subjects.log("orgA", data.run_a, "wA"), b"a-line-sentinel\n")
    await wa.flush()
    with anyio.fail_after(5):
        await line_sentinel.wait()
    await wa.close()
    assert foreign == []
    # Counted as read, before any callback runs: nothing is still on its way to a spy.
    assert [s.subject for s in spies if s.delivered] == []
    kinds = {subject.split(".")[0] for subject in seen_by_svc}
    assert kinds == {f"{ns}live", f"{ns}livelog", "_INBOX"}, kinds
    assert len(seen_by_svc) > 10
    await svc.close()
    assert own and all(s.startswith(f"{ns}live.orgA.") for s in own)
    for pattern in (">", f"{ns}live.{B}.>", "_INBOX.>", f"{ns}livelog.>", "$JS.API.>"):
        await errors.wait_for(f'permissions violation for subscription to "{pattern}"')
    assert a.is_connected  # violations are not fatal
    await a.close()


async def _stream_states(world: World) -> dict[str, tuple[int, int]]:
    nc = await nats.connect(str(world.settings.nats_url), allow_reconnect=False)
    try:
        js = nc.jetstream()
        out = {}
        for info in await js.streams_info():
            if world.subjects.stream_prefix in info.config.name:
                out[info.config.name] = (info.state.last_seq, info.state.consumer_count)
        return out
    finally:
        await nc.close()


async def test_a_publishing_to_bs_and_jetstreams_subjects_gets_nothing_and_appends_nothing(
        world: World, tmp_path: Any) -> None:
    ns, s = world.ns, world.subjects
    data = await anyio.to_thread.run_sync(populate, world, tmp_path)
    a_id, b_id = world.tid("a_admin"), world.tid("b_admin")
    before = await _stream_states(world)
    assert {f"{s.stream_prefix}_EVENTS", f"{s.stream_prefix}_LOGS"} <= set(before)
    # B's worker listens for assignments: nothing A sends may reach it.
    worker = await raw_connect(world, data.worker_b_token)
    got: list[str] = []

    async def on_assignment(msg: Any) -> None:
        got.append(msg.subject)

    await worker.subscribe(s.agent(B, data.worker_b), cb=on_assignment)
    await wait_flushed(worker)
    errors = Errors()
    a = await raw_connect(world, world.tokens["a_admin"], errors)
    submit = protocol.encoder.encode(protocol.JobSubmit(
        id_prefix="evil", script="s", docker_image="i", params={}))
    events = f'[{{"tag": "job.canceled/1", "job_id": "{data.job_b}"}}]'.encode()
    stream = f"{s.stream_prefix}_EVENTS"
    targets = [
        s.api(B, a_id, "jobs.submit"), s.api(B, b_id, "jobs.submit"),
        s.api("orgA", b_id, "jobs.submit"), s.api(B, b_id, "jobs.cancel"),
        s.whoami(b_id), s.aggregate(B, "job", data.job_b), s.aggregate("orgA", "job", "x"),
        s.log(B, data.run_b, data.worker_b), s.heartbeat(B, data.worker_b),
        s.agent(B, data.worker_b), f"{ns}live.{B}.job.{data.job_b}",
        f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}", f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.evil", "$JS.API.STREAM.LIST",
        "$JS.API.INFO", f"$JS.API.STREAM.PURGE.{stream}", f"$JS.API.STREAM.DELETE.{stream}",
        f"$O.{s.stream_prefix}_FILES.C.x", "$SYS.REQ.SERVER.PING.CONNZ",
        "$SYS.REQ.USER.AUTH",
    ]

    async def ask(subject: str) -> None:
        body = submit if "api." in subject else events
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await a.request(subject, body, timeout=0.5)

    async with anyio.create_task_group() as tg:
        for subject in targets:
            tg.start_soon(ask, subject)
    for subject in targets[:3]:
        await errors.wait_for(f'permissions violation for publish to "{subject}"')
    assert await _stream_states(world) == before  # not one message, not one consumer
    assert got == []
    b = world.ow("b_admin")
    assert (await anyio.to_thread.run_sync(b.jobs.retrieve, data.job_b)).status == "in_progress"
    await a.close()
    await worker.close()
