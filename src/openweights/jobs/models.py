"""Models as results: the run event a job announces a model with, and what the model
registry (``ow.models``, ``ow models ls``) makes of it.

A job that produced a model (a LoRA adapter or merged weights) uploads each of its
files (purpose ``model``) and then logs one event::

    {"type": "model", "model_id": "org/name", "base_model": "Qwen/Qwen3-4B",
     "kind": "lora" | "merged", "files": {"adapter_config.json": "model:file-…", …},
     "job_id": "ftjob-…", "step": 40, "hf_repo": "org/name" | null}

``model_id`` is the fine-tuning job's ``finetuned_model_id`` (checkpoints:
``<finetuned_model_id>/checkpoint-<step>``); ``files`` maps each path relative to the
model's directory to its file id, so a consumer rebuilds the directory by downloading
them (:func:`openweights.sdk.models.AsyncModels.download`); ``hf_repo`` says where it
was also pushed (None: only in openweights' file store). The registry is built from
these events in the read models, so a replay of the event log rebuilds it; the newest
announcement of an id wins (a requeued run announces it again).

Pure Python and pydantic: both the SDK and the worker import it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = ["MODEL_EVENT", "MODEL_FILE_PURPOSE", "ModelAnnouncement", "model_event",
           "parse_model_event"]

MODEL_EVENT: Literal["model"] = "model"
MODEL_FILE_PURPOSE = "model"


class ModelAnnouncement(BaseModel):
    """What a ``{"type": "model"}`` run event says (extra keys are kept: a job may add
    its own, e.g. metrics of the model)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["model"] = MODEL_EVENT
    model_id: str = Field(min_length=1)
    base_model: str = Field(min_length=1)
    kind: Literal["lora", "merged"]
    files: dict[str, str] = Field(min_length=1)
    job_id: str | None = None
    step: int | None = None
    hf_repo: str | None = None

    @field_validator("files")
    @classmethod
    def _relative(cls, v: dict[str, str]) -> dict[str, str]:
        for path in v:
            parts = path.split("/")
            if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
                raise ValueError(f"model file path {path!r} must be relative, without "
                                 "'.', '..' or empty parts")
        return v

    @property
    def is_adapter(self) -> bool:
        return self.kind == "lora"


def model_event(*, model_id: str, base_model: str, kind: Literal["lora", "merged"],
                files: dict[str, str], job_id: str | None = None, step: int | None = None,
                hf_repo: str | None = None, **extra: Any) -> dict[str, Any]:
    """The event to ``ow.run.log`` once a model's files are uploaded (validated here, so
    a malformed announcement fails in the job, not in the registry)."""
    return ModelAnnouncement(model_id=model_id, base_model=base_model, kind=kind,
                             files=files, job_id=job_id, step=step, hf_repo=hf_repo,
                             **extra).model_dump(mode="json")


def parse_model_event(data: dict[str, Any]) -> ModelAnnouncement | None:
    """The announcement in a run event's data; None for other events and for a
    malformed announcement (the registry lists only models it can serve)."""
    if not isinstance(data, dict) or data.get("type") != MODEL_EVENT:
        return None
    try:
        return ModelAnnouncement.model_validate(data)
    except ValidationError:
        return None
