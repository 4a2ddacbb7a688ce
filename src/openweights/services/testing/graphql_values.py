"""Just enough GraphQL to read the queries the ``runpod`` SDK sends: the operation and the
``input: {...}`` object of its first field (strings with their escapes, numbers,
booleans, null, enums, lists, objects). For the RunPod stand-in only."""

from __future__ import annotations

import json
import re
from typing import Any

_SPACE = re.compile(r"[\s,]*")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')


class GraphQLSyntaxError(ValueError):
    pass


class _Reader:
    def __init__(self, text: str, pos: int) -> None:
        self.text, self.pos = text, pos

    def skip(self) -> None:
        self.pos = _SPACE.match(self.text, self.pos).end()  # type: ignore[union-attr]

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos:self.pos + 1]

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise GraphQLSyntaxError(f"expected {char!r} at {self.pos}: "
                                     f"{self.text[self.pos:self.pos + 40]!r}")
        self.pos += 1

    def name(self) -> str:
        self.skip()
        m = _NAME.match(self.text, self.pos)
        if m is None:
            raise GraphQLSyntaxError(f"expected a name at {self.pos}")
        self.pos = m.end()
        return m.group()

    def value(self) -> Any:
        c = self.peek()
        if c == '"':
            m = _STRING.match(self.text, self.pos)
            if m is None:
                raise GraphQLSyntaxError(f"unterminated string at {self.pos}")
            self.pos = m.end()
            return json.loads(m.group())
        if c == "[":
            self.pos += 1
            items = []
            while self.peek() != "]":
                items.append(self.value())
            self.pos += 1
            return items
        if c == "{":
            return self.object()
        m = _NUMBER.match(self.text, self.pos)
        if m is not None:
            self.pos = m.end()
            return float(m.group()) if "." in m.group() or "e" in m.group().lower() \
                else int(m.group())
        word = self.name()
        return {"true": True, "false": False, "null": None}.get(word, word)

    def object(self) -> dict[str, Any]:
        self.expect("{")
        out: dict[str, Any] = {}
        while self.peek() != "}":
            key = self.name()
            self.expect(":")
            out[key] = self.value()
        self.pos += 1
        return out


def operation(query: str) -> tuple[str, dict[str, Any]]:
    """(first field of the operation, its ``input`` argument or {})."""
    body = query.index("{") + 1
    r = _Reader(query, body)
    field = r.name()
    args: dict[str, Any] = {}
    if r.peek() == "(":
        r.pos += 1
        while r.peek() != ")":
            key = r.name()
            r.expect(":")
            args[key] = r.value()
        r.pos += 1
    if field == "myself":  # myself { pods { ... } }
        r.expect("{")
        field = f"myself.{r.name()}"
    inp = args.get("input", {})
    return field, inp if isinstance(inp, dict) else {}
