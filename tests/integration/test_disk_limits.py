"""Disk: what workers publish is bounded, and can never take the event log's disk
(issue 13, finding 4).

On the code before the fix no stream had ``max_bytes`` or ``max_msg_size``, logs were
kept 30 days, and a worker token stored 10 x 7 MiB in 3.4 s. Now every stream bounds its
messages, the side streams their total (oldest discarded), and a job's output lines
reach the disk only through the api's log gate, which holds each run and each
organization to a rate and a size.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import nats
import pytest
from nats.aio.client import Client
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from openweights import OpenWeights
from openweights.adapters.nats.reader import StoredMessage, read_stream
from openweights.bootstrap import prepare
from openweights.config import Settings
from openweights.domain.commands import AssignJob, StartRun
from openweights.errors import RateLimited
from openweights.services.testing.drive import drive_job
from openweights.services.testing.stack import services_thread
from openweights.subjects import Subjects

MiB = 1 << 20


@asynccontextmanager
async def _connect(settings: Settings) -> AsyncIterator[Client]:
    nc = await nats.connect(str(settings.nats_url), allow_reconnect=False)
    try:
        yield nc
    finally:
        await nc.close()


async def _kept(nc: Client, settings: Settings, org: str = "") -> list[StoredMessage]:
    """The stored lines (of ``org``), read raw as the services do."""
    s, out = Subjects(settings.namespace), []

    async def on_batch(batch: list[StoredMessage]) -> None:
        out.extend(batch)

    await read_stream(nc, nc.jetstream(), s.logs_stream, on_batch,
                      filter_subjects=[f"{s.kept_log_prefix}.{org}.>" if org else ">"])
    return out


async def _line(nc: Client, s: Subjects, org: str, run: str, data: bytes,
                worker: str = "w1") -> dict[str, Any]:
    """Publish a line as an agent does, asking for the acknowledgement."""
    reply = await nc.request(s.log(org, run, worker), data, timeout=10)
    ack: dict[str, Any] = json.loads(reply.data)
    return ack


@pytest.mark.anyio
async def test_every_stream_bounds_its_messages_and_the_side_streams_their_total(
        settings: Settings) -> None:
    with services_thread(settings):
        async with _connect(settings) as nc:
            js, s = nc.jetstream(), Subjects(settings.namespace)
            configs = {i.config.name: i.config for i in await js.streams_info()
                       if i.config.name and s.stream_prefix in i.config.name}
            assert set(configs) >= {s.events_stream, s.logs_stream, s.heartbeats_stream}
            for name, config in configs.items():
                assert 0 < (config.max_msg_size or -1) <= 8 * MiB, name
            for name in (s.logs_stream, s.heartbeats_stream):
                assert 0 < (configs[name].max_bytes or -1) <= 1 << 30, name
                assert configs[name].discard == DiscardPolicy.OLD, name
            assert (configs[s.logs_stream].max_age or 0) <= 7 * 24 * 3600
            assert (configs[s.events_stream].max_bytes or -1) == -1  # the log: forever


@pytest.mark.anyio
async def test_a_worker_cannot_store_big_messages(settings: Settings) -> None:
    with services_thread(settings):
        async with _connect(settings) as nc:
            js, s = nc.jetstream(), Subjects(settings.namespace)
            seven = b"x" * (7 * MiB)
            for _ in range(10):
                await _line(nc, s, "default", "run-big", seven)
            assert (await js.stream_info(s.logs_stream)).state.bytes < 2 * MiB
            hb = json.loads((await nc.request(s.heartbeat("default", "w1"), seven,
                                              timeout=10)).data)
            assert "exceeds maximum" in hb["error"]["description"]
            assert (await js.stream_info(s.heartbeats_stream)).state.bytes == 0
            lines = await _kept(nc, settings)  # each line kept, cut
            assert len(lines) == 10
            assert all(len(m.data) <= 128 << 10 for m in lines)
            assert all(m.data.endswith(b" [openweights: line cut]\n") for m in lines)


@pytest.mark.anyio
async def test_a_run_over_its_rate_is_cut_with_a_note_and_others_keep_printing(
        settings: Settings) -> None:
    settings = settings.model_copy(update={
        "log_run_bytes_per_s": 100, "log_run_burst_bytes": 10_000,
        "log_org_bytes_per_s": 100, "log_org_burst_bytes": 15_000})
    with services_thread(settings):
        async with _connect(settings) as nc:
            s, line = Subjects(settings.namespace), b"y" * 999 + b"\n"
            acks = [await _line(nc, s, "orgA", "loud", line) for _ in range(20)]
            kept = [a for a in acks if "seq" in a]
            assert 9 <= len(kept) <= 11 and "error" in acks[-1]
            assert "this run prints more than 100 B/s" in acks[-1]["error"]["description"]
            # Another run of the same org still prints, until the org's rate is spent.
            assert "seq" in await _line(nc, s, "orgA", "quiet", line)
            for _ in range(25):
                last = await _line(nc, s, "orgA", "quiet", line)
            assert "this organization's runs print" in last["error"]["description"]
            # Another organization is not held back by orgA.
            assert "seq" in await _line(nc, s, "orgB", "other", line)
            loud = [m.data for m in await _kept(nc, settings, "orgA")
                    if m.subject.endswith(".loud")]
            assert loud.count(line) == len(kept)
            notes = [d for d in loud if d.startswith(b"[openweights: output dropped:")]
            assert 1 <= len(notes) <= 2  # one a second, not one a line


@pytest.mark.anyio
async def test_a_worker_sending_under_another_workers_run_spends_its_own_budget(
        settings: Settings) -> None:
    settings = settings.model_copy(update={"log_run_bytes_per_s": 100,
                                           "log_run_burst_bytes": 10_000})
    with services_thread(settings):
        async with _connect(settings) as nc:
            s, line = Subjects(settings.namespace), b"z" * 999 + b"\n"
            for _ in range(12):  # the forger's budget for "victim" runs out
                forged = await _line(nc, s, "orgA", "victim", line, worker="mallory")
            assert "error" in forged
            # The run's own worker still prints: its budget is not the forger's.
            assert "seq" in await _line(nc, s, "orgA", "victim", line, worker="w1")


@pytest.mark.anyio
async def test_an_org_over_its_size_keeps_its_newest_lines(settings: Settings) -> None:
    settings = settings.model_copy(update={"log_org_max_bytes": 16_000})
    with services_thread(settings):
        async with _connect(settings) as nc:
            s = Subjects(settings.namespace)
            await _line(nc, s, "orgB", "b1", b"orgB's line\n")
            for i in range(100):
                await _line(nc, s, "orgA", "a1", f"{i:04d}".encode() + b"z" * 495 + b"\n")
            # The gate takes lines one at a time: this one is stored after every purge.
            await _line(nc, s, "orgB", "b1", b"orgB's sentinel\n")
            kept = await _kept(nc, settings, "orgA")
            assert sum(len(m.data) for m in kept) <= 16_000
            assert kept[-1].data.startswith(b"0099") and len(kept) >= 16
            assert [m.data for m in await _kept(nc, settings, "orgB")] == [
                b"orgB's line\n", b"orgB's sentinel\n"]


def _started_job(ow: OpenWeights, settings: Settings, params: dict[str, Any]) -> str:
    job = ow.jobs.submit(id_prefix="ev", script="echo", docker_image="img", params=params)
    anyio.run(drive_job, settings, job.id, AssignJob(worker_id="w1", run_id=f"run-{job.id}"),
              StartRun(run_id=f"run-{job.id}", worker_id="w1"))
    return job.id


def test_run_events_have_a_rate_per_run_and_per_org(settings: Settings) -> None:
    settings = settings.model_copy(update={"run_events_run_bytes_per_s": 1000,
                                           "run_events_org_bytes_per_s": 1_000_000,
                                           "run_events_burst_s": 20.0})

    def log(ow: OpenWeights, run_id: str) -> None:
        ow.call(ow.transport.call("run.log", run_id=run_id, events=[{"v": "e" * 4000}]))

    with services_thread(settings), OpenWeights(settings=settings, retry_for_s=0) as ow:
        loud = _started_job(ow, settings, {"n": 1})
        quiet = _started_job(ow, settings, {"n": 2})
        for _ in range(4):
            log(ow, f"run-{loud}")
        with pytest.raises(RateLimited, match=r"this run logs more than 1000 B/s.*retry in"):
            for _ in range(3):
                log(ow, f"run-{loud}")
        log(ow, f"run-{quiet}")


@pytest.mark.anyio
async def test_an_old_stacks_streams_get_the_limits_at_start(settings: Settings) -> None:
    """`ow up` on an OW_HOME made before the limits: its streams exist, unbounded."""
    s = Subjects(settings.namespace)
    old = [StreamConfig(name=s.events_stream, subjects=[s.all_events], deny_delete=True,
                        deny_purge=True, allow_direct=True, storage=StorageType.FILE,
                        retention=RetentionPolicy.LIMITS, duplicate_window=120.0),
           StreamConfig(name=s.logs_stream, subjects=[s.all_logs], allow_direct=True,
                        storage=StorageType.FILE, max_age=30 * 24 * 3600.0),
           StreamConfig(name=s.heartbeats_stream, subjects=[s.all_heartbeats],
                        max_msgs_per_subject=1, storage=StorageType.FILE)]
    async with _connect(settings) as nc:
        js = nc.jetstream()
        for config in old:
            await js.add_stream(config)
        await prepare(settings)
        for config in old:
            now = (await js.stream_info(str(config.name))).config
            assert (now.max_msg_size or -1) > 0, config.name
        logs = await js.stream_info(s.logs_stream)
        assert logs.config.subjects == [s.all_kept_logs] and (logs.config.max_bytes or -1) > 0
        assert (await js.stream_info(s.events_stream)).state.messages >= 1  # the org's
    with services_thread(settings):  # and the stack runs on them
        async with _connect(settings) as nc:
            assert "seq" in await _line(nc, s, "default", "r1", b"after the upgrade\n")
