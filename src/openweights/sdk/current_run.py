"""``ow.run``: log events and upload files from inside a job (or a plain script).

Inside a job the agent sets ``OPENWEIGHTS_RUN_ID``. ``log`` buffers and sends batches
(up to 1,000 events or 50 ms), so a training loop logging every step does not wait on
a round trip per call; ``flush()`` (also run at exit) sends what is left.
Outside a job, the first use creates a ``script`` job and run for the calling script,
completed when the client closes or the interpreter exits.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import socket
import sys
from collections import deque
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

from openweights.errors import InvalidRequest
from openweights.sdk.files import AsyncFiles
from openweights.sdk.loop import LoopThread, twin
from openweights.sdk.transport import Transport
from openweights.sdk.types import FileInfo, WorkerStatus

BATCH = 1000
LINGER_S = 0.05


class AsyncCurrentRun:
    """The current run of the async client; every method is awaitable."""

    def __init__(self, transport: Transport, files: AsyncFiles) -> None:
        self._t, self._files = transport, files
        self.id: str | None = os.environ.get("OPENWEIGHTS_RUN_ID")
        self.job_id: str | None = os.environ.get("OPENWEIGHTS_JOB_ID")
        self._script = self.id is None
        # A deque: the blocking client appends from the caller's thread while the loop
        # thread takes batches off the front (both operations are atomic).
        self._buffer: deque[dict[str, Any]] = deque()
        self._flusher_running = False
        self._ended = False
        self._linger: asyncio.Task[None] | None = None
        self._lock = anyio.Lock()

    async def _ensure(self) -> str:
        if self.id is None:
            started = await self._t.call("run.script.start", script=" ".join(sys.argv) or
                                         "python", host=socket.gethostname())
            self.id, self.job_id = started["run_id"], started["job_id"]
        return self.id

    async def log(self, data: dict[str, Any]) -> None:
        """Record ``data`` (a JSON object) as an event of this run (buffered: sent in
        batches within 50 ms; ``flush()`` sends now). Raises ``InvalidRequest`` for a
        non-dict; a rejected batch raises from a later ``log`` or ``flush``."""
        if not isinstance(data, dict):
            raise InvalidRequest(f"ow.run.log takes a dict, not {type(data).__name__}")
        await self._ensure()
        self._buffer.append(data)
        if len(self._buffer) >= BATCH:
            await self.flush()
        elif not self._flusher_running:
            self._flusher_running = True
            self._start_linger()

    def _start_linger(self) -> None:
        """(on the loop) Flush once the batching window has passed."""
        self._linger = _spawn(self._linger_then_flush())

    async def _start_linger_soon(self) -> None:
        self._start_linger()

    async def _linger_then_flush(self) -> None:
        try:
            await anyio.sleep(LINGER_S)  # a batching window, not a wait for a condition
            await self.flush()
        finally:
            self._flusher_running = False

    async def flush(self) -> None:
        """Send every buffered event now."""
        async with self._lock:
            while self._buffer:
                batch = [self._buffer.popleft() for _ in range(min(BATCH, len(self._buffer)))]
                await self._t.call("run.log", run_id=self.id, events=batch)

    async def upload(self, path: str | Path, purpose: str = "result") -> FileInfo:
        """Upload a file and record it as an event ``{"path", "file"}`` of this run."""
        await self._ensure()
        info = await self._files.upload(path, purpose)
        await self.flush()
        await self._t.call("run.log", run_id=self.id,
                           events=[{"path": Path(path).name, "file": info["id"]}])
        return info

    async def extend_ttl(self, hours: float) -> WorkerStatus:
        """Keep this job's machine alive ``hours`` from now (default TTL: 24 h).

        Raises ``InvalidRequest`` outside a job run by an agent."""
        worker_id = os.environ.get("OW_WORKER_ID")
        if not worker_id:
            raise InvalidRequest("extend_ttl works only inside a job run by an agent")
        until = datetime.now(UTC) + timedelta(hours=hours)
        status: WorkerStatus = await self._t.call("agent.ttl", worker_id=worker_id,
                                                  ttl_until=until)
        return status

    async def _finish(self) -> None:
        """Send what is buffered and end the script run this client started (once)."""
        if self._linger is not None and not self._linger.done():
            self._linger.cancel()  # we flush now; the batching window is moot
        await self.flush()
        if self._script and self.id is not None and not self._ended:
            self._ended = True
            await self._t.call("run.script.end", run_id=self.id, status="completed")


class CurrentRun:
    """The current run of the blocking client (see :class:`AsyncCurrentRun`)."""

    def __init__(self, run: AsyncCurrentRun, loop: LoopThread) -> None:
        self._a, self._loop = run, loop
        atexit.register(self._at_exit)

    @property
    def id(self) -> str | None:
        return self._a.id

    @property
    def job_id(self) -> str | None:
        return self._a.job_id

    @twin(AsyncCurrentRun.log)
    def log(self, data: dict[str, Any]) -> None:
        a = self._a
        if a.id is None or not isinstance(data, dict):
            return self._loop.run(a.log(data))
        # Steady state: no round trip to the loop thread per event.
        a._buffer.append(data)
        if len(a._buffer) >= BATCH:
            self._loop.run(a.flush())  # back-pressure: a full batch is sent before more
        elif not a._flusher_running:
            a._flusher_running = True
            self._loop.run(a._start_linger_soon())
        return None

    @twin(AsyncCurrentRun.flush)
    def flush(self) -> None:
        return self._loop.run(self._a.flush())

    @twin(AsyncCurrentRun.upload)
    def upload(self, path: str | Path, purpose: str = "result") -> FileInfo:
        return self._loop.run(self._a.upload(path, purpose))

    @twin(AsyncCurrentRun.extend_ttl)
    def extend_ttl(self, hours: float) -> WorkerStatus:
        return self._loop.run(self._a.extend_ttl(hours))

    def _detach(self) -> None:
        """The client closes (and finishes the run): nothing is left to do at exit."""
        atexit.unregister(self._at_exit)

    def _at_exit(self) -> None:
        try:
            self._loop.run(self._a._finish())
        except Exception as exc:  # the interpreter is exiting; say so, don't raise
            print(f"openweights: could not finish run {self.id}: {exc}", file=sys.stderr)


def _spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    task = asyncio.get_running_loop().create_task(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return task


_TASKS: set[asyncio.Task[None]] = set()
