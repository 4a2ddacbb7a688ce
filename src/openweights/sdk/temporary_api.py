"""``TemporaryApi``: a vLLM deployment (an ``api`` job) for as long as a script needs it.

``with ow.api.deploy(model) as client:`` (or ``async with``, or ``up()`` / ``down()``)
submits the job, keeps its lease alive while this client lives (a renewal every
``lease/3``, at most every minute), waits until it is ready (the job's server passed its
health check and one chat completion, and one more passes from here) and hands out an
OpenAI client for the deployment's URL with its own API key. ``down()`` cancels the job.
A client that dies stops renewing: the deployment is canceled once its lease expires
(``$OW_API_LEASE_S``, default 15 minutes). A deployment that fails or is canceled while
its client lives is restarted, and the handed-out clients follow its new URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from openweights.errors import OpenWeightsError
from openweights.jobs.vllm.config import lease_seconds

if TYPE_CHECKING:
    from openweights.sdk.jobs import AsyncJob
    from openweights.sdk.loop import LoopThread

__all__ = ["ApiFailed", "SyncApi", "TemporaryApi"]

T = TypeVar("T")
# ``ow.api`` (openweights.jobs.vllm.job.Api: it imports this module): ``create``, ``live``
# (deployments up, by model), ``client``, ``deploy`` and ``multi_deploy``.
Api = Any
ENDED = ("completed", "failed", "canceled")


class ApiFailed(OpenWeightsError):
    """The deployment ended before it was ready (its job's error and log tail say why)."""

    code = "api_failed"
    hint = "read the job's log (`ow logs JOB_ID`), fix the model or its params, deploy again"


def _openai() -> Any:
    try:
        import openai
    except ImportError:
        raise OpenWeightsError("ow.api and ow.chat hand out OpenAI clients: "
                               "pip install openai") from None
    return openai


class TemporaryApi:
    """One deployment: ``job_id``, ``base_url`` and ``api_key`` once up; ``models`` it
    serves (the base model and its LoRA adapters)."""

    def __init__(self, jobs: Api, params: dict[str, Any],
                 loop: LoopThread | None = None) -> None:
        self._jobs, self._params, self._loop = jobs, dict(params), loop
        self.models: list[str] = [params["model"], *params.get("lora_adapters", [])]
        self.max_num_seqs = int(params.get("max_num_seqs", 100))
        self.job: AsyncJob | None = None
        self.base_url: str | None = None
        self.ready_s: float | None = None
        self._after = 0
        self._keepalive: asyncio.Task[None] | None = None
        self._closing = False
        self._clients: list[Any] = []
        self._ready: asyncio.Event | None = None
        self._aclient: Any = None  # on the client's loop: what ow.async_chat uses
        self._sclient: Any = None  # blocking: what ow.chat uses from the caller's thread

    @property
    def job_id(self) -> str | None:
        return None if self.job is None else self.job.id

    @property
    def api_key(self) -> str | None:
        return None if self.job is None else self.job.params["validated_params"]["api_key"]

    # -- the blocking and async faces --------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("this TemporaryApi belongs to an async client: use "
                               "`await api.async_up()` or `async with api`")
        return self._loop.run(coro)

    async def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            return await coro
        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(coro, self._loop.loop))

    def up(self) -> Any:
        """Deploy and wait until ready; an ``openai.OpenAI`` client for it."""
        self._run(self.start())
        return self._hand_out(_openai().OpenAI)

    async def async_up(self) -> Any:
        """Deploy and wait until ready; an ``openai.AsyncOpenAI`` client for it."""
        await self._on_loop(self.start())
        return self._hand_out(_openai().AsyncOpenAI)

    def down(self) -> None:
        """Take the deployment down (cancel its job)."""
        self._run(self.stop())

    async def async_down(self) -> None:
        await self._on_loop(self.stop())

    def __enter__(self) -> Any:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    async def __aenter__(self) -> Any:
        return await self.async_up()

    async def __aexit__(self, *exc: object) -> None:
        await self.async_down()

    def _hand_out(self, cls: Any) -> Any:
        client = cls(base_url=self.base_url, api_key=self.api_key, max_retries=1,
                     timeout=1800.0)
        self._clients.append(client)
        return client

    # -- on the client's loop ----------------------------------------------------------
    async def start(self) -> None:
        """Submit (once), keep the lease alive, wait until ready. Raises ``ApiFailed``."""
        self._closing = False
        if self._ready is None:
            self._ready = asyncio.Event()
        if self.job is None:
            self.job = await self._jobs.create(**self._params)
        elif (await self.job.refresh()).status in ENDED:  # up() again after down()
            await self.job.restart()
        if self._keepalive is None or self._keepalive.done():
            self._keepalive = asyncio.create_task(self._keep_alive())
        if not self._ready.is_set():
            await self._wait_ready()
        self._jobs.live.update({m: self for m in self.models})

    async def _wait_ready(self) -> None:
        assert self.job is not None and self._ready is not None
        started = time.monotonic()
        async for event in self._jobs.client.events.subscribe(self.job.id, self._after):
            self._after = event["seq"]
            if event["data"].get("type") == "api_ready":
                self._set_url(str(event["data"]["url"]))
                await self._check()
                self.ready_s = time.monotonic() - started
                self._ready.set()
                return
        job = await self.job.refresh()
        raise ApiFailed(f"deployment {job.id} of {self.models[0]} ended ({job.status}) before "
                        f"it was ready: {job.error or 'no error recorded'}\n"
                        f"{await job.log_tail(20)}")

    def _set_url(self, url: str) -> None:
        self.base_url = url
        for client in self._clients:
            client.base_url = url
        for own in (self._aclient, self._sclient):
            if own is not None:
                own.base_url = url

    @property
    def is_ready(self) -> bool:
        return self._ready is not None and self._ready.is_set()

    def sync_chat_client(self) -> Any:
        """The blocking OpenAI client ``ow.chat`` sends through (any thread)."""
        if self._sclient is None:
            self._sclient = _openai().OpenAI(base_url=self.base_url, api_key=self.api_key,
                                             max_retries=0)
        return self._sclient

    def chat_client(self) -> Any:
        """The async OpenAI client ``ow.chat`` sends through (on the client's loop)."""
        if self._aclient is None:
            self._aclient = _openai().AsyncOpenAI(base_url=self.base_url, api_key=self.api_key,
                                                  max_retries=0)
        return self._aclient

    async def _check(self, tries: int = 30) -> None:
        """One chat completion from here (the proxy in front of a pod may lag its server)."""
        openai = _openai()
        client = self.chat_client()
        for attempt in range(tries):
            try:
                await client.chat.completions.create(
                    model=self.models[0], max_tokens=1,
                    messages=[{"role": "user", "content": "Hi"}])
                return
            except (openai.APIConnectionError, openai.InternalServerError,
                    openai.NotFoundError):
                if attempt == tries - 1:
                    raise
                await asyncio.sleep(1.0)  # the proxy has no readiness to wait on

    async def ready(self) -> None:
        """Until the deployment is ready (after a restart, too)."""
        assert self._ready is not None
        await self._ready.wait()

    def renew_every_s(self) -> float:
        return min(60.0, lease_seconds() / 3)

    async def _keep_alive(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.renew_every_s())  # a lease is renewed on a clock
            assert self.job is not None
            # An ended job refuses renewal: it is looked at below.
            with contextlib.suppress(OpenWeightsError):
                await self._jobs.client.jobs.renew_lease(self.job.id, lease_seconds())
            job = await self.job.refresh()
            if job.status in ENDED and not self._closing:
                await self._restart()

    async def _restart(self) -> None:
        assert self.job is not None and self._ready is not None
        self._ready.clear()
        await self.job.restart()
        with contextlib.suppress(ApiFailed):
            await self._wait_ready()

    def detach(self) -> None:
        """Stop renewing the lease without taking the deployment down: it is canceled
        once its lease expires (what happens when the client dies)."""
        if self._keepalive is not None:
            task, self._keepalive = self._keepalive, None
            loop = task.get_loop()
            loop.call_soon_threadsafe(task.cancel)

    async def stop(self) -> None:
        self._closing = True
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        for m in self.models:
            if self._jobs.live.get(m) is self:
                del self._jobs.live[m]
        if self.job is not None:
            with contextlib.suppress(OpenWeightsError):
                await self.job.cancel()
        if self._aclient is not None:
            await self._aclient.close()
            self._aclient = None
        if self._sclient is not None:
            self._sclient.close()
            self._sclient = None
        if self._ready is not None:
            self._ready.clear()


class SyncApi:
    """``ow.api`` on the blocking client: ``create``, ``deploy``, ``multi_deploy``."""

    def __init__(self, jobs: Api, loop: LoopThread) -> None:
        self.jobs, self._loop = jobs, loop

    @property
    def live(self) -> dict[str, TemporaryApi]:
        return self.jobs.live

    def create(self, **params: Any) -> Any:
        """Submit the API job as it is (``deploy`` keeps one alive); a ``Job``."""
        from openweights.sdk.sync_models import Job

        return Job._of(self._loop.run(self.jobs.create(**params)), self._loop)

    def deploy(self, model: str, **kwargs: Any) -> TemporaryApi:
        api = self.jobs.deploy(model, **kwargs)
        api._loop = self._loop
        return api

    def multi_deploy(self, models: list[str], **kwargs: Any) -> dict[str, TemporaryApi]:
        apis = self._loop.run(self.jobs.multi_deploy(models, **kwargs))
        for api in apis.values():
            api._loop = self._loop
        return apis
