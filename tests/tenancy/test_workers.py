"""Worker credentials cannot exceed their scope (issue 5, Roles).

Org A runs two workers, w1 and w2, each with credentials minted like the provisioner's
(``role="worker"``, bound to one worker id) and each running one job that mounts a
file. w1's credentials may act only for w1 and its job, read only its job's files, get
secrets only for its own running job, and never mint tokens or read other secrets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import nats
import pytest

from openweights import OpenWeights
from openweights.errors import (
    Conflict,
    Fenced,
    Forbidden,
    InvalidRequest,
    NotFound,
    OpenWeightsError,
)
from tests.tenancy.conftest import A, B, Errors, World, raw_connect, retry, wait_flushed


@dataclass
class Fleet:
    world: World
    w1: OpenWeights
    w1_token: str
    w2_token: str
    job1: str
    job2: str
    mounted1: str
    mounted2: str
    loose: str
    file_b: str


def _call(ow: OpenWeights, endpoint: str, **fields: Any) -> Any:
    return ow.call(ow.transport.call(endpoint, **fields))


@pytest.fixture
def fleet(world: World, tmp_path: Path) -> Fleet:
    a, b = world.ow("a_admin"), world.ow("b_admin")
    a.secrets.set(HF_TOKEN="hf-of-a")
    files = {}
    for name in ("mounted1", "mounted2", "loose"):
        path = tmp_path / name
        path.write_bytes(f"contents of {name}".encode())
        files[name] = a.files.upload(path, "blob")["id"]
    path = tmp_path / "b"
    path.write_bytes(b"contents of b")
    file_b = b.files.upload(path, "blob")["id"]
    jobs = {}
    for n in (1, 2):
        jobs[n] = a.jobs.submit(id_prefix=f"job{n}", script="s", docker_image="i",
                                params={"mount": files[f"mounted{n}"]}).id
    worker_tokens = {n: world.worker_token(A, f"w{n}") for n in (1, 2)}
    for n in (1, 2):
        w = world.ow(worker_tokens[n])
        _call(w, "agent.register", worker_id=f"w{n}", docker_image="i", hardware_type="cpu")
        world.start_run(A, jobs[n], f"w{n}", f"run-{n}")
    w1 = world.ow(worker_tokens[1])
    retry(lambda: _call(w1, "jobs.get", job_id=jobs[1]), "w1's job")
    retry(lambda: _call(world.ow(worker_tokens[2]), "run.log", run_id="run-2",
                        events=[{"step": 1}]), "run-2 known")
    return Fleet(world, w1, worker_tokens[1], worker_tokens[2], jobs[1], jobs[2],
                 files["mounted1"], files["mounted2"], files["loose"], file_b)


def test_a_worker_cannot_mint_tokens_read_secrets_or_query_the_org(fleet: Fleet) -> None:
    w1 = fleet.w1
    forbidden = [
        lambda: w1.tokens.create("mine"), lambda: w1.tokens.create("mine", role="admin"),
        lambda: w1.tokens.list(), lambda: w1.tokens.revoke(fleet.world.tid("a_admin")),
        lambda: w1.secrets.show(), lambda: w1.secrets.list(),
        lambda: w1.secrets.set(HF_TOKEN="x"), lambda: w1.secrets.remove("HF_TOKEN"),
        lambda: w1.jobs.list(), lambda: w1.jobs.find(mount=fleet.mounted2),
        lambda: w1.runs.list(), lambda: w1.runs.retrieve("run-2"),
        lambda: w1.events.list(job_id=fleet.job2), lambda: w1.jobs.cancel(fleet.job2),
        lambda: w1.jobs.restart(fleet.job2),
        lambda: w1.jobs.submit(id_prefix="x", script="s", docker_image="i"),
    ]
    for call in forbidden:
        with pytest.raises(Forbidden):
            call()
    admin = fleet.world.ow("a_admin")
    assert admin.secrets.show() == {"HF_TOKEN": "hf-of-a"}
    assert {t["id"] for t in admin.tokens.list()} == {fleet.world.tid("a_admin"),
                                                      fleet.world.tid("a_user")}
    assert admin.jobs.retrieve(fleet.job2).status == "in_progress"


def test_a_worker_reads_only_its_own_jobs_files(fleet: Fleet) -> None:
    w1 = fleet.w1
    assert w1.files.content(fleet.mounted1) == b"contents of mounted1"
    assert _call(w1, "jobs.get", job_id=fleet.job1)["id"] == fleet.job1
    for file_id in (fleet.mounted2, fleet.loose, fleet.file_b):
        with pytest.raises(NotFound):
            w1.files.content(file_id)
        with pytest.raises(NotFound):
            w1.files.get_by_id(file_id)
    with pytest.raises(NotFound):
        _call(w1, "jobs.get", job_id=fleet.job2)


def test_a_worker_cannot_act_for_another_worker(fleet: Fleet) -> None:
    w1 = fleet.w1
    for_w2: list[tuple[str, dict[str, Any]]] = [
        ("agent.register", {"worker_id": "w2", "docker_image": "i", "hardware_type": "cpu"}),
        ("agent.run.start", {"worker_id": "w2", "job_id": fleet.job2, "run_id": "run-2"}),
        ("agent.run.end", {"worker_id": "w2", "job_id": fleet.job2, "run_id": "run-2",
                           "outcome": "failed"}),
        ("agent.run.uploaded", {"worker_id": "w2", "job_id": fleet.job2, "run_id": "run-2",
                                "files": [{"path": "x", "file": fleet.mounted1}]}),
        ("agent.stopped", {"worker_id": "w2", "reason": "bye"}),
        ("agent.ttl", {"worker_id": "w2", "ttl_until": datetime.now(UTC) + timedelta(days=9)}),
        ("agent.secrets", {"worker_id": "w2"}),
    ]
    for endpoint, fields in for_w2:
        with pytest.raises(Forbidden):
            _call(w1, endpoint, **fields)
    # Under its own name, on w2's run: fenced or not found, never applied.
    for endpoint, fields in [
        ("agent.run.end", {"worker_id": "w1", "job_id": fleet.job2, "run_id": "run-2",
                           "outcome": "failed"}),
        ("agent.run.uploaded", {"worker_id": "w1", "job_id": fleet.job2, "run_id": "run-2",
                                "files": [{"path": "x", "file": fleet.mounted1}]}),
        ("run.log", {"run_id": "run-2", "events": [{"forged": True}]}),
    ]:
        with pytest.raises((Fenced, NotFound)):
            _call(w1, endpoint, **fields)
    admin = fleet.world.ow("a_admin")
    assert admin.jobs.retrieve(fleet.job2).status == "in_progress"
    assert [e["data"] for e in admin.events.list(job_id=fleet.job2)] == [{"step": 1}]
    # Its own job's secrets, while it runs it: allowed.
    assert _call(w1, "agent.secrets", worker_id="w1") == {"HF_TOKEN": "hf-of-a"}


def test_a_worker_cannot_read_another_workers_logs(fleet: Fleet) -> None:
    async def publish() -> None:
        nc = await raw_connect(fleet.world, fleet.w2_token)
        await nc.publish(fleet.world.subjects.log(A, "run-2", "w2"), b"w2's output\n")
        await nc.flush()
        await nc.close()

    def logs(ow: OpenWeights) -> list[Any]:
        return list(ow.runs.read_logs("run-2"))

    anyio.run(publish)
    admin = fleet.world.ow("a_admin")
    assert retry(lambda: logs(admin) or 1 / 0, "w2's output stored")[0][1] == "w2's output\n"
    assert logs(fleet.world.ow(fleet.w2_token)) == [(1, "w2's output\n")]  # its own: yes
    try:
        seen = logs(fleet.w1)
    except OpenWeightsError as exc:
        assert isinstance(exc, NotFound | Forbidden)
        return
    assert seen == []


def test_a_worker_cannot_use_another_workers_subjects(fleet: Fleet) -> None:
    world = fleet.world
    s = world.subjects

    async def check() -> None:
        svc = await nats.connect(str(world.settings.nats_url), allow_reconnect=False)
        js = svc.jetstream()
        errors = Errors()
        w1 = await raw_connect(world, fleet.w1_token, errors)
        # Not even its own org's job events: those of the jobs it runs reach it as the
        # scheduler's notices.
        org_jobs = s.live(A, "job", ">")
        # No callbacks: a subscription counts a message (``delivered``) as the connection
        # reads it, in the order the server sent it, so a later message on the same
        # connection proves that nothing sent before it is still to come.
        spied = [await w1.subscribe(subject) for subject in (
            s.agent(A, "w2"), s.live(A, "worker", "w2"), f"{world.ns}agent.{A}.*",
            f"{world.ns}hb.>", f"{world.ns}log.>", f"{world.ns}livelog.{A}.w2.>", org_jobs)]
        own = await w1.subscribe(s.agent(A, "w1"))
        await wait_flushed(w1)
        logs_before = (await js.stream_info(s.logs_stream)).state.last_seq
        hb_before = (await js.stream_info(s.heartbeats_stream)).state.last_seq
        await w1.publish(s.heartbeat(A, "w2"), b"{}")
        await w1.publish(s.log(A, "run-2", "w2"), b"forged line\n")
        await w1.publish(s.agent(A, "w2"), b"{}")
        await w1.flush()
        for subject in (s.agent(A, "w2"), s.live(A, "worker", "w2"), org_jobs):
            await errors.wait_for(f'permissions violation for subscription to "{subject}"')
        for subject in (s.heartbeat(A, "w2"), s.log(A, "run-2", "w2")):
            await errors.wait_for(f'permissions violation for publish to "{subject}"')
        await svc.publish(s.agent(A, "w2"), b"assignment for w2")
        await svc.publish(s.agent(A, "w1"), b"assignment for w1")
        await svc.flush()
        assert (await own.next_msg(timeout=5)).data == b"assignment for w1"
        # Its own heartbeat and log line, sent after the forged ones on the same
        # connection, are stored after anything of those that got in; the acks say where.
        # (A forged line never stored is never republished to livelog either.)
        hb_ack = await w1.request(s.heartbeat(A, "w1"), b"{}", timeout=5)
        log_ack = await w1.request(s.log(A, "run-1", "w1"), b"w1's own line\n", timeout=5)
        assert [(sub.subject, sub.delivered) for sub in spied if sub.delivered] == []
        assert (await js.stream_info(s.logs_stream)).state.last_seq == logs_before + 1
        assert json.loads(log_ack.data)["seq"] == logs_before + 1
        assert (await js.stream_info(s.heartbeats_stream)).state.last_seq == hb_before + 1
        # Its own heartbeat is stored: the refusals above are about w2, not about w1.
        assert json.loads(hb_ack.data)["seq"] == hb_before + 1
        stored = await js.get_last_msg(s.heartbeats_stream, s.heartbeat(A, "w1"))
        assert stored.seq > hb_before
        await w1.close()
        await svc.close()

    anyio.run(check)


def test_a_worker_sees_only_its_own_live_lines(fleet: Fleet) -> None:
    world, s = fleet.world, fleet.world.subjects

    async def check() -> None:
        errors = Errors()
        w1 = await raw_connect(world, fleet.w1_token, errors)
        w2 = await raw_connect(world, fleet.w2_token)
        org_lines = f"{world.ns}livelog.{A}.>"
        wide = await w1.subscribe(org_lines)
        own = await w1.subscribe(f"{world.ns}livelog.{A}.w1.>")
        await wait_flushed(w1)
        await errors.wait_for(f'permissions violation for subscription to "{org_lines}"')
        # Stored (acked) in this order: w2's line is republished before w1's own.
        await w2.request(s.log(A, "run-2", "w2"), b"w2's line\n", timeout=5)
        await w1.request(s.log(A, "run-1", "w1"), b"w1's line\n", timeout=5)
        assert (await own.next_msg(timeout=5)).data == b"w1's line\n"
        assert wide.delivered == 0
        await w1.close()
        await w2.close()

    anyio.run(check)


def test_a_line_under_its_own_name_never_lands_in_another_workers_run(fleet: Fleet) -> None:
    """w1 may publish under its own worker id with any run id: a line it addresses to
    w2's run-2 is neither read (logs.read) nor followed (live) as run-2's output."""
    world, s = fleet.world, fleet.world.subjects
    admin = world.ow("a_admin")

    async def publish(*lines: tuple[str, str, bytes]) -> None:
        conns = {"w1": await raw_connect(world, fleet.w1_token),
                 "w2": await raw_connect(world, fleet.w2_token)}
        for worker, run_id, data in lines:  # each acked: stored in this order
            await conns[worker].request(s.log(A, run_id, worker), data, timeout=5)
        for nc in conns.values():
            await nc.close()

    anyio.run(publish, ("w2", "run-2", b"w2 first\n"), ("w1", "run-2", b"forged 1\n"))
    stored = retry(lambda: list(admin.runs.read_logs("run-2")) or 1 / 0, "run-2's lines")
    assert [text for _, text in stored] == ["w2 first\n"]
    own = list(world.ow(fleet.w2_token).runs.read_logs("run-2"))
    assert [text for _, text in own] == ["w2 first\n"]
    followed = iter(admin.runs.follow_logs("run-2"))
    assert next(followed) == "w2 first\n"  # subscribed to the live lines by now
    anyio.run(publish, ("w1", "run-2", b"forged 2\n"), ("w2", "run-2", b"w2 last\n"))
    admin.jobs.cancel(fleet.job2)  # ends the follow
    assert list(followed) == ["w2 last\n"]


def test_a_worker_without_a_run_is_told_to_start_one_for_its_secrets(fleet: Fleet) -> None:
    w3 = fleet.world.ow(fleet.world.worker_token(A, "w3"))
    _call(w3, "agent.register", worker_id="w3", docker_image="i", hardware_type="cpu")
    with pytest.raises(Conflict, match="start the run first"):
        _call(w3, "agent.secrets", worker_id="w3")


def test_the_start_reply_carries_the_secrets_only_to_a_worker_without_them(
        fleet: Fleet) -> None:
    world, admin = fleet.world, fleet.world.ow("a_admin")
    w3 = world.ow(world.worker_token(A, "w3"))
    _call(w3, "agent.register", worker_id="w3", docker_image="i", hardware_type="cpu")
    replies, held = [], -1
    for n in (1, 2):
        job_id = admin.jobs.submit(id_prefix=f"sec{n}", script="s", docker_image="i").id
        world.start_run(A, job_id, "w3", f"run-s{n}", start=False)
        replies.append(retry(lambda j=job_id, r=f"run-s{n}", h=held: _call(
            w3, "agent.run.start", worker_id="w3", job_id=j, run_id=r, secrets_seq=h),
            "the assignment known to the api"))
        held = replies[-1]["secrets_seq"]
    assert replies[0]["secrets"] == {"HF_TOKEN": "hf-of-a"}
    assert "secrets" not in replies[1]  # it holds that version: nothing decrypted or sent
    assert replies[1]["secrets_seq"] == replies[0]["secrets_seq"] > 0


def test_an_end_with_its_start_records_both_in_one_append_only_for_an_outcome(
        fleet: Fleet) -> None:
    """A quick job's agent reports the start with the end: the api decides both and
    appends them together; with a stop that is no outcome of the command it refuses."""
    world, admin = fleet.world, fleet.world.ow("a_admin")
    w3 = world.ow(world.worker_token(A, "w3"))
    _call(w3, "agent.register", worker_id="w3", docker_image="i", hardware_type="cpu")
    job_id = admin.jobs.submit(id_prefix="quick", script="s", docker_image="i").id
    world.start_run(A, job_id, "w3", "run-q", start=False)
    with pytest.raises(InvalidRequest, match="with_start is for a run that completed"):
        _call(w3, "agent.run.end", worker_id="w3", job_id=job_id, run_id="run-q",
              outcome="canceled", with_start=True)
    done = retry(lambda: _call(w3, "agent.run.end", worker_id="w3", job_id=job_id,
                               run_id="run-q", outcome="completed", with_start=True),
                 "the assignment known to the api")
    assert done["status"] == "completed"
    (run,) = admin.runs.list(job_id=job_id)
    assert run.status == "completed" and run.started_at is not None


def test_another_organizations_worker_id_is_as_free_as_an_unused_one(fleet: Fleet) -> None:
    """Workers are keyed by (organization, id): org B registering w1, which org A runs,
    answers exactly as for an id nobody has, and the two w1 stay two workers."""
    world = fleet.world
    b = world.ow("b_admin")

    def register(worker_id: str) -> Any:
        return _call(b, "agent.register", worker_id=worker_id, docker_image="img-of-b",
                     hardware_type="cpu")

    assert register("w1") == register("b-own-worker") == {"requeued": []}

    async def workers() -> dict[tuple[str, str], str]:
        conn = await asyncpg.connect(str(world.settings.database_url))
        try:
            rows = await conn.fetch("SELECT id, organization_id, docker_image FROM workers")
        finally:
            await conn.close()
        return {(r["organization_id"], r["id"]): r["docker_image"] for r in rows}

    def projected() -> dict[tuple[str, str], str]:
        rows = anyio.run(workers)
        assert (B, "w1") in rows and (B, "b-own-worker") in rows
        return rows

    rows = retry(projected, "B's workers projected")
    assert rows[(A, "w1")] == "i" and rows[(B, "w1")] == "img-of-b"
    admin = world.ow("a_admin")
    assert admin.jobs.retrieve(fleet.job1).status == "in_progress"  # A's w1 kept its run
    assert [r.worker_id for r in b.runs.list(worker_id="w1")] == []
