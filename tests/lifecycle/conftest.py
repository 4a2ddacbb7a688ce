"""End-to-end lifecycle tests: the real services, real agent processes, real NATS and
Postgres. Tests wait on events (the log's live republish, ``job.wait``), never on sleeps.

``lab`` is the harness most tests use: it starts the services a test asks for, spawns
agents as ``python -m openweights.services.agent`` processes, watches every event as it is stored
and reads whole histories back from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import nats
import pytest
from nats.aio.msg import Msg

from openweights import OpenWeights
from openweights.adapters.embedded import die_with_parent
from openweights.adapters.nats.reader import StoredMessage, read_stream
from openweights.config import Settings, settings_env
from openweights.events import Event, decode
from openweights.secretbox import new_key
from openweights.services.testing.stack import ALL_SERVICES, services_thread
from openweights.services.testing.workerenvs import shared_env_dir
from openweights.subjects import Subjects

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fast_settings(settings: Settings) -> Settings:
    """Short lifecycle intervals so that failures are noticed within a test's time."""
    return settings.model_copy(update={
        "heartbeat_s": 0.5, "worker_lost_s": 4.0, "worker_lost_starting_s": 20.0,
        "run_start_timeout_s": 20.0, "scheduler_check_s": 0.5, "provisioner_check_s": 0.5,
        "cancel_grace_s": 2.0, "start_backoff_s": 1.0})


@pytest.fixture
def full_stack(fast_settings: Settings) -> Iterator[Settings]:
    with services_thread(fast_settings, ALL_SERVICES):
        yield fast_settings


@pytest.fixture
def ow(full_stack: Settings) -> Iterator[OpenWeights]:
    client = OpenWeights(settings=full_stack, retry_for_s=10)
    yield client
    client.close()


# -- watching the log ----------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One event as stored: its log position and the aggregate it belongs to."""

    seq: int
    kind: str
    agg_id: str
    event: Event


@dataclass(frozen=True)
class LogLine:
    run_id: str
    text: str
    received_at: float  # time.time() when the subscriber got it


class LiveEvents:
    """Every event and log line stored after it started, as JetStream republishes them
    (the same live subjects clients follow). Waits are woken by arrivals, not timers."""

    def __init__(self, settings: Settings) -> None:
        self.subjects = Subjects(settings.namespace)
        self.org = settings.default_org
        self.events: list[Seen] = []
        self.lines: list[LogLine] = []
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="live-events")
        self._thread.start()
        self._nc: Any = self._run(self._connect(settings.nats_url))

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _connect(self, url: str | None) -> Any:
        nc = await nats.connect(url)
        await nc.subscribe(f"{self.subjects.live_prefix}.{self.org}.>", cb=self._on_event)
        # The run id is the last token, whatever comes between (the writing worker).
        await nc.subscribe(f"{self.subjects.ns}livelog.{self.org}.>", cb=self._on_line)
        await nc.flush()
        return nc

    async def _on_event(self, msg: Msg) -> None:
        _, _, kind, agg_id = msg.subject.split(".", 3)
        seq = int((msg.headers or {}).get("Nats-Sequence", "0"))
        with self._cond:
            self.events += [Seen(seq, kind, agg_id, e) for e in decode(msg.data)]
            self._cond.notify_all()

    async def _on_line(self, msg: Msg) -> None:
        now = time.time()
        run_id = msg.subject.rsplit(".", 1)[1]
        with self._cond:
            # The agent publishes one line per message, with its newline.
            self.lines.append(LogLine(run_id, msg.data.decode().removesuffix("\n"), now))
            self._cond.notify_all()

    def wait(self, condition: Callable[[LiveEvents], Any], timeout: float,
             what: str = "condition") -> Any:
        """Block until ``condition(self)`` is truthy (checked at every arrival); return it."""
        result: Any = None

        def check() -> bool:
            nonlocal result
            result = condition(self)
            return bool(result)

        with self._cond:
            if not self._cond.wait_for(check, timeout):
                kinds = [(s.kind, s.agg_id, s.event.tag) for s in self.events[-30:]]
                raise TimeoutError(f"no {what} within {timeout} s; last events: {kinds}")
        return result

    def wait_event(self, event_type: type[Event] | tuple[type[Event], ...], timeout: float,
                   where: Callable[[Event], bool] = lambda e: True) -> Seen:
        """The first event of ``event_type`` (seen so far or arriving) that ``where`` holds."""
        return self.wait(lambda live: next(
            (s for s in live.events if isinstance(s.event, event_type) and where(s.event)),
            None), timeout, f"{event_type} event")

    def wait_line(self, text: str, timeout: float) -> LogLine:
        return self.wait(lambda live: next((ln for ln in live.lines if text in ln.text), None),
                         timeout, f"log line {text!r}")

    def of(self, event_type: type[Event] | tuple[type[Event], ...]) -> list[Seen]:
        with self._cond:
            return [s for s in self.events if isinstance(s.event, event_type)]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self._nc.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


def read_log(settings: Settings, kind: str = "*", agg_id: str = "*") -> list[Seen]:
    """Every stored event (of one aggregate, or all), read back from the log in order."""
    subjects = Subjects(settings.namespace)
    out: list[Seen] = []

    async def on_batch(batch: list[StoredMessage]) -> None:
        for m in batch:
            _, _, k, a = m.subject.split(".", 3)
            out.extend(Seen(m.seq, k, a, e) for e in decode(m.data))

    async def main() -> None:
        nc = await nats.connect(settings.nats_url)
        try:
            await read_stream(nc, nc.jetstream(), subjects.events_stream, on_batch,
                              filter_subjects=[f"{subjects.ns}.{settings.default_org}.{kind}"
                                               f".{agg_id}"])
        finally:
            await nc.close()

    anyio.run(main)
    return out


# -- the harness ---------------------------------------------------------------------------


class Lab:
    """Services, agents and observers of one test; everything stops in reverse order."""

    def __init__(self, settings: Settings, tmp: Path) -> None:
        self.settings, self.tmp = settings, tmp
        self.exits = ExitStack()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._ow: OpenWeights | None = None
        self._live: LiveEvents | None = None
        self._n = 0

    # services and observers
    def configure(self, **overrides: Any) -> Settings:
        assert self._ow is None, "configure before starting anything"
        self.settings = self.settings.model_copy(update=overrides)
        return self.settings

    def start(self, *names: str, extra: Any = None) -> None:
        """Start services (all of them by default) in a background thread."""
        _ = self.live  # watch from before the first event of the test
        self.exits.enter_context(services_thread(self.settings, names or ALL_SERVICES, extra))

    def start_ml(self, hf_home: Path, **secrets: str) -> Lab:
        """Every service, with agents running jobs in the built worker environments and
        the organization's jobs reading ``hf_home`` offline (plus ``secrets``)."""
        self.configure(worker_envs="build", worker_env_dir=shared_env_dir(),
                       secret_key=new_key())
        self.start()
        self.ow.secrets.set(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", **secrets)
        return self

    @property
    def live(self) -> LiveEvents:
        if self._live is None:
            self._live = LiveEvents(self.settings)
            self.exits.callback(self._live.close)
        return self._live

    @property
    def ow(self) -> OpenWeights:
        if self._ow is None:
            self._ow = OpenWeights(settings=self.settings, retry_for_s=10)
            self.exits.callback(self._ow.close)
        return self._ow

    def read(self, kind: str = "*", agg_id: str = "*") -> list[Seen]:
        return read_log(self.settings, kind, agg_id)

    def sql(self, query: str, *args: Any) -> list[dict[str, Any]]:
        """Rows of a query on the read models (wait for the projection first)."""
        async def main() -> list[dict[str, Any]]:
            conn = await asyncpg.connect(self.settings.database_url)
            try:
                return [dict(r) for r in await conn.fetch(query, *args)]
            finally:
                await conn.close()

        return anyio.run(main)

    def sees(self, seq: int) -> None:
        """Make the client's next reads reflect the log at least up to ``seq``."""
        t = self.ow.transport
        t.seen_seq = max(t.seen_seq, seq)

    # jobs
    def submit(self, script: str, *, image: str = "dev", **fields: Any) -> Any:
        """A job running ``script`` (unique per call); ``fields`` as in ``jobs.submit``."""
        self._n += 1
        spec = {"id_prefix": "lifecycle", "params": {"n": self._n, "dir": str(self.tmp)},
                "script": script, "docker_image": image, **fields}
        return self.ow.jobs.submit(**spec)

    def submit_many(self, scripts: list[str], *, image: str = "dev",
                    concurrency: int = 32) -> list[Any]:
        first, self._n = self._n, self._n + len(scripts)
        limit = anyio.Semaphore(concurrency)

        async def one(i: int, script: str, out: list[Any]) -> None:
            async with limit:
                out[i] = await self.ow.aio.jobs.submit(
                    id_prefix="lifecycle", params={"n": first + i + 1, "dir": str(self.tmp)},
                    script=script, docker_image=image)

        async def all_() -> list[Any]:
            out: list[Any] = [None] * len(scripts)
            async with anyio.create_task_group() as tg:
                for i, s in enumerate(scripts):
                    tg.start_soon(one, i, s, out)
            return out

        return self.ow.call(all_())

    # agents
    def spawn_agent(self, worker_id: str, *, image: str = "dev", gpus: int = 0,
                    managed: bool = False) -> subprocess.Popen[bytes]:
        env = {**os.environ, **settings_env(self.settings), "OW_WORKER_ID": worker_id,
               "OW_DOCKER_IMAGE": image, "OW_LOCAL_FAKE_GPUS": str(gpus),
               "OW_MANAGED": "1" if managed else "0"}
        log_dir = self.tmp / "agent-logs"
        log_dir.mkdir(exist_ok=True)
        with open(log_dir / f"{worker_id}.log", "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "openweights.services.agent"],
                                    env=env, cwd=REPO,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        if not self.procs:
            self.exits.callback(self._stop_agents)
        self.procs[f"{worker_id}#{proc.pid}"] = proc
        return proc

    def _stop_agents(self) -> None:
        running = [p for p in self.procs.values() if p.poll() is None]
        for p in running:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in running:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.exits.close()


@pytest.fixture
def lab(fast_settings: Settings, tmp_path: Path) -> Iterator[Lab]:
    with Lab(fast_settings, tmp_path) as the_lab:
        yield the_lab


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def alive() -> Callable[[int], bool]:
    return pid_alive
