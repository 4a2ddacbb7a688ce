"""Upload-time dataset validation: row rules, line numbers, and streaming."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openweights.datasets import (
    DatasetInvalid,
    DatasetValidator,
    is_valid_dataset,
    validate_dataset,
)


def jsonl(*rows: Any) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


def msg(role: str = "user", content: Any = "hi") -> dict[str, Any]:
    return {"role": role, "content": content}


def conversation(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"messages": list(messages) or [msg(), msg("assistant", "hello")]}


def preference_row(**overrides: Any) -> dict[str, Any]:
    row = {"prompt": [msg()], "chosen": [msg("assistant", "yes")], "rejected": [msg("assistant")]}
    return row | overrides


def invalid(data: bytes, purpose: str = "conversations") -> DatasetInvalid:
    with pytest.raises(DatasetInvalid) as caught:
        validate_dataset(data, purpose)
    return caught.value


# -- conversations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "row",
    [
        conversation(),
        conversation(msg("system", "be nice"), msg("user"), msg("assistant", "ok")),
        conversation(msg("assistant", [{"text": "a", "weight": 0}, {"text": "b", "weight": 1.5}])),
        conversation(msg("user", [{"text": "a", "tag": "x", "type": "text", "extra": [1]}])),
        conversation(msg("user", [])),
        {"messages": [msg()], "extra_key": 1},
        {"text": "plain pretraining text"},
        {"text": ""},
    ],
)
def test_valid_conversation_rows(row: dict[str, Any]) -> None:
    validate_dataset(jsonl(row), "conversations")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"messages": [msg()], "text": "x"}, "row has both 'messages' and 'text'; keep only one"),
        ({"messages": []}, "'messages' is an empty list"),
        ({"messages": "hi"}, "'messages' is a string, not a list of messages"),
        ({"messages": None}, "'messages' is null, not a list of messages"),
        ({"text": 3}, "'text' is a number, not a string"),
        ({"prompt": "x"}, "row needs 'messages' or 'text'"),
        ({}, "row needs 'messages' or 'text'"),
        (
            conversation(msg("bot")),
            "role 'bot' is not one of system, user, assistant (in messages[0])",
        ),
        (
            conversation(msg(), {"content": "x"}),
            "message has no 'role' (one of system, user, assistant) (in messages[1])",
        ),
        (conversation({"role": "user"}), "message has no 'content' (in messages[0])"),
        (conversation(msg(content=None)), "'content' is null, not a string or a list of parts"),
        (conversation(msg(content={"text": "x"})), "'content' is an object, not a string"),
        (conversation("hi"), "message is a string, not an object (in messages[0])"),
        (conversation(msg(content=["x"])), "content part is a string, not an object"),
        (conversation(msg(content=[{"type": "text"}])), "content part needs a string 'text'"),
        (conversation(msg(content=[{"text": 1}])), "content part needs a string 'text'"),
        (
            conversation(msg(content=[{"text": "a"}, {"text": "b", "weight": "1"}])),
            "content part 'weight' is a string, not a number (in content[1]) (in messages[0])",
        ),
        (conversation(msg(content=[{"text": "a", "weight": True}])), "'weight' is a boolean"),
        (conversation(msg(content=[{"text": "a", "weight": None}])), "'weight' is null"),
    ],
)
def test_invalid_conversation_rows_name_line_and_reason(row: Any, reason: str) -> None:
    error = invalid(jsonl(conversation(), row))
    assert error.line == 2
    assert reason in error.reason
    assert str(error).startswith(f"line 2: {error.reason}")


def test_error_message_names_line_and_reason() -> None:
    error = invalid(jsonl(conversation(), conversation(), conversation(msg("bot"))))
    assert str(error).startswith("line 3: role 'bot' is not one of system, user, assistant")
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"[1, 2]", "row is a list, not an object"),
        (b'"text"', "row is a string, not an object"),
        (b"null", "row is null, not an object"),
        (b"{not json}", "is not valid JSON"),
        (b'{"text": "a"} {"text": "b"}', "is not valid JSON"),
        (b'{"text": "caf\xc3"}', "is not valid UTF-8"),
        (b"\xff\xfe{}", "is not valid UTF-8"),
        (b'\xef\xbb\xbf{"text": "a"}', "byte-order mark"),
    ],
)
def test_undecodable_lines_are_named(line: bytes, reason: str) -> None:
    error = invalid(jsonl({"text": "ok"}) + line + b"\n")
    assert error.line == 2
    assert reason in error.reason


# -- blank lines, empty files, line endings ----------------------------------------------


def test_trailing_blank_lines_are_fine() -> None:
    validate_dataset(jsonl(conversation()) + b"\n\n  \r\n\t\n", "conversations")


def test_missing_final_newline_is_fine() -> None:
    validate_dataset(jsonl(conversation()).rstrip(b"\n"), "conversations")


def test_crlf_line_endings_are_fine() -> None:
    validate_dataset(jsonl(conversation(), conversation()).replace(b"\n", b"\r\n"), "conversations")


def test_blank_line_before_more_rows_names_the_first_blank_line() -> None:
    data = jsonl(conversation()) + b"\n   \n" + jsonl(conversation())
    error = invalid(data)
    assert (error.line, error.reason) == (2, "blank line before more rows; remove it")


def test_leading_blank_line_is_an_error() -> None:
    assert invalid(b"\n" + jsonl(conversation())).line == 1


@pytest.mark.parametrize("data", [b"", b"\n", b"\n \n\r\n"])
@pytest.mark.parametrize("purpose", ["conversations", "preference", "preferences"])
def test_file_without_rows_is_invalid(data: bytes, purpose: str) -> None:
    error = invalid(data, purpose)
    assert error.line is None
    assert "no rows" in str(error)


def test_later_line_errors_count_all_lines() -> None:
    rows = [conversation() for _ in range(9)] + [{"text": None}]
    assert invalid(jsonl(*rows)).line == 10


# -- preference / preferences --------------------------------------------------------------


@pytest.mark.parametrize("purpose", ["preference", "preferences"])
def test_valid_preference_rows(purpose: str) -> None:
    rows = [
        preference_row(),
        preference_row(prompt=[msg("system", "s"), msg()]),
        preference_row(prompt=[]),
        preference_row(chosen=[msg("assistant", [{"text": "a", "weight": 1}])]),
    ]
    validate_dataset(jsonl(*rows), purpose)


@pytest.mark.parametrize("purpose", ["preference", "preferences"])
@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"chosen": [msg()], "rejected": [msg()]}, "row needs 'prompt' (a list of messages)"),
        ({"prompt": [msg()], "rejected": [msg()]}, "row needs 'chosen'"),
        ({"prompt": [msg()], "chosen": [msg()]}, "row needs 'rejected'"),
        (preference_row(prompt="hi"), "'prompt' is a string, not a list of messages"),
        (preference_row(chosen=[]), "'chosen' is an empty list"),
        (preference_row(rejected=[]), "'rejected' is an empty list"),
        (preference_row(rejected=[msg("bot")]), "role 'bot' is not one of"),
        (preference_row(chosen=[msg(content=[{"weight": 1}])]), "needs a string 'text'"),
        (conversation(), "row needs 'prompt'"),
    ],
)
def test_invalid_preference_rows(purpose: str, row: dict[str, Any], reason: str) -> None:
    error = invalid(jsonl(preference_row(), row), purpose)
    assert error.line == 2
    assert reason in error.reason


def test_conversation_rows_are_not_preference_rows_and_vice_versa() -> None:
    assert not is_valid_dataset(jsonl(conversation()), "preference")
    assert not is_valid_dataset(jsonl(preference_row()), "conversations")


# -- unvalidated purposes -------------------------------------------------------------------


@pytest.mark.parametrize("purpose", ["custom_job_file", "log", "logs", "result", "Conversations"])
@pytest.mark.parametrize("data", [b"", b"\xff\x00 not json\n\n{}", jsonl({"messages": []})])
def test_other_purposes_accept_any_bytes(purpose: str, data: bytes) -> None:
    validate_dataset(data, purpose)
    validate_dataset([data[:3], data[3:]], purpose)
    assert is_valid_dataset(data, purpose)


def test_unvalidated_purpose_buffers_nothing() -> None:
    validator = DatasetValidator("custom_job_file")
    validator.feed(b"x" * 1_000_000)
    assert len(validator._pending) == 0
    validator.finish()


# -- streaming -----------------------------------------------------------------------------


def test_streams_chunks_that_split_lines_and_characters() -> None:
    data = jsonl(conversation(msg(content="héllo — 日本語 🙂")), {"text": "🙂" * 10})
    validate_dataset((data[i : i + 1] for i in range(len(data))), "conversations")


def test_accepts_lines_from_a_binary_file_iterator() -> None:
    data = jsonl(conversation(), {"text": "x"})
    validate_dataset(iter(data.splitlines(keepends=True)), "conversations")


def test_feed_raises_as_soon_as_a_bad_line_is_complete() -> None:
    validator = DatasetValidator("conversations")
    validator.feed(b'{"text": "a"}\n{"text"')
    with pytest.raises(DatasetInvalid) as caught:
        validator.feed(b": 1}\n")
    assert caught.value.line == 2
    with pytest.raises(DatasetInvalid) as again:
        validator.feed(jsonl({"text": "fine"}))
    assert again.value is caught.value
    with pytest.raises(DatasetInvalid):
        validator.finish()


def test_finish_checks_the_unterminated_last_line() -> None:
    validator = DatasetValidator("conversations")
    validator.feed(b'{"text": "a"}\n{"text": 1}')
    with pytest.raises(DatasetInvalid) as caught:
        validator.finish()
    assert caught.value.line == 2


def test_feed_after_finish_is_an_error() -> None:
    validator = DatasetValidator("conversations")
    validator.feed(jsonl({"text": "a"}))
    validator.finish()
    with pytest.raises(RuntimeError, match="after finish"):
        validator.feed(b"")


def test_pending_buffer_holds_at_most_the_current_line() -> None:
    validator = DatasetValidator("conversations")
    line = jsonl({"text": "x" * 100})
    for _ in range(1000):
        validator.feed(line)
    validator.feed(line[:10])
    assert bytes(validator._pending) == line[:10]


def test_bytearray_and_memoryview_input() -> None:
    data = jsonl({"text": "a"})
    validate_dataset(bytearray(data), "conversations")
    validate_dataset(memoryview(data), "conversations")
    validate_dataset([memoryview(data)[:4], memoryview(data)[4:]], "conversations")


# Rows that are mostly valid, with enough wrong roles, empty lists and non-string
# texts that both outcomes occur.
_texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
_parts = st.lists(st.fixed_dictionaries({"text": _texts}), max_size=2)
_roles = st.sampled_from(["system", "user", "assistant", "bot"])
_messages = st.lists(
    st.fixed_dictionaries({"role": _roles, "content": _texts | _parts}), max_size=3
)
_rows = st.one_of(
    st.fixed_dictionaries({"messages": _messages}),
    st.fixed_dictionaries({"text": _texts | st.integers()}),
)
_valid_rows = st.one_of(
    st.builds(lambda text: {"messages": [msg(content=text)]}, _texts),
    st.builds(lambda text: {"text": text}, _texts),
)
_files = st.builds(
    lambda rows, tail, blank_at: (
        b"".join((b"\n" if i == blank_at else b"") + jsonl(row) for i, row in enumerate(rows))
        + tail
    ),
    st.lists(_rows, max_size=5),
    st.sampled_from([b"", b"\n", b"\n\n", b"\xc3", b"{"]),
    st.integers(min_value=0, max_value=8),
)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _outcome(chunks: Any) -> tuple[int | None, str] | None:
    try:
        validate_dataset(chunks, "conversations")
    except DatasetInvalid as error:
        return (error.line, error.reason)
    return None


@settings(max_examples=300, deadline=None)
@given(data=_files, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_chunking_never_changes_the_outcome(data: bytes, cuts: list[int]) -> None:
    chunks = _split(data, cuts)
    assert b"".join(chunks) == data
    assert _outcome(iter(chunks)) == _outcome(data)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(_valid_rows, min_size=1, max_size=6), cuts=st.lists(st.integers(), max_size=12)
)
def test_valid_file_is_valid_in_any_chunking(rows: list[Any], cuts: list[int]) -> None:
    assert _outcome(iter(_split(jsonl(*rows), cuts))) is None
