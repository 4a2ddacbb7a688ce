"""``LogProbConfig``: the params of ``ow.logprob.create``, validated by the SDK at submit
and read back by the worker (``python -m openweights.jobs.logprob.worker``, reading them
with ``openweights.jobs.params.load_params(LogProbConfig)``).

Imports no ML package. The result is a ``logprobs.jsonl`` file (purpose ``logprobs``):
each row of ``dataset`` with, per content block, the sum of its tokens' logprobs
(``logprobs``) and its token ``range``; the run logs ``{"type": "logprobs", "file": id}``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from openweights.jobs.common import CONVERSATIONS, check_dataset

__all__ = ["LogProbConfig"]


class LogProbConfig(BaseModel):
    """Per-block logprob sums of ``dataset`` (a conversations file) under ``model``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="Hugging Face id, or an openweights model id")
    dataset: str = Field(..., description="file id of a conversations dataset")
    batch_size: int = Field(8, gt=0)
    chat_template: str = "default"
    max_seq_length: int = Field(2048, gt=0)
    job_id_suffix: str | None = None

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        return check_dataset(v, "dataset", CONVERSATIONS)
