"""`ow evals ls`: the scores of finished evaluations as one table (rows: models,
columns: eval/metric), newest score per model and evaluation."""

from __future__ import annotations

import typer

from openweights.cli.common import JSON_OPT, client, console, friendly, out, to_json
from openweights.cli.tables import fit_table
from openweights.jobs.evals.scores import score_table


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


@friendly
def evals_ls(model: str | None = typer.Option(None, "--model", help="only this model's"),
             as_json: bool = JSON_OPT) -> None:
    """Scores of finished evaluations: a row per model, a column per eval/metric."""
    with client() as ow:
        results = ow.evals.results(model=model)
    if as_json:
        out(to_json(results))
        return
    if not results:
        console.print("no scores yet (an evaluation job reports them when it finishes: "
                      "ow.inspect_ai / ow.mmlu_pro)")
        return
    columns, rows = score_table(results)
    cells = [[name, *(_cell(row.get(c)) for c in columns)] for name, row in rows.items()]
    console.print(fit_table(console, ["model", *columns], cells, ids=["model"],
                            droppable=columns[::-1]))
