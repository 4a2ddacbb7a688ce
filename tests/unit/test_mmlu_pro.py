"""MMLU-Pro's pure parts (REFERENCE 1.16): the original's chain-of-thought few-shot prompt,
fewer shots until the prompt leaves room for the answer, the three-step answer
extraction and the scoring (an unparsed answer guessed at random, seeded)."""

from __future__ import annotations

import random

from openweights.jobs.evals.mmlu import (
    cot_prompt,
    extract_answer,
    fit_prompt,
    preprocess,
    score,
    subjects_of,
)


def _row(qid: int, category: str, answer: int = 0, cot: str = "") -> dict[str, object]:
    return {"question_id": qid, "question": f"Q{qid}?", "options": ["x", "y", "N/A"],
            "answer": "AB"[answer], "answer_index": answer, "cot_content": cot,
            "category": category, "src": "s"}


VAL = preprocess([_row(1, "math", cot="A: Let's think step by step. So (A). The answer is (A)."),
                  _row(2, "bio", cot="A: Let's think step by step. The answer is (B)."),
                  _row(3, "math", cot="A: Let's think step by step. The answer is (A).")])


def test_the_prompt_is_the_originals() -> None:
    curr = preprocess([_row(9, "math")])[0]
    assert curr["options"] == ["x", "y"]  # N/A padding dropped
    assert cot_prompt(VAL, curr, 1) == (
        "The following are multiple choice questions (with answers) about math. Think step "
        "by step and then finish your answer with \"the answer is (X)\" where X is the "
        "correct letter choice.\n\n\n"
        "Question:\nQ1?\nOptions:\nA. x\nB. y\n"
        "Answer: Let's think step by step. So (A). The answer is (A).\n\n"
        "Question:\nQ9?\nOptions:\nA. x\nB. y\nAnswer: Let's think step by step.")
    # Examples come from the question's own subject only, at most k of them.
    assert cot_prompt(VAL, curr, 5).count("Question:") == 3
    assert "Q2?" not in cot_prompt(VAL, curr, 5)


def test_fewer_shots_until_the_prompt_fits() -> None:
    curr = preprocess([_row(9, "math")])[0]
    words = lambda p: len(p.split())  # noqa: E731 - a stand-in tokenizer
    full = words(cot_prompt(VAL, curr, 2))
    assert fit_prompt(VAL, curr, 5, words, full + 1)[1] == 2  # 5 asked, 2 exist
    assert fit_prompt(VAL, curr, 2, words, full)[1] == 1
    prompt, shots = fit_prompt(VAL, curr, 2, words, 1)
    assert shots == 0 and prompt == cot_prompt(VAL, curr, 0)


def test_answers_are_extracted_as_the_original() -> None:
    assert extract_answer("so the answer is (C). Question:") == "C"
    assert extract_answer("the answer is D") == "D"
    assert extract_answer("blah\nAnswer: E because") == "E"
    assert extract_answer("I pick B or maybe F then") == "F"  # the last lone letter
    assert extract_answer("no letter here") is None
    assert extract_answer("the answer is (K)") is None  # K is no option letter here


def test_scoring_guesses_unparsed_answers_seeded() -> None:
    rows = [{"pred": "A", "answer": "A", "answer_index": 0, "options": ["x", "y"]},
            {"pred": "B", "answer": "A", "answer_index": 0, "options": ["x", "y"]},
            {"pred": None, "answer": "A", "answer_index": 0, "options": ["x", "y"]}]
    acc = score(rows, random.Random(0))
    assert (acc.total, acc.unparsed) == (3, 1)
    guess_hit = random.Random(0).randint(0, 1) == 0
    assert acc.correct == 1 + guess_hit and acc.wrong == 2 - guess_hit
    assert acc.accuracy == acc.correct / 3
    assert score([], random.Random(0)).accuracy == 0.0
    assert subjects_of([*VAL, _row(4, "law")]) == ["math", "bio", "law"]
