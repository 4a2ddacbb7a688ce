"""How long to wait before trying again: one schedule for every restart and reconnect.

A pure value (no clock, no sleep): the caller says how long the thing ran before it
failed, and gets the delay before its next try.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    """Delays that double from ``first_s`` up to ``max_s``. Something that stayed up for
    ``healthy_s`` before it failed starts again from ``first_s``: one crash after a day
    of work is retried at once, a crash loop slows down to one try per ``max_s``."""

    first_s: float = 0.5
    max_s: float = 30.0
    healthy_s: float = 60.0
    failures: int = 0  # in a row, since the last healthy run

    def delay(self, ran_for_s: float = 0.0) -> float:
        """The wait before the next try of something that failed after ``ran_for_s``."""
        if ran_for_s >= self.healthy_s:
            self.failures = 0
        delay = min(self.max_s, self.first_s * 2.0 ** min(self.failures, 32))
        self.failures += 1
        return delay

    def reset(self) -> None:
        """It works again: the next failure is retried after ``first_s``."""
        self.failures = 0
