"""Every SDK call with a token of org A against org B's resources (issue 5, Tests).

B's ids all exist (``populate`` checks B can read each). A's answer for each must be the
one it gets for an id that exists nowhere: the same error type and message (but for the
id itself), and lists must hold nothing of B. Admin and user tokens of A both run the
matrix. The last test checks that B's things are untouched by all of it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from openweights import AsyncOpenWeights, OpenWeights
from openweights.api import protocol
from openweights.errors import Forbidden, InvalidRequest, NotFound, OpenWeightsError
from tests.tenancy.conftest import Data, World

TOKENS = ["a_admin", "a_user"]


def _raw(ow: OpenWeights, endpoint: str, upload_id: str, instance: str,
         body: bytes | None = None) -> Any:
    """An upload call to the instance that began ``upload_id`` (as the SDK sends it)."""
    t = ow.transport

    async def go() -> Any:
        await t.connect()
        subject = f"{t.subject(endpoint)}.{instance}"
        if endpoint == protocol.UPLOAD_CHUNK:
            msg = await t.request(subject, b"x", headers={protocol.HEADER_UPLOAD: upload_id,
                                                          protocol.HEADER_OFFSET: "0"})
        else:
            msg = await t.request(subject, body or protocol.encoder.encode(
                protocol.UploadEnd(upload_id=upload_id)))
        return t.unwrap(msg.data)

    return ow.call(go())


def _call(ow: OpenWeights, endpoint: str, **fields: Any) -> Any:
    return ow.call(ow.transport.call(endpoint, **fields))


Call = Callable[[OpenWeights, str, Data, Path], Any]

# (name, which of B's ids it takes, the call)
CALLS: list[tuple[str, str, Call]] = [
    ("files.get", "file", lambda ow, i, d, p: ow.files.get_by_id(i)),
    ("files.content", "file", lambda ow, i, d, p: ow.files.content(i)),
    ("files.download", "file", lambda ow, i, d, p: ow.files.download(i, p / "out.bin")),
    ("files.upload.chunk", "upload",
     lambda ow, i, d, p: _raw(ow, protocol.UPLOAD_CHUNK, i, d.instance_b)),
    ("files.upload.end", "upload",
     lambda ow, i, d, p: _raw(ow, "files.upload.end", i, d.instance_b)),
    ("files.upload.abort", "upload",
     lambda ow, i, d, p: _raw(ow, "files.upload.abort", i, d.instance_b,
                              protocol.encoder.encode(protocol.UploadAbort(upload_id=i)))),
    ("jobs.submit(params=B's file)", "file",
     lambda ow, i, d, p: ow.jobs.submit(id_prefix="x", script="s", docker_image="i",
                                        params={"mount": i})),
    ("jobs.retrieve", "job", lambda ow, i, d, p: ow.jobs.retrieve(i)),
    ("jobs.cancel", "job", lambda ow, i, d, p: ow.jobs.cancel(i)),
    ("jobs.restart", "job", lambda ow, i, d, p: ow.jobs.restart(i)),
    ("jobs.renew_lease", "job", lambda ow, i, d, p: ow.jobs.renew_lease(i, 60)),
    ("jobs.wait", "job", lambda ow, i, d, p: ow.jobs.wait(i, timeout=5)),
    ("runs.retrieve", "run", lambda ow, i, d, p: ow.runs.retrieve(i)),
    ("events.subscribe", "job", lambda ow, i, d, p: next(iter(ow.events.subscribe(i)))),
    ("logs.follow", "run", lambda ow, i, d, p: next(ow.runs.follow_logs(i))),
    ("run.log", "run", lambda ow, i, d, p: _call(ow, "run.log", run_id=i,
                                                 events=[{"loss": 1.0}])),
    ("run.script.end", "run",
     lambda ow, i, d, p: _call(ow, "run.script.end", run_id=i, status="completed")),
    ("tokens.revoke", "token", lambda ow, i, d, p: ow.tokens.revoke(i)),
    ("secrets.remove", "secret", lambda ow, i, d, p: ow.secrets.remove(i)),
    ("agent.run.start", "job", lambda ow, i, d, p: _call(
        ow, "agent.run.start", worker_id=d.worker_b, job_id=i, run_id=d.run_b)),
    ("agent.run.end", "job", lambda ow, i, d, p: _call(
        ow, "agent.run.end", worker_id=d.worker_b, job_id=i, run_id=d.run_b,
        outcome="completed")),
    ("agent.run.uploaded", "job", lambda ow, i, d, p: _call(
        ow, "agent.run.uploaded", worker_id=d.worker_b, job_id=i, run_id=d.run_b,
        files=[{"path": "x", "file": d.file_a}])),
    ("agent.stopped", "worker", lambda ow, i, d, p: _call(
        ow, "agent.stopped", worker_id=i, reason="stop")),
    ("agent.ttl", "worker", lambda ow, i, d, p: _call(
        ow, "agent.ttl", worker_id=i, ttl_until=datetime.now(UTC) + timedelta(hours=1))),
    ("agent.secrets", "worker", lambda ow, i, d, p: _call(ow, "agent.secrets", worker_id=i)),
]


def ids(d: Data) -> dict[str, tuple[str, str]]:
    """B's real id of each kind, and one of the same shape that exists nowhere."""
    return {
        "file": (d.file_b, d.file_b[:-6] + "ffffff"),
        "upload": (d.upload_b, d.upload_b[:-6] + "ffffff"),
        "job": (d.job_b, d.job_b[:-6] + "ffffff"),
        "run": (d.run_b, "run-zz"),
        "token": (d.token_b_user, "tok-" + "f" * 16),
        "secret": (d.secret_b, "NO_SUCH_SECRET"),
        "worker": (d.worker_b, "wZ"),
    }


def outcome(fn: Callable[[], Any]) -> tuple[str, str] | tuple[str, Any]:
    try:
        return "ok", fn()
    except OpenWeightsError as exc:
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("who", TOKENS)
@pytest.mark.parametrize(("name", "kind", "call"), CALLS, ids=[c[0] for c in CALLS])
def test_a_call_on_bs_id_answers_as_for_an_id_that_does_not_exist(
        populated: tuple[World, Data], tmp_path: Path, who: str, name: str, kind: str,
        call: Call) -> None:
    world, d = populated
    ow = world.ow(who)
    real, fake = ids(d)[kind]
    got_real = outcome(lambda: call(ow, real, d, tmp_path))
    got_fake = outcome(lambda: call(ow, fake, d, tmp_path))
    assert got_real[0] != "ok", f"{name} on B's {kind} {real} succeeded: {got_real[1]}"
    assert (got_real[0], str(got_real[1]).replace(real, "<id>")) == \
           (got_fake[0], str(got_fake[1]).replace(fake, "<id>"))
    expected = {"jobs.submit(params=B's file)": InvalidRequest.__name__}.get(name)
    if who == "a_user" and (name.startswith(("agent.", "tokens.", "secrets."))):
        expected = Forbidden.__name__
    if expected is None and name != "agent.secrets":
        expected = NotFound.__name__
    if expected is not None:
        assert got_real[0] == expected, got_real
    assert d.marker not in str(got_real[1]) and d.secret_b_value not in str(got_real[1])


@pytest.mark.parametrize("who", TOKENS)
def test_lists_and_queries_hold_nothing_of_b(populated: tuple[World, Data], who: str) -> None:
    world, d = populated
    ow = world.ow(who)
    results: dict[str, Any] = {}

    jobs = ow.jobs.list(limit=1000)
    assert d.job_a in [j.id for j in jobs]
    assert {j.organization_id for j in jobs} == {"orgA"}
    results["jobs.list"] = [j.model_dump() for j in jobs]
    for status in ("pending", "in_progress"):
        results[f"jobs.list({status})"] = [j.id for j in ow.jobs.list(limit=1000, status=status)]
    results["jobs.find(marker)"] = ow.jobs.find(marker=d.marker)
    results["jobs.find(mount)"] = ow.jobs.find(mount=d.file_b)
    runs = ow.runs.list()
    assert d.run_a in [r.id for r in runs]
    results["runs.list"] = [r.model_dump() for r in runs]
    results["runs.list(job)"] = ow.runs.list(job_id=d.job_b)
    results["runs.list(worker)"] = ow.runs.list(worker_id=d.worker_b)
    results["events.list(job)"] = ow.events.list(job_id=d.job_b)
    results["events.list(run)"] = ow.events.list(run_id=d.run_b)
    results["events.latest(job)"] = ow.events.latest("*", job_id=d.job_b)
    results["events.latest(run)"] = ow.events.latest("*", run_id=d.run_b)
    results["logs.read"] = list(ow.runs.read_logs(d.run_b))
    results["secrets.list"] = ow.secrets.list()
    assert "A_SECRET" in results["secrets.list"]
    if who == "a_admin":
        tokens = ow.tokens.list()
        assert {t["id"] for t in tokens} == {world.tid("a_admin"), world.tid("a_user")}
        results["tokens.list"] = tokens
        results["secrets.show"] = ow.secrets.show()
        assert set(results["secrets.show"]) == {"A_SECRET"}
    for name, value in results.items():
        if name.startswith(("jobs.find", "runs.list(", "events.", "logs.")):
            assert not value, f"{name} returned {value!r}"
    text = repr(results)
    for secret in (d.marker, d.job_b, d.file_b, d.run_b, d.worker_b, d.token_b_user,
                   world.tid("b_admin"), d.secret_b, d.secret_b_value, "orgB"):
        assert secret not in text


def test_the_same_job_spec_in_two_orgs_is_two_jobs(populated: tuple[World, Data]) -> None:
    world, _ = populated
    a, b = world.ow("a_admin"), world.ow("b_admin")
    spec = {"id_prefix": "same", "script": "echo", "docker_image": "img", "params": {"n": 1}}
    job_b = b.jobs.submit(**spec)
    job_a = a.jobs.submit(**spec)
    assert job_a.id != job_b.id and job_a.organization_id == "orgA"
    a.jobs.cancel(job_a.id)
    assert b.jobs.retrieve(job_b.id).status == "pending"


@pytest.mark.anyio
async def test_the_async_client_is_refused_the_same_way(populated: tuple[World, Data]) -> None:
    world, d = populated
    async with AsyncOpenWeights(api_key=world.tokens["a_user"],
                                settings=world.client_settings, retry_for_s=2) as ow:
        for call in (lambda: ow.jobs.retrieve(d.job_b), lambda: ow.files.get_by_id(d.file_b),
                     lambda: ow.files.content(d.file_b), lambda: ow.runs.retrieve(d.run_b)):
            with pytest.raises(NotFound):
                await call()
        assert d.job_b not in [j.id for j in await ow.jobs.list(limit=1000)]
        assert await ow.events.list(job_id=d.job_b) == []
        with pytest.raises(NotFound):
            await anext(ow.events.subscribe(d.job_b))


def test_b_is_untouched_by_all_of_the_above(populated: tuple[World, Data],
                                            tmp_path: Path) -> None:
    world, d = populated
    b = world.ow("b_admin")
    job = b.jobs.retrieve(d.job_b)
    assert job.status == "in_progress" and job.timeout is None
    assert b.runs.retrieve(d.run_b).status == "in_progress"
    assert [e["data"] for e in b.events.list(job_id=d.job_b)] == [
        {"loss": 0.25, "marker": d.marker}]
    assert d.token_b_user in {t["id"] for t in b.tokens.list()}
    assert b.secrets.show()[d.secret_b] == d.secret_b_value
    # B's open upload survived A's chunk, end and abort: B finishes it.
    meta = _raw(b, protocol.UPLOAD_CHUNK, d.upload_b, d.instance_b)
    assert meta == {"received": 1}
    assert _raw(b, "files.upload.end", d.upload_b, d.instance_b)["bytes"] == 1
    assert _call(world.ow(d.worker_b_token), "jobs.get", job_id=d.job_b)["id"] == d.job_b
