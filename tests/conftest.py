"""Real servers for the tests: one nats-server and one Postgres per session.

Each test gets its own stream namespace (so its own streams and subjects) and its own
database, so tests never see each other's data. ``OW_DATABASE_URL`` points the suite
at an existing Postgres instead of an embedded one.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import pytest

from openweights.adapters.embedded import EmbeddedNats, EmbeddedPostgres
from openweights.config import Settings
from openweights.subjects import Subjects

# Streams with a total reserve it from the server's store: at the defaults (1 GiB of logs
# a namespace) a test session's few hundred namespaces on one nats-server run out of it
# ("insufficient storage resources"). Tests bound them smaller, services included.
os.environ.setdefault("OW_LOG_MAX_BYTES", str(32 << 20))
os.environ.setdefault("OW_HEARTBEAT_MAX_BYTES", str(4 << 20))

# Jobs in tests write where their tests look (pytest's tmp dirs, root's 0700): they run
# as the agent's user unless a test asks for isolation (tests/tenancy/test_job_isolation).
# Left to "auto", a root agent isolates jobs wherever its Python is reachable by others,
# which depends on this machine's directory modes, not on the test.
os.environ.setdefault("OW_JOB_ISOLATION", "none")
# Custom jobs run in the agent's own environment: their default image is the unsloth one,
# whose environment only the fine-tuning tests need (they ask for "build" themselves).
os.environ.setdefault("OW_WORKER_ENVS", "agent")

# How long threads still running after the session get to end before the run exits anyway.
THREADS_END_WITHIN_S = 10.0
_EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """A test stopped by its timeout may leave a thread blocked for good (a worker in a
    blocking call); the interpreter would wait for it at exit and hang the run after its
    report. Such a run ends with its status and the stacks of those threads instead."""
    others = [t for t in threading.enumerate()
              if t is not threading.current_thread() and not t.daemon]
    deadline = time.monotonic() + THREADS_END_WITHIN_S
    for thread in others:
        thread.join(max(0.0, deadline - time.monotonic()))
    if stuck := [t.name for t in others if t.is_alive()]:
        sys.stdout.flush()
        print(f"threads still running after the session: {stuck}", file=sys.stderr)
        faulthandler.dump_traceback(all_threads=True)
        sys.stderr.flush()
        os._exit(config.stash.get(_EXIT_STATUS, 1))


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture
def outside_basetemp() -> Iterator[Path]:
    """A temp dir for a test's own embedded Postgres: not under pytest's basetemp (see
    ``postgres_url``), removed after the test."""
    path = Path(tempfile.mkdtemp(prefix="ow-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("OW_DATABASE_URL")
    if given:
        yield given
        return
    # Not under pytest's basetemp: as root, pgserver runs Postgres as its own user and opens
    # the path to the data for it, and every other pytest run on this machine resets
    # /tmp/pytest-of-root to 0700 at its start, which kills this Postgres mid-run.
    home = Path(tempfile.mkdtemp(prefix="ow-test-pg-"))
    pg = EmbeddedPostgres(home / "data").start()
    try:
        yield pg.url
    finally:
        pg.stop()
        shutil.rmtree(home, ignore_errors=True)


def _with_database(url: str, dbname: str) -> str:
    base, sep, query = url.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{dbname}{sep}{query}"


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    dbname = f"t_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{dbname}"'))
    yield _with_database(postgres_url, dbname)
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))


@pytest.fixture
def settings(nats_server: EmbeddedNats, database_url: str, tmp_path: Path) -> Iterator[Settings]:
    made = Settings(
        home=tmp_path / "home",
        nats_url=nats_server.url,
        database_url=database_url,
        namespace=f"t{uuid.uuid4().hex[:10]}",
    )
    yield made
    asyncio.run(_drop_streams(made))


async def _drop_streams(settings: Settings) -> None:
    """The test's namespace's streams go with it: their reserved store is given back."""
    prefix = Subjects(settings.namespace).stream_prefix
    nc = await nats.connect(str(settings.nats_url), allow_reconnect=False)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(prefix):
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()
