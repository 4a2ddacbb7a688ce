"""The batch inference worker: ``python -m openweights.jobs.vllm.inference [PARAMS.json|JOB_ID]
[--local DIR]`` (REFERENCE 6.3).

Reads the job's :class:`InferenceConfig`, checks every input row (a bad one fails the
job naming its line, before any model loads), resolves the model (a LoRA adapter runs
on its base), generates every completion with vLLM's offline engine in one batch,
logging ``{"type": "progress", "rows_done", "rows_total"}`` at most once a second, and
stores ``output.jsonl`` (purpose ``result``): one row per input row (``n`` per input
with ``n_completions_per_prompt``), in input order, announced as
``{"type": "inference_result", "file": id, "rows": N}`` (so ``job.outputs["file"]``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from openweights.jobs.unsloth.failures import run_worker
from openweights.jobs.unsloth.report import Reporter
from openweights.jobs.vllm.config import InferenceConfig
from openweights.jobs.vllm.rows import output_rows, parse_rows, prompts_of

__all__ = ["main", "run_inference"]


class Progress:
    """A tqdm factory for ``LLM.generate(use_tqdm=...)``: the bar of processed prompts
    logs rows done as run events, at most one a second (and the last); any other bar
    vLLM makes (adding requests) is silent."""

    def __init__(self, reporter: Reporter, total: int, every_s: float = 1.0) -> None:
        self.reporter, self.total, self.every_s = reporter, total, every_s

    def __call__(self, iterable: Any = None, *args: Any, desc: str = "", **kwargs: Any) -> Any:
        if iterable is not None:  # a bar over prompts being rendered: just the prompts
            return iterable
        return _Bar(self if desc.startswith("Processed") else None)


class _Bar:
    """What vLLM uses of a tqdm bar: ``update``, ``n``, ``postfix``, ``format_dict``,
    ``refresh``, ``close``."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress, self.n, self.rows, self._last = progress, 0, 0, 0.0
        self.postfix = ""
        self._start = time.monotonic()

    @property
    def format_dict(self) -> dict[str, float]:
        return {"elapsed": max(time.monotonic() - self._start, 1e-9)}

    def update(self, n: int = 1) -> None:
        self.n += n
        self.rows += 1  # one finished request: one input row (with all its completions)
        p = self.progress
        if p is None:
            return
        now = time.monotonic()
        if now - self._last >= p.every_s or self.rows >= p.total:
            self._last = now
            p.reporter.log({"type": "progress", "rows_done": min(self.rows, p.total),
                            "rows_total": p.total})

    def refresh(self) -> None:
        return None

    def close(self) -> None:
        return None


def sampling(cfg: InferenceConfig, eos: str | None) -> Any:
    from vllm import SamplingParams

    return SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p,
                          max_tokens=cfg.max_tokens, min_tokens=cfg.min_tokens,
                          skip_special_tokens=True, n=cfg.n_completions_per_prompt,
                          stop=[*([eos] if eos else []), *cfg.stop], logprobs=cfg.logprobs)


def run_inference(cfg: InferenceConfig, reporter: Reporter) -> dict[str, Any]:
    """Generate every completion and store the result file; returns timings."""
    rows = parse_rows(reporter.read_file(cfg.input_file_id), f"input_file_id {cfg.input_file_id}")
    from openweights.jobs.vllm.engine import (
        cpu_defaults,
        engine_kwargs,
        fit_max_len,
        load_llm,
        resolve_model,
    )

    cpu_defaults()
    started = time.perf_counter()
    resolved = resolve_model(cfg.model, reporter)  # before the ML imports: fail fast
    _, note = fit_max_len(cfg.max_model_len, resolved.base_path or resolved.path)
    if note:
        print(f"openweights: {note}", flush=True)
    llm = load_llm(engine_kwargs(resolved, max_model_len=cfg.max_model_len,
                                 quantization=cfg.quantization, load_format=cfg.load_format))
    tokenizer = llm.get_tokenizer()
    if cfg.chat_template != "default":
        tokenizer.chat_template = cfg.chat_template
    loaded = time.perf_counter()
    reporter.log({"type": "model_loaded", "seconds": round(loaded - started, 3),
                  "rows_total": len(rows)})
    prompts = prompts_of(rows, tokenizer, cfg.prefill)
    lora = _lora_request(resolved)
    outputs = llm.generate([p.text for p in prompts], sampling(cfg, tokenizer.eos_token),
                           use_tqdm=Progress(reporter, len(prompts)), lora_request=lora)
    generated = time.perf_counter()
    result = output_rows(rows, outputs, cfg.n_completions_per_prompt)
    tokens = sum(len(s.token_ids) for o in outputs for s in o.outputs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "output.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in result))
        file_id = reporter.upload(path, "result")
    figures = {"load_s": round(loaded - started, 3), "generate_s": round(generated - loaded, 3),
               "tokens": tokens, "tokens_per_s": round(tokens / max(generated - loaded, 1e-9), 1)}
    reporter.log({"type": "inference_result", "file": file_id, "rows": len(result), **figures})
    return {"file": file_id, **figures}


def _lora_request(resolved: Any) -> Any:
    if not resolved.is_adapter:
        return None
    from vllm.lora.request import LoRARequest

    return LoRARequest(resolved.name.replace("/", "--"), 1, str(resolved.path))


def main(argv: list[str] | None = None) -> int:
    return run_worker(InferenceConfig, lambda cfg, _, reporter: run_inference(cfg, reporter),
                      argv, lambda cfg: f"openweights inference pid={os.getpid()} "
                                        f"model={cfg.model}")

if __name__ == "__main__":
    sys.exit(main())
