"""TRL trainers for ``loss`` ``sft``, ``dpo`` and ``orpo`` with the job's arguments
(REFERENCE 6.1): SFT renders conversations with the chat template (and trains on the
responses only, by default); DPO/ORPO turn a preference row into ``prompt`` (the
template's rendering with a generation prompt) and ``chosen``/``rejected`` (the first
message's content and the end-of-turn token).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from openweights.jobs.unsloth.data import plain, render, turn_parts

__all__ = ["build_trainer", "common_args"]

# The original's optimizer names as transformers spells them (8-bit Adam needs CUDA).
_OPTIM = {"adamw_8bit": "adamw_8bit", "adamw": "adamw_torch", "adam": "adamw_torch",
          "sgd": "sgd", "adamw_torch": "adamw_torch"}


def common_args(cfg: Any, *, lr: float, has_eval: bool) -> dict[str, Any]:
    """Arguments every trainer config takes (filtered to the installed class later)."""
    import torch

    cuda = torch.cuda.is_available()
    bf16 = not cuda or torch.cuda.is_bf16_supported()
    optim = _OPTIM[cfg.optim] if cuda or cfg.optim != "adamw_8bit" else "adamw_torch"
    strategy = getattr(cfg, "test_file_eval_strategy", "steps") if has_eval else "no"
    return dict(
        output_dir=cfg.output_dir, per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        warmup_steps=cfg.warmup_steps, learning_rate=lr, logging_steps=cfg.logging_steps,
        optim=optim, weight_decay=cfg.weight_decay, lr_scheduler_type=cfg.lr_scheduler_type,
        seed=cfg.seed, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1,
        save_steps=cfg.save_steps, save_strategy="steps", report_to=[],
        bf16=bf16 and cuda, fp16=cuda and not bf16, use_cpu=not cuda,
        eval_strategy=strategy, eval_steps=getattr(cfg, "test_file_eval_steps", None),
        include_num_input_tokens_seen=True, disable_tqdm=True, save_only_model=False,
        dataloader_num_workers=0)


def _config(cls: type, **kwargs: Any) -> Any:
    """``cls(**kwargs)`` with only the fields the installed TRL version has."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in kwargs.items() if k in names})


def build_trainer(cfg: Any, model: Any, tokenizer: Any, train_rows: list[dict[str, Any]],
                  test_rows: list[dict[str, Any]] | None, lr: float,
                  callbacks: list[Any]) -> Any:
    from datasets import Dataset

    args = common_args(cfg, lr=lr, has_eval=bool(test_rows))
    if cfg.loss == "sft":
        train = Dataset.from_list([_sft_row(tokenizer, r) for r in train_rows])
        test = Dataset.from_list([_sft_row(tokenizer, r) for r in test_rows]) \
            if test_rows else None
        return _sft(cfg, model, tokenizer, train, test, args, callbacks)
    train = Dataset.from_list([_preference_row(tokenizer, r) for r in train_rows])
    test = Dataset.from_list([_preference_row(tokenizer, r) for r in test_rows]) \
        if test_rows else None
    if cfg.loss == "dpo":
        from trl import DPOConfig, DPOTrainer

        cls, config = DPOTrainer, _config(DPOConfig, **args, beta=cfg.beta,
                                          max_length=cfg.max_seq_length)
    else:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        cls, config = ORPOTrainer, _config(ORPOConfig, **args, beta=cfg.beta,
                                           max_length=cfg.max_seq_length)
    return cls(model=model, args=config, train_dataset=train, eval_dataset=test,
               processing_class=tokenizer, callbacks=callbacks)


def _sft_row(tokenizer: Any, row: dict[str, Any]) -> dict[str, str]:
    if "messages" in row:
        return {"text": render(tokenizer, row["messages"])}
    return {"text": row["text"] + (tokenizer.eos_token or "")}


def _preference_row(tokenizer: Any, row: dict[str, Any]) -> dict[str, str]:
    eos = tokenizer.eos_token or ""
    return {"prompt": render(tokenizer, row["prompt"], generation_prompt=True),
            "chosen": plain(row["chosen"])[0]["content"] + eos,
            "rejected": plain(row["rejected"])[0]["content"] + eos}


def _sft(cfg: Any, model: Any, tokenizer: Any, train: Any, test: Any,
         args: dict[str, Any], callbacks: list[Any]) -> Any:
    from trl import SFTConfig, SFTTrainer

    config = _config(SFTConfig, **args, packing=cfg.packing, max_length=cfg.max_seq_length,
                     dataset_text_field="text", dataset_num_proc=1)
    trainer = SFTTrainer(model=model, args=config, train_dataset=train, eval_dataset=test,
                         processing_class=tokenizer, callbacks=callbacks)
    if cfg.train_on_responses_only:
        from unsloth.chat_templates import train_on_responses_only

        instruction, response = turn_parts(tokenizer)
        trainer = train_on_responses_only(trainer, instruction_part=instruction,
                                          response_part=response)
    return trainer
