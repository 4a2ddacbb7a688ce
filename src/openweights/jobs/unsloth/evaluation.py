"""Evaluations during training, reported as files and events (so they show live and in
``job.outputs``): logprob tracking of ``logp_callback_datasets`` and the completions of
``sampling_callbacks`` (REFERENCE 6.1), at the start and every N steps.

Events:
- ``{"type": "logprobs", <tag>: mean loss, "step", "file", "tag"}`` (plain datasets; file
  purpose ``logp``), ``{"type": "logprobs_blockwise", "step", "file", "tag"}`` plus one
  ``{"type": "logprob_block", "source": tag, "step", ...block}`` per tagged block (file
  purpose ``logp_blockwise``);
- ``{"type": "samples", "step", "file", "tag"}`` (file purpose ``samples``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from openweights.jobs.unsloth.data import read_jsonl, render
from openweights.jobs.unsloth.logprobs import (
    block_rows,
    is_blockwise,
    token_logprobs,
    token_rows,
)
from openweights.jobs.unsloth.report import Reporter

__all__ = ["LogpCallback", "SamplingCallback", "eval_callbacks"]


class _Every(TrainerCallback):
    """Runs ``run(model, step)`` at the start of training and every ``every`` steps."""

    def __init__(self, every: int) -> None:
        self.every = max(1, every)

    def run(self, model: Any, step: int) -> None:
        raise NotImplementedError

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.run(kw["model"], state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step % self.every == 0:
            self.run(kw["model"], state.global_step)


class LogpCallback(_Every):
    def __init__(self, reporter: Reporter, tokenizer: Any, tag: str, rows: list[Any],
                 every: int, batch_size: int, max_len: int) -> None:
        super().__init__(every)
        self.reporter, self.tokenizer, self.tag, self.rows = reporter, tokenizer, tag, rows
        self.batch_size, self.max_len = batch_size, max_len

    def run(self, model: Any, step: int) -> None:
        scored = token_logprobs(model, self.tokenizer, self.rows, max_len=self.max_len,
                                batch_size=self.batch_size)
        if is_blockwise(self.rows):
            out = block_rows(self.rows, scored)
            file_id = _store(self.reporter, out, f"logp_{self.tag}_{step}.jsonl",
                             "logp_blockwise")
            self.reporter.log({"type": "logprobs_blockwise", "step": step, "file": file_id,
                               "tag": self.tag})
            for row in out:
                for m in row["messages"]:
                    for part in m["content"]:
                        if part.get("tag"):
                            self.reporter.log({**part, "step": step, "source": self.tag,
                                               "type": "logprob_block"})
            return
        rows, loss = token_rows(self.rows, scored, self.tokenizer)
        file_id = _store(self.reporter, rows, f"logp_{self.tag}_{step}.json", "logp")
        self.reporter.log({"type": "logprobs", self.tag: loss, "step": step,
                           "file": file_id, "tag": self.tag})


class SamplingCallback(_Every):
    def __init__(self, reporter: Reporter, tokenizer: Any, spec: Any, rows: list[Any],
                 every: int) -> None:
        super().__init__(every)
        self.reporter, self.tokenizer, self.spec, self.rows = reporter, tokenizer, spec, rows

    def run(self, model: Any, step: int) -> None:
        import torch

        tok, spec = self.tokenizer, self.spec
        was_training = model.training
        model.eval()
        out = []
        try:
            for row in self.rows:
                messages = row["messages"]
                if messages and messages[-1]["role"] == "assistant":
                    messages = messages[:-1]
                prompt = render(tok, messages, generation_prompt=True)
                ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
                ids = {k: v.to(next(model.parameters()).device) for k, v in ids.items()}
                sample = {"do_sample": True, "temperature": spec.temperature} \
                    if spec.temperature > 0 else {"do_sample": False}
                with torch.no_grad():
                    gen = model.generate(**ids, max_new_tokens=spec.max_tokens,
                                         use_cache=False, pad_token_id=tok.pad_token_id,
                                         **sample)
                completion = tok.decode(gen[0, ids["input_ids"].shape[1]:],
                                        skip_special_tokens=True)
                out.append({**row, "completion": completion})
        finally:
            model.train(was_training)
        file_id = _store(self.reporter, out, f"samples_{spec.tag}_{step}.jsonl", "samples")
        self.reporter.log({"type": "samples", "step": step, "file": file_id, "tag": spec.tag})


def _store(reporter: Reporter, rows: list[dict[str, Any]], name: str, purpose: str) -> str:
    path = Path("evals") / name
    path.parent.mkdir(exist_ok=True)
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    return reporter.upload(path, purpose)


def eval_callbacks(cfg: Any, reporter: Reporter, tokenizer: Any) -> list[Any]:
    """The callbacks the job's ``logp_callback_datasets`` and ``sampling_callbacks`` ask for."""
    every = cfg.eval_steps_value() if hasattr(cfg, "eval_steps_value") else \
        int(cfg.eval_every_n_steps)
    out: list[Any] = []
    for tag, file_id in cfg.logp_callback_datasets.items():
        rows = read_jsonl(reporter.read_file(file_id), f"logp_callback_datasets[{tag!r}]")
        out.append(LogpCallback(reporter, tokenizer, tag, rows, every, cfg.eval_batch_size,
                                cfg.max_seq_length))
    for spec in cfg.sampling_callbacks or []:
        rows = read_jsonl(reporter.read_file(spec.dataset), f"sampling dataset {spec.tag!r}")
        steps = cfg.logging_steps if spec.eval_steps == "log" else int(spec.eval_steps)
        out.append(SamplingCallback(reporter, tokenizer, spec, rows, steps))
    return out
