"""Bad input gets a clear, typed error, changes nothing, and the service keeps answering.

"Changes nothing" is checked where it matters: the event stream's last sequence is the
same before and after, and nothing half-made (a file, a job) can be found afterwards.
Malformed requests go straight to the service's subjects with a raw nats-py client, for
every endpoint the protocol defines.
"""

from __future__ import annotations

import io
import json
import os
import types
import typing
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import anyio
import msgspec
import nats
import pytest
from nats.aio.client import Client
from pydantic import BaseModel

from openweights import AsyncOpenWeights, Jobs, OpenWeights, register
from openweights.api import protocol
from openweights.config import Settings
from openweights.errors import InvalidRequest, NotFound, PayloadTooLarge
from openweights.ids import FileDigest
from openweights.subjects import Subjects

MIB = 1 << 20
UNKNOWN_FILE = "conversations:file-0123456789ab"


async def _last_seq(settings: Settings) -> int:
    nc = await nats.connect(settings.nats_url)
    try:
        info = await nc.jetstream().stream_info(Subjects(settings.namespace).events_stream)
        return int(info.state.last_seq)
    finally:
        await nc.close()


@pytest.fixture
def unchanged_log(stack: Settings) -> Iterator[None]:
    """The test must leave the event stream exactly as long as it found it."""
    before = anyio.run(_last_seq, stack)
    yield
    assert anyio.run(_last_seq, stack) == before


class Params(BaseModel):
    lr: float
    epochs: int = 1
    training_file: str | None = None


@pytest.fixture
def finetune() -> type[Jobs]:
    @register("finetune")
    class Finetune(Jobs):
        params = Params
        requires_vram_gb = 0
        base_image = "img:1"

        def get_entrypoint(self, p: Params) -> str:  # type: ignore[override]
            return f"python train.py --lr {p.lr}"

    return Finetune


# -- through the SDK --------------------------------------------------------------------
def test_unknown_and_mistyped_params(ow: OpenWeights, finetune: type[Jobs],
                                     unchanged_log: None) -> None:
    with pytest.raises(InvalidRequest, match="lr"):
        ow.finetune.create(lr="fast")
    with pytest.raises(InvalidRequest, match="lr"):
        ow.finetune.create(epochs=2)  # a required param is missing
    with pytest.raises(InvalidRequest, match="lerning_rate"):
        ow.finetune.create(lr=0.1, lerning_rate=0.2)  # a typo must not pass silently
    with pytest.raises(InvalidRequest, match="requires_vram_gb"):
        ow.jobs.submit(id_prefix="x", script="s", docker_image="i",
                       requires_vram_gb="lots")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="requires_vram_gb"):
        ow.finetune.create(lr=0.1, requires_vram_gb=-1)
    with pytest.raises(InvalidRequest, match="job type"):
        ow.jobs.submit(id_prefix="x", type="nope", script="s", docker_image="i")
    with pytest.raises(InvalidRequest, match="script"):
        ow.jobs.submit(id_prefix="x", script="  ", docker_image="i")
    with pytest.raises(InvalidRequest, match="status"):
        ow.jobs.list(status="running")
    with pytest.raises(InvalidRequest, match="limit"):
        ow.jobs.list(limit=0)
    with pytest.raises(NotFound):
        ow.jobs.retrieve("finetune-0123456789ab")
    # No job can have such an id: an id that cannot be a subject token is refused as
    # such, wherever it is given (issue 13).
    for call in (ow.jobs.retrieve, ow.jobs.cancel):
        with pytest.raises(InvalidRequest, match=r"job_id 'a\.b' is not usable"):
            call("a.b")
    assert ow.jobs.list() == []


@pytest.mark.parametrize(("purpose", "data", "line", "reason"), [
    ("conversations", b'{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": '
     b'[{"role": "robot", "content": "x"}]}\n', 2, "role 'robot'"),
    ("conversations", b'{"text": "a"}\n{"text": "b"}\nnot json\n', 3, "not valid JSON"),
    ("conversations", b'{"text": "a"}\n\n{"text": "b"}\n', 2, "blank line"),
    ("conversations", b'{"text": "a"}\n{"prompt": "b"}\n', 2, "'messages' or 'text'"),
    ("conversations", b'{"messages": [{"role": "user", "content": [{"txt": "a"}]}]}\n', 1,
     "'text'"),
    ("preference", b'{"prompt": [], "chosen": [{"role": "assistant", "content": "a"}]}\n', 1,
     "'rejected'"),
])
def test_invalid_dataset_is_refused_and_not_stored(ow: OpenWeights, stack: Settings,
                                                   unchanged_log: None, purpose: str,
                                                   data: bytes, line: int,
                                                   reason: str) -> None:
    # Over the wire it is an InvalidRequest (code "invalid") naming the line and reason.
    with pytest.raises(InvalidRequest) as caught:
        ow.files.create(io.BytesIO(data), purpose=purpose)
    assert caught.value.code == "invalid"
    assert f"line {line}" in str(caught.value) and reason in str(caught.value)
    digest = FileDigest(stack.default_org)
    digest.update(data)
    with pytest.raises(NotFound):
        ow.files.get_by_id(digest.file_id(purpose))  # nothing was stored
    assert not any((stack.home / "api" / "uploads").iterdir())  # nor left spooled
    assert ow.files.validate(io.BytesIO(data), purpose) is False


def test_empty_dataset_and_bad_purpose(ow: OpenWeights, unchanged_log: None) -> None:
    with pytest.raises(InvalidRequest, match="no rows"):
        ow.files.create(io.BytesIO(b"\n\n"), purpose="conversations")
    with pytest.raises(InvalidRequest, match="purpose"):
        ow.files.create(io.BytesIO(b"x"), purpose="Not A Purpose!")


def test_unknown_file_ids_and_hardware(ow: OpenWeights, finetune: type[Jobs],
                                       unchanged_log: None) -> None:
    with pytest.raises(InvalidRequest, match=UNKNOWN_FILE):
        ow.finetune.create(lr=0.1, training_file=UNKNOWN_FILE)
    with pytest.raises(InvalidRequest, match=UNKNOWN_FILE):  # nested anywhere in params
        ow.jobs.submit(id_prefix="x", script="s", docker_image="i",
                       params={"data": {"files": ["a", UNKNOWN_FILE]}})
    for hardware in (["1x NOPE"], ["H100S"], ["2x"], ["1x H100S", "3x B300X"]):
        with pytest.raises(InvalidRequest):
            ow.finetune.create(lr=0.1, allowed_hardware=hardware)
    with pytest.raises(NotFound):
        ow.files.content(UNKNOWN_FILE)
    with pytest.raises(NotFound):
        ow.runs.retrieve("run-unknown")
    with pytest.raises(NotFound):
        ow.call(ow.transport.call("run.log", run_id="run-unknown", events=[{"a": 1}]))


def test_oversized_payloads(ow: OpenWeights, finetune: type[Jobs], stack: Settings,
                            unchanged_log: None) -> None:
    big = "x" * (MIB + 1)
    with pytest.raises(PayloadTooLarge, match="upload large data as a file"):
        ow.finetune.create(lr=0.1, training_file=big)
    with pytest.raises(PayloadTooLarge):
        ow.jobs.find(blob=big)
    assert ow.jobs.list() == []  # and it still answers


# -- raw requests on the service's subjects ---------------------------------------------
def _sample(tp: Any) -> Any:
    """A valid value of the annotation ``tp`` (for the required fields of a request)."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return typing.get_args(tp)[0]
    if origin in (typing.Union, types.UnionType):
        return _sample(next(a for a in typing.get_args(tp) if a is not type(None)))
    if origin is list or tp is list:
        return []
    if origin is dict or tp is dict:
        return {}
    return {str: "x", int: 1, float: 1.0, bool: False,
            datetime: datetime.now(UTC).isoformat()}[tp]


def _valid_body(endpoint: str) -> dict[str, Any]:
    cls = protocol.ENDPOINTS[endpoint]
    hints = typing.get_type_hints(cls)
    return {f.encode_name: _sample(hints[f.name])
            for f in msgspec.structs.fields(cls) if f.required}


def _malformed(endpoint: str) -> list[tuple[str, bytes]]:
    valid = _valid_body(endpoint)
    return [
        ("random bytes", b"\xff" + os.urandom(63)),
        ("empty", b""),
        ("a JSON array", b"[1, 2, 3]"),
        ("a JSON string", b'"jobs"'),
        ("JSON null", b"null"),
        ("an unknown field", json.dumps({**valid, "surprise": 1}).encode()),
        ("a field of the wrong type", json.dumps({**valid, "min_seq": "soon"}).encode()),
        ("another protocol version", json.dumps({**valid, "v": 99}).encode()),
        ("over 1 MiB", json.dumps({**valid, "request_id": "x" * (MIB + 1)}).encode()),
    ]


@pytest.fixture
async def raw(stack: Settings) -> AsyncIterator[tuple[Client, dict[str, str]]]:
    """A raw connection and the subject of every endpoint, as the service announces them
    (``$SRV.INFO``, nats.micro): pinned endpoints carry the instance in their subject."""
    nc = await nats.connect(stack.nats_url)
    info = json.loads((await nc.request("$SRV.INFO.openweights-api", b"", timeout=5)).data)
    # The wildcards are the organization, then the caller (as the SDK names itself).
    caller = AsyncOpenWeights(settings=stack).transport
    subjects = {e["name"].replace("-", "."): _concrete(e["subject"], [caller.org,
                                                                      caller.principal])
                for e in info["endpoints"]}
    yield nc, subjects
    await nc.close()


def _concrete(subject: str, fill: list[str]) -> str:
    values = iter(fill)
    return ".".join(next(values) if token == "*" else token for token in subject.split("."))


@pytest.mark.anyio
async def test_malformed_requests_get_typed_errors(raw: tuple[Client, dict[str, str]],
                                                   stack: Settings) -> None:
    nc, subjects = raw
    assert set(protocol.ENDPOINTS) | {protocol.UPLOAD_CHUNK} <= set(subjects)
    assert not any("*" in s or ">" in s for s in subjects.values())
    before = await _last_seq(stack)
    codes: dict[str, set[str]] = {}
    for endpoint in protocol.ENDPOINTS:
        for what, payload in _malformed(endpoint):
            msg = await nc.request(subjects[endpoint], payload, timeout=5)
            reply = protocol.reply_decoder.decode(msg.data)
            assert reply.error is not None, (endpoint, what, msg.data[:200])
            assert reply.ok is None and reply.error.message, (endpoint, what)
            codes.setdefault(what, set()).add(reply.error.code)
            if what == "another protocol version":
                assert "protocol version 99" in reply.error.message
            if what == "over 1 MiB":
                assert reply.error.code == "too_large"
            if what in ("an unknown field", "a field of the wrong type"):
                assert endpoint in reply.error.message
    assert codes["random bytes"] == {"invalid"}
    assert codes["another protocol version"] == {"invalid"}
    # A chunk of an upload nobody began, with and without its headers.
    for headers in (None, {protocol.HEADER_UPLOAD: "nope", protocol.HEADER_OFFSET: "0"}):
        msg = await nc.request(subjects[protocol.UPLOAD_CHUNK], os.urandom(64), timeout=5,
                               headers=headers)
        assert protocol.reply_decoder.decode(msg.data).error.code == "not_found"
    # Requests nobody can answer (no reply subject) must not take the service down.
    for endpoint in protocol.ENDPOINTS:
        await nc.publish(subjects[endpoint], b"\xffgarbage")
    await nc.publish(subjects["jobs.list"], b"{}")  # valid, but no one to tell
    await nc.flush()

    assert await _last_seq(stack) == before
    ok = await nc.request(subjects["jobs.list"], b"{}", timeout=5)  # still answering
    assert protocol.reply_decoder.decode(ok.data).ok == []
    async with AsyncOpenWeights(settings=stack, retry_for_s=5) as aow:
        assert await aow.jobs.list() == []

