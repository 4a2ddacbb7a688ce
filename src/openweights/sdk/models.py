"""``ow.models``: the models your jobs produced (LoRA adapters or merged weights, stored
as files in openweights), by id; what ``ow models ls`` lists.

A model's id is the producing job's ``finetuned_model_id`` (``org/name``; a checkpoint's
``org/name/checkpoint-N``). Such an id is accepted wherever a job takes a ``model`` (a
Hugging Face id works there too). See :mod:`openweights.jobs.models` for the event
that announces a model.

Every method may raise ``StackUnavailable`` / ``Unavailable`` when the service cannot be
reached (after retrying), besides what it lists.
"""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Literal, TypedDict

from openweights.sdk.files import AsyncFiles
from openweights.sdk.loop import LoopThread, twin
from openweights.sdk.transport import Transport

__all__ = ["AsyncModels", "ModelInfo", "Models"]


class ModelInfo(TypedDict):
    id: str
    object: str  # "model"
    base_model: str
    kind: Literal["lora", "merged"]
    files: dict[str, str]  # path in the model's directory -> file id
    job_id: str
    run_id: str
    step: int | None
    hf_repo: str | None  # where it was also pushed, if it was
    created_at: str


class AsyncModels:
    """Models jobs produced, newest first."""

    def __init__(self, transport: Transport, files: AsyncFiles) -> None:
        self._t, self._files = transport, files

    async def list(self, limit: int = 100, job_id: str | None = None) -> list[ModelInfo]:
        """Models, newest first (one job's with ``job_id``)."""
        out: list[ModelInfo] = []
        async for rows in self._t.pages("models.list", read=True, limit=limit,
                                        job_id=job_id):
            out += rows
        return out

    async def retrieve(self, model_id: str) -> ModelInfo:
        """The model (its newest announcement). Raises ``NotFound``."""
        result: ModelInfo = await self._t.call("models.get", read=True, model_id=model_id)
        return result

    async def download(self, model_id: str, target_dir: str | Path) -> Path:
        """Write the model's files into ``target_dir`` (a directory ``transformers``/``peft``
        load from); returns it. Raises ``NotFound``."""
        model = await self.retrieve(model_id)
        target = Path(target_dir)
        for rel, file_id in sorted(model["files"].items()):
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            await self._files.download(file_id, path)
        return target


class Models:
    """``ow.models`` of the blocking client (see :class:`AsyncModels`)."""

    def __init__(self, models: AsyncModels, loop: LoopThread) -> None:
        self._a, self._loop = models, loop

    @twin(AsyncModels.list)
    def list(self, limit: int = 100, job_id: str | None = None) -> builtins.list[ModelInfo]:
        return self._loop.run(self._a.list(limit, job_id))

    @twin(AsyncModels.retrieve)
    def retrieve(self, model_id: str) -> ModelInfo:
        return self._loop.run(self._a.retrieve(model_id))

    @twin(AsyncModels.download)
    def download(self, model_id: str, target_dir: str | Path) -> Path:
        return self._loop.run(self._a.download(model_id, target_dir))
