"""The token-weighted SFT worker: ``python -m openweights.jobs.weighted_sft.worker
[PARAMS.json|JOB_ID] [--local DIR]`` (REFERENCE 6.2).

transformers + PEFT (LoRA) with the weighted loss of :mod:`.trainer`; everything else
(model resolution, metrics, checkpoints and resume, logprob tracking, sampling, the
model as result) is the fine-tuning worker's. Without a test file, 10 % of the rows are
held out for evaluation, as in the original.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

from openweights.jobs.unsloth.failures import run_worker
from openweights.jobs.unsloth.report import Reporter
from openweights.jobs.unsloth.worker import finish, model_cache, read_rows
from openweights.jobs.weighted_sft.config import WeightedSFTConfig

__all__ = ["main"]


def train(cfg: WeightedSFTConfig, job_id: str | None, reporter: Reporter) -> None:
    from openweights.jobs.unsloth.callbacks import CheckpointCallback, MetricsCallback
    from openweights.jobs.unsloth.evaluation import eval_callbacks
    from openweights.jobs.unsloth.loading import add_lora, load_hf
    from openweights.jobs.unsloth.resume import restore
    from openweights.jobs.unsloth.source import resolve
    from openweights.jobs.unsloth.trainers import _config, common_args
    from openweights.jobs.weighted_sft.trainer import WeightedTrainer, collate, weighted_dataset

    started = time.perf_counter()
    resolved = resolve(cfg.model, reporter, model_cache())
    model, tokenizer = load_hf(resolved, load_in_4bit=cfg.load_in_4bit,
                               chat_template=cfg.chat_template)
    model = add_lora(model, cfg, unsloth=False)
    rows = read_rows(reporter, cfg.training_file, "training_file") or []
    test_rows = read_rows(reporter, cfg.test_file, "test_file")
    if test_rows is None and len(rows) >= 10:
        shuffled = random.Random(cfg.seed).sample(rows, len(rows))
        cut = len(rows) // 10
        rows, test_rows = shuffled[cut:], shuffled[:cut]
    args = common_args(cfg, lr=cfg.learning_rate_value(), has_eval=bool(test_rows))
    from transformers import TrainingArguments

    args.update(eval_strategy="steps" if test_rows else "no", eval_steps=cfg.eval_steps_value(),
                remove_unused_columns=False, max_grad_norm=cfg.max_grad_norm,
                label_names=["token_weights"], prediction_loss_only=True)
    trainer = WeightedTrainer(
        model=model, args=_config(TrainingArguments, **args),
        train_dataset=weighted_dataset(tokenizer, rows, cfg.max_seq_length,
                                       cfg.train_on_responses_only),
        eval_dataset=weighted_dataset(tokenizer, test_rows, cfg.max_seq_length,
                                      cfg.train_on_responses_only) if test_rows else None,
        data_collator=collate(tokenizer.pad_token_id or 0),
        callbacks=[MetricsCallback(reporter), CheckpointCallback(reporter),
                   *eval_callbacks(cfg, reporter, tokenizer)])
    resumed = restore(reporter, Path(cfg.output_dir))
    reporter.log({"type": "training_started", "resumed_from_step": resumed,
                  "setup_s": round(time.perf_counter() - started, 3)})
    trainer.train(resume_from_checkpoint=str(Path(cfg.output_dir) / f"checkpoint-{resumed}")
                  if resumed is not None else None)
    finish(cfg, job_id, reporter, trainer, tokenizer, resolved.base_name or resolved.name)


def main(argv: list[str] | None = None) -> int:
    return run_worker(WeightedSFTConfig, train, argv,
                      lambda _: f"openweights worker pid={os.getpid()} pgid={os.getpgid(0)}")

if __name__ == "__main__":
    sys.exit(main())
