"""How fast each organization may start machines: starts back off while its machines die,
and the operator's machine limit is shared out fairly.

A machine that dies unasked (its agent was lost, its start failed, it never
registered) before it ended a single run is a start wasted; a job that crashes its agent
would waste one every few seconds. So each such death of an organization's machine
makes that organization's next start wait: ``first_s`` after the first, twice as long
after the next, up to ``max_s``. A machine of the organization that ends a run shows
that its starts work again: the next wasted start waits ``first_s`` again (the wait
under way is kept, so at most one wasted start per ``first_s`` however the two mix). A
machine that dies after doing work (a crash, a kill, a lost network) is not counted.
Deaths less than ``first_s`` apart are one incident (a network blip that loses eight
machines at once does not make the wait 128 times longer), and an organization none of
whose machines died for ``2 * max_s`` is forgiven. Other organizations are never slowed.

Pure: told of deaths with their events' times and asked with ``now``. The provisioner's
fold replays the whole log to its listener at start, so a restart rebuilds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class _Deaths:
    count: int  # incidents since a machine last did work, each ``first_s`` after the last
    last: datetime
    until: datetime  # no start before


class StartPacing:
    def __init__(self, first_s: float, max_s: float) -> None:
        self.first, self.max = timedelta(seconds=first_s), timedelta(seconds=max_s)
        self._deaths: dict[str, _Deaths] = {}

    def died(self, org: str, at: datetime) -> None:
        """One of ``org``'s machines died unasked at ``at`` without having ended a run."""
        d = self._deaths.get(org)
        if d is None or d.count == 0 or at - d.last > 2 * self.max:
            count = 1
        elif at - d.last >= self.first:
            count = d.count + 1
        else:  # the same incident
            count = d.count
        last = at if d is None else max(at, d.last)
        wait = min(self.max, self.first * 2 ** min(count - 1, 32))
        self._deaths[org] = _Deaths(count, last, last + wait)

    def worked(self, org: str) -> None:
        """One of ``org``'s machines ended a run: its next wasted start counts as the first."""
        d = self._deaths.get(org)
        if d is not None and d.count:
            self._deaths[org] = _Deaths(0, d.last, d.until)

    def not_before(self, org: str) -> datetime | None:
        """When ``org`` may start its next machine (None: whenever it needs one)."""
        d = self._deaths.get(org)
        return None if d is None else d.until

    def may_start(self, org: str, now: datetime) -> bool:
        until = self.not_before(org)
        return until is None or now >= until


def share(room: int, demand: dict[str, int]) -> dict[str, int]:
    """``room`` machines shared out one at a time, round-robin over the organizations
    in name order, each up to its ``demand``: when the operator's limit cannot meet
    every organization's demand, each one's first machine comes before another's second."""
    out = dict.fromkeys(demand, 0)
    wanting = sorted(o for o, n in demand.items() if n > 0)
    while room > 0 and wanting:
        for org in list(wanting):
            if room == 0:
                break
            out[org] += 1
            room -= 1
            if out[org] >= demand[org]:
                wanting.remove(org)
    return out
