"""Resume from the newest checkpoint a previous run of this job stored.

A requeued job (its machine was lost) runs again from the start of its command; the
worker looks through the job's events for ``{"type": "checkpoint"}`` announcements,
fetches the newest and hands its folder to ``trainer.train(resume_from_checkpoint=...)``,
which restores the weights, optimizer, scheduler, RNG states and step, and skips the
batches already trained on (the data position).
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

from openweights.jobs.unsloth.report import Reporter

__all__ = ["newest_checkpoint", "restore"]


def newest_checkpoint(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    found = [e for e in events if e.get("type") == "checkpoint"
             and isinstance(e.get("step"), int) and isinstance(e.get("file"), str)]
    return max(found, key=lambda e: e["step"]) if found else None


def restore(reporter: Reporter, output_dir: Path) -> int | None:
    """Fetch the newest checkpoint into ``output_dir``; its step, or None if there is
    none. Logs ``{"type": "resumed", "step": N}`` and says so on the run's output."""
    checkpoint = newest_checkpoint(reporter.job_events())
    if checkpoint is None:
        return None
    step = checkpoint["step"]
    output_dir.mkdir(parents=True, exist_ok=True)
    archive = output_dir / f"checkpoint-{step}.tar"
    reporter.download(checkpoint["file"], archive)
    with tarfile.open(archive) as tar:
        tar.extractall(output_dir, filter="data")
    archive.unlink()
    if not (output_dir / f"checkpoint-{step}" / "trainer_state.json").exists():
        raise ValueError(f"checkpoint of step {step} ({checkpoint['file']}) has no "
                         "trainer_state.json")
    message = f"resumed from step {step}"
    print(message, flush=True)
    reporter.log({"type": "resumed", "step": step, "message": message,
                  "file": checkpoint["file"]})
    return int(step)
