"""``ow.fine_tuning``: Unsloth LoRA fine-tuning (SFT, DPO, ORPO) as a job type."""

from __future__ import annotations

from openweights.jobs.training import BuiltinJobs
from openweights.jobs.unsloth.config import TrainingConfig
from openweights.sdk.custom import register

__all__ = ["FineTuning"]


@register("fine_tuning")
class FineTuning(BuiltinJobs):
    """``ow.fine_tuning.create(model=..., training_file=..., loss="sft"|"dpo"|"orpo", ...)``
    with the params of :class:`TrainingConfig`; ids ``ftjob-…``."""

    params = TrainingConfig
    config = TrainingConfig
    prefix = "ftjob"
    worker_module = "openweights.jobs.unsloth.worker"
