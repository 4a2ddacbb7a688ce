"""Datasets of the built-in trainers: rows read from the job's files, conversations
rendered with the tokenizer's chat template, and token-level weights traced from message
content parts (REFERENCE 1.11/6.2).

A message's ``content`` is a string or a list of parts ``{"type": "text", "text": ...,
"weight": w, "tag": ...}``. Each token gets the weight of the part its first character
lies in; template tokens between parts get 0, except the end-of-turn token after an
assistant part, which inherits the weight of the token before it (the model learns to
stop where it was taught to speak).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["Block", "Traced", "blocks_of", "read_jsonl", "render", "trace", "turn_parts"]


def read_jsonl(content: bytes, what: str) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a bad line is named (the SDK validated the file at upload,
    so this guards only files given as local paths)."""
    rows = []
    for n, line in enumerate(content.decode().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{what}: line {n} is not JSON ({exc})") from None
    if not rows:
        raise ValueError(f"{what} has no rows")
    return rows


def text_of(content: str | list[dict[str, Any]]) -> str:
    return content if isinstance(content, str) else "".join(p["text"] for p in content)


def plain(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Messages with string content (what every chat template understands)."""
    return [{"role": m["role"], "content": text_of(m["content"])} for m in messages]


def render(tokenizer: Any, messages: list[dict[str, Any]], *,
           generation_prompt: bool = False) -> str:
    return str(tokenizer.apply_chat_template(plain(messages), tokenize=False,
                                             add_generation_prompt=generation_prompt))


@dataclass(frozen=True)
class Block:
    """One content part: its text, weight, index of its message and its own keys."""

    text: str
    weight: float
    message: int
    part: dict[str, Any]


def blocks_of(messages: list[dict[str, Any]], responses_only: bool) -> list[Block]:
    """Every content part of ``messages``; a plain string is one part weighted by the
    message's ``weight``, else 1 for assistant messages and, unless ``responses_only``,
    for the others too."""
    out = []
    for i, m in enumerate(messages):
        default = m.get("weight", 1.0 if m["role"] == "assistant" or not responses_only
                        else 0.0)
        parts = m["content"] if isinstance(m["content"], list) else [
            {"type": "text", "text": m["content"], "weight": default}]
        for p in parts:
            out.append(Block(p["text"], float(p.get("weight", default)), i, p))
    return out


@dataclass(frozen=True)
class Traced:
    """A tokenized conversation: ids, each token's weight, and each block's token range
    ``[start, end)`` (None for a block cut off by truncation or of empty text)."""

    input_ids: list[int]
    weights: list[float]
    ranges: list[tuple[int, int] | None]


def trace(tokenizer: Any, messages: list[dict[str, Any]], max_len: int,
          responses_only: bool = True) -> Traced:
    """Tokenize the rendered conversation and give each token its block's weight."""
    blocks = blocks_of(messages, responses_only)
    text = render(tokenizer, messages)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for b in blocks:  # parts appear in the rendering in order, each as written
        start = text.find(b.text, cursor) if b.text else cursor
        if start < 0:
            raise ValueError(f"the chat template changed the text of a part: {b.text[:40]!r}")
        spans.append((start, start + len(b.text)))
        cursor = start + len(b.text)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"][:max_len], enc["offset_mapping"][:max_len]
    weights = [0.0] * len(ids)
    ranges: list[tuple[int, int] | None] = []
    for b, (s, e) in zip(blocks, spans, strict=True):
        toks = [i for i, (a, _z) in enumerate(offsets) if s <= a < e]
        for i in toks:
            weights[i] = b.weight
        ranges.append((toks[0], toks[-1] + 1) if toks else None)
        last_role_assistant = messages[b.message]["role"] == "assistant"
        if toks and last_role_assistant and toks[-1] + 1 < len(ids) and \
                ids[toks[-1] + 1] == tokenizer.eos_token_id:
            weights[toks[-1] + 1] = b.weight
    return Traced(list(ids), weights, ranges)


def turn_parts(tokenizer: Any) -> tuple[str, str]:
    """The template's (instruction, response) delimiters, found by rendering sentinel
    conversations: what precedes a user's text after an assistant's turn, and the
    generation prompt (what precedes an assistant's text)."""
    u, a, u2 = "\u2401U\u2401", "\u2401A\u2401", "\u2401V\u2401"
    one = render(tokenizer, [{"role": "user", "content": u}])
    prompt = render(tokenizer, [{"role": "user", "content": u}], generation_prompt=True)
    response = prompt[len(one):] if prompt.startswith(one) else ""
    two = render(tokenizer, [{"role": "user", "content": u}, {"role": "assistant", "content": a}])
    three = render(tokenizer, [{"role": "user", "content": u},
                               {"role": "assistant", "content": a},
                               {"role": "user", "content": u2}])
    end_of_turn = two[two.index(a) + len(a):]
    between = three[three.index(a) + len(a):three.index(u2)]
    instruction = between.removeprefix(end_of_turn) or between
    if not response:
        response = two[two.index(u) + len(u):two.index(a)].removeprefix(end_of_turn)
    if not instruction.strip() or not response.strip():
        raise ValueError("cannot find the chat template's turn delimiters: set "
                         "train_on_responses_only=False")
    return instruction, response
