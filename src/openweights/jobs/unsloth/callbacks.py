"""Trainer callbacks that report through the run: metrics once per logging step, and
each checkpoint as a stored file announced by an event (what resume reads back).

Events (``data`` of run events):
- ``{"type": "metrics", "tag": "train", "step", "epoch", "loss", "learning_rate",
  "grad_norm", "tokens_per_s", "logged_at", ...}`` per logging step (``logged_at``: the
  worker's ``time.time()`` when it logged them; ``cpu_s``: the CPU seconds its process
  used so far, every thread; ``peak_vram_gb`` on a GPU: the most memory torch allocated
  so far); ``tag`` ``"eval"`` for an evaluation, with
  ``eval_loss``...;
- ``{"type": "checkpoint", "step": N, "file": id, "path": "checkpoint-N.tar"}``.
"""

from __future__ import annotations

import math
import tarfile
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from openweights.jobs.unsloth.report import Reporter

__all__ = ["CHECKPOINT_PURPOSE", "CheckpointCallback", "MetricsCallback"]

CHECKPOINT_PURPOSE = "checkpoint"


def _clean(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsCallback(TrainerCallback):
    """One event per ``on_log`` (the trainer calls it once per logging step)."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self._last: tuple[float, int] | None = None
        self._cuda: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        import torch

        self._cuda = torch.cuda if torch.cuda.is_available() else None
        self._last = (time.perf_counter(), state.num_input_tokens_seen or 0)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kw: Any) -> None:
        logs = dict(logs or {})
        if "train_loss" in logs:  # the summary at the end, not a step
            self.reporter.log({"type": "train_summary", "step": state.global_step,
                               **{k: _clean(v) for k, v in logs.items()}})
            return
        is_eval = any(k.startswith("eval_") for k in logs)
        event = {"type": "metrics", "tag": "eval" if is_eval else "train",
                 "step": state.global_step, **{k: _clean(v) for k, v in logs.items()},
                 "logged_at": time.time(), "cpu_s": round(time.process_time(), 4)}
        if not is_eval:
            now, tokens = time.perf_counter(), state.num_input_tokens_seen or 0
            if self._last is not None and tokens > self._last[1]:
                event["tokens_per_s"] = round((tokens - self._last[1]) /
                                              max(now - self._last[0], 1e-9), 1)
            self._last = (now, tokens)
            if self._cuda is not None:
                event["peak_vram_gb"] = round(self._cuda.max_memory_allocated() / 2**30, 3)
        self.reporter.log(event)


class CheckpointCallback(TrainerCallback):
    """Stores each checkpoint the trainer saved (weights, optimizer, scheduler, RNG and
    trainer state: everything ``resume_from_checkpoint`` restores) and announces it."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        step = state.global_step
        folder = Path(args.output_dir) / f"checkpoint-{step}"
        if not folder.is_dir() or not state.is_world_process_zero:
            return
        archive = Path(args.output_dir) / f"checkpoint-{step}.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(folder, arcname=folder.name)
        file_id = self.reporter.upload(archive, CHECKPOINT_PURPOSE)
        archive.unlink()
        self.reporter.log({"type": "checkpoint", "step": step, "file": file_id,
                           "path": archive.name})
