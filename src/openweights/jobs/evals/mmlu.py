"""MMLU-Pro's chain-of-thought few-shot evaluation, the pure parts: the prompts, the
answer extraction and the scoring of TIGER-AI-Lab's ``evaluate_from_local.py``, which
the original ran (REFERENCE 1.16).

A row is the dataset's own (``question_id``, ``question``, ``options``, ``answer``,
``answer_index``, ``cot_content``, ``category``, ``src``); the few-shot examples are the
first ``k`` validation rows of the question's category, and ``k`` drops from ``ntrain``
until the prompt leaves ``max_new_tokens`` of the context free. An answer is "the answer
is (X)", else "Answer: X", else the last lone letter A-J; a question without one is
guessed at random as the original does (seeded here, so a rerun scores the same).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CHOICES", "INITIAL_PROMPT", "Accuracy", "cot_prompt", "extract_answer",
           "fit_prompt", "preprocess", "score", "subjects_of"]

CHOICES = [chr(ord("A") + i) for i in range(16)]
# cot_prompt_lib/initial_prompt.txt of the original, {$} the subject.
INITIAL_PROMPT = ("The following are multiple choice questions (with answers) about {$}. "
                  "Think step by step and then finish your answer with \"the answer is "
                  "(X)\" where X is the correct letter choice.\n\n")

Row = dict[str, Any]


def preprocess(rows: Iterable[Row]) -> list[Row]:
    """The rows with their ``"N/A"`` options dropped (padding in the dataset)."""
    return [{**row, "options": [o for o in row["options"] if o != "N/A"]} for row in rows]


def subjects_of(rows: Iterable[Row]) -> list[str]:
    """The categories of ``rows`` in first-seen order."""
    return list(dict.fromkeys(row["category"] for row in rows))


def format_cot_example(example: Row, including_answer: bool = True) -> str:
    prompt = "Question:\n" + example["question"] + "\nOptions:\n"
    for i, opt in enumerate(example["options"]):
        prompt += f"{CHOICES[i]}. {opt}\n"
    if including_answer:
        cot = example["cot_content"].replace("A: Let's think step by step.",
                                             "Answer: Let's think step by step.")
        return prompt + cot + "\n\n"
    return prompt + "Answer: Let's think step by step."


def cot_prompt(val_rows: Sequence[Row], curr: Row, k: int) -> str:
    """The prompt for ``curr`` with the first ``k`` validation examples of its subject."""
    subject = curr["category"]
    shots = [r for r in val_rows if r["category"] == subject][:k]
    prompt = INITIAL_PROMPT.replace("{$}", subject) + "\n"
    for example in shots:
        prompt += format_cot_example(example, including_answer=True)
    return prompt + format_cot_example(curr, including_answer=False)


def fit_prompt(val_rows: Sequence[Row], curr: Row, ntrain: int,
               n_tokens: Callable[[str], int], budget: int) -> tuple[str, int]:
    """``(prompt, shots)``: the most shots (up to ``ntrain``) whose prompt has fewer than
    ``budget`` tokens (``max_model_len - max_new_tokens``); zero shots if none fits."""
    available = sum(r["category"] == curr["category"] for r in val_rows)
    for k in range(min(ntrain, available), 0, -1):
        prompt = cot_prompt(val_rows, curr, k)
        if n_tokens(prompt) < budget:
            return prompt, k
    return cot_prompt(val_rows, curr, 0), 0


def extract_answer(text: str) -> str | None:
    """The letter ``text`` answers with, or None."""
    match = re.search(r"answer is \(?([A-J])\)?", text)
    if match:
        return match.group(1)
    match = re.search(r".*[aA]nswer:\s*([A-J])", text)
    if match:
        return match.group(1)
    match = re.search(r"\b[A-J]\b(?!.*\b[A-J]\b)", text, re.DOTALL)
    return match.group(0) if match else None


@dataclass(frozen=True)
class Accuracy:
    correct: int
    wrong: int
    unparsed: int  # questions without an answer (guessed, as the original)

    @property
    def total(self) -> int:
        return self.correct + self.wrong

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


def score(results: Iterable[Row], rng: random.Random) -> Accuracy:
    """``results`` (rows with their ``pred``) scored as the original: a missing answer is
    a random option, right if it is the answer's index."""
    correct = wrong = unparsed = 0
    for row in results:
        if not row["pred"]:
            unparsed += 1
            hit = rng.randint(0, len(row["options"]) - 1) == row["answer_index"]
        else:
            hit = row["pred"] == row["answer"]
        correct, wrong = correct + hit, wrong + (not hit)
    return Accuracy(correct, wrong, unparsed)
