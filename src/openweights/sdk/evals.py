"""``ow.evals``: the scores of finished evaluations (``ow.inspect_ai``, ``ow.mmlu_pro``
or any job that logs a ``score`` event, :mod:`openweights.jobs.evals.scores`), newest
per model and evaluation; what ``ow evals ls`` prints.

Every method may raise ``StackUnavailable`` / ``Unavailable`` when the service cannot be
reached (after retrying).
"""

from __future__ import annotations

from typing import Any, TypedDict

from openweights.jobs.evals.scores import score_table
from openweights.sdk.loop import LoopThread, twin
from openweights.sdk.transport import Transport

__all__ = ["AsyncEvals", "EvalResult", "Evals"]


class EvalResult(TypedDict):
    model: str
    eval: str
    metrics: dict[str, float]
    samples: int | None
    job_id: str
    run_id: str
    created_at: str


class AsyncEvals:
    """Scores of finished evaluations."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    async def results(self, model: str | None = None, limit: int = 1000) -> list[EvalResult]:
        """The newest score of each model and evaluation (only ``model``'s if given),
        newest first: ``{"model", "eval", "metrics": {name: value}, "samples", "job_id",
        "run_id", "created_at"}``."""
        out: list[EvalResult] = []
        async for rows in self._t.pages("evals.results", read=True, limit=limit,
                                        model=model):
            out += rows
        return out

    async def table(self, model: str | None = None) -> dict[str, Any]:
        """The results as a table: ``{"columns": ["eval/metric", ...], "rows": {model:
        {"eval/metric": value}}}``."""
        columns, rows = score_table(await self.results(model))
        return {"columns": columns, "rows": rows}


class Evals:
    """``ow.evals`` of the blocking client (see :class:`AsyncEvals`)."""

    def __init__(self, evals: AsyncEvals, loop: LoopThread) -> None:
        self._a, self._loop = evals, loop

    @twin(AsyncEvals.results)
    def results(self, model: str | None = None, limit: int = 1000) -> list[EvalResult]:
        return self._loop.run(self._a.results(model, limit))

    @twin(AsyncEvals.table)
    def table(self, model: str | None = None) -> dict[str, Any]:
        return self._loop.run(self._a.table(model))
