"""Rate and size limits, pure: token buckets per key, and bytes kept per key.

Time is an argument (seconds on any monotonic clock), so the limits are tested without
waiting; the services that enforce them (the api's log gate and ``run.log``) pass their
clock. Keys that fall idle are forgotten, so memory follows the active keys only.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


class Buckets:
    """A token bucket per key: ``rate`` per second, holding at most ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = float(rate), float(burst)
        self._levels: dict[str, tuple[float, float]] = {}  # key -> (level, at)

    def level(self, key: str, now: float) -> float:
        level, at = self._levels.get(key, (self.burst, now))
        return min(self.burst, level + (now - at) * self.rate)

    def spend(self, key: str, n: float, now: float) -> None:
        self._levels[key] = (self.level(key, now) - n, now)

    def wait_s(self, key: str, n: float, now: float) -> float:
        """Seconds until ``n`` could be spent (0: now)."""
        short = n - self.level(key, now)
        return max(0.0, short / self.rate) if self.rate > 0 else float("inf")

    def forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled: they hold nothing a new one would not."""
        for key in [k for k in self._levels if self.level(k, now) >= self.burst]:
            del self._levels[key]


@dataclass
class _Chunk:
    count: int = 0
    bytes: int = 0


class Kept:
    """What one key (an organization) has kept, oldest first, in chunks of about
    ``max_bytes / 16``: when it goes over ``max_bytes``, :meth:`add` says how many of its
    newest messages to keep so that about three quarters of it remain."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._chunk = max(1, max_bytes // 16)
        self._of: dict[str, deque[_Chunk]] = {}
        self.total: dict[str, int] = {}

    def add(self, key: str, n: int) -> int | None:
        """Count a message of ``n`` bytes kept; the number of newest messages to keep
        when ``key`` is over its bound (None: within it)."""
        chunks = self._of.setdefault(key, deque([_Chunk()]))
        if chunks[-1].bytes >= self._chunk:
            chunks.append(_Chunk())
        chunks[-1].count += 1
        chunks[-1].bytes += n
        total = self.total[key] = self.total.get(key, 0) + n
        if total <= self.max_bytes:
            return None
        while len(chunks) > 1 and total > self.max_bytes * 3 // 4:
            total -= chunks.popleft().bytes
        self.total[key] = total
        return sum(c.count for c in chunks)


def size(n: float) -> str:
    """``n`` bytes for people: 512 B, 64 KiB, 1.5 MiB."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.4g} {unit}"
        n /= 1024
    return f"{n:.4g} GiB"


@dataclass(frozen=True)
class LogBounds:
    run_bytes_per_s: int
    run_burst_bytes: int
    run_max_bytes: int
    org_bytes_per_s: int
    org_burst_bytes: int
    org_max_bytes: int


class LogLimits:
    """Which output lines the log stream keeps: per run and per organization a rate
    (with a burst), per run a size; an organization over its size has its oldest lines
    purged (:meth:`keep_newest`) rather than its new ones dropped."""

    IDLE_S = 3600.0  # a run silent this long is forgotten (its size counted afresh)

    def __init__(self, b: LogBounds) -> None:
        self.b = b
        self.runs = Buckets(b.run_bytes_per_s, b.run_burst_bytes)
        self.orgs = Buckets(b.org_bytes_per_s, b.org_burst_bytes)
        self.run_kept: dict[str, tuple[int, float]] = {}  # "<org>.<run>" -> (bytes, last)
        self.org_kept = Kept(b.org_max_bytes)

    def refusal(self, org: str, run: str, n: int, now: float) -> str | None:
        """Why a line of ``n`` bytes is not kept (None: it is, and counted)."""
        b, key = self.b, f"{org}.{run}"
        kept = self.run_kept.get(key, (0, now))[0]
        if kept + n > b.run_max_bytes:
            return (f"this run has {size(b.run_max_bytes)} of output in the log stream, the "
                    "most a run keeps there; all of it is in the run's log file")
        if self.runs.level(key, now) < n:
            return (f"this run prints more than {size(b.run_bytes_per_s)}/s (bursts of "
                    f"{size(b.run_burst_bytes)}); print less, or write to a file")
        if self.orgs.level(org, now) < n:
            return (f"this organization's runs print more than {size(b.org_bytes_per_s)}/s "
                    f"together (bursts of {size(b.org_burst_bytes)})")
        self.runs.spend(key, n, now)
        self.orgs.spend(org, n, now)
        self.run_kept[key] = (kept + n, now)
        return None

    def keep_newest(self, org: str, n: int) -> int | None:
        """Count a kept line of ``n`` bytes; how many of the org's newest lines to keep
        when it is over its size (None: within it)."""
        return self.org_kept.add(org, n)

    def sweep(self, now: float) -> None:
        self.runs.forget_full(now)
        self.orgs.forget_full(now)
        for key in [k for k, (_, at) in self.run_kept.items() if now - at > self.IDLE_S]:
            del self.run_kept[key]


class EventRates:
    """``run.log`` (a run's metrics and events, kept in the event log forever): bytes
    per second per run and per organization, with bursts of ``burst_s`` seconds' worth."""

    SWEEP_EVERY_S = 60.0

    def __init__(self, run_bytes_per_s: int, org_bytes_per_s: int, burst_s: float) -> None:
        self.runs = Buckets(run_bytes_per_s, run_bytes_per_s * burst_s)
        self.orgs = Buckets(org_bytes_per_s, org_bytes_per_s * burst_s)
        self.swept = float("-inf")

    def refusal(self, org: str, run: str, n: int, now: float) -> str | None:
        """Why ``n`` more bytes of run events are refused now (None: taken)."""
        if now - self.swept > self.SWEEP_EVERY_S:
            self.swept = now
            self.runs.forget_full(now)
            self.orgs.forget_full(now)
        key = f"{org}.{run}"
        for buckets, k, who in ((self.runs, key, "this run logs"),
                                (self.orgs, org, "this organization's runs log")):
            if buckets.level(k, now) < n:
                return (f"{who} more than {size(buckets.rate)}/s of events: log less often "
                        f"or less at a time; retry in {buckets.wait_s(k, n, now):.1f} s")
        self.runs.spend(key, n, now)
        self.orgs.spend(org, n, now)
        return None
