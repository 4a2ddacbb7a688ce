"""``InferenceConfig`` (``ow.inference.create``) and ``ApiConfig`` (``ow.api``): the
params of the vLLM jobs with the original's names and defaults (REFERENCE 1.12, 1.13),
extra keys refused, and their VRAM guesses. Imports no ML package."""

from __future__ import annotations

import math
import os
import secrets

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from openweights.jobs.common import CONVERSATIONS, check_dataset
from openweights.jobs.training import model_size_b

__all__ = ["ApiConfig", "InferenceConfig", "api_vram_gb", "inference_vram_gb", "lease_seconds",
           "mint_api_key"]

DEFAULT_LEASE_S = 900.0  # the original's 15 minutes
DEFAULT_SIZE_B = 32  # the original's guess for a model whose name has no size


def _weights_gb(model: str) -> float:
    name = model.lower()
    size = model_size_b(model) or (22 if "mistral-small" in name else DEFAULT_SIZE_B)
    weights = 2 * size
    if "ftjob" not in name:  # a fine-tuned model's name repeats its base's quantization
        weights /= 4 if "4bit" in name else 2 if "8bit" in name else 1
    return weights


def _check_model(v: str) -> str:
    if "/" not in v:
        raise ValueError(f"model {v!r} must be a Hugging Face id 'org/name' (or an "
                         "openweights model id, or a checkpoint 'org/repo/sub/path')")
    return v


class InferenceConfig(BaseModel):
    """Completions of every conversation of ``input_file_id`` by ``model``."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(..., description="Hugging Face id, openweights model id or LoRA adapter")
    input_file_id: str = Field(..., description="a conversations file (id or local path)")
    chat_template: str = "default"
    job_id_suffix: str | None = None
    use_batch: bool = True  # the original's OpenAI path only; accepted
    max_tokens: int = Field(600, gt=0)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: list[str] = []
    prefill: str = ""
    min_tokens: int = Field(1, ge=0)
    max_model_len: int = Field(8196, gt=0)
    logprobs: int | None = Field(None, ge=0)
    n_completions_per_prompt: int = Field(1, gt=0)
    quantization: str | None = None
    load_format: str | None = None

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        return _check_model(v)

    @field_validator("input_file_id")
    @classmethod
    def _input(cls, v: str) -> str:
        return check_dataset(v, "input_file_id", CONVERSATIONS)

    @model_validator(mode="after")
    def _bitsandbytes(self) -> InferenceConfig:
        if self.n_completions_per_prompt > 1 and self.temperature == 0:
            raise ValueError("n_completions_per_prompt > 1 needs temperature > 0 (greedy "
                             "sampling has one completion per prompt)")
        if "4bit" in self.model.lower():  # the original's automatic choice
            self.quantization = self.quantization or "bitsandbytes"
            self.load_format = self.load_format or "bitsandbytes"
        return self


def inference_vram_gb(cfg: InferenceConfig, lora_rank: int = 0) -> int:
    """The original's guess: weights + 15 GB of KV cache + 0.5, plus rank/16 for a LoRA."""
    return int(_weights_gb(cfg.model) + 15 + 0.5 + lora_rank / 16)


def lease_seconds() -> float:
    """How long a deployment outlives its client's last lease renewal: ``$OW_API_LEASE_S``
    (tests shorten it), else 15 minutes."""
    return float(os.environ.get("OW_API_LEASE_S") or DEFAULT_LEASE_S)


def mint_api_key() -> str:
    """A deployment's own API key (the server refuses requests without it)."""
    return "ow-api-" + secrets.token_urlsafe(24)


class ApiConfig(BaseModel):
    """An OpenAI-compatible vLLM server for ``model`` (and its LoRA adapters)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    lora_adapters: list[str] = []
    max_lora_rank: int = Field(16, gt=0)
    max_loras: int = -1
    max_model_len: int = Field(2048, gt=0)
    max_num_seqs: int = Field(16, gt=0)
    quantization: str | None = None
    kv_cache_dtype: str | None = None
    api_key: str = Field(default_factory=mint_api_key, min_length=16)

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        return _check_model(v)

    @model_validator(mode="after")
    def _loras(self) -> ApiConfig:
        if self.max_loras == -1:
            self.max_loras = len(self.lora_adapters)
        elif self.lora_adapters:
            self.max_loras = max(1, self.max_loras)
        return self


def api_vram_gb(cfg: ApiConfig) -> int:
    """The original's guess: weights + max_loras x rank/16 + 5 GB of KV cache + 0.5."""
    return math.ceil(_weights_gb(cfg.model) + cfg.max_loras * cfg.max_lora_rank / 16 + 5.5)
