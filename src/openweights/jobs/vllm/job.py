"""``ow.inference`` (batch inference) and ``ow.api`` (temporary OpenAI-compatible APIs)
as job types on every client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from openweights.errors import InvalidRequest
from openweights.images import WORKER_VLLM
from openweights.jobs.common import purpose_of
from openweights.jobs.training import BuiltinJobs
from openweights.jobs.vllm.config import (
    ApiConfig,
    InferenceConfig,
    api_vram_gb,
    inference_vram_gb,
    lease_seconds,
)
from openweights.sdk.custom import register
from openweights.sdk.jobs import AsyncJob
from openweights.sdk.temporary_api import TemporaryApi

__all__ = ["Api", "Inference"]

@register("inference")
class Inference(BuiltinJobs):
    """``ow.inference.create(model=..., input_file_id=..., max_tokens=600, ...)`` with the
    params of :class:`InferenceConfig`; ids ``ijob-…``; the result is a file of one row per
    input row (``job.outputs["file"]``)."""

    params = InferenceConfig
    config = InferenceConfig
    prefix = "ijob"
    worker_module = "openweights.jobs.vllm.inference"
    base_image = WORKER_VLLM
    job_type = "inference"
    names_model = False

    def guess_vram(self, validated: BaseModel) -> int:
        assert isinstance(validated, InferenceConfig)
        return inference_vram_gb(validated)

    async def _upload_datasets(self, dumped: dict[str, Any]) -> dict[str, Any]:
        value = dumped["input_file_id"]
        if purpose_of(value) is None:
            path = Path(value).expanduser()
            if not path.is_file():
                raise InvalidRequest(f"input_file_id {value!r} is neither a file id nor a "
                                     "file here: upload it first (ow.files.upload(path, "
                                     "'conversations')) or give its path")
            dumped["input_file_id"] = (await self.client.files.upload(path, "conversations"))["id"]
        return dumped


@register("api")
class Api(BuiltinJobs):
    """``ow.api.create(model=..., ...)`` submits a vLLM OpenAI-compatible server (params of
    :class:`ApiConfig`, ids ``apijob-…``); ``deploy`` and ``multi_deploy`` wrap it in a
    :class:`~openweights.sdk.temporary_api.TemporaryApi` that keeps it alive."""

    params = ApiConfig
    config = ApiConfig
    prefix = "apijob"
    worker_module = "openweights.jobs.vllm.serve"
    base_image = WORKER_VLLM
    job_type = "api"
    names_model = False

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        # Deployments up on this client, by each model they serve (ow.chat sends there).
        self.live: dict[str, TemporaryApi] = {}

    def guess_vram(self, validated: BaseModel) -> int:
        assert isinstance(validated, ApiConfig)
        return api_vram_gb(validated)

    async def _upload_datasets(self, dumped: dict[str, Any]) -> dict[str, Any]:
        return dumped

    async def create(self, **params: Any) -> AsyncJob:
        """Submit the server. Its deadline is a lease (``lease_seconds()`` unless
        ``timeout`` is given) that the client renews while it lives."""
        params.setdefault("timeout", lease_seconds())
        return await super().create(**params)

    def deploy(self, model: str, lora_adapters: list[str] | None = None,
               max_lora_rank: int | str = "guess", max_model_len: int = 2048,
               requires_vram_gb: int | str = "guess", max_num_seqs: int = 100,
               quantization: str | None = None, kv_cache_dtype: str | None = None,
               allowed_hardware: list[str] | None = None, **options: Any) -> TemporaryApi:
        """A :class:`TemporaryApi` for ``model`` (and ``lora_adapters`` on it); nothing is
        submitted until ``up()`` / ``with`` / ``async with``."""
        params: dict[str, Any] = {
            "model": model, "lora_adapters": list(lora_adapters or []),
            "max_model_len": max_model_len, "max_num_seqs": max_num_seqs,
            "quantization": quantization, "kv_cache_dtype": kv_cache_dtype,
            "requires_vram_gb": requires_vram_gb, "allowed_hardware": allowed_hardware,
            **options}
        if max_lora_rank != "guess":
            params["max_lora_rank"] = max_lora_rank
        self._validate({k: v for k, v in params.items()
                        if k not in ("requires_vram_gb", "allowed_hardware", "timeout",
                                     "docker_image")})
        return TemporaryApi(self, params)

    async def multi_deploy(self, models: list[str], max_model_len: int = 2048,
                           requires_vram_gb: int | str = "guess", max_num_seqs: int = 100,
                           base_model_override: str | None = None,
                           **options: Any) -> dict[str, TemporaryApi]:
        """``{model: TemporaryApi}``: one deployment per base model, serving every LoRA
        adapter of it among ``models`` (an openweights adapter's base is its announced
        base model; ``base_model_override`` sets it for all). Nothing is submitted yet."""
        groups: dict[str, list[str]] = {}
        for model in dict.fromkeys(models):
            base = base_model_override or await self.base_of(model)
            groups.setdefault(base, [])
            if base != model:
                groups[base].append(model)
        out: dict[str, TemporaryApi] = {}
        for base, adapters in groups.items():
            api = self.deploy(base, lora_adapters=adapters, max_model_len=max_model_len,
                              requires_vram_gb=requires_vram_gb, max_num_seqs=max_num_seqs,
                              **options)
            out.update({m: api for m in [base, *adapters] if m in models})
        return out

    async def base_of(self, model: str) -> str:
        """The base model of ``model`` if it is a LoRA adapter openweights announced
        (``ow.models``), else ``model`` itself."""
        from openweights.errors import NotFound

        models = getattr(self.client, "models", None)
        if models is None:
            return model
        try:
            found = await models.retrieve(model)
        except NotFound:
            return model
        return str(found["base_model"]) if found.get("kind") == "lora" else model
