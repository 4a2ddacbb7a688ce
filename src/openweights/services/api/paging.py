"""Replies bounded by bytes as well as by count.

A list endpoint encodes its items one at a time into a page until the page holds
``limit`` of them or ``reply_page_bytes`` (at most what one message may carry), and
reads its rows through a server-side cursor, a few at a time, so a page of large rows
never loads more than it sends. A page cut short says how to read on (the reply's
``next``: a keyset cursor, never an offset, so nothing written meanwhile repeats or goes
missing). Its first item always goes in: every item fits a message on its own
(requests are bounded, and a job too large to inline goes by reference, ``$ref``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from openweights.api import protocol
from openweights.errors import InvalidRequest
from openweights.services.api import views
from openweights.services.api.context import Deps, Page

# The reply's envelope and headers: what a page leaves of a message.
ENVELOPE = 8192
_MAX_BATCH = 1024
_encode = protocol.encoder.encode


def budget(d: Deps) -> int:
    return max(1, min(d.settings.reply_page_bytes, d.nc.max_payload - ENVELOPE))


class Filler:
    """Encoded items gathered into one JSON array (or object) until it is full."""

    def __init__(self, budget: int, limit: int) -> None:
        self.budget, self.limit = budget, limit
        self.parts: list[bytes] = []
        self.size = 2

    def add(self, encoded: bytes) -> bool:
        """Take ``encoded`` if it fits; False (not taken) once the page is full."""
        if self.parts and (len(self.parts) >= self.limit
                           or self.size + len(encoded) + 1 > self.budget):
            return False
        self.parts.append(encoded)
        self.size += len(encoded) + 1
        return True

    @property
    def count(self) -> int:
        return len(self.parts)

    def array(self) -> msgspec.Raw:
        return msgspec.Raw(b"[" + b",".join(self.parts) + b"]")

    def object(self) -> msgspec.Raw:
        return msgspec.Raw(b"{" + b",".join(self.parts) + b"}")


async def fill_rows(pool: asyncpg.Pool, sql: str, args: Sequence[Any], page: Filler,
                    encode: Callable[[Any], bytes]) -> tuple[Any, bool]:
    """Fill ``page`` from the rows of ``sql``: ``(the last row taken, whether a row was
    left out because the page was full)``."""
    last, batch, seen = None, 8, 0
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        cursor = await conn.cursor(sql, *args)
        while True:
            rows = await cursor.fetch(batch)
            for row in rows:
                if not page.add(encode(row)):
                    return last, True
                last, seen = row, seen + 1
            if len(rows) < batch:
                return last, False
            # Fetch about what is still room for, judging by the rows so far.
            room = (page.budget - page.size) * seen // max(page.size, 1) + 1
            batch = max(1, min(_MAX_BATCH, room, page.limit - page.count + 1))


def cursor_of(values: Sequence[Any]) -> str:
    return _encode(list(values)).decode()


def parse_cursor(cursor: str | None, shape: type) -> Any:
    """The values of a ``next`` cursor (None: from the first). Raises
    :class:`InvalidRequest` for one this service did not give."""
    if cursor is None:
        return None
    try:
        return msgspec.json.decode(cursor, type=shape)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidRequest(f"cursor {cursor[:80]!r} is not one this service gave: pass a "
                             "reply's `next` as it is") from None


def job_item(d: Deps, row: Any) -> bytes:
    """A job of a list page; one larger than ``reply_inline_bytes`` is a reference the
    client reads with ``jobs.get`` (so a page of large jobs stays small)."""
    encoded = _encode(views.job_from_row(row))
    if len(encoded) > min(d.settings.reply_inline_bytes, budget(d)):
        return _encode({"id": row["id"], "$ref": "jobs.get", "bytes": len(encoded)})
    return encoded


async def rows_page(d: Deps, sql: str, args: Sequence[Any], limit: int, after: Sequence[Any],
                    encode: Callable[[Any], bytes], key: Callable[[Any], Sequence[Any]]) -> Page:
    """Up to ``limit`` rows of ``sql`` (which takes ``args``, ``limit``, then the
    cursor's values ``after``); ``next`` reads the rest of ``limit`` from ``key(last)``."""
    page = Filler(budget(d), limit)
    last, more = await fill_rows(d.reads.pool, sql, (*args, limit, *after), page, encode)
    if not more:
        return Page(page.array())
    return Page(page.array(), {"cursor": cursor_of(key(last)), "limit": limit - page.count})


async def job_page(d: Deps, sql: str, args: Sequence[Any], limit: int,
                   cursor: str | None) -> Page:
    """Jobs newest first (``sql`` takes ``args``, ``limit``, ``updated_at``, ``id``)."""
    after = parse_cursor(cursor, tuple[datetime, str]) or (None, None)
    return await rows_page(d, sql, args, limit, after, lambda row: job_item(d, row),
                           lambda row: (row["updated_at"], row["id"]))


def encode_run(row: Any) -> bytes:
    return _encode(views.run_from_row(row))


def encode_event(row: Any) -> bytes:
    return _encode(views.event_from_row(row))


def encode_value(row: Any) -> bytes:
    """A ``"key": value`` member of an object page."""
    return _encode(row["key"]) + b":" + _encode(row["value"])


def encode_line(seq: int, data: bytes) -> bytes:
    return _encode({"seq": seq, "data": data.decode(errors="replace")})


def encode_missing(key: str) -> bytes:
    return _encode(key) + b":null"
