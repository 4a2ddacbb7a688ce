"""``ow.weighted_sft``: token-weighted SFT (transformers + PEFT) as a job type."""

from __future__ import annotations

from pydantic import BaseModel

from openweights.jobs.training import BuiltinJobs
from openweights.jobs.weighted_sft.config import WeightedSFTConfig
from openweights.sdk.custom import register

__all__ = ["WeightedSFT"]

GUESSED_VRAM_GB = 60  # the original's guess for any model


@register("weighted_sft")
class WeightedSFT(BuiltinJobs):
    """``ow.weighted_sft.create(model=..., training_file=..., ...)`` with the params of
    :class:`WeightedSFTConfig`; ids ``sftjob-…``. Its image is the unsloth worker image,
    which has the transformers/TRL/PEFT stack it trains with (the original used its vLLM
    image)."""

    params = WeightedSFTConfig
    config = WeightedSFTConfig
    prefix = "sftjob"
    worker_module = "openweights.jobs.weighted_sft.worker"

    def guess_vram(self, validated: BaseModel) -> int:
        return GUESSED_VRAM_GB
