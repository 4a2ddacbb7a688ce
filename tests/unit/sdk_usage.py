"""How a user's code reads to mypy: every public result has a precise type.

Never run (the functions need a stack); ``test_sdk_typing.py`` type-checks this file, so
``assert_type`` fails the suite when a public method's type drifts or turns into Any.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, assert_type

from pydantic import BaseModel

from openweights import AsyncOpenWeights, Jobs, OpenWeights, register
from openweights.sdk.blocking import BoundJobs
from openweights.sdk.jobs import AsyncJob
from openweights.sdk.runs import AsyncRun
from openweights.sdk.sync_models import Job, Run
from openweights.sdk.types import Event, FileInfo, LogChunk, NewToken, TokenInfo


class AdditionParams(BaseModel):
    a: float
    b: float


@register("addition")
class Addition(Jobs):
    params = AdditionParams

    def get_entrypoint(self, p: AdditionParams) -> str:
        return f"python add.py {p.a} {p.b}"


def blocking(path: Path) -> None:
    ow = OpenWeights(auth_token="ow_x", organization_id="acme", use_async=False,
                     deploy_kwargs={"max_model_len": 4096})
    assert_type(ow.organization_id, str)
    assert_type(ow.org_name, str | None)
    assert_type(ow.hf_org, str | None)
    assert_type(ow.deploy_kwargs, dict[str, Any])
    f = ow.files.upload(path, "conversations")
    assert_type(f, FileInfo)
    assert_type(f["id"], str)
    assert_type(ow.files.create(io.BytesIO(b"x"), "result", filename="x.txt"), FileInfo)
    assert_type(ow.files.download(f["id"], path), Path)
    assert_type(ow.files.chunks(f["id"]), Iterator[bytes])
    assert_type(ow.files.content(f["id"]), bytes)
    job = ow.addition.create(a=1, b=2)
    assert_type(ow.addition, BoundJobs)
    assert_type(job, Job)
    assert_type(job["status"], str)
    assert_type(job["outputs"], dict[str, Any])
    assert_type(job["timeout"], datetime | None)
    assert_type(job.wait(timeout=10).refresh().cancel().restart(), Job)
    assert_type(job.runs, list[Run])
    assert_type(job.download(path), list[Path])
    assert_type(ow.jobs.submit(id_prefix="x", script="s", docker_image="i"), Job)
    assert_type(ow.jobs.list(limit=3), list[Job])
    assert_type(ow.jobs.find(model="m"), list[Job])
    run = ow.runs.list(job_id=job.id)[-1]
    assert_type(run.logs(), str)
    assert_type(run.events, list[Event])
    assert_type(ow.runs.read_logs(run.id), Iterator[LogChunk])
    assert_type(ow.runs.follow_logs(run.id), Iterator[str])
    assert_type(ow.events.subscribe(job.id), Iterator[Event])
    assert_type(ow.events.latest("*", job_id=job.id), dict[str, Any])
    assert_type(ow.tokens.create("ci"), NewToken)
    assert_type(ow.tokens.list(), list[TokenInfo])
    assert_type(ow.secrets.show(), dict[str, str])
    assert_type(ow.run.upload(path), FileInfo)
    ow.run.log({"loss": 0.5})
    ow.close()


async def awaitable(path: Path) -> None:
    async with AsyncOpenWeights(api_key="ow_x") as aow:
        await aow.connect()
        assert_type(aow.organization_id, str)
        assert_type(await aow.files.upload(path, "conversations"), FileInfo)
        assert_type(aow.files.chunks("f"), AsyncIterator[bytes])
        job = await aow.addition.create(a=1, b=2)
        assert_type(job, AsyncJob)
        assert_type(await (await job.wait()).refresh(), AsyncJob)
        runs = await job.runs
        assert_type(runs, list[AsyncRun])
        assert_type(await runs[0].events, list[Event])
        assert_type(await runs[0].logs(), str)
        assert_type(await aow.jobs.retrieve(job.id), AsyncJob)
        assert_type(await aow.runs.retrieve("run-1"), AsyncRun)
        assert_type(aow.events.subscribe(job.id), AsyncIterator[Event])
        assert_type(aow.runs.follow_logs("run-1"), AsyncIterator[str])
        await aow.run.log({"loss": 0.5})
        assert_type(await aow.run.upload(path), FileInfo)
