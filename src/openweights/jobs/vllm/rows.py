"""The rows of batch inference, without vLLM: input rows checked line by line (before any
model loads), prompts rendered with the tokenizer's chat template and a prefill, and the
output rows (the input's own fields, the completion, its token logprobs)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["Prompt", "output_rows", "parse_rows", "prompts_of"]

ROLES = ("system", "user", "assistant", "tool", "developer")


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("text"), str)
                                         for p in content):
        return "".join(p["text"] for p in content)
    raise ValueError(f"{where}: content must be a string or a list of "
                     "{\"type\": \"text\", \"text\": ...} parts")


def _check_row(row: Any, n: int, what: str) -> dict[str, Any]:
    where = f"{what} line {n}"
    if not isinstance(row, dict):
        raise ValueError(f"{where} is not a JSON object")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where} has no \"messages\" list (a conversation is "
                         "{\"messages\": [{\"role\": \"user\", \"content\": ...}, ...]})")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ValueError(f"{where}: message {i} needs a role among {', '.join(ROLES)}")
        _text(m.get("content"), f"{where}: message {i}")
    return row


def parse_rows(content: bytes, what: str) -> list[dict[str, Any]]:
    """The conversations of a JSONL file, each checked; a bad one is named by its line.
    Raises ``ValueError``."""
    rows = []
    try:
        text = content.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} is not UTF-8 text ({exc})") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{what} line {n} is not JSON ({exc})") from None
        rows.append(_check_row(row, n, what))
    if not rows:
        raise ValueError(f"{what} has no conversations")
    return rows


@dataclass(frozen=True)
class Prompt:
    """What the model continues: ``text`` ends with the prefill ``prefix`` (not part of
    the completion)."""

    text: str
    prefix: str


def prompts_of(rows: list[dict[str, Any]], tokenizer: Any, prefill: str = "") -> list[Prompt]:
    """Each conversation rendered with the chat template and a generation prompt. A
    conversation ending with an assistant message is continued from that message (its
    text is the prefill); else ``prefill`` is appended."""
    out = []
    for row in rows:
        messages = [{"role": m["role"], "content": _text(m["content"], "")}
                    for m in row["messages"]]
        prefix = prefill
        if messages[-1]["role"] == "assistant":
            prefix = messages.pop()["content"]
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True)
        out.append(Prompt(str(text) + prefix, prefix))
    return out


def _logprobs(sample: Any) -> list[list[dict[str, Any]]] | None:
    if sample.logprobs is None:
        return None
    return [[{"token_id": tid, "decoded_token": lp.decoded_token, "logprob": lp.logprob,
              "rank": lp.rank} for tid, lp in sorted(pos.items(), key=lambda kv: kv[1].rank
                                                    or 0)]
            for pos in sample.logprobs]


def output_rows(rows: list[dict[str, Any]], outputs: list[Any],
                n: int) -> list[dict[str, Any]]:
    """One row per input row (``n`` per input when ``n > 1``, with ``completion_index``),
    in input order: the input's fields, ``completion`` and ``logprobs`` (None unless
    asked for: per generated position, the top tokens with their logprob and rank)."""
    out = []
    for row, result in zip(rows, outputs, strict=True):
        for i, sample in enumerate(result.outputs[:n]):
            done = {**row, "completion": sample.text, "logprobs": _logprobs(sample),
                    "finish_reason": sample.finish_reason}
            if n > 1:
                done["completion_index"] = i
            out.append(done)
    return out
