"""``OpenWeights``: the async API (:class:`~openweights.sdk.client.AsyncOpenWeights`),
blocking.

Each method runs its async twin on a private event loop thread and waits for the result,
so the client also works inside notebooks that already run a loop. A method only
delegates: one hop to the loop thread per call, none per ``ow.run.log`` in the steady
state.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from openweights.config import Settings
from openweights.sdk.chat import AsyncChat, Chat
from openweights.sdk.client import AsyncOpenWeights, ignore_supabase
from openweights.sdk.costs import Costs
from openweights.sdk.current_run import CurrentRun
from openweights.sdk.custom import REGISTERED, Jobs
from openweights.sdk.evals import Evals
from openweights.sdk.loop import LoopThread, twin
from openweights.sdk.models import Models
from openweights.sdk.sync_models import Job
from openweights.sdk.sync_resources import (
    Events,
    Files,
    JobsResource,
    Runs,
    Secrets,
    Tokens,
    Workers,
)
from openweights.sdk.temporary_api import SyncApi

T = TypeVar("T")


class BoundJobs:
    """``ow.<name>`` of a registered job type on the blocking client; ``jobs`` is the
    job class's instance (its ``mount``, ``params``, ...)."""

    def __init__(self, jobs: Jobs, loop: LoopThread) -> None:
        self.jobs, self._loop = jobs, loop

    @twin(Jobs.create)
    def create(self, **params: Any) -> Job:
        return Job._of(self._loop.run(self.jobs.create(**params)), self._loop)


class OpenWeights:
    __doc__ = AsyncOpenWeights.__doc__

    def __init__(self, api_key: str | None = None, nats_url: str | None = None, *,
                 auth_token: str | None = None, organization_id: str | None = None,
                 use_async: bool = False, deploy_kwargs: dict[str, Any] | None = None,
                 supabase_url: str | None = None, supabase_key: str | None = None,
                 settings: Settings | None = None, retry_for_s: float = 60.0) -> None:
        ignore_supabase(supabase_url, supabase_key, stacklevel=3)
        self._loop = LoopThread()
        self._aio = a = AsyncOpenWeights(
            api_key, nats_url, auth_token=auth_token, organization_id=organization_id,
            use_async=use_async, deploy_kwargs=deploy_kwargs, settings=settings,
            retry_for_s=retry_for_s)
        self.transport, self.use_async, self.deploy_kwargs = (
            a.transport, a.use_async, a.deploy_kwargs)
        self.files = Files(a.files, self._loop)
        self.jobs = JobsResource(a.jobs, self._loop)
        self.runs = Runs(a.runs, self._loop)
        self.events = Events(a.events, self._loop)
        self.tokens = Tokens(a.tokens, self._loop)
        self.secrets = Secrets(a.secrets, self._loop)
        self.workers = Workers(a.workers, self._loop)
        self.models = Models(a.models, self._loop)
        self.costs = Costs(a.costs, self._loop)
        self.evals = Evals(a.evals, self._loop)
        self._run: CurrentRun | None = None
        self._bound: dict[str, BoundJobs] = {}
        self.api = SyncApi(a.api, self._loop)
        self.async_chat = AsyncChat(a.chat._c, self._loop)
        self.chat: Chat | AsyncChat = self.async_chat if use_async else Chat(a.chat._c,
                                                                             self._loop)

    def __getattr__(self, name: str) -> BoundJobs:
        """A registered job type (``@register(name)``), wrapping the async client's."""
        if name.startswith("_") or name not in REGISTERED:
            raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r} (a "
                                 "job type is an attribute once registered with @register)")
        inner: Jobs = getattr(self._aio, name)
        bound = self._bound.get(name)
        if bound is None or bound.jobs is not inner:  # registered again meanwhile
            bound = self._bound[name] = BoundJobs(inner, self._loop)
        return bound

    @property
    def run(self) -> CurrentRun:
        """The current run (see :attr:`AsyncOpenWeights.run`); its pending events are sent
        when the client closes or the interpreter exits."""
        if self._run is None:
            self._run = CurrentRun(self._aio.run, self._loop)
        return self._run

    @twin(AsyncOpenWeights.connect)
    def connect(self) -> None:
        return self._loop.run(self._aio.connect())

    def _connected(self) -> AsyncOpenWeights:
        if not self.transport.identified:
            self.connect()
        return self._aio

    @property
    def organization_id(self) -> str:
        """The organization this client acts in. Connects on first use, so it raises what
        :meth:`connect` raises."""
        return self._connected().organization_id

    @property
    def org_name(self) -> str | None:
        """The organization's name, None when the service does not say (a stack without
        auth, or an older api service). Connects on first use (see ``organization_id``)."""
        return self._connected().org_name

    @property
    def hf_org(self) -> str | None:
        """Where models are pushed: the organization's ``HF_ORG`` secret, else ``$HF_ORG``,
        else ``$HF_USER`` (None if none is set). Connects on first use."""
        return self._connected().hf_org

    @property
    def aio(self) -> AsyncOpenWeights:
        """The async client this one delegates to. Its coroutines belong to this client's
        loop thread: run them with :meth:`call` (e.g. many submissions at once)."""
        return self._aio

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on this client's loop thread (where its connection lives) and
        return its result: for code mixing in :attr:`aio`, ``transport`` or other async
        code. Raises what the coroutine raises."""
        return self._loop.run(coro)

    @twin(AsyncOpenWeights.close)
    def close(self) -> None:
        if self._loop.stopped:
            return
        if self._run is not None:
            self._run._detach()
        self._loop.run(self._aio.close())
        self._loop.stop()

    def __enter__(self) -> OpenWeights:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
