"""Every call of the SDK contract (issue 3), blocking and async, against the real services.

There is no scheduler or agent yet, so the tests play them: a job's run is assigned,
started and ended by appending decisions of the real domain to the log (as the
scheduler and the agent will), and its events are logged through the api service the
way a job does (``ow.run.log`` with ``OPENWEIGHTS_RUN_ID`` set).
"""

from __future__ import annotations

import io
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest
from pydantic import BaseModel

from openweights import AsyncOpenWeights, Jobs, OpenWeights, register
from openweights.config import Settings
from openweights.domain.commands import AssignJob, CompleteRun, FailRun, StartRun
from openweights.errors import IllegalTransition, InvalidRequest, NotFound
from openweights.events import Actor, RunFileUploaded
from openweights.services.testing.drive import drive_job
from openweights.subjects import Subjects

pytestmark = pytest.mark.anyio

CONVERSATION = b'{"messages": [{"role": "user", "content": "hi"}]}\n'
WORKER = "w1"


# -- playing the scheduler and the agent ------------------------------------------------
async def drive(settings: Settings, job_id: str, *commands: object) -> int:
    return await drive_job(settings, job_id, *commands, worker=WORKER)


async def publish(settings: Settings, subject: str, payload: bytes) -> int:
    """Store one message directly (log lines, agent-recorded uploads); its position."""
    nc = await nats.connect(settings.nats_url)
    try:
        return (await nc.jetstream().publish(subject, payload)).seq
    finally:
        await nc.close()


def start(run_id: str) -> tuple[AssignJob, StartRun]:
    return AssignJob(worker_id=WORKER, run_id=run_id), StartRun(run_id=run_id, worker_id=WORKER)


def saw(client: Any, seq: int) -> None:
    """Let ``client``'s later queries reflect an append it did not make itself."""
    client.transport.seen_seq = max(client.transport.seen_seq, seq)


def signal_after_read(client: Any, signal: Callable[[], object]) -> Any:
    """``client.transport.call`` that calls ``signal`` once a job has been read."""
    call = client.transport.call

    async def wrapped(endpoint: str, **fields: Any) -> Any:
        result = await call(endpoint, **fields)
        if endpoint == "jobs.get":
            signal()
        return result

    return wrapped


def in_job_client(stack: Settings, job_id: str, run_id: str,
                  monkeypatch: pytest.MonkeyPatch) -> OpenWeights:
    """A client as the agent starts it inside a job (``OPENWEIGHTS_RUN_ID`` set)."""
    monkeypatch.setenv("OPENWEIGHTS_RUN_ID", run_id)
    monkeypatch.setenv("OPENWEIGHTS_JOB_ID", job_id)
    return OpenWeights(settings=stack, retry_for_s=5)


# -- a custom job type with a mounted file and a mounted directory ----------------------
class AdditionParams(BaseModel):
    a: float
    b: float
    job_id_suffix: str | None = None


@pytest.fixture
def addition(tmp_path: Path) -> type[Jobs]:
    src = tmp_path / "src"
    (src / "lib" / "sub").mkdir(parents=True)
    (src / "worker_side.py").write_text("import sys\nprint(sum(map(float, sys.argv[1:])))\n")
    (src / "lib" / "helpers.py").write_text("X = 1\n")
    (src / "lib" / "sub" / "data.txt").write_text("nested\n")

    @register("addition")
    class Addition(Jobs):
        mount = {str(src / "worker_side.py"): "worker_side.py", str(src / "lib"): "lib"}
        params = AdditionParams
        requires_vram_gb = 0
        base_image = "python:3.11-slim"

        def get_entrypoint(self, p: AdditionParams) -> str:  # type: ignore[override]
            return f"python worker_side.py {p.a} {p.b}"

    return Addition


@pytest.fixture
async def aow(stack: Settings) -> AsyncIterator[AsyncOpenWeights]:
    client = AsyncOpenWeights(settings=stack, retry_for_s=5)
    yield client
    await client.close()


@pytest.fixture
def other(stack: Settings) -> Iterator[OpenWeights]:
    """A second user of the same organization (another process, in real life)."""
    client = OpenWeights(settings=stack, retry_for_s=5)
    yield client
    client.close()


FILE_KEYS = {"id", "object", "bytes", "filename", "purpose", "created_at"}


# == blocking client ====================================================================
def test_files(ow: OpenWeights, tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(CONVERSATION * 3 + b"\n\n")  # trailing blank lines are fine
    new = ow.files.upload(path, purpose="conversations")
    assert set(new) == FILE_KEYS
    assert new["id"].startswith("conversations:file-") and len(new["id"]) == 31
    assert (new["object"], new["bytes"], new["filename"], new["purpose"]) == (
        "file", len(path.read_bytes()), "train.jsonl", "conversations")
    assert isinstance(new["created_at"], int)
    with path.open("rb") as f:
        existing = ow.files.create(f, purpose="conversations")
    assert existing == new  # same dict whether new or existing
    other_purpose = ow.files.upload(path, purpose="custom_job_file")
    assert other_purpose["id"] != new["id"]
    assert other_purpose["id"].startswith("custom_job_file:file-")
    assert ow.files.content(new["id"]) == path.read_bytes()
    assert ow.files.validate(io.BytesIO(CONVERSATION), "conversations") is True
    assert ow.files.validate(io.BytesIO(b'{"messages": 1}\n'), "conversations") is False
    assert ow.files.validate(io.BytesIO(b"not json\n"), "preference") is False
    assert ow.files.validate(io.BytesIO(b"anything"), "result") is True
    with pytest.raises(NotFound):
        ow.files.content("conversations:file-000000000000")


def test_jobs(ow: OpenWeights, addition: type[Jobs]) -> None:
    first = ow.addition.create(a=1, b=2)
    second = ow.addition.create(a=3, b=4)
    third = ow.addition.create(a=5, b=6)
    got = ow.jobs.retrieve(first.id)
    assert (got.id, got.type, got.status, got.model) == (first.id, "custom", "pending", None)
    assert got["params"]["validated_params"] == {"a": 1.0, "b": 2.0, "job_id_suffix": None}
    assert (got.script, got.docker_image, got.requires_vram_gb, got.allowed_hardware) == (
        "python worker_side.py 1.0 2.0", "python:3.11-slim", 0, None)
    assert got.outputs == {} and got.worker_id is None and got.timeout is None
    assert got.created_at is not None and got.updated_at is not None
    with pytest.raises(NotFound):
        ow.jobs.retrieve("addition-000000000000")

    assert ow.jobs.cancel(second.id).status == "canceled"
    assert [j.id for j in ow.jobs.list()] == [second.id, third.id, first.id]  # newest first
    assert [j.id for j in ow.jobs.list(limit=2)] == [second.id, third.id]
    assert [j.id for j in ow.jobs.list(status="canceled")] == [second.id]
    assert {j.id for j in ow.jobs.list(status="pending")} == {first.id, third.id}
    assert [j.id for j in ow.jobs.find(validated_params={"a": 5.0})] == [third.id]
    assert ow.jobs.find(validated_params={"a": 99.0}) == []

    assert ow.jobs.restart(second.id).status == "pending"
    # A pending job has nothing to restart: the message says what helps (issue 21,
    # defect 6: "cannot accept RestartJob").
    with pytest.raises(IllegalTransition, match=rf"^job {first.id} is pending: only an "
                       rf"ended job can be restarted; cancel it first \(`ow cancel {first.id}`"):
        ow.jobs.restart(first.id)
    with pytest.raises(NotFound):
        ow.jobs.cancel("addition-000000000000")

    # Job methods update the object in place.
    job = ow.jobs.retrieve(third.id)
    assert job.cancel() is job and job.status == "canceled"
    assert job.restart() is job and job.status == "pending"
    ow.jobs.cancel(job.id)
    assert job.status == "pending"
    assert job.refresh() is job and job.status == "canceled"
    assert job["status"] == "canceled"
    assert ow.jobs.cancel(job.id).status == "canceled"  # again: no error, as documented


def test_wait_returns_when_another_client_cancels(ow: OpenWeights, other: OpenWeights,
                                                  addition: type[Jobs],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    job = ow.addition.create(a=1, b=1)
    # It names the job, its state and what helps (issue 21, defect 6: it was empty).
    with pytest.raises(TimeoutError, match=rf"^job {job.id} (is still pending|has not "
                       rf"ended) after 0.2 s; .*`ow show {job.id}`"):
        job.wait(timeout=0.2)
    # wait() subscribes, then reads the job: cancel from elsewhere once it has read it,
    # so the only way it can return is the live event.
    watching = threading.Event()
    monkeypatch.setattr(ow.transport, "call", signal_after_read(ow, watching.set))
    canceler = threading.Thread(target=lambda: watching.wait(10) and other.jobs.cancel(job.id))
    canceler.start()
    try:
        assert job.wait(timeout=10) is job
    finally:
        canceler.join()
    assert job.status == "canceled"
    assert ow.jobs.wait(job.id, timeout=5).status == "canceled"  # already ended: at once


def test_runs_events_logs_downloads(ow: OpenWeights, stack: Settings, addition: type[Jobs],
                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = ow.addition.create(a=2, b=3)
    subjects = Subjects(stack.namespace)
    # First run fails; a restart gets a second run that completes.
    anyio.run(drive, stack, job.id, *start("run-a1"),
              FailRun(run_id="run-a1", worker_id=WORKER, error="exit 1", exit_code=1))
    ow.jobs.restart(job.id)
    saw(ow, anyio.run(drive, stack, job.id, *start("run-a2")))

    inside = in_job_client(stack, job.id, "run-a2", monkeypatch)
    try:
        inside.run.log({"step": 1, "loss": 0.5})
        inside.run.log({"step": 2, "loss": 0.25})
        result = tmp_path / "result.txt"
        result.write_text("5.0\n")
        uploaded = inside.run.upload(result)
        inside.run.flush()
        saw(ow, inside.transport.seen_seq)
    finally:
        inside.close()
    log_subject = subjects.log(org=stack.default_org, run_id="run-a2", worker_id=WORKER)
    anyio.run(publish, stack, log_subject, b"starting\n")
    anyio.run(publish, stack, log_subject, b"5.0\n")

    runs = job.runs
    assert [(r.id, r.attempt, r.status) for r in runs] == [
        ("run-a1", 1, "failed"), ("run-a2", 2, "in_progress")]
    assert ow.runs.list(job_id=job.id)[-1].id == "run-a2"
    assert runs[-1].logs() == "starting\n5.0\n"  # live lines while it runs
    # A run that printed nothing, among runs that did: its (empty) lines, every time; the
    # stored-line reader used to wait forever when its filter skipped every message.
    assert [runs[0].logs() for _ in range(20)] == [""] * 20

    events = ow.events.list(job_id=job.id)
    assert [e["data"] for e in events] == [
        {"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25},
        {"path": "result.txt", "file": uploaded["id"]}]
    assert all(e["run_id"] == "run-a2" and e["job_id"] == job.id for e in events)
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert ow.events.list(run_id="run-a2") == events
    assert ow.events.list(run_id="run-a1") == []
    assert runs[-1].events == events
    assert ow.events.latest("*", job_id=job.id) == {
        "step": 2, "loss": 0.25, "path": "result.txt", "file": uploaded["id"]}
    assert ow.events.latest(["loss", "nope"], run_id="run-a2") == {"loss": 0.25, "nope": None}
    assert ow.events.latest("step", job_id=job.id) == {"step": 2}
    with pytest.raises(InvalidRequest):
        ow.events.list()

    # The agent records ./uploads/ files after the job's own events: the newest value of
    # each key, in the outputs as in events.latest (issue 21, defect 5: they disagreed).
    agent_file = ow.files.upload(result, purpose="result")  # same bytes, other name is fine
    upload = RunFileUploaded(at=datetime.now(UTC), by=Actor("agent", WORKER), job_id=job.id,
                             run_id="run-a2", path="uploads/extra.txt", file=agent_file["id"])
    from openweights.events import encode

    saw(ow, anyio.run(publish, stack, subjects.run(stack.default_org, job.id), encode([upload])))
    log_file = ow.files.create(io.BytesIO(b"starting\n5.0\n"), purpose="log")
    saw(ow, anyio.run(drive, stack, job.id,
                      CompleteRun(run_id="run-a2", worker_id=WORKER, log_file=log_file["id"])))
    done = ow.jobs.retrieve(job.id)
    assert done.status == "completed" and done.worker_id == WORKER
    assert done["outputs"] == {"step": 2, "loss": 0.25, "path": "uploads/extra.txt",
                               "file": agent_file["id"]}
    assert done["outputs"] == ow.events.latest("*", job_id=job.id)
    last = ow.runs.list(job_id=job.id)[-1]
    assert last.status == "completed" and last.log_file == log_file["id"]
    assert last.logs() == "starting\n5.0\n"  # now from the stored log file

    written = job.download(tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == [
        "result.txt", "run-a2.log", "uploads/extra.txt"]
    assert (tmp_path / "out" / "result.txt").read_text() == "5.0\n"
    every = job.download(tmp_path / "all", only_last_run=False)
    assert {p.relative_to(tmp_path / "all").parts[0] for p in every} == {"run-a1", "run-a2"}
    assert (tmp_path / "all" / "run-a2" / "uploads" / "extra.txt").read_text() == "5.0\n"
    assert last.download(tmp_path / "one")[0].name == "run-a2.log"
    # The blocking iterator over a job that has ended: its history, then the end.
    assert [e["data"].get("step") for e in ow.events.subscribe(job.id)] == [1, 2, None, None]


def test_the_default_vram_need_no_machine_here_can_have_is_refused_at_submit(
        ow: OpenWeights, stack: Settings) -> None:
    # Issue 21, defect 4: on the CPU-only stack such a job waited forever.
    assert stack.local_fake_gpus == 0

    @register("forgot_vram")
    class ForgotVram(Jobs):  # leaves Jobs.requires_vram_gb (24) as it is
        params = AdditionParams

        def get_entrypoint(self, p: AdditionParams) -> str:  # type: ignore[override]
            return "true"

    @register("wants_vram")
    class WantsVram(ForgotVram):
        requires_vram_gb = 24  # chosen: it waits for such a machine (and says so)

    with pytest.raises(InvalidRequest, match=r"^forgotvram needs 24 GB of VRAM \(the Jobs "
                       r"default.*starts cpu machines.*set `requires_vram_gb = 0`"):
        ow.forgot_vram.create(a=1, b=2)
    assert ow.jobs.list() == []
    assert ow.forgot_vram.create(a=1, b=2, requires_vram_gb=0).requires_vram_gb == 0
    assert ow.forgot_vram.create(a=1, b=3, requires_vram_gb=24).status == "pending"
    assert ow.forgot_vram.create(a=1, b=4, allowed_hardware=["1x H100S"]).status == "pending"
    assert ow.wants_vram.create(a=1, b=2).status == "pending"


def test_custom_jobs(ow: OpenWeights, addition: type[Jobs]) -> None:
    job = ow.addition.create(a=5, b=9)
    assert job.id.startswith("addition-") and len(job.id) == len("addition-") + 12
    mounted = job.params["mounted_files"]
    assert set(mounted) == {"worker_side.py", "lib/helpers.py", "lib/sub/data.txt"}
    assert all(f.startswith("custom_job_file:file-") for f in mounted.values())
    assert ow.files.content(mounted["lib/sub/data.txt"]) == b"nested\n"
    assert job.params["validated_params"] == {"a": 5.0, "b": 9.0, "job_id_suffix": None}
    assert job.script == "python worker_side.py 5.0 9.0"
    assert ow.addition.create(a=5, b=9).id == job.id  # the same job again
    assert ow.addition.create(a=5, b=9.5).id != job.id

    suffixed = ow.addition.create(a=5, b=9, job_id_suffix="exp1")
    assert suffixed.id.endswith("-exp1") and suffixed.id != job.id

    on_h100 = ow.addition.create(a=7, b=1, allowed_hardware=["1x H100S"])
    assert on_h100.allowed_hardware == ["1x H100S"]
    with pytest.raises(InvalidRequest, match="NOPE"):
        ow.addition.create(a=7, b=2, allowed_hardware=["1x NOPE"])
    assert ow.jobs.find(validated_params={"a": 7.0, "b": 2.0}) == []
    image = ow.addition.create(a=8, b=1, docker_image="me/img:1", requires_vram_gb=16)
    assert (image.docker_image, image.requires_vram_gb) == ("me/img:1", 16)


def test_run_outside_a_job_is_a_script_job(stack: Settings, tmp_path: Path) -> None:
    ow = OpenWeights(settings=stack, retry_for_s=5)
    try:
        ow.run.log({"step": 1, "acc": 0.5})
        ow.run.log({"step": 2, "acc": 0.75})
        plot = tmp_path / "plot.png"
        plot.write_bytes(b"\x89PNG fake")
        info = ow.run.upload(plot)
        ow.run.flush()
        job = ow.jobs.retrieve(ow.run.job_id)
        assert (job.type, job.status) == ("script", "in_progress")
        assert [r.id for r in job.runs] == [ow.run.id]
        assert [e["data"] for e in ow.events.list(run_id=ow.run.id)] == [
            {"step": 1, "acc": 0.5}, {"step": 2, "acc": 0.75},
            {"path": "plot.png", "file": info["id"]}]
        assert ow.files.content(info["id"]) == plot.read_bytes()
        job_id = ow.run.job_id
    finally:
        ow.close()  # ends the script run (and must not leave an exit hook that hangs)
    with OpenWeights(settings=stack, retry_for_s=5) as later:
        assert later.jobs.wait(job_id, timeout=5).status == "completed"


# == async client =======================================================================
async def test_async_files(aow: AsyncOpenWeights, tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl"
    row = (b'{"prompt": [], "chosen": [{"role": "assistant", "content": "a"}],'
           b' "rejected": [{"role": "assistant", "content": "b"}]}\n')
    path.write_bytes(row)
    new = await aow.files.upload(path, purpose="preference")
    assert set(new) == FILE_KEYS and new["id"].startswith("preference:file-")
    assert await aow.files.create(io.BytesIO(row), purpose="preference") == {
        **new, "filename": "prefs.jsonl"}
    assert (await aow.files.upload(path, purpose="preferences"))["id"] != new["id"]
    assert await aow.files.content(new["id"]) == row
    assert await aow.files.validate(io.BytesIO(row), "preference") is True
    assert await aow.files.validate(io.BytesIO(CONVERSATION), "preference") is False


async def test_async_jobs_and_wait(aow: AsyncOpenWeights, stack: Settings,
                                   addition: type[Jobs]) -> None:
    job = await aow.addition.create(a=1, b=2)
    assert (await aow.addition.create(a=1, b=2)).id == job.id
    assert (await aow.jobs.retrieve(job.id)).status == "pending"
    assert [j.id for j in await aow.jobs.list(limit=1, status="pending")] == [job.id]
    assert [j.id for j in await aow.jobs.find(validated_params={"b": 2.0})] == [job.id]
    assert (await aow.jobs.cancel(job.id)).status == "canceled"
    assert (await aow.jobs.restart(job.id)).status == "pending"
    assert (await job.refresh()).status == "pending"
    assert (await job.cancel()).status == "canceled"
    assert (await job.restart()).status == "pending"
    with pytest.raises(TimeoutError):
        await job.wait(timeout=0.2)

    watching = anyio.Event()
    aow.transport.call = signal_after_read(aow, watching.set)  # type: ignore[method-assign]
    async def cancel_when_watched(canceler: AsyncOpenWeights) -> None:
        await watching.wait()
        await canceler.jobs.cancel(job.id)

    async with (AsyncOpenWeights(settings=stack, retry_for_s=5) as canceler,
                anyio.create_task_group() as tg):
        tg.start_soon(cancel_when_watched, canceler)
        with anyio.fail_after(10):
            assert await job.wait() is job
    assert job.status == "canceled"


async def test_async_subscribe_live_and_resume(aow: AsyncOpenWeights, stack: Settings,
                                               addition: type[Jobs], tmp_path: Path) -> None:
    job = await aow.addition.create(a=3, b=4)
    saw(aow, await drive(stack, job.id, *start("run-live")))

    async def log(data: dict[str, Any]) -> None:
        await aow.transport.call("run.log", run_id="run-live", events=[data])

    await log({"step": 1})
    seen: list[dict[str, Any]] = []
    resumed: list[dict[str, Any]] = []
    first_seq: list[int] = []
    got_history = anyio.Event()

    async def follow() -> None:
        async for event in aow.events.subscribe(job_id=job.id):
            seen.append(event)
            if len(seen) == 1:
                first_seq.append(event["seq"])
                got_history.set()

    async def follow_from_first() -> None:
        await got_history.wait()
        async for event in aow.events.subscribe(job.id, after_seq=first_seq[0]):
            resumed.append(event)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            tg.start_soon(follow_from_first)
            await got_history.wait()
            await log({"step": 2})
            await log({"step": 3})
            saw(aow, await drive(stack, job.id,
                                 CompleteRun(run_id="run-live", worker_id=WORKER)))
        # Both iterators ended by themselves when the job completed.
    assert [e["data"]["step"] for e in seen] == [1, 2, 3]
    assert [e["data"]["step"] for e in resumed] == [2, 3]
    assert [e["seq"] for e in seen] == sorted({e["seq"] for e in seen})
    # Resuming after the end: only the history after the given position.
    later = [e async for e in aow.events.subscribe(job.id, after_seq=seen[1]["seq"])]
    assert [e["data"]["step"] for e in later] == [3]

    assert await aow.events.list(job_id=job.id) == seen
    assert await aow.events.latest("*", run_id="run-live") == {"step": 3}
    assert await aow.events.latest(["step"], job_id=job.id) == {"step": 3}
    runs = await job.runs
    assert [(r.id, r.status) for r in runs] == [("run-live", "completed")]
    assert await runs[0].events == seen
    assert await runs[0].logs() == ""  # no lines were printed
    assert (await aow.runs.retrieve("run-live")).job_id == job.id
    written = await job.download(tmp_path / "out")
    assert [p.name for p in written] == ["run-live.log"]
    assert [p.name for p in await runs[0].download(tmp_path / "run")] == ["run-live.log"]


async def test_async_custom_job_and_script_run(stack: Settings, addition: type[Jobs],
                                               tmp_path: Path) -> None:
    async with AsyncOpenWeights(settings=stack, retry_for_s=5) as aow:
        job = await aow.addition.create(a=5, b=9, job_id_suffix="async",
                                        allowed_hardware=["1x H100S"])
        assert job.id.endswith("-async") and job.allowed_hardware == ["1x H100S"]
        assert len(job.params["mounted_files"]) == 3
        with pytest.raises(InvalidRequest):
            await aow.addition.create(a=5, b=9, allowed_hardware=["1x NOPE"])
        await aow.run.log({"loss": 1.0})
        info = await aow.run.upload(tmp_path / "src" / "worker_side.py")
        await aow.run.flush()
        script_job = await aow.jobs.retrieve(aow.run.job_id)
        assert (script_job.type, script_job.status) == ("script", "in_progress")
        assert [e["data"] for e in await aow.events.list(run_id=aow.run.id)] == [
            {"loss": 1.0}, {"path": "worker_side.py", "file": info["id"]}]
        job_id = aow.run.job_id
    async with AsyncOpenWeights(settings=stack, retry_for_s=5) as later:
        assert (await later.jobs.wait(job_id, timeout=5)).status == "completed"
