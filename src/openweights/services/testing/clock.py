"""A clock for the services that tests move instead of waiting (token expiry, start
backoff): real time plus what the test advanced it by, so anything still reading real
time sees nothing age faster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class MovableClock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)
