"""``ow.logprob``: per-block logprob sums of a dataset under a model, as a job type."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from openweights.jobs.logprob.config import LogProbConfig
from openweights.jobs.training import BuiltinJobs
from openweights.sdk.custom import register

__all__ = ["LogProb"]


@register("logprob")
class LogProb(BuiltinJobs):
    """``ow.logprob.create(model=..., dataset=..., batch_size=8)`` with the params of
    :class:`LogProbConfig`; ids ``lpjob-…``; the result is the file ``logprobs.jsonl``
    (purpose ``logprobs``), announced as ``{"type": "logprobs", "file": id}``."""

    params = LogProbConfig
    config = LogProbConfig
    prefix = "lpjob"
    worker_module = "openweights.jobs.logprob.worker"
    job_type = "custom"
    names_model = False

    def guess_vram(self, validated: BaseModel) -> int:
        model = str(getattr(validated, "model", "")).lower()
        return 36 if "8b" in model else 70  # the original's guess

    def purposes(self, params: dict[str, Any]) -> tuple[str, ...]:
        return ("conversations",)
