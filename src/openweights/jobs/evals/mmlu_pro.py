"""The MMLU-Pro worker: ``python -m openweights.jobs.evals.mmlu_pro [PARAMS.json|JOB_ID]``
(REFERENCE 1.16).

Loads the dataset with ``datasets`` by its Hub id (``TIGER-Lab/MMLU-Pro``; the local
cache serves it under ``HF_DATASETS_OFFLINE=1``) before the model, so a missing dataset
fails in seconds; then, per subject, builds the chain-of-thought few-shot prompts
(:mod:`.mmlu`), generates with vLLM's offline engine (temperature 0, stop
``Question:``), extracts and scores the answers. Each subject's accuracy is a
``{"type": "subject_score", ...}`` event as it is scored; the end is one ``score``
event (overall and per-subject accuracy, :mod:`.scores`) and, under ``save_dir``
(uploaded with the job): ``<model>/CoT/<subjects>/<subject>_result.json`` (every
question with its prompt, output and prediction), ``summary.json`` and the CSV record.
"""

from __future__ import annotations

import csv
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from openweights.jobs.evals.config import MMLUProConfig
from openweights.jobs.evals.mmlu import Accuracy, extract_answer, fit_prompt, preprocess, score
from openweights.jobs.evals.scores import score_event
from openweights.jobs.unsloth.failures import run_worker
from openweights.jobs.unsloth.report import Reporter

__all__ = ["evaluate", "load_mmlu_pro", "main"]

EVAL_NAME = "mmlu_pro"
STOP = ["Question:"]


def load_mmlu_pro(dataset: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(test, validation)`` rows of ``dataset``, ``"N/A"`` options dropped. Raises
    ``ValueError`` saying where it looked when it cannot be loaded."""
    from datasets import load_dataset

    try:
        ds = load_dataset(dataset)
    except (ConnectionError, FileNotFoundError, ValueError) as exc:
        raise ValueError(f"dataset {dataset!r} could not be loaded ({exc}): the machine "
                         "needs the Hugging Face Hub or a datasets cache holding it "
                         "(HF_HOME / HF_DATASETS_CACHE)") from None
    for split in ("test", "validation"):
        if split not in ds:
            raise ValueError(f"dataset {dataset!r} has no {split!r} split (it has "
                             f"{', '.join(ds)}): MMLU-Pro's format has test and validation")
    return preprocess(ds["test"]), preprocess(ds["validation"])


def _engine(cfg: MMLUProConfig, reporter: Reporter) -> tuple[Any, Any]:
    from openweights.jobs.vllm.engine import cpu_defaults, engine_kwargs, load_llm, resolve_model
    from openweights.workerenv.specs import has_cuda

    cpu_defaults()
    resolved = resolve_model(cfg.model, reporter)
    kwargs = engine_kwargs(resolved, max_model_len=cfg.max_model_len, quantization=None)
    if has_cuda():
        kwargs["gpu_memory_utilization"] = float(cfg.gpu_util)
    lora = None
    if resolved.is_adapter:
        from vllm.lora.request import LoRARequest

        lora = LoRARequest(resolved.name.replace("/", "--"), 1, str(resolved.path))
    return load_llm(kwargs), lora


def _subject(cfg: MMLUProConfig, llm: Any, lora: Any, subject: str,
             test: list[dict[str, Any]], val: list[dict[str, Any]],
             rng: random.Random) -> tuple[list[dict[str, Any]], Accuracy]:
    from vllm import SamplingParams

    tokenizer = llm.get_tokenizer()
    budget = cfg.max_model_len - cfg.max_new_tokens
    rows = [r for r in test if r["category"] == subject]
    prompts = []
    for row in rows:
        prompt, shots = fit_prompt(val, row, cfg.ntrain, lambda p: len(tokenizer.encode(p)),
                                   budget)
        if len(tokenizer.encode(prompt)) >= cfg.max_model_len:
            raise ValueError(f"question {row['question_id']} of {subject!r} does not fit "
                             f"max_model_len={cfg.max_model_len} even without examples: "
                             "raise max_model_len")
        prompts.append(prompt)
        row["shots"] = shots
    params = SamplingParams(temperature=0, max_tokens=cfg.max_new_tokens, stop=STOP)
    outputs = llm.generate(prompts, params, use_tqdm=False, lora_request=lora)
    results = []
    for row, prompt, out in zip(rows, prompts, outputs, strict=True):
        text = out.outputs[0].text
        results.append({**row, "prompt": prompt, "model_outputs": text,
                        "pred": extract_answer(text)})
    return results, score(results, rng)


def _paths(cfg: MMLUProConfig) -> Path:
    """``save_dir/<model name>/CoT/<subjects>``: the original's layout."""
    subjects = cfg.selected_subjects.replace(",", "-").replace(" ", "_")
    return Path(cfg.save_dir) / cfg.model.split("/")[-1] / "CoT" / subjects


def _record(cfg: MMLUProConfig, scores: dict[str, Accuracy], total: Accuracy) -> None:
    path = Path(cfg.save_dir) / cfg.global_record_file
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["model", "subject", "correct", "wrong", "accuracy"])
        for subject, acc in [*scores.items(), ("total", total)]:
            writer.writerow([cfg.model, subject, acc.correct, acc.wrong, round(acc.accuracy, 6)])


def evaluate(cfg: MMLUProConfig, reporter: Reporter) -> dict[str, Any]:
    """Score every selected subject; returns the ``score`` event it logged."""
    test, val = load_mmlu_pro(cfg.dataset)
    available = list(dict.fromkeys(r["category"] for r in test))
    subjects = cfg.subjects(available)
    if not subjects:
        raise ValueError(f"selected_subjects {cfg.selected_subjects!r} matches none of the "
                         f"dataset's subjects: {', '.join(available)}")
    started = time.perf_counter()
    llm, lora = _engine(cfg, reporter)
    reporter.log({"type": "model_loaded", "seconds": round(time.perf_counter() - started, 3)})
    out_dir = _paths(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng, scores = random.Random(cfg.seed), {}
    for subject in subjects:
        results, acc = _subject(cfg, llm, lora, subject, test, val, rng)
        scores[subject] = acc
        (out_dir / f"{subject.replace(' ', '_')}_result.json").write_text(json.dumps(results))
        reporter.log({"type": "subject_score", "subject": subject, "accuracy": acc.accuracy,
                      "correct": acc.correct, "wrong": acc.wrong, "unparsed": acc.unparsed})
    total = Accuracy(sum(a.correct for a in scores.values()),
                     sum(a.wrong for a in scores.values()),
                     sum(a.unparsed for a in scores.values()))
    summary = {s: {"correct": a.correct, "wrong": a.wrong, "unparsed": a.unparsed,
                   "accuracy": a.accuracy} for s, a in scores.items()}
    (out_dir / "summary.json").write_text(json.dumps(
        {"model": cfg.model, "ntrain": cfg.ntrain, "subjects": summary,
         "total": {"correct": total.correct, "wrong": total.wrong, "accuracy": total.accuracy}},
        indent=1))
    _record(cfg, scores, total)
    metrics = {"accuracy": total.accuracy,
               **{f"accuracy/{s}": a.accuracy for s, a in scores.items()}}
    # accuracy also at the top: job.outputs["accuracy"] is then the overall one (the
    # newest value of each key wins there, and each subject_score event has one).
    event = score_event(eval=EVAL_NAME, model=cfg.model, metrics=metrics, samples=total.total,
                        accuracy=total.accuracy, subjects=summary,
                        seconds=round(time.perf_counter() - started, 3))
    reporter.log(event)
    return event


def main(argv: list[str] | None = None) -> int:
    return run_worker(MMLUProConfig, lambda cfg, _, reporter: evaluate(cfg, reporter), argv,
                      lambda cfg: f"openweights mmlu_pro pid={os.getpid()} model={cfg.model}")

if __name__ == "__main__":
    sys.exit(main())
