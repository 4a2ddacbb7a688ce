"""``InspectAIConfig`` (``ow.inspect_ai.create``) and ``MMLUProConfig``
(``ow.mmlu_pro.create``): the evaluation jobs' params with the original's names and
defaults (REFERENCE 1.15, 1.16), extra keys refused. Imports no ML package."""

from __future__ import annotations

from pathlib import PurePosixPath

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from openweights.jobs.evals.options import InvalidOption, parse_options

__all__ = ["EVAL_VRAM_GB", "MMLU_PRO_DATASET", "InspectAIConfig", "MMLUProConfig"]

EVAL_VRAM_GB = 60  # the original's requires_vram_gb for both evaluations
MMLU_PRO_DATASET = "TIGER-Lab/MMLU-Pro"


def _check_model(v: str) -> str:
    if "/" not in v:
        raise ValueError(f"model {v!r} must be a Hugging Face id 'org/name' (or an "
                         "openweights model id)")
    return v


class InspectAIConfig(BaseModel):
    """An Inspect AI evaluation ``eval_name`` (a registry name such as
    ``inspect_evals/gpqa_diamond``, or a task file ``tasks.py[@task]``) of ``model``,
    served by vLLM inside the job with a context of ``max_model_len`` tokens.
    ``options`` are Inspect's eval options (``"--limit 10 --temperature 0"``), checked
    against :data:`~openweights.jobs.evals.options.OPTIONS`. ``task_file`` is the
    uploaded task file (the SDK sets it when ``eval_name`` is a local file).
    ``deployment``: evaluate the model an ``ow.api`` deployment serves (its ``apijob-``
    id) instead of serving it in the job."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    eval_name: str = Field(min_length=1)
    max_model_len: int = Field(8192, gt=0)
    options: str = " "
    task_file: str | None = None
    job_id_suffix: str | None = None
    # An openweights deployment (``ow.api``) serving ``model`` to evaluate against instead
    # of a server in the job; the SDK fills in its URL and key from its job.
    deployment: str | None = None
    base_url: str | None = None
    api_key: str | None = None

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        return _check_model(v)

    @model_validator(mode="after")
    def _served_by_a_deployment(self) -> InspectAIConfig:
        if (self.base_url or self.api_key) and not self.deployment:
            raise ValueError("base_url and api_key come from a deployment: give "
                             "deployment (an ow.api deployment or its apijob- id) instead")
        return self

    @field_validator("options")
    @classmethod
    def _options(cls, v: str) -> str:
        try:
            parse_options(v)
        except InvalidOption as exc:
            raise ValueError(str(exc)) from None
        return v


class MMLUProConfig(BaseModel):
    """MMLU-Pro's chain-of-thought ``ntrain``-shot evaluation of ``model`` on
    ``selected_subjects`` (``"all"`` or a comma-separated list, each matching the
    subjects whose name contains it, as the original). The original's lengths: prompts up
    to ``max_model_len - max_new_tokens`` tokens (fewer shots until one fits), answers up
    to ``max_new_tokens``; temperature 0, stop at ``Question:``. Results go to
    ``save_dir`` (uploaded with the job) and ``global_record_file`` there."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    ntrain: int = Field(5, ge=0)
    selected_subjects: str = Field("all", min_length=1)
    save_dir: str = "uploads"
    global_record_file: str = "eval_record_collection.csv"
    gpu_util: str = "0.9"
    max_model_len: int = Field(4096, gt=0)
    max_new_tokens: int = Field(2048, gt=0)
    dataset: str = MMLU_PRO_DATASET
    seed: int = 0  # the original guesses an unparsed answer at random: seeded here
    job_id_suffix: str | None = None

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        return _check_model(v)

    @field_validator("save_dir", "global_record_file")
    @classmethod
    def _relative(cls, v: str) -> str:
        path = PurePosixPath(v)
        if path.is_absolute() or ".." in path.parts or not v.strip():
            raise ValueError(f"{v!r} must be a relative path (results are uploaded from "
                             "the job's uploads/)")
        return v

    @field_validator("save_dir")
    @classmethod
    def _uploaded(cls, v: str) -> str:
        if PurePosixPath(v).parts[:1] != ("uploads",):
            raise ValueError(f"save_dir {v!r} must be uploads/ or a folder in it (what "
                             "the job writes there comes back as its results)")
        return v

    @field_validator("gpu_util")
    @classmethod
    def _gpu_util(cls, v: str) -> str:
        if not 0 < float(v) <= 1:
            raise ValueError(f"gpu_util {v!r} must be a fraction in (0, 1]")
        return v

    def subjects(self, available: list[str]) -> list[str]:
        """The subjects of ``available`` this evaluation covers (the original's match:
        a selected name, spaces as underscores, contained in the subject's)."""
        if self.selected_subjects == "all":
            return list(available)
        wanted = [s.strip().replace(" ", "_") for s in self.selected_subjects.split(",")]
        return [s for s in available
                if any(w and w in s.replace(" ", "_") for w in wanted)]
