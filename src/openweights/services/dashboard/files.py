"""Result files: downloaded as they are, or read as a table.

JSON and JSONL results (logprobs, sampling callbacks, evaluation outputs) are shown as
tables: one row per line (or per item of a top-level list), one column per top-level
key, nested values as compact JSON. Only the first ``VIEW_BYTES`` are read for a view,
and it says so when it cuts; the download link has the whole file.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from openweights.services.dashboard.web import closing, web

VIEW_BYTES = 4 << 20
VIEW_ROWS = 2000
CELL_CHARS = 300


async def download(request: Request) -> Response:
    aow = await web(request).signed_in(request)
    file_id = request.path_params["file_id"]
    info = await aow.files.get_by_id(file_id)  # NotFound (another org's file too) first
    name = request.query_params.get("name") or info.get("filename") or file_id
    name = name.rsplit("/", 1)[-1]

    async def body() -> AsyncIterator[bytes]:
        async with closing(aow.files.chunks(file_id)) as chunks:
            async for chunk in chunks:
                yield chunk

    return StreamingResponse(body(), media_type="application/octet-stream", headers={
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
        "Content-Length": str(info["bytes"]), "X-Content-Type-Options": "nosniff"})


async def _head(aow: Any, file_id: str) -> tuple[bytes, bool]:
    data, cut = b"", False
    async with closing(aow.files.chunks(file_id)) as chunks:
        async for chunk in chunks:
            data += chunk
            if len(data) >= VIEW_BYTES:
                data, cut = data[:VIEW_BYTES], True
                break
    return data, cut


def records(text: str, cut: bool) -> list[Any]:
    """The records of a JSON or JSONL text: a list's items, an object's one record, or
    one per non-empty line (a last line cut short by ``cut`` is left out)."""
    stripped = text.strip()
    if stripped[:1] in "[{" and not cut:
        try:
            value = json.loads(stripped)
            return value if isinstance(value, list) else [value]
        except json.JSONDecodeError:
            pass  # JSONL: one value per line
    lines = [line for line in stripped.splitlines() if line.strip()]
    if cut and lines:
        lines = lines[:-1]
    out = []
    for n, line in enumerate(lines, 1):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {n} is not JSON ({exc.msg})") from None
    return out


def table(rows: list[Any]) -> tuple[list[str], list[list[str]]]:
    columns: list[str] = []
    for r in rows:
        for k in (r if isinstance(r, dict) else {"value": r}):
            if k not in columns:
                columns.append(k)
    cells = []
    for r in rows:
        d = r if isinstance(r, dict) else {"value": r}
        cells.append([_cell(d.get(c)) for c in columns])
    return columns, cells


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= CELL_CHARS else f"{text[:CELL_CHARS]}… ({len(text)} chars)"


async def view(request: Request) -> Response:
    w = web(request)
    aow = await w.signed_in(request)
    file_id = request.path_params["file_id"]
    info = await aow.files.get_by_id(file_id)
    name = request.query_params.get("name") or info.get("filename") or file_id
    data, cut = await _head(aow, file_id)
    text = data.decode(errors="replace")
    problem: str | None = None
    columns: list[str] = []
    cells: list[list[str]] = []
    try:
        rows = records(text, cut)
        columns, cells = table(rows[:VIEW_ROWS])
        more = len(rows) - len(cells)
    except ValueError as exc:
        problem, more = f"Not shown as a table: {exc}.", 0
    return w.page(request, "file.html", aow=aow, file=info, name=name, columns=columns,
                  cells=cells, more=more, cut=cut, problem=problem,
                  text=text[:200_000] if problem else "")
