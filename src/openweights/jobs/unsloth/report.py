"""Where a built-in worker's events, files and inputs go: the run (``ow.run``) inside a
job, or a local directory when the same training runs as a bare script.

Both sides of ``bench/finetune.py`` run the same worker code; only this seam differs, so
the per-step cost of openweights is exactly what :class:`RunReporter` adds.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any, Protocol

__all__ = ["LocalReporter", "Reporter", "RunReporter", "reporter_for"]


class Reporter(Protocol):
    def log(self, data: dict[str, Any]) -> None:
        """Record ``data`` as an event of this run (buffered)."""

    def upload(self, path: Path, purpose: str) -> str:
        """Store the file at ``path``; return its file id."""

    def read_file(self, file_id: str) -> bytes:
        """The content of a file the job was given (a file id, or a local path)."""

    def download(self, file_id: str, path: Path) -> Path:
        """Write a stored file to ``path``."""

    def job_events(self) -> list[dict[str, Any]]:
        """Every event data this job's runs logged so far, oldest first (resume reads
        its checkpoints from them)."""

    def model_files(self, model_id: str) -> dict[str, Any] | None:
        """The newest announcement of openweights model ``model_id``, None if there is
        none."""

    def secret(self, name: str) -> str | None:
        """A variable of the job's environment (the org's secrets are among them)."""

    def close(self) -> None:
        """Send what is buffered."""


class RunReporter:
    """Reports to the current run through the SDK (the agent set its ids)."""

    def __init__(self) -> None:
        from openweights.sdk.blocking import OpenWeights

        self.ow = OpenWeights()
        self.job_id = self.ow.run.job_id

    def log(self, data: dict[str, Any]) -> None:
        self.ow.run.log(data)

    def upload(self, path: Path, purpose: str) -> str:
        return str(self.ow.files.upload(path, purpose)["id"])

    def read_file(self, file_id: str) -> bytes:
        if Path(file_id).is_file():  # the original took local paths, too
            return Path(file_id).read_bytes()
        return self.ow.files.content(file_id)

    def download(self, file_id: str, path: Path) -> Path:
        return Path(self.ow.files.download(file_id, path))

    def job_events(self) -> list[dict[str, Any]]:
        if self.job_id is None:
            return []
        return [e["data"] for e in self.ow.events.list(job_id=self.job_id)]

    def model_files(self, model_id: str) -> dict[str, Any] | None:
        models = getattr(self.ow, "models", None)
        if models is None:
            return None
        from openweights.errors import NotFound

        try:
            found = dict(models.retrieve(model_id))
        except NotFound:
            return None
        # The api's ModelInfo names the model ``id``; the announcement ``model_id``.
        found["model_id"] = found.pop("id", model_id)
        return {k: v for k, v in found.items() if k not in ("object", "created_at", "run_id")}

    def secret(self, name: str) -> str | None:
        import os

        return os.environ.get(name) or None

    def close(self) -> None:
        self.ow.run.flush()
        self.ow.close()


class LocalReporter:
    """Reports to ``out``: events to ``events.jsonl``, files copied under ``files/``
    (their ids are their paths). For running a worker as a bare script."""

    def __init__(self, out: Path) -> None:
        self.out = out
        (out / "files").mkdir(parents=True, exist_ok=True)
        self._events = open(out / "events.jsonl", "a")  # noqa: SIM115 (closed in close)

    def log(self, data: dict[str, Any]) -> None:
        self._events.write(json.dumps(data) + "\n")

    def upload(self, path: Path, purpose: str) -> str:
        target = self.out / "files" / f"{purpose}-{path.name}"
        shutil.copyfile(path, target)
        return str(target)

    def read_file(self, file_id: str) -> bytes:
        return Path(file_id).read_bytes()

    def download(self, file_id: str, path: Path) -> Path:
        shutil.copyfile(file_id, path)
        return path

    def job_events(self) -> list[dict[str, Any]]:
        self._events.flush()
        lines = (self.out / "events.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line]

    def model_files(self, model_id: str) -> dict[str, Any] | None:
        return None

    def secret(self, name: str) -> str | None:
        import os

        return os.environ.get(name) or None

    def close(self) -> None:
        self._events.close()


def reporter_for(argv: list[str]) -> tuple[Reporter, str | None]:
    """``worker [PARAMS.json|JOB_ID] [--local DIR]``: the reporter and the params source."""
    args = list(argv)
    if "--local" in args:
        i = args.index("--local")
        out = Path(args[i + 1])
        del args[i:i + 2]
        return LocalReporter(out), (args[0] if args else None)
    if len(args) > 1:
        sys.exit(f"usage: worker [PARAMS.json|JOB_ID] [--local DIR], not {argv}")
    return RunReporter(), (args[0] if args else None)
