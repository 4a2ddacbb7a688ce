"""TemporaryApi's lease keeping, without a server: renewals while the client lives, a
deployment that fails under a live client restarted and its clients following the new
URL, no renewal after ``detach``, a cancel on ``down``; and ow.chat's batching window
deploying every queued model with one multi_deploy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from openweights.sdk.chat import AsyncCompletions
from openweights.sdk.temporary_api import TemporaryApi


class FakeJob:
    def __init__(self, jobs: FakeJobs) -> None:
        self.jobs, self.id, self.status, self.error = jobs, "apijob-0123", "pending", None
        self.params = {"validated_params": {"api_key": "ow-api-key"}}

    async def refresh(self) -> FakeJob:
        return self

    async def restart(self) -> FakeJob:
        self.jobs.restarts += 1
        self.status = "in_progress"
        self.jobs.ready.put_nowait(f"http://127.0.0.1:{9000 + self.jobs.restarts}/v1")
        return self

    async def cancel(self) -> FakeJob:
        self.status = "canceled"
        return self

    async def log_tail(self, lines: int) -> str:
        return ""


class FakeJobs:
    """What TemporaryApi uses of ow.api and its client."""

    def __init__(self) -> None:
        self.live: dict[str, TemporaryApi] = {}
        self.client = self
        self.jobs = self
        self.events = self
        self.renewals: list[float] = []
        self.restarts = 0
        self.ready: asyncio.Queue[str] = asyncio.Queue()
        self.job = FakeJob(self)
        self.seq = 0
        self.changed = asyncio.Condition()

    async def until(self, check: Any) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(check), 10)

    async def _note(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def create(self, **params: Any) -> FakeJob:
        self.job.status = "in_progress"
        self.ready.put_nowait("http://127.0.0.1:9000/v1")
        return self.job

    async def renew_lease(self, job_id: str, seconds: float) -> None:
        self.renewals.append(seconds)
        await self._note()

    async def subscribe(self, job_id: str, after: int) -> AsyncIterator[dict[str, Any]]:
        url = await self.ready.get()
        self.seq += 1
        await self._note()
        yield {"seq": self.seq, "data": {"type": "api_ready", "url": url}}

    async def multi_deploy(self, models: list[str], **kw: Any) -> dict[str, TemporaryApi]:
        self.deployed = (list(models), kw)
        api = TemporaryApi(self, {"model": models[0], "lora_adapters": models[1:]})
        return {m: api for m in models}


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OW_API_LEASE_S", "0.3")  # a renewal every 0.1 s

    async def no_check(self: TemporaryApi, tries: int = 30) -> None:
        return None

    monkeypatch.setattr(TemporaryApi, "_check", no_check)


def test_the_lease_is_renewed_and_a_failed_deployment_restarted() -> None:
    async def main() -> None:
        jobs = FakeJobs()
        api = TemporaryApi(jobs, {"model": "o/m", "max_num_seqs": 3})
        client = await api.async_up()
        assert api.base_url == "http://127.0.0.1:9000/v1" and api.api_key == "ow-api-key"
        assert jobs.live == {"o/m": api}
        await jobs.until(lambda: len(jobs.renewals) >= 2)
        assert jobs.renewals[0] == pytest.approx(0.3)
        jobs.job.status = "failed"  # the server died under a live client
        await jobs.until(lambda: jobs.restarts == 1)
        await api.ready()
        assert api.base_url == "http://127.0.0.1:9001/v1"
        assert str(client.base_url) == "http://127.0.0.1:9001/v1/"
        keeper = api._keepalive
        assert keeper is not None and not keeper.done()
        api.detach()  # a detached client renews no more: its renewing task has ended
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        assert keeper.cancelled() and api._keepalive is None
        await api.async_down()
        assert jobs.job.status == "canceled" and jobs.live == {}
        await api.async_up()  # up again after down: the job runs again
        assert jobs.restarts == 2 and api.base_url == "http://127.0.0.1:9002/v1"
        await api.async_down()

    asyncio.run(main())


def test_chat_batches_queued_models_into_one_multi_deploy() -> None:
    async def main() -> None:
        jobs = FakeJobs()
        chat = AsyncCompletions(jobs, {"max_model_len": 256})  # type: ignore[arg-type]
        chat.batch_s = 0.1
        found = await asyncio.gather(chat._deployment("o/base"), chat._deployment("o/lora"),
                                     chat._deployment("o/base"))
        assert found[0] is found[1] is found[2]
        assert jobs.deployed == (["o/base", "o/lora"], {"max_model_len": 256})
        assert await chat._deployment("o/lora") is found[0]  # live: no second deployment
        await chat.kill("o/lora")
        assert jobs.job.status == "canceled"

    asyncio.run(main())
