"""Dataset validation at upload time.

A pure, streaming validator: the caller feeds it the upload's bytes in chunks of any
size (chunks may split lines and even UTF-8 characters) and it keeps only the current
unfinished line, so a large file is never held whole in memory.

Purposes ``conversations``, ``preference`` and ``preferences`` are JSONL files whose
rows are checked; every other purpose is accepted as opaque bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from openweights.errors import InvalidRequest

__all__ = [
    "VALIDATED_PURPOSES",
    "DatasetInvalid",
    "DatasetValidator",
    "is_valid_dataset",
    "validate_dataset",
]

ROLES = ("system", "user", "assistant")
_BOM = b"\xef\xbb\xbf"


class DatasetInvalid(InvalidRequest):
    """The uploaded dataset breaks the format its purpose requires.

    ``line`` is the 1-based line at fault (``None`` when the file as a whole is at
    fault, e.g. it has no rows) and ``reason`` says what is wrong with it. Fix that
    line in the file and upload it again; only the first problem is reported.
    """

    def __init__(self, reason: str, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(reason if line is None else f"line {line}: {reason}")


# What feed() accepts: anything msgspec and bytearray.__iadd__ take.
Chunk = bytes | bytearray | memoryview

# A row check returns the reason the row is invalid, or None when it is valid.
RowCheck = Callable[[dict[str, Any]], str | None]


_KINDS = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}


def _kind(value: Any) -> str:
    """Name a decoded JSON value's kind the way the user wrote it, for messages."""
    if value is None:
        return "null"
    return _KINDS.get(type(value), "a number")


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but `"weight": true` is a mistake, not a weight.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_part(part: Any) -> str | None:
    if not isinstance(part, dict):
        return f"content part is {_kind(part)}, not an object"
    if not isinstance(part.get("text"), str):
        return "content part needs a string 'text'"
    if "weight" in part and not _is_number(part["weight"]):
        return f"content part 'weight' is {_kind(part['weight'])}, not a number"
    return None


def _check_message(message: Any) -> str | None:
    if not isinstance(message, dict):
        return f"message is {_kind(message)}, not an object"
    if "role" not in message:
        return f"message has no 'role' (one of {', '.join(ROLES)})"
    if message["role"] not in ROLES:
        return f"role {message['role']!r} is not one of {', '.join(ROLES)}"
    if "content" not in message:
        return "message has no 'content'"
    content = message["content"]
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return f"'content' is {_kind(content)}, not a string or a list of parts"
    for index, part in enumerate(content):
        if (reason := _check_part(part)) is not None:
            return f"{reason} (in content[{index}])"
    return None


def _check_messages(row: dict[str, Any], key: str, *, allow_empty: bool) -> str | None:
    if key not in row:
        return f"row needs '{key}' (a list of messages)"
    messages = row[key]
    if not isinstance(messages, list):
        return f"'{key}' is {_kind(messages)}, not a list of messages"
    if not messages and not allow_empty:
        return f"'{key}' is an empty list"
    for index, message in enumerate(messages):
        if (reason := _check_message(message)) is not None:
            return f"{reason} (in {key}[{index}])"
    return None


def _check_conversation(row: dict[str, Any]) -> str | None:
    if "messages" in row:
        if "text" in row:
            return "row has both 'messages' and 'text'; keep only one"
        return _check_messages(row, "messages", allow_empty=False)
    if "text" in row:
        if not isinstance(row["text"], str):
            return f"'text' is {_kind(row['text'])}, not a string"
        return None
    return "row needs 'messages' or 'text'"


def _check_preference(row: dict[str, Any]) -> str | None:
    # An empty prompt can be meaningful (the whole exchange is in chosen/rejected);
    # an empty answer cannot be preferred or rejected.
    for key, allow_empty in (("prompt", True), ("chosen", False), ("rejected", False)):
        if (reason := _check_messages(row, key, allow_empty=allow_empty)) is not None:
            return reason
    return None


# `preferences` is what the cookbook uploads; it holds the same rows as `preference`.
_ROW_CHECKS: dict[str, RowCheck] = {
    "conversations": _check_conversation,
    "preference": _check_preference,
    "preferences": _check_preference,
}
VALIDATED_PURPOSES = frozenset(_ROW_CHECKS)


def _decode_failure(line: bytearray, error: Exception) -> str:
    """Explain why a line is not JSON; only runs on the error path, so may be slow."""
    if line.startswith(_BOM):
        return "starts with a UTF-8 byte-order mark; save the file as UTF-8 without BOM"
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return "is not valid UTF-8"
    return f"is not valid JSON ({error})"


class DatasetValidator:
    """Validates a dataset fed in chunks; raises DatasetInvalid on the first bad line.

    Call ``feed`` for each chunk (raises as soon as a complete bad line is seen, so an
    upload can be abandoned early) and ``finish`` once at the end (checks the last,
    unterminated line and that the file has rows). After an error every further call
    raises the same error.
    """

    def __init__(self, purpose: str) -> None:
        self.purpose = purpose
        self._check = _ROW_CHECKS.get(purpose)
        self._pending = bytearray()  # the current, not yet terminated line
        self._line_no = 0
        self._rows = 0
        self._first_blank: int | None = None  # start of the run of blank lines just seen
        self._error: DatasetInvalid | None = None
        self._finished = False

    def feed(self, chunk: Chunk) -> None:
        self._ensure_open("feed")
        if self._check is None:
            return  # unvalidated purpose: nothing is buffered
        # Only the new bytes can hold a newline: the pending line had none.
        scan_from = len(self._pending)
        self._pending += chunk
        start = 0
        while (end := self._pending.find(b"\n", scan_from)) != -1:
            self._take_line(self._pending[start:end])
            start = scan_from = end + 1
        del self._pending[:start]

    def finish(self) -> None:
        self._ensure_open("finish")
        self._finished = True
        if self._check is None:
            return
        if self._pending:
            self._take_line(self._pending)
            self._pending.clear()
        if self._rows == 0:
            reason = f"file has no rows; a {self.purpose} file needs at least one"
            self._fail(DatasetInvalid(reason))

    def _ensure_open(self, call: str) -> None:
        if self._error is not None:
            raise self._error
        if self._finished:
            raise RuntimeError(f"DatasetValidator.{call}() called after finish()")

    def _fail(self, error: DatasetInvalid) -> None:
        self._error = error
        raise error

    def _take_line(self, line: bytearray) -> None:
        self._line_no += 1
        if not line or line.isspace():
            # Blank lines are only an error once a row follows them (trailing is fine).
            if self._first_blank is None:
                self._first_blank = self._line_no
            return
        if self._first_blank is not None:
            self._fail(DatasetInvalid("blank line before more rows; remove it", self._first_blank))
        if (reason := self._row_failure(line)) is not None:
            self._fail(DatasetInvalid(reason, self._line_no))
        self._rows += 1

    def _row_failure(self, line: bytearray) -> str | None:
        assert self._check is not None
        try:
            row = msgspec.json.decode(line)
        except (msgspec.DecodeError, UnicodeDecodeError) as error:
            return _decode_failure(line, error)
        if not isinstance(row, dict):
            return f"row is {_kind(row)}, not an object"
        return self._check(row)


def validate_dataset(data: Chunk | Iterable[Chunk], purpose: str) -> None:
    """Validate a whole dataset, given as bytes or as an iterable of byte chunks.

    Chunks are concatenated as they come, so an iterable of lines must keep each
    line's ``\\n`` (as iterating a binary file does).

    Raises:
        DatasetInvalid: naming the first bad line and what is wrong with it.
    """
    validator = DatasetValidator(purpose)
    chunks: Iterable[Chunk] = [data] if isinstance(data, Chunk) else data
    for chunk in chunks:
        validator.feed(chunk)
    validator.finish()


def is_valid_dataset(data: Chunk | Iterable[Chunk], purpose: str) -> bool:
    """True when ``validate_dataset`` would not raise."""
    try:
        validate_dataset(data, purpose)
    except DatasetInvalid:
        return False
    return True
