"""The logprob worker: ``python -m openweights.jobs.logprob.worker [PARAMS.json|JOB_ID]
[--local DIR]`` (REFERENCE 1.17).

Scores every conversation of ``dataset`` under ``model``: each content block gets the
sum of its tokens' logprobs (``logprobs``) and its token ``range``. The rows go to
``logprobs.jsonl`` (purpose ``logprobs``), announced as ``{"type": "logprobs", "file": id}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from openweights.jobs.logprob.config import LogProbConfig
from openweights.jobs.unsloth.failures import run_worker
from openweights.jobs.unsloth.report import Reporter
from openweights.jobs.unsloth.worker import model_cache, read_rows

__all__ = ["main"]


def score(cfg: LogProbConfig, reporter: Reporter) -> str:
    from openweights.jobs.unsloth.loading import load_hf
    from openweights.jobs.unsloth.logprobs import block_rows, token_logprobs
    from openweights.jobs.unsloth.source import resolve

    resolved = resolve(cfg.model, reporter, model_cache())
    model, tokenizer = load_hf(resolved, load_in_4bit=False, chat_template=cfg.chat_template)
    rows = read_rows(reporter, cfg.dataset, "dataset") or []
    scored = token_logprobs(model, tokenizer, rows, max_len=cfg.max_seq_length,
                            batch_size=cfg.batch_size)
    out = Path("logprobs.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in block_rows(rows, scored)))
    file_id = reporter.upload(out, "logprobs")
    reporter.log({"type": "logprobs", "file": file_id})
    return file_id


def main(argv: list[str] | None = None) -> int:
    return run_worker(LogProbConfig, lambda cfg, _, reporter: score(cfg, reporter), argv)

if __name__ == "__main__":
    sys.exit(main())
