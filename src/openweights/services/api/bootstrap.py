"""Composition root of the api service: every connection, index and handler dependency,
opened on one exit stack (closed in reverse when the service ends)."""

from __future__ import annotations

import secrets
from contextlib import AsyncExitStack

from nats.aio.client import Client
from nats.js import JetStreamContext

from openweights.adapters.files.factory import open_file_store
from openweights.adapters.nats.callout import AuthCallout
from openweights.adapters.nats.eventlog import JetStreamEventLog
from openweights.adapters.nats.fold import LiveFold
from openweights.adapters.nats.server_config import NatsAuthConfig
from openweights.adapters.postgres.db import create_pool
from openweights.adapters.projected import ProjectionWatcher
from openweights.clock import Clock
from openweights.config import Settings
from openweights.execute import Executor
from openweights.ratelimit import EventRates
from openweights.secretbox import SecretBox
from openweights.services.api.callout import (
    CalloutKicker,
    Expiries,
    ExpiryWatch,
    TokenAuthorizer,
    callout_connections,
)
from openweights.services.api.context import Deps, Kicker, NoKicker, ReadModels
from openweights.services.api.indexes import Holdings, OrgSecrets, RunIndex, TokenIndex
from openweights.services.api.loggate import LogGate
from openweights.services.api.routes import ROUTES
from openweights.services.api.service import ApiService
from openweights.services.api.uploads import Slots, Uploads
from openweights.services.runtime import closing
from openweights.subjects import Subjects


async def compose(settings: Settings, stack: AsyncExitStack, nc: Client, js: JetStreamContext,
                  clock: Clock) -> ApiService:
    assert settings.database_url is not None
    subjects = Subjects(settings.namespace)
    pool = await create_pool(settings.database_url, min_size=2, max_size=8)
    closing(stack, pool.close)
    files = await open_file_store(settings, js)
    closing(stack, files.close)
    watcher = ProjectionWatcher(nc, subjects)
    await watcher.start(pool)
    closing(stack, watcher.stop)
    log = JetStreamEventLog(nc, js, subjects, timeout=settings.request_timeout_s)
    fold = LiveFold(nc, js, subjects)
    tokens, runs, holdings = TokenIndex(), RunIndex(fold), Holdings()
    fold.listeners += [tokens.on_event, runs.on_event, holdings.on_event]
    instance = secrets.token_hex(6)
    kicker: Kicker = NoKicker()
    callout, expiry = None, None
    if settings.auth and settings.nats_auth_file is not None:
        assert settings.nats_url is not None
        auth = NatsAuthConfig.load_or_create(settings.nats_auth_file)
        nc_auth, nc_sys = await stack.enter_async_context(
            callout_connections(settings.nats_url, auth))
        expiries = Expiries()
        callout = AuthCallout(nc_auth, auth.issuer_seed, authorize=TokenAuthorizer(
            subjects.ns, fold, tokens, pool, clock, expiries))
        kicker = CalloutKicker(callout, nc_sys)
        expiry = ExpiryWatch(expiries, kicker, clock)
    deps = Deps(
        settings=settings, subjects=subjects, nc=nc, js=js, fold=fold,
        executor=Executor(log, fold, subjects, clock=clock),
        reads=ReadModels(pool, watcher, log, settings.request_timeout_s / 2), files=files,
        uploads=Uploads(settings.home, instance, settings.upload_idle_s,
                        Slots.of(settings)), tokens=tokens,
        runs=runs, holdings=holdings,
        secrets=OrgSecrets(fold, SecretBox(settings.secret_key)), kicker=kicker, clock=clock,
        instance=instance, event_rates=EventRates(
            settings.run_events_run_bytes_per_s, settings.run_events_org_bytes_per_s,
            settings.run_events_burst_s))
    gate = LogGate(nc, js, settings, subjects) if settings.log_gate else None
    return ApiService(deps, ROUTES, callout, expiry, gate=gate)
