"""Per-token and per-block logprobs of conversations under a model: what logprob tracking
(``logp_callback_datasets``) and the logprob job (``ow.logprob``) report.

A block's ``logprobs`` is the sum of the logprobs of its tokens (each given everything
before it), and its ``range`` the block's token range ``[start, end)`` in the rendered
conversation (REFERENCE 1.17, 6.1).
"""

from __future__ import annotations

import copy
from typing import Any

from openweights.jobs.unsloth.data import Traced, blocks_of, trace

__all__ = ["block_rows", "is_blockwise", "token_logprobs", "token_rows"]


def is_blockwise(rows: list[dict[str, Any]]) -> bool:
    return any(isinstance(m.get("content"), list) for r in rows for m in r.get("messages", []))


def token_logprobs(model: Any, tokenizer: Any, rows: list[dict[str, Any]], *,
                   max_len: int, batch_size: int) -> list[tuple[Traced, list[float | None]]]:
    """Each row traced, with the logprob of each of its tokens (None for the first)."""
    import torch

    traced = [trace(tokenizer, r["messages"], max_len) for r in rows]
    out: list[tuple[Traced, list[float | None]]] = []
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(traced), batch_size):
            batch = traced[i:i + batch_size]
            width = max(len(t.input_ids) for t in batch)
            pad = tokenizer.pad_token_id or 0
            ids = torch.tensor([t.input_ids + [pad] * (width - len(t.input_ids))
                                for t in batch], device=device)
            mask = torch.tensor([[1] * len(t.input_ids) + [0] * (width - len(t.input_ids))
                                 for t in batch], device=device)
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], -1).gather(
                -1, ids[:, 1:, None]).squeeze(-1)
            for row, t in enumerate(batch):
                values = logp[row, :len(t.input_ids) - 1].tolist()
                out.append((t, [None, *values]))
    finally:
        model.train(was_training)
    return out


def token_rows(rows: list[dict[str, Any]], scored: list[tuple[Traced, list[float | None]]],
               tokenizer: Any) -> tuple[list[dict[str, Any]], float]:
    """Plain datasets: ``{messages, tokens: [{token, token_id, logp}]}`` per row, and the
    mean negative logprob of the trained-on (weighted) tokens."""
    out, total, count = [], 0.0, 0
    for row, (t, logps) in zip(rows, scored, strict=True):
        tokens = [{"token": tokenizer.decode([tid]), "token_id": tid, "logp": lp}
                  for tid, lp in zip(t.input_ids, logps, strict=True)]
        for w, lp in zip(t.weights, logps, strict=True):
            if w and lp is not None:
                total, count = total - lp, count + 1
        out.append({"messages": row["messages"], "tokens": tokens})
    return out, (total / count if count else 0.0)


def block_rows(rows: list[dict[str, Any]],
               scored: list[tuple[Traced, list[float | None]]]) -> list[dict[str, Any]]:
    """Block-formatted rows: each content part gets ``logprobs`` (the sum over its
    tokens) and ``range``; a plain string content becomes one part."""
    out = []
    for row, (t, logps) in zip(rows, scored, strict=True):
        row = copy.deepcopy(row)
        blocks = blocks_of(row["messages"], responses_only=True)
        parts: dict[int, list[dict[str, Any]]] = {}
        for b, rng in zip(blocks, t.ranges, strict=True):
            part = dict(b.part)
            if rng is None:
                part.update(logprobs=None, range=None)
            else:
                part.update(logprobs=sum(lp for lp in logps[rng[0]:rng[1]] if lp is not None),
                            range=list(rng))
            parts.setdefault(b.message, []).append(part)
        for i, m in enumerate(row["messages"]):
            m["content"] = parts.get(i, [])
        out.append(row)
    return out
