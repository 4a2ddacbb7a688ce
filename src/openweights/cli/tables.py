"""Tables that fit the terminal without cutting an id: an id is what a person copies into
the next command (`ow token revoke <id>`), so it is printed whole, on one line. Other
columns wrap, and when even that does not leave the ids their width, the columns named
droppable are left out, in the order given, until it does. A leaf, like `common`."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

WORD_MAX = 20  # a longer word in a column that is not an id may be folded


def fit_table(console: Console, columns: Sequence[str], rows: Sequence[Sequence[str]], *,
              ids: Sequence[str], droppable: Sequence[str] = (),
              title: str | None = None) -> Table:
    """The table of ``rows`` (cells in ``columns``' order) with the fewest of
    ``droppable`` left out such that each ``ids`` column shows every value whole and
    every other column its words (up to ``WORD_MAX``) on ``console``'s width."""
    widths = {c: _min_width(c, [r[i] for r in rows], c in ids) for i, c in enumerate(columns)}
    shown = list(columns)
    for c in droppable:
        if _width([widths[s] for s in shown]) <= console.width:
            break
        shown.remove(c)
    table = Table(title=title)
    for c in shown:  # an id folds (never cut) only where even its column alone is too wide
        table.add_column(c, no_wrap=c in ids, overflow="fold", min_width=widths[c])
    keep = [columns.index(c) for c in shown]
    for r in rows:
        table.add_row(*(r[i] for i in keep))
    return table


def _min_width(header: str, cells: list[str], is_id: bool) -> int:
    if is_id:
        return max([len(header), *map(len, cells)])
    words = [len(w) for text in [header, *cells] for w in text.split()]
    return min(max(words, default=1), WORD_MAX)


def _width(columns: list[int]) -> int:
    """A rich table's width: a space either side of each cell, a rule between and around."""
    return sum(columns) + 3 * len(columns) + 1
