"""Which hardware the provisioner should not ask for now, and when all asking stops: pure.

- A hardware type that failed ``threshold`` starts in a row (no capacity, a pod that
  never registered, a refused request) cools down for the next rung of the ladder
  (1, 2, 5, 10, ... minutes; the last rung repeats); each further wave climbs a rung,
  a start that works resets both. A shortage never fails a job: its other hardware is
  tried, or it waits and says why.
- A provider's refusal for money (a spending limit) pauses every start for
  ``spend_pause_s``: no other hardware would be accepted either.
- An organization whose provider key was refused is paused until its key changes.

Told of what happened with the events' times and asked with ``now``: no clock inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


def parse_ladder(text: str) -> tuple[float, ...]:
    """``"1,2,5"`` -> (1.0, 2.0, 5.0) minutes. Raises ValueError for anything else."""
    rungs = tuple(float(part) for part in text.split(",") if part.strip())
    if not rungs or any(r <= 0 for r in rungs):
        raise ValueError(f"a cooldown ladder is positive minutes, comma-separated: {text!r}")
    return rungs


@dataclass(slots=True)
class _Streak:
    failures: int = 0  # in a row, since the last cooldown began
    wave: int = 0  # cooldowns so far without a success
    since: datetime | None = None  # first failure of the streak
    until: datetime | None = None  # cooling down till then
    error: str = ""


class HardwareCooldown:
    def __init__(self, threshold: int, ladder_min: tuple[float, ...]) -> None:
        self.threshold, self.ladder = max(1, threshold), ladder_min
        self._streaks: dict[str, _Streak] = {}

    def failed(self, hardware: str, at: datetime, error: str) -> None:
        s = self._streaks.setdefault(hardware, _Streak())
        s.failures += 1
        s.since = s.since or at
        s.error = error
        if s.failures >= self.threshold:
            rung = self.ladder[min(s.wave, len(self.ladder) - 1)]
            s.until, s.failures, s.wave = at + timedelta(minutes=rung), 0, s.wave + 1

    def succeeded(self, hardware: str) -> None:
        self._streaks.pop(hardware, None)

    def cooling_until(self, hardware: str, now: datetime) -> datetime | None:
        s = self._streaks.get(hardware)
        return s.until if s is not None and s.until is not None and now < s.until else None

    def failing_since(self, hardware: str) -> datetime | None:
        """When the current streak of failures of ``hardware`` began (None: it works)."""
        s = self._streaks.get(hardware)
        return None if s is None else s.since

    def why(self, hardware: str, now: datetime) -> str | None:
        """What keeps ``hardware`` from being used, for a job's wait reason."""
        s = self._streaks.get(hardware)
        if s is None or s.since is None:
            return None
        if (until := self.cooling_until(hardware, now)) is not None:
            return (f"{hardware} cooling down until {until:%H:%M} UTC after failed starts "
                    f"({s.error})")
        return f"no capacity for {hardware} since {s.since:%H:%M}"


class StartPauses:
    """The provider-wide spending pause and each organization's refused key."""

    def __init__(self, spend_pause_s: float) -> None:
        self.spend_pause = timedelta(seconds=spend_pause_s)
        self.spend_until: datetime | None = None
        self.spend_error = ""
        self.refused_keys: dict[str, tuple[datetime, str]] = {}  # org -> (when, error)

    def spending_limit(self, at: datetime, error: str) -> None:
        self.spend_until, self.spend_error = at + self.spend_pause, error

    def key_refused(self, org: str, at: datetime, error: str) -> None:
        self.refused_keys.setdefault(org, (at, error))

    def key_changed(self, org: str) -> None:
        self.refused_keys.pop(org, None)

    def why(self, org: str, now: datetime) -> str | None:
        """Why ``org`` may start nothing now (None: it may)."""
        if org in self.refused_keys:
            at, error = self.refused_keys[org]
            return (f"the organization's RunPod key was refused at {at:%H:%M} UTC ({error}); "
                    "starts resume when it changes: ow env set RUNPOD_API_KEY")
        if self.spend_until is not None and now < self.spend_until:
            return (f"RunPod refused a start for its spending limit ({self.spend_error}); "
                    f"no starts until {self.spend_until:%H:%M:%S} UTC")
        return None
