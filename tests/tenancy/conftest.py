"""Two organizations on one auth-enabled stack (issue 5): the tenancy test matrix's world.

One nats-server with auth callout per session; each world gets its own namespace (its
own streams and subjects), its own database, and its own projector + api (the api also
runs the callout). Orgs ``orgA`` and ``orgB`` each get an admin token; ``orgA`` also a
user token. Clients connect with tokens to the plain URL; operators use ``svc``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import nats
import pytest
from typer.testing import CliRunner, Result

from openweights import OpenWeights, tokens
from openweights.adapters.embedded import EmbeddedNats
from openweights.adapters.nats.eventlog import JetStreamEventLog
from openweights.adapters.nats.reader import StoredMessage, read_stream
from openweights.adapters.nats.server_config import NatsAuthConfig
from openweights.bootstrap import create_organization
from openweights.cli.main import app
from openweights.config import Settings
from openweights.domain import job, token
from openweights.domain.aggregates import JOB
from openweights.domain.commands import AssignJob, CreateToken, StartRun
from openweights.errors import AuthenticationError
from openweights.events import Actor, decode
from openweights.secretbox import new_key
from openweights.services.testing.clock import MovableClock
from openweights.services.testing.stack import services_thread
from openweights.subjects import Subjects

A, B = "orgA", "orgB"
OPERATOR = Actor("operator", "tenancy-tests")


@pytest.fixture(scope="session")
def auth_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    home = tmp_path_factory.mktemp("auth-nats")
    auth = NatsAuthConfig.load_or_create(home / "nats-auth.json")
    server = EmbeddedNats(home / "nats", auth=auth).start()
    yield server
    server.stop()


def _with_database(url: str, dbname: str) -> str:
    base, sep, query = url.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{dbname}{sep}{query}"


async def _sql(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()




@dataclass
class World:
    server: EmbeddedNats
    settings: Settings  # the services' (and operators') settings: svc credentials
    client_settings: Settings  # what token holders use: the plain URL
    home: Path
    tokens: dict[str, str] = field(default_factory=dict)  # "a_admin" -> "ow_..."
    clients: list[OpenWeights] = field(default_factory=list)
    clock: MovableClock = field(default_factory=MovableClock)

    @property
    def ns(self) -> str:
        return self.settings.namespace

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.ns)

    def tid(self, name: str) -> str:
        return tokens.token_id(self.tokens[name])

    def ow(self, name_or_token: str, retry_for_s: float = 2.0) -> OpenWeights:
        """A blocking client with a token (a name in ``tokens`` or the token itself)."""
        key = self.tokens.get(name_or_token, name_or_token)
        client = OpenWeights(api_key=key, settings=self.client_settings,
                             retry_for_s=retry_for_s)
        self.clients.append(client)
        return client

    def cli(self, name_or_token: str, *args: str, operator: bool = False,
            input: str | None = None) -> Result:
        key = self.tokens.get(name_or_token, name_or_token)
        env = {"OW_NATS_URL": self.settings.nats_url if operator else self.server.url,
               "OW_NAMESPACE": self.ns, "OW_HOME": str(self.home / "cli"),
               "OPENWEIGHTS_API_KEY": key, "COLUMNS": "250", "OW_REQUEST_TIMEOUT_S": "3",
               "OW_DATABASE_URL": str(self.settings.database_url)}
        return CliRunner().invoke(app, list(args), env=env, input=input)

    # -- operator actions (svc credentials), for what no token may do -------------------
    async def _append(self, org: str, kind: str, agg_id: str, events: list[Any],
                      expected: int | None) -> int:
        nc = await nats.connect(self.settings.nats_url, allow_reconnect=False)
        try:
            log = JetStreamEventLog(nc, nc.jetstream(), self.subjects)
            ack = await log.append(self.subjects.aggregate(org, kind, agg_id), events,
                                   expected_last_subject_seq=expected)
            return ack.seq
        finally:
            await nc.close()

    def worker_token(self, org: str, worker_id: str) -> str:
        """Credentials like the provisioner's ``_worker_credentials``: one worker's."""
        plain = tokens.new_token()
        cmd = CreateToken(org=org, token_id=tokens.token_id(plain), name=f"worker {worker_id}",
                          role="worker", token_hash=tokens.token_hash(plain),
                          token_prefix=tokens.token_prefix(plain), worker_id=worker_id)
        events = token.decide(None, cmd, datetime.now(UTC), OPERATOR)
        anyio.run(self._append, org, "token", cmd.token_id, events, 0)
        self.wait_usable(plain)
        return plain

    def start_run(self, org: str, job_id: str, worker_id: str, run_id: str,
                  *, start: bool = True) -> None:
        """Play the scheduler (assign the job to ``worker_id``) and, with ``start``, the
        agent (start the run)."""
        job_state = self.job_state(org, job_id)
        now, by = datetime.now(UTC), Actor("agent", worker_id)
        events = job.decide(job_state, AssignJob(worker_id=worker_id, run_id=run_id), now, by)
        if start:
            after = JOB.fold(events, job_state)
            events += job.decide(after, StartRun(run_id=run_id, worker_id=worker_id), now, by)
        anyio.run(self._append, org, "job", job_state.id, events, None)

    def job_state(self, org: str, job_id: str) -> Any:
        """The job's state folded from its history in the log (read as ``svc``)."""
        async def read() -> Any:
            nc = await nats.connect(self.settings.nats_url, allow_reconnect=False)
            events: list[Any] = []

            async def on_batch(batch: list[StoredMessage]) -> None:
                for m in batch:
                    events.extend(decode(m.data))
            try:
                await read_stream(nc, nc.jetstream(), self.subjects.events_stream, on_batch,
                                  filter_subjects=[self.subjects.job(org, job_id)])
            finally:
                await nc.close()
            return JOB.fold(events)
        return anyio.run(read)

    def wait_usable(self, plain: str) -> None:
        """A token appended straight to the log is known to the callout a moment later."""
        end = time.monotonic() + 10
        while True:
            client = OpenWeights(api_key=plain, settings=self.client_settings, retry_for_s=1)
            try:
                client.call(client.transport.connect())
                return
            except AuthenticationError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)
            finally:
                with suppress(Exception):
                    client.close()

    def close_clients(self) -> None:
        for c in self.clients:
            with suppress(Exception):
                c.close()
        self.clients.clear()


@contextmanager
def open_world(server: EmbeddedNats, postgres_url: str, home: Path) -> Iterator[World]:
    assert server.auth is not None
    dbname = f"ten_{uuid.uuid4().hex[:12]}"
    anyio.run(_sql, postgres_url, f'CREATE DATABASE "{dbname}"')
    ns = f"t{uuid.uuid4().hex[:10]}"
    auth_file = server.data_dir.parent / "nats-auth.json"  # as written by `auth_nats`
    settings = Settings(home=home / "services", nats_url=server.service_url,
                        database_url=_with_database(postgres_url, dbname), namespace=ns,
                        auth=True, nats_auth_file=auth_file, client_nats_url=server.url,
                        secret_key=new_key(), request_timeout_s=5.0)
    client_settings = Settings(home=home / "client", nats_url=server.url, namespace=ns,
                               request_timeout_s=3.0)
    world = World(server, settings, client_settings, home)
    try:
        with services_thread(settings, ("projector", "api"), clock=world.clock):
            for org, name in ((A, "a_admin"), (B, "b_admin")):
                made = anyio.run(create_organization, settings, org, f"org {org}")
                world.tokens[name] = made["token"]
                world.wait_usable(made["token"])
            a = world.ow("a_admin")
            world.tokens["a_user"] = a.tokens.create("a user", role="user")["token"]
            try:
                yield world
            finally:
                world.close_clients()
    finally:
        anyio.run(_sql, postgres_url, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


@pytest.fixture
def world(auth_nats: EmbeddedNats, postgres_url: str, tmp_path: Path) -> Iterator[World]:
    with open_world(auth_nats, postgres_url, tmp_path) as w:
        yield w


# -- raw nats-py clients ------------------------------------------------------------------
class Errors:
    """An ``error_cb`` that keeps what the server said (nats-py lowercases subjects)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._changed = anyio.Event()

    async def record(self, exc: Exception) -> None:
        self.seen.append(str(exc).lower())
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, fragment: str) -> None:
        with anyio.fail_after(5, reason=f"no {fragment!r} among {self.seen}"):
            while not any(fragment.lower() in e for e in self.seen):
                await self._changed.wait()


async def raw_connect(world: World, token: str, errors: Errors | None = None,
                      **options: Any) -> nats.aio.client.Client:
    """A hand-written client with a token: only its own inbox prefix works."""
    options.setdefault("allow_reconnect", False)
    return await nats.connect(world.server.url, token=token,
                              inbox_prefix=f"_INBOX.{tokens.token_id(token)}",
                              error_cb=(errors or Errors()).record, **options)


async def wait_flushed(nc: nats.aio.client.Client) -> None:
    # nats-py's flush() can overtake SUBs still queued for its flusher (callout.py).
    await nc.flush()
    await nc.flush()


def retry(fn: Any, what: str, timeout: float = 10) -> Any:
    """``fn()`` until it stops raising (something appended straight to the log reaches
    the api's fold and the read models a moment later)."""
    end = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() > end:
                raise AssertionError(f"gave up waiting for {what}") from None
            time.sleep(0.05)


# -- org B with one of everything -----------------------------------------------------------
@dataclass
class Data:
    marker: str  # a string in B's params, events and log lines; nothing of A contains it
    file_b: str
    file_b_bytes: bytes
    job_b: str
    run_b: str
    worker_b: str
    worker_b_token: str
    upload_b: str
    instance_b: str
    token_b_user: str  # an id
    secret_b: str  # a name only B has
    secret_b_value: str
    file_a: str
    job_a: str
    run_a: str


def populate(world: World, tmp: Path) -> Data:
    """Give org B a file, a job with a running run on its worker, run events, log lines,
    an open upload, a second token and a secret; org A a file, a job and a run."""
    marker = f"b-marker-{uuid.uuid4().hex[:8]}"
    a, b = world.ow("a_admin"), world.ow("b_admin")
    secret_value = f"b-secret-{uuid.uuid4().hex}"
    b.secrets.set(B_ONLY_SECRET=secret_value)
    a.secrets.set(A_SECRET=f"a-secret-{uuid.uuid4().hex}")
    path = tmp / "data.bin"
    path.write_bytes(b"bytes of " + marker.encode())
    file_b = b.files.upload(path, "blob")["id"]
    file_a = a.files.upload(path, "blob")["id"]
    assert file_a != file_b  # the same bytes in two orgs: two ids
    job_b = b.jobs.submit(id_prefix="bjob", script="echo b", docker_image="img",
                          params={"mount": file_b, "marker": marker}).id
    job_a = a.jobs.submit(id_prefix="ajob", script="echo a", docker_image="img",
                          params={"mount": file_a}).id
    worker_token = world.worker_token(B, "wB")
    wb = world.ow(worker_token)
    wb.call(wb.transport.call("agent.register", worker_id="wB", docker_image="img",
                              hardware_type="cpu"))
    world.start_run(B, job_b, "wB", "run-b1")
    world.start_run(A, job_a, "wA", "run-a1")
    retry(lambda: b.call(b.transport.call("run.log", run_id="run-b1",
                                          events=[{"loss": 0.25, "marker": marker}])),
          "the api to know run-b1")

    async def log_line() -> None:
        nc = await raw_connect(world, worker_token)
        await nc.publish(world.subjects.log(B, "run-b1", "wB"), f"{marker} line\n".encode())
        await nc.flush()
        await nc.close()

    anyio.run(log_line)
    assert retry(lambda: list(b.runs.read_logs("run-b1")) or 1 / 0,
                 "B's log line")[0][1].startswith(marker)
    begun = b.call(b.transport.call("files.upload.begin", filename="open.bin", purpose="blob"))
    token_b_user = b.tokens.create("b user")["id"]
    # B sees all of it: these ids exist.
    assert b.jobs.retrieve(job_b).params["marker"] == marker
    assert retry(lambda: b.runs.retrieve("run-b1"), "run-b1 projected").job_id == job_b
    assert retry(lambda: b.events.list(job_id=job_b) or 1 / 0, "B's events")
    assert b.files.content(file_b) == path.read_bytes()
    assert "B_ONLY_SECRET" in b.secrets.list()
    return Data(marker=marker, file_b=file_b, file_b_bytes=path.read_bytes(), job_b=job_b,
                run_b="run-b1", worker_b="wB", worker_b_token=worker_token,
                upload_b=begun["upload_id"], instance_b=begun["instance"],
                token_b_user=token_b_user, secret_b="B_ONLY_SECRET",
                secret_b_value=secret_value, file_a=file_a, job_a=job_a, run_a="run-a1")


@pytest.fixture(scope="module")
def populated(auth_nats: EmbeddedNats, postgres_url: str,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, Data]]:
    home = tmp_path_factory.mktemp("populated")
    with open_world(auth_nats, postgres_url, home) as w:
        yield w, populate(w, home)
