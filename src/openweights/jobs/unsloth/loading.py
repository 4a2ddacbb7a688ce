"""Loading a resolved model for training: with Unsloth (its CPU fallback where there is
no GPU) or plain transformers, then a fresh LoRA adapter on top.

An openweights model that is itself an adapter is merged into its base first, so a job
can fine-tune the result of an earlier one.
"""

from __future__ import annotations

import os
from typing import Any

from openweights.jobs.unsloth.source import Resolved

__all__ = ["add_lora", "load_hf", "load_unsloth", "prepare_tokenizer"]


def prepare_tokenizer(tokenizer: Any, chat_template: str) -> Any:
    """Unwrap a multimodal processor, set a pad token and the template override."""
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if chat_template != "default":
        tokenizer.chat_template = chat_template
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the model's tokenizer has no chat template: give chat_template")
    return tokenizer


def load_unsloth(resolved: Resolved, *, max_seq_length: int, load_in_4bit: bool,
                 chat_template: str) -> tuple[Any, Any]:
    import unsloth  # noqa: F401  (first: it patches transformers and TRL)
    from unsloth import FastLanguageModel

    path = resolved.base_path or resolved.path
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(path), max_seq_length=max_seq_length, load_in_4bit=load_in_4bit,
        dtype=None, local_files_only=True, token=os.environ.get("HF_TOKEN") or None)
    if resolved.is_adapter:
        model = _merged(model, resolved)
    return model, prepare_tokenizer(tokenizer, chat_template)


def load_hf(resolved: Resolved, *, load_in_4bit: bool, chat_template: str) -> tuple[Any, Any]:
    """transformers + PEFT, as the original's weighted SFT and logprob jobs do."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolved.base_path or resolved.path
    kwargs: dict[str, Any] = {}
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
    dtype = torch.bfloat16 if not torch.cuda.is_available() or \
        torch.cuda.is_bf16_supported() else torch.float16
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **kwargs)
    if torch.cuda.is_available() and not load_in_4bit:
        model = model.to("cuda")
    if resolved.is_adapter:
        model = _merged(model, resolved)
    tokenizer = AutoTokenizer.from_pretrained(str(resolved.path if (
        resolved.path / "tokenizer_config.json").exists() else path))
    return model, prepare_tokenizer(tokenizer, chat_template)


def _merged(model: Any, resolved: Resolved) -> Any:
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(resolved.path)).merge_and_unload()


def add_lora(model: Any, cfg: Any, *, unsloth: bool) -> Any:
    """A trainable LoRA adapter with the job's ``r``, ``lora_alpha``, ... on ``model``."""
    modules = cfg.target_modules or None
    if unsloth:
        from unsloth import FastLanguageModel

        model = FastLanguageModel.get_peft_model(
            model, r=cfg.r, target_modules=modules, lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout, bias=cfg.lora_bias,
            use_gradient_checkpointing="unsloth", random_state=cfg.seed,
            use_rslora=cfg.use_rslora)
    else:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=modules, bias=cfg.lora_bias, use_rslora=cfg.use_rslora,
            task_type="CAUSAL_LM"))
    model.config.use_cache = False  # the original's v0.9 VRAM regression fix
    return model
