"""A job's output: cut into lines, appended to its log file, handed on line by line."""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["MAX_LINE_BYTES", "LazyLog", "LineSplitter", "OnLine", "OutputPump", "call_back"]

MAX_LINE_BYTES = 64 * 1024
# Output still in the pipe once the group is gone is read for at most this long: a
# process that left the group (setsid) could hold the pipe open forever.
_DRAIN_S = 2.0
_DRAIN_MAX_S = 60.0  # even if such a process keeps writing

OnLine = Callable[[bytes], Awaitable[None] | None]


class LineSplitter:
    r"""Cuts a byte stream into lines, without their terminators.

    A line ends at ``\n``, ``\r\n`` or a lone ``\r`` (progress bars redraw with ``\r``;
    splitting there streams them live). A line longer than ``max_bytes`` is cut into
    pieces, so an endless line neither stalls the stream nor grows the buffer.
    """

    _EOL = re.compile(rb"[\r\n]")

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        self._max = max_bytes
        self._buf = bytearray()
        self._after_cr = False  # the last chunk ended in \r: a leading \n belongs to it

    def feed(self, data: bytes) -> list[bytes]:
        if not data:
            return []
        if self._after_cr and data[:1] == b"\n":
            data = data[1:]
        self._after_cr = False
        self._buf += data
        lines: list[bytes] = []
        pos = 0
        while True:
            match = self._EOL.search(self._buf, pos, pos + self._max + 1)
            if match:
                lines.append(bytes(self._buf[pos : match.start()]))
                pos = self._skip_lf_after_cr(match.end())
            elif len(self._buf) - pos >= self._max:
                lines.append(bytes(self._buf[pos : pos + self._max]))
                pos += self._max
            else:
                break
        del self._buf[:pos]
        return lines

    def flush(self) -> list[bytes]:
        """The unterminated rest, at the end of the stream."""
        rest, self._buf = bytes(self._buf), bytearray()
        return [rest] if rest else []

    def _skip_lf_after_cr(self, end: int) -> int:
        if self._buf[end - 1] != 0x0D:
            return end
        if end == len(self._buf):
            self._after_cr = True
            return end
        return end + (self._buf[end] == 0x0A)


class LazyLog:
    """``path`` opened for appending on the first write: a job that prints nothing
    leaves no file (and costs no file creation)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: BinaryIO | None = None

    def __enter__(self) -> LazyLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()

    def write(self, data: bytes) -> None:
        if self._file is None:
            self._file = self._path.open("ab")
        self._file.write(data)
        self._file.flush()


class OutputPump:
    """Reads the pipe to its end, feeding the log and ``on_line``.

    Once the group is gone the pipe normally ends at once; only a process that escaped
    the group (setsid) can hold it open, so from then on a read idle for ``_DRAIN_S``
    ends the pump (and the whole drain lasts at most ``_DRAIN_MAX_S``). A slow
    ``on_line`` is never cut short by that: only reads time out.
    """

    def __init__(self, stream: asyncio.StreamReader, log: LazyLog, on_line: OnLine) -> None:
        self._stream, self._log, self._on_line = stream, log, on_line
        self._reading_since: float | None = None  # loop time a pending read began

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        splitter = LineSplitter()
        while True:
            self._reading_since = loop.time()
            chunk = await self._stream.read(2**16)
            self._reading_since = None
            if not chunk:
                break
            await self._emit(splitter.feed(chunk))
        await self._emit(splitter.flush())

    async def drain(self, reader: asyncio.Future[None]) -> None:
        """Until ``reader`` (running :meth:`run`) ends, or a read stays idle too long."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + _DRAIN_MAX_S
        while not reader.done():
            since = self._reading_since
            idle_end = (since if since is not None else loop.time()) + _DRAIN_S
            now = loop.time()
            if now >= give_up or (since is not None and now >= idle_end):
                return  # the caller cancels the reader
            await asyncio.wait([reader], timeout=min(idle_end, give_up) - now)

    async def _emit(self, lines: list[bytes]) -> None:
        if not lines:
            return
        # A local file: one blocking write+flush per read is cheaper than a thread hop.
        self._log.write(b"".join(line + b"\n" for line in lines))
        for line in lines:
            await call_back(self._on_line, line)


async def call_back(callback: Callable[..., object], arg: object) -> None:
    """``callback(arg)``, awaited if it returns an awaitable."""
    result = callback(arg)
    if inspect.isawaitable(result):
        await result
