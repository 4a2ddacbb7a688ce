"""``ow.chat.completions.create(model=..., messages=...)``: chat with any model, deployed
on demand (REFERENCE 1.14).

A model no deployment of this client serves is queued; after a batching window (5 s)
every queued model is deployed with one ``ow.api.multi_deploy`` (adapters grouped on
their base model), and each waiting call goes on once its deployment is ready. At most
``max_num_seqs`` requests are in flight per deployment; a request times out after
``max(300 s, max_tokens x 1 s)`` and transient errors (connection, timeout, rate limit,
5xx) are retried with exponential backoff. ``kill(model)`` takes its deployment down.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from openweights.errors import InvalidRequest

if TYPE_CHECKING:
    from openweights.jobs.vllm.job import Api
    from openweights.sdk.loop import LoopThread
    from openweights.sdk.temporary_api import TemporaryApi

__all__ = ["AsyncChat", "Chat"]

T = TypeVar("T")
BATCH_S = 5.0
REQUEST_TIMEOUT_S = 300.0
PER_TOKEN_TIMEOUT_S = 1.0
RETRIES = 5


class AsyncCompletions:
    """``create`` and ``kill``, run on the client's loop."""

    def __init__(self, api: Api, deploy_kwargs: dict[str, Any]) -> None:
        self.api, self.deploy_kwargs = api, deploy_kwargs
        self.batch_s = BATCH_S
        self._queued: dict[str, asyncio.Future[TemporaryApi]] = {}
        self._batch: asyncio.Task[None] | None = None
        self._limits: dict[int, asyncio.Semaphore] = {}

    async def create(self, *, model: str, messages: list[dict[str, Any]], **kw: Any) -> Any:
        """A chat completion (``openai``'s ``ChatCompletion``) of ``model``, deployed first
        if no deployment of this client serves it. Raises ``InvalidRequest`` for
        ``stream=True``; what the OpenAI client raises once retries are spent."""
        if kw.get("stream"):
            raise InvalidRequest("ow.chat does not stream: use the client ow.api.deploy "
                                 "returns for streaming")
        api = await self._deployment(model)
        timeout = max(REQUEST_TIMEOUT_S, (kw.get("max_tokens") or 0) * PER_TOKEN_TIMEOUT_S)
        kw.setdefault("timeout", timeout)
        limit = self._limits.setdefault(id(api), asyncio.Semaphore(api.max_num_seqs))
        async with limit:
            return await _retrying(lambda: api.chat_client().chat.completions.create(
                model=model, messages=messages, **kw))

    async def _deployment(self, model: str) -> TemporaryApi:
        api = self.api.live.get(model)
        if api is not None:
            await api.ready()
            return api
        waiting = self._queued.get(model)
        if waiting is None:
            waiting = self._queued[model] = asyncio.get_running_loop().create_future()
            if self._batch is None or self._batch.done():
                self._batch = asyncio.create_task(self._deploy_queued())
        return await asyncio.shield(waiting)

    async def _deploy_queued(self) -> None:
        await asyncio.sleep(self.batch_s)  # the batching window: one deployment per base
        queued, self._queued = self._queued, {}
        try:
            apis = await self.api.multi_deploy(list(queued), **self.deploy_kwargs)
            unique = list({id(a): a for a in apis.values()}.values())
            results = await asyncio.gather(*(a.start() for a in unique), return_exceptions=True)
            failed = {id(a): r for a, r in zip(unique, results, strict=True)
                      if isinstance(r, BaseException)}
        except Exception as exc:
            for future in queued.values():
                future.set_exception(exc)
            return
        for model, future in queued.items():
            api = apis[model]
            if id(api) in failed:
                future.set_exception(failed[id(api)])
            else:
                future.set_result(api)

    async def kill(self, model: str) -> None:
        """Take down the deployment serving ``model`` (and the others it serves)."""
        api = self.api.live.get(model)
        if api is not None:
            self._limits.pop(id(api), None)
            await api.stop()


async def _retrying(call: Any, tries: int = RETRIES) -> Any:
    import openai

    transient = (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError,
                 openai.InternalServerError)
    for attempt in range(tries):
        try:
            return await call()
        except transient:
            if attempt == tries - 1:
                raise
            await asyncio.sleep(min(30.0, 2.0 ** attempt))  # exponential backoff
    raise AssertionError("unreachable")


class AsyncChat:
    """``await aow.chat.completions.create(...)``."""

    def __init__(self, completions: AsyncCompletions, loop: LoopThread | None = None) -> None:
        self._c, self._loop = completions, loop
        self.completions = self

    async def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            return await coro
        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(coro, self._loop.loop))

    async def create(self, *, model: str, messages: list[dict[str, Any]], **kw: Any) -> Any:
        return await self._on_loop(self._c.create(model=model, messages=messages, **kw))

    async def kill(self, model: str) -> None:
        await self._on_loop(self._c.kill(model))


class Chat:
    """``ow.chat.completions.create(...)`` on the blocking client: a deployment is found
    (or made) on the client's loop; the request itself goes from the calling thread
    through the deployment's blocking OpenAI client (no hop to the loop per request)."""

    def __init__(self, completions: AsyncCompletions, loop: LoopThread) -> None:
        self._c, self._loop = completions, loop
        self.completions = self
        self._limits: dict[int, threading.BoundedSemaphore] = {}

    def create(self, *, model: str, messages: list[dict[str, Any]], **kw: Any) -> Any:
        if kw.get("stream"):
            raise InvalidRequest("ow.chat does not stream: use the client ow.api.deploy "
                                 "returns for streaming")
        api = self._c.api.live.get(model)
        if api is None or not api.is_ready:
            api = self._loop.run(self._c._deployment(model))
        kw.setdefault("timeout", max(REQUEST_TIMEOUT_S,
                                     (kw.get("max_tokens") or 0) * PER_TOKEN_TIMEOUT_S))
        limit = self._limits.get(id(api))
        if limit is None:
            limit = self._limits.setdefault(id(api), threading.BoundedSemaphore(api.max_num_seqs))
        client = api.sync_chat_client()
        with limit:
            return _retrying_sync(lambda: client.chat.completions.create(
                model=model, messages=messages, **kw))

    def kill(self, model: str) -> None:
        self._loop.run(self._c.kill(model))


def _retrying_sync(call: Any, tries: int = RETRIES) -> Any:
    import openai

    transient = (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError,
                 openai.InternalServerError)
    for attempt in range(tries):
        try:
            return call()
        except transient:
            if attempt == tries - 1:
                raise
            time.sleep(min(30.0, 2.0 ** attempt))  # exponential backoff
    raise AssertionError("unreachable")
