"""``ow.run``: log events and upload files from inside a job (or a plain script).

Inside a job the agent sets ``OPENWEIGHTS_RUN_ID``. ``log`` buffers and sends batches
(up to 1,000 events or 50 ms), so a training loop logging every step does not wait on
a round trip per call; ``flush()`` (also run at exit) sends what is left.
Outside a job, the first use creates a ``script`` job and run for the calling script,
completed when the interpreter exits.
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from openweights.sdk.client import _Client

BATCH = 1000
LINGER_S = 0.05


class CurrentRun:
    def __init__(self, client: _Client) -> None:
        self._c = client
        self.id: str | None = os.environ.get("OPENWEIGHTS_RUN_ID")
        self.job_id: str | None = os.environ.get("OPENWEIGHTS_JOB_ID")
        self._script = self.id is None
        # A deque: the blocking client appends from the caller's thread while the loop
        # thread takes batches off the front (both operations are atomic).
        self._buffer: deque[dict[str, Any]] = deque()
        self._flusher_running = False
        self._ended = False
        self._linger: Any = None
        self._lock = anyio.Lock()
        if not client.is_async:
            atexit.register(self._at_exit)

    async def _ensure(self) -> str:
        if self.id is None:
            started = await self._c.transport.call(
                "run.script.start", script=" ".join(sys.argv) or "python",
                host=socket.gethostname())
            self.id, self.job_id = started["run_id"], started["job_id"]
        return self.id

    async def _log(self, data: dict[str, Any]) -> None:
        if not isinstance(data, dict):
            from openweights.errors import InvalidRequest

            raise InvalidRequest(f"ow.run.log takes a dict, not {type(data).__name__}")
        await self._ensure()
        self._buffer.append(data)
        if len(self._buffer) >= BATCH:
            await self._flush()
        elif not self._flusher_running:
            self._flusher_running = True
            self._linger = asyncio_loop_spawn(self._linger_then_flush())

    def log(self, data: dict[str, Any]) -> Any:
        """Record ``data`` (a JSON object) as an event of this run (buffered: sent in
        batches within 50 ms; ``flush()`` sends now)."""
        if self._c.is_async or self.id is None or not isinstance(data, dict):
            return self._c.call(self._log(data))
        # Blocking client, steady state: no round trip to the loop thread per event.
        self._buffer.append(data)
        if len(self._buffer) >= BATCH:
            self._c.call(self._flush())  # back-pressure: a full batch is sent before more
        elif not self._flusher_running:
            self._flusher_running = True
            self._c.call(_spawn_linger(self))
        return None

    async def _linger_then_flush(self) -> None:
        try:
            await anyio.sleep(LINGER_S)  # a batching window, not a wait for a condition
            await self._flush()
        finally:
            self._flusher_running = False

    async def _flush(self) -> None:
        async with self._lock:
            while self._buffer:
                batch = [self._buffer.popleft() for _ in range(min(BATCH, len(self._buffer)))]
                await self._c.transport.call("run.log", run_id=self.id, events=batch)

    def flush(self) -> Any:
        return self._c.call(self._flush())

    async def _upload(self, path: str | Path, purpose: str = "result") -> dict[str, Any]:
        await self._ensure()
        info = await self._c.files._upload(path, purpose)
        await self._flush()
        await self._c.transport.call("run.log", run_id=self.id,
                                     events=[{"path": Path(path).name, "file": info["id"]}])
        return info

    def upload(self, path: str | Path, purpose: str = "result") -> Any:
        """Upload a file and record it as an event ``{"path", "file"}`` of this run."""
        return self._c.call(self._upload(path, purpose))

    async def _finish(self) -> None:
        """Send what is buffered and end the script run this client started (once)."""
        if self._linger is not None and not self._linger.done():
            self._linger.cancel()  # we flush now; the batching window is moot
        await self._flush()
        if self._script and self.id is not None and not self._ended:
            self._ended = True
            await self._c.transport.call("run.script.end", run_id=self.id, status="completed")

    def extend_ttl(self, hours: float) -> Any:
        """Keep this job's machine alive ``hours`` from now (default TTL: 24 h)."""
        from datetime import UTC, datetime, timedelta

        worker_id = os.environ.get("OW_WORKER_ID")
        if not worker_id:
            from openweights.errors import InvalidRequest

            raise InvalidRequest("extend_ttl works only inside a job run by an agent")
        until = datetime.now(UTC) + timedelta(hours=hours)
        return self._c.call(self._c.transport.call("agent.ttl", worker_id=worker_id,
                                                   ttl_until=until))

    def _at_exit(self) -> None:
        try:
            self._c.call(self._finish())
        except Exception as exc:  # the interpreter is exiting; say so, don't raise
            print(f"openweights: could not finish run {self.id}: {exc}", file=sys.stderr)


async def _spawn_linger(run: CurrentRun) -> None:
    run._linger = asyncio_loop_spawn(run._linger_then_flush())


def asyncio_loop_spawn(coro: Any) -> Any:
    import asyncio

    task = asyncio.get_running_loop().create_task(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return task


_TASKS: set[Any] = set()
