"""Scores as data: the run event an evaluation reports its headline scores with, and the
table ``ow evals ls`` makes of the newest ones.

A finished evaluation logs one event::

    {"type": "score", "eval": "mmlu_pro", "model": "org/name",
     "metrics": {"accuracy": 0.41, "accuracy/biology": 0.5, ...}, "samples": 120}

``eval`` names the evaluation (an Inspect task's name, ``mmlu_pro``); ``metrics`` maps
each metric (Inspect: ``<scorer>/<metric>``) to a finite number; ``samples`` is how
many samples were scored. The results are read from these events in the read models, so
a replay of the event log rebuilds them; per model and eval the newest score wins (a
rerun replaces it). The event's keys land in ``job.outputs`` like any run event's.

Pure Python and pydantic: both the SDK and the workers import it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = ["SCORE_EVENT", "ScoreReport", "metric_columns", "parse_score_event", "score_event",
           "score_table"]

SCORE_EVENT: Literal["score"] = "score"


class ScoreReport(BaseModel):
    """What a ``{"type": "score"}`` run event says (extra keys are kept: an eval may add
    its own, e.g. per-subject counts)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    type: Literal["score"] = SCORE_EVENT
    eval: str = Field(min_length=1)
    model: str = Field(min_length=1)
    metrics: dict[str, float] = Field(min_length=1)
    samples: int | None = Field(None, ge=0)

    @field_validator("metrics")
    @classmethod
    def _finite(cls, v: dict[str, float]) -> dict[str, float]:
        for name, value in v.items():
            if not name or not math.isfinite(value):
                raise ValueError(f"metric {name!r} must be named and finite, not {value!r}")
        return v


def score_event(*, eval: str, model: str, metrics: Mapping[str, float],
                samples: int | None = None, **extra: Any) -> dict[str, Any]:
    """The event to ``ow.run.log`` once an evaluation is scored (validated here, so a
    malformed score fails in the job, not in ``ow evals ls``). Raises pydantic's
    ``ValidationError``."""
    return ScoreReport(eval=eval, model=model, metrics=dict(metrics), samples=samples,
                       **extra).model_dump(mode="json")


def parse_score_event(data: Any) -> ScoreReport | None:
    """The score in a run event's data; None for other events and malformed scores."""
    if not isinstance(data, dict) or data.get("type") != SCORE_EVENT:
        return None
    try:
        return ScoreReport.model_validate(data)
    except ValidationError:
        return None


def metric_columns(results: Iterable[Mapping[str, Any]]) -> list[str]:
    """``eval/metric`` of every metric in ``results``, in first-seen order."""
    seen: dict[str, None] = {}
    for r in results:
        for metric in r["metrics"]:
            seen.setdefault(f"{r['eval']}/{metric}", None)
    return list(seen)


def score_table(results: Iterable[Mapping[str, Any]]
                ) -> tuple[list[str], dict[str, dict[str, float]]]:
    """``(columns, {model: {"eval/metric": value}})`` of ``results`` (the newest score of
    each model and eval, as ``ow.evals.results`` returns them)."""
    results = list(results)
    rows: dict[str, dict[str, float]] = {}
    for r in results:
        row = rows.setdefault(r["model"], {})
        for metric, value in r["metrics"].items():
            row.setdefault(f"{r['eval']}/{metric}", value)  # newest first: keep the first
    return metric_columns(results), rows
