"""``aow.runs`` and ``AsyncRun``: a job's attempts, their output and the files they returned.

Every method may raise ``StackUnavailable`` / ``Unavailable`` when the service cannot be
reached (after retrying), besides what it lists.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

from pydantic import PrivateAttr

from openweights.sdk.files import AsyncFiles
from openweights.sdk.live import list_events
from openweights.sdk.logs import follow_logs, read_logs
from openweights.sdk.transport import Transport
from openweights.sdk.types import Event, LogChunk, RunFields


class AsyncRun(RunFields):
    """A run of the async client; its methods are awaitable."""

    _runs: AsyncRuns = PrivateAttr()

    @property
    def events(self) -> Coroutine[Any, Any, list[Event]]:
        """(await it) This run's events, oldest first."""
        return list_events(self._runs._t, None, self.id)

    async def logs(self) -> str:
        """The run's full output: the stored log file, or the lines so far while it runs."""
        if self.log_file:
            data = await self._runs._files.content(self.log_file)
            return data.decode(errors="replace")
        return "".join([c.text async for c in self._runs.read_logs(self.id)])

    async def download(self, target_dir: str | Path) -> list[Path]:
        """Write ``<run id>.log`` and every file the run returned (at its event's ``path``)
        under ``target_dir``; returns the paths written. A path escaping ``target_dir`` is
        skipped."""
        target = Path(target_dir)
        target.mkdir(parents=True, exist_ok=True)
        log_path = target / f"{self.id}.log"
        log_path.write_text(await self.logs())
        written = [log_path]
        for event in await self.events:
            file_id = event["data"].get("file") if isinstance(event["data"], dict) else None
            if not isinstance(file_id, str):
                continue
            dest = target / (event["data"].get("path") or file_id)
            if target.resolve() not in dest.resolve().parents:
                continue  # a path escaping the target directory is never written
            dest.parent.mkdir(parents=True, exist_ok=True)
            await self._runs._files.download(file_id, dest)
            written.append(dest)  # under target_dir as given, like the log's path
        return written


class AsyncRuns:
    def __init__(self, transport: Transport, files: AsyncFiles) -> None:
        self._t, self._files = transport, files

    def _run(self, data: dict[str, Any]) -> AsyncRun:
        run = AsyncRun.model_validate(data)
        run._runs = self
        return run

    async def list(self, job_id: str | None = None, worker_id: str | None = None,
                   status: str | None = None, limit: int = 100) -> list[AsyncRun]:
        """Runs, oldest first (``runs[-1]`` is the latest)."""
        return [self._run(r) async for rows in self._t.pages(
            "runs.list", read=True, job_id=job_id, worker_id=worker_id, status=status,
            limit=limit) for r in rows]

    async def retrieve(self, run_id: str) -> AsyncRun:
        """The run. Raises ``NotFound``."""
        return self._run(await self._t.call("runs.get", read=True, run_id=run_id))

    def read_logs(self, run_id: str, after_seq: int = 0) -> AsyncIterator[LogChunk]:
        """The run's stored output after ``after_seq``, oldest first: ``(seq, text)``.

        Chunks older than the logs' retention are gone; a finished run's full log is its
        ``log_file``. Raises ``InvalidRequest`` for a malformed run id."""
        return read_logs(self._t, run_id, after_seq)

    def follow_logs(self, run_id: str, after_seq: int = 0) -> AsyncIterator[str]:
        """The run's output after ``after_seq``: stored, then live as the job prints it,
        until the run ends. Raises ``NotFound`` (on the first item) for an unknown run."""
        return follow_logs(self._t, run_id, after_seq)
