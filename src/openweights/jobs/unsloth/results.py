"""A trained model as the job's result: saved (the LoRA adapter, or merged 16-bit weights
with ``merge_before_push``), its files stored in openweights' file store and announced
with the model event (:mod:`openweights.jobs.models`); and, when the organization has
``HF_TOKEN``, pushed to ``finetuned_model_id`` on the Hub (``HF_ENDPOINT`` honoured),
private by default, each kept checkpoint as a ``checkpoint-N`` subfolder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

from openweights.jobs.models import MODEL_FILE_PURPOSE, model_event
from openweights.jobs.unsloth.report import Reporter

__all__ = ["publish", "push_to_hub", "save_model"]

_PUSH_TRIES, _PUSH_BACKOFF_S = 5, 10.0  # the original's constant backoff


def save_model(model: Any, tokenizer: Any, out: Path, *, merge: bool) -> Literal[
        "lora", "merged"]:
    """Write the model to ``out``: merged weights when ``merge`` (and it is a PEFT model),
    else its adapter; the tokenizer beside it either way."""
    out.mkdir(parents=True, exist_ok=True)
    kind: Literal["lora", "merged"] = "lora"
    if merge and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
        kind = "merged"
    elif not hasattr(model, "peft_config"):
        kind = "merged"  # full fine-tuning: the weights themselves
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return kind


def publish(reporter: Reporter, folder: Path, *, model_id: str, base_model: str,
            kind: Literal["lora", "merged"], job_id: str | None, step: int | None,
            hf_repo: str | None) -> dict[str, Any]:
    """Store every file of ``folder`` and announce the model; returns the event."""
    files = {p.relative_to(folder).as_posix(): reporter.upload(p, MODEL_FILE_PURPOSE)
             for p in sorted(folder.rglob("*")) if p.is_file()}
    event = model_event(model_id=model_id, base_model=base_model, kind=kind, files=files,
                        job_id=job_id, step=step, hf_repo=hf_repo)
    reporter.log(event)
    return event


def push_to_hub(folder: Path, repo_id: str, *, private: bool,
                checkpoints: list[Path]) -> str | None:
    """Push ``folder`` and ``checkpoints`` to ``repo_id`` when ``HF_TOKEN`` is set; the
    repo id, or None when there is no token or ``HF_HUB_OFFLINE`` is set (the run's
    output says so). Retries as the original did."""
    token = os.environ.get("HF_TOKEN")
    if not token:
        return None
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        print(f"openweights: not pushed to {repo_id}: HF_HUB_OFFLINE is set (the model is "
              "stored in openweights; remove HF_HUB_OFFLINE from the secrets to push)",
              flush=True)
        return None
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    for attempt in range(_PUSH_TRIES):
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            api.upload_folder(folder_path=str(folder), repo_id=repo_id,
                              commit_message="openweights: fine-tuned model")
            for ckpt in checkpoints:
                api.upload_folder(folder_path=str(ckpt), repo_id=repo_id,
                                  path_in_repo=ckpt.name,
                                  ignore_patterns=["optimizer.pt", "*.pth", "scheduler.pt"],
                                  commit_message=f"openweights: {ckpt.name}")
            return repo_id
        except Exception as exc:  # network or Hub errors: the original's retry
            if attempt == _PUSH_TRIES - 1:
                raise
            print(f"push to {repo_id} failed ({exc}); retrying", flush=True)
            time.sleep(_PUSH_BACKOFF_S)
    return None
