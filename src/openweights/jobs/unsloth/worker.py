"""The fine-tuning worker: ``python -m openweights.jobs.unsloth.worker [PARAMS.json|JOB_ID]
[--local DIR]`` (REFERENCE 6.1).

Reads the job's :class:`TrainingConfig`, resolves ``model`` (openweights model or Hugging
Face id), loads it with Unsloth (its CPU fallback without a GPU) and a LoRA adapter,
resumes from the job's newest stored checkpoint if a previous run left one, trains with
TRL (SFT, DPO or ORPO), reporting metrics, evaluations, samples, logprobs and checkpoints
as run events and files, and stores the model as the job's result (and pushes it to the
Hub when the organization has ``HF_TOKEN``). With ``--local DIR`` the same code runs as a
bare script, reporting to ``DIR`` (the bench's baseline).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from openweights.jobs.unsloth.config import TrainingConfig
from openweights.jobs.unsloth.failures import run_worker
from openweights.jobs.unsloth.report import Reporter

__all__ = ["main", "model_cache", "read_rows"]


def model_cache() -> Path:
    """Where openweights models a job uses are downloaded (kept across jobs)."""
    default = Path(os.environ.get("OW_HOME", Path.home() / ".openweights")) / "models"
    return Path(os.environ.get("OW_MODEL_CACHE", default))


def read_rows(reporter: Reporter, file_id: str | None, what: str) -> list[dict[str, Any]] | None:
    from openweights.jobs.unsloth.data import read_jsonl

    if file_id is None:
        return None
    return read_jsonl(reporter.read_file(file_id), f"{what} {file_id}")


def train(cfg: TrainingConfig, job_id: str | None, reporter: Reporter) -> None:
    if cfg.logp_callback_datasets:
        os.environ["UNSLOTH_RETURN_LOGITS"] = "1"
    from openweights.jobs.unsloth.source import resolve

    started = time.perf_counter()
    resolved = resolve(cfg.model, reporter, model_cache())  # before the ML imports: fail fast
    from openweights.jobs.unsloth.loading import add_lora, load_unsloth

    model, tokenizer = load_unsloth(resolved, max_seq_length=cfg.max_seq_length,
                                    load_in_4bit=cfg.load_in_4bit,
                                    chat_template=cfg.chat_template)
    from openweights.jobs.unsloth.callbacks import CheckpointCallback, MetricsCallback
    from openweights.jobs.unsloth.evaluation import eval_callbacks
    from openweights.jobs.unsloth.resume import restore
    from openweights.jobs.unsloth.trainers import build_trainer

    model = add_lora(model, cfg, unsloth=True)
    train_rows = read_rows(reporter, cfg.training_file, "training_file") or []
    test_rows = read_rows(reporter, cfg.test_file, "test_file")
    callbacks = [MetricsCallback(reporter), CheckpointCallback(reporter),
                 *eval_callbacks(cfg, reporter, tokenizer)]
    trainer = build_trainer(cfg, model, tokenizer, train_rows, test_rows,
                            cfg.learning_rate_value(), callbacks)
    resumed = restore(reporter, Path(cfg.output_dir))
    reporter.log({"type": "training_started", "resumed_from_step": resumed,
                  "setup_s": round(time.perf_counter() - started, 3)})
    if test_rows and resumed is None:
        trainer.evaluate()
    trainer.train(resume_from_checkpoint=str(Path(cfg.output_dir) / f"checkpoint-{resumed}")
                  if resumed is not None else None)
    finish(cfg, job_id, reporter, trainer, tokenizer, resolved.base_name or resolved.name)
    if test_rows:
        trainer.evaluate()


def finish(cfg: Any, job_id: str | None, reporter: Reporter, trainer: Any, tokenizer: Any,
           base_model: str) -> None:
    """Store the trained model (and push it) once training ended."""
    from openweights.jobs.unsloth.results import publish, push_to_hub, save_model

    out = Path(cfg.output_dir) / "final"
    kind = save_model(trainer.model, tokenizer, out, merge=cfg.merge_before_push)
    checkpoints = sorted(Path(cfg.output_dir).glob("checkpoint-*"),
                         key=lambda p: int(p.name.rsplit("-", 1)[1]))
    model_id = cfg.finetuned_model_id
    hf_repo = push_to_hub(out, model_id, private=cfg.push_to_private,
                          checkpoints=[p for p in checkpoints if p.is_dir()])
    publish(reporter, out, model_id=model_id, base_model=base_model, kind=kind,
            job_id=job_id, step=trainer.state.global_step, hf_repo=hf_repo)


def main(argv: list[str] | None = None) -> int:
    return run_worker(TrainingConfig, train, argv,
                      lambda _: f"openweights worker pid={os.getpid()} pgid={os.getpgid(0)}")

if __name__ == "__main__":
    sys.exit(main())
