"""``AsyncOpenWeights``: the SDK's API, every call awaitable.

The blocking ``OpenWeights`` (:mod:`openweights.sdk.blocking`) wraps it. The constructor
takes the original SDK's keywords too (``auth_token``, ``organization_id``, ``use_async``,
``deploy_kwargs``; ``supabase_url``/``supabase_key`` are accepted and ignored, with one
warning per process), so code written for it constructs its client unchanged.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from openweights.config import Settings
from openweights.errors import InvalidRequest, NotConnected
from openweights.jobs import builtin  # noqa: F401 - registers ow.fine_tuning, ow.logprob, ...
from openweights.sdk.chat import AsyncChat, AsyncCompletions
from openweights.sdk.costs import AsyncCosts
from openweights.sdk.current_run import AsyncCurrentRun
from openweights.sdk.custom import Jobs, track
from openweights.sdk.evals import AsyncEvals
from openweights.sdk.events import AsyncEvents
from openweights.sdk.files import AsyncFiles
from openweights.sdk.jobs import AsyncJobsResource
from openweights.sdk.models import AsyncModels
from openweights.sdk.runs import AsyncRuns
from openweights.sdk.tenancy import AsyncSecrets, AsyncTokens
from openweights.sdk.transport import Transport
from openweights.sdk.workers import AsyncWorkers

DEFAULT_DEPLOY_KWARGS = {"max_model_len": 2048}
_warned_supabase = False


class AsyncOpenWeights:
    """The openweights client: ``files``, ``jobs``, ``runs``, ``events``, ``tokens``,
    ``secrets``, ``workers``, the current run ``run``, and one attribute per registered
    job type.

    ``api_key`` (or the original's ``auth_token``; default ``$OPENWEIGHTS_API_KEY``, else
    the local `ow up` stack's admin token). ``organization_id``: without a token, the
    organization to act in on a stack without auth; with one, the organization the token
    must belong to (else ``Forbidden`` when connecting). ``chat``
    (``async_chat``) deploys models on demand with ``deploy_kwargs``; ``use_async``
    makes the blocking client's ``chat`` the async one. Nothing
    connects until the first call (or :meth:`connect`).
    """

    files: AsyncFiles
    jobs: AsyncJobsResource
    runs: AsyncRuns
    events: AsyncEvents
    tokens: AsyncTokens
    secrets: AsyncSecrets
    workers: AsyncWorkers
    models: AsyncModels
    costs: AsyncCosts
    evals: AsyncEvals
    chat: AsyncChat
    async_chat: AsyncChat

    def __init__(self, api_key: str | None = None, nats_url: str | None = None, *,
                 auth_token: str | None = None, organization_id: str | None = None,
                 use_async: bool = False, deploy_kwargs: dict[str, Any] | None = None,
                 supabase_url: str | None = None, supabase_key: str | None = None,
                 settings: Settings | None = None, retry_for_s: float = 60.0) -> None:
        ignore_supabase(supabase_url, supabase_key)
        self.transport = make_transport(api_key, auth_token, nats_url, settings, retry_for_s,
                                        organization_id)
        self.use_async = use_async
        self.deploy_kwargs = dict(DEFAULT_DEPLOY_KWARGS if deploy_kwargs is None
                                  else deploy_kwargs)
        t = self.transport
        self.files = AsyncFiles(t)
        self.runs = AsyncRuns(t, self.files)
        self.jobs = AsyncJobsResource(t, self.runs)
        self.events = AsyncEvents(t)
        self.tokens = AsyncTokens(t)
        self.secrets = AsyncSecrets(t)
        self.workers = AsyncWorkers(t)
        self.models = AsyncModels(t, self.files)
        self.costs = AsyncCosts(t)
        self.evals = AsyncEvals(t)
        self._run: AsyncCurrentRun | None = None
        track(self)
        # ow.chat deploys on demand through ow.api (REFERENCE 1.14).
        self.chat = self.async_chat = AsyncChat(AsyncCompletions(
            self.api, self.deploy_kwargs))  # type: ignore[arg-type]

    def _attach(self, name: str, cls: type[Jobs]) -> None:
        setattr(self, name, cls(self))

    def __getattr__(self, name: str) -> Jobs:
        """A registered job type (``@register(name)``); set on the instance, so this is
        reached only for names that are not registered."""
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r} (a job "
                             "type is an attribute once registered with @register)")

    @property
    def run(self) -> AsyncCurrentRun:
        """The current run: inside a job (``OPENWEIGHTS_RUN_ID``) that job's run; outside,
        a script job and run created for the calling script on first use."""
        if self._run is None:
            self._run = AsyncCurrentRun(self.transport, self.files)
        return self._run

    async def connect(self) -> None:
        """Connect now (every call otherwise connects on first use) and learn the
        organization. Raises ``StackUnavailable``, ``AuthenticationError``, ``Forbidden``
        (the token belongs to another organization than ``organization_id``)."""
        await self.transport.connect()

    def _identified(self) -> Transport:
        if not self.transport.identified:
            raise NotConnected("the async client knows its organization once connected: "
                               "await aow.connect() (or make any call) first")
        return self.transport

    @property
    def organization_id(self) -> str:
        """The organization this client acts in. Raises ``NotConnected`` before the
        client has connected."""
        return self._identified().org

    @property
    def org_name(self) -> str | None:
        """The organization's name (None when the service does not say: a stack without
        auth, or an older api service). Raises ``NotConnected`` before connecting."""
        return self._identified().org_name

    @property
    def hf_org(self) -> str | None:
        """Where models are pushed: the organization's ``HF_ORG`` secret, else ``$HF_ORG``,
        else ``$HF_USER`` (None if none is set). Raises ``NotConnected`` before
        connecting."""
        return hf_org(self._identified())

    async def close(self) -> None:
        """End the script run this client started (if any) and disconnect."""
        if self._run is not None:
            await self._run._finish()
        await self.transport.close()

    async def __aenter__(self) -> AsyncOpenWeights:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def hf_org(t: Transport) -> str | None:
    return t.org_hf_org or os.environ.get("HF_ORG") or os.environ.get("HF_USER")


def make_transport(api_key: str | None, auth_token: str | None, nats_url: str | None,
                   settings: Settings | None, retry_for_s: float,
                   organization_id: str | None) -> Transport:
    if api_key is not None and auth_token is not None and api_key != auth_token:
        raise InvalidRequest("give the API key once: api_key= or auth_token= (the original "
                             "SDK's name for it), not two different ones")
    base = settings or Settings()
    if nats_url is not None:
        base = base.model_copy(update={"nats_url": nats_url})
    key = api_key or auth_token or os.environ.get("OPENWEIGHTS_API_KEY")
    if key is None:
        from openweights.stack import local_token, read_stack

        local = read_stack(base)
        if local is not None and base.nats_url in (None, local["nats_url"]):
            key = local_token(base)  # the local `ow up` stack's admin token
    return Transport(base, key, retry_for_s=retry_for_s, organization_id=organization_id)


def ignore_supabase(url: str | None, key: str | None, stacklevel: int = 3) -> None:
    global _warned_supabase
    if (url is not None or key is not None) and not _warned_supabase:
        _warned_supabase = True
        warnings.warn("supabase_url and supabase_key are ignored: openweights talks to its "
                      "own service (OW_NATS_URL; `ow up` locally); pass auth_token= or set "
                      "OPENWEIGHTS_API_KEY", UserWarning, stacklevel=stacklevel)
