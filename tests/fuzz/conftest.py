"""Fuzzing the services: what a case is, how cases are drawn, and what every case keeps.

Shared by ``test_fuzz_services.py`` (a few hundred cases in CI) and ``bench/fuzz.py``
(10,000; it loads this file by path). Cases go over a raw NATS connection to the real
projector, api service and an agent, and each one is checked (:class:`Fuzzer`):

- the services keep answering: a follow-up ``jobs.list`` that waits until the read
  models include the whole log (``min_seq=-1``) succeeds, so the projector lives too;
- a rejection is ``{"error": {"code", "message"}}`` with a code of ``errors.BY_CODE``
  and a message ("internal" is a bug that the service caught; "unavailable" is one too,
  the stack being healthy, unless the request asked to wait for a future log position);
- a rejected command and every query append nothing (the events stream's last sequence
  is unchanged), and an accepted command that appended reports its last append (``seq``);
- a case built to be valid (a new job, a valid dataset) is accepted, and appends.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import anyio
import msgspec
import nats
import nats.errors
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import strategies as st
from msgspec import inspect as mi
from nats.aio.client import Client

from openweights.api import protocol
from openweights.config import Settings
from openweights.datasets import ROLES, VALIDATED_PURPOSES, is_valid_dataset
from openweights.errors import BY_CODE
from openweights.ids import FileDigest
from openweights.secretbox import new_key
from openweights.services.agent.agent import Agent
from openweights.services.agent.gpu import HardwareInfo
from openweights.services.testing.stack import services_thread
from openweights.subjects import Subjects

# Handlers that never append, whatever they are sent.
QUERIES = frozenset({"files.upload.begin", "files.upload.abort", protocol.UPLOAD_CHUNK,
                     "files.get", "files.read", "jobs.get", "jobs.list", "jobs.find",
                     "runs.list", "runs.get", "events.list", "events.latest", "logs.read",
                     "tokens.list", "secrets.list", "secrets.show", "agent.secrets"})
UPLOAD_FLOW, WHOAMI, ASSIGNMENT = "files.upload (whole)", "whoami", "agent assignment"
ENDPOINTS = (*protocol.ENDPOINTS, protocol.UPLOAD_CHUNK)
AGENT_ID = "fuzz-agent"


# -- cases ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    """One request on an api subject."""

    endpoint: str
    payload: bytes
    kind: str  # "typed", "valid", "mutated:<how>", "raw:<how>"
    org: str | None = None  # None: the default organization
    principal: str = "anon"
    headers: dict[str, str] | None = None
    reply: bool = True  # False: published without a reply subject

    @property
    def label(self) -> str:
        return self.endpoint


@dataclass(frozen=True)
class Upload:
    """A whole upload: begin, the chunks (``sizes``), then end, with one ``misstep``."""

    purpose: str
    data: bytes
    sizes: tuple[int, ...]
    misstep: str
    kind: str
    label: str = UPLOAD_FLOW


@dataclass(frozen=True)
class Whoami:
    principal: str
    payload: bytes
    kind: str = "whoami"
    label: str = WHOAMI


@dataclass(frozen=True)
class Assign:
    """A message on the fuzz agent's assignment subject (published, as the scheduler does)."""

    payload: bytes
    kind: str
    label: str = ASSIGNMENT


Case = Call | Upload | Whoami | Assign


@dataclass(frozen=True)
class Outcome:
    label: str
    kind: str
    status: str  # "accepted", "rejected:<code>", "unanswered" (no reply asked), "error"
    detail: str = ""


# -- what accepted cases made: ids that later cases refer to ------------------------------
@dataclass
class Pool:
    ids: dict[str, list[str]] = field(default_factory=lambda: {
        k: [] for k in ("job", "run", "file", "token", "secret", "upload", "worker")})
    fresh: Iterator[int] = field(default_factory=itertools.count)
    FAKE = {"job": "custom-0123456789ab", "run": "run-0123456789abcdef",
            "file": "conversations:file-0123456789ab", "token": "tok-nope", "secret": "NOPE",
            "upload": "0123456789ab-0123456789abcdef", "worker": AGENT_ID}

    def add(self, kind: str, value: Any) -> None:
        items = self.ids[kind]
        if isinstance(value, str) and value not in items:
            items.append(value)
            del items[:-64]  # recent ids are the interesting ones

    def pick(self, kind: str, i: int) -> str:
        items = self.ids[kind]
        return items[i % len(items)] if items else self.FAKE[kind]

    def known(self, kind: str) -> st.SearchStrategy[str]:
        """A known id of ``kind``, looked up when drawn (its stand-in while none is)."""
        return st.integers(0, 1 << 20).map(lambda i: self.pick(kind, i))

    def ref(self, kind: str) -> st.SearchStrategy[str]:
        """Mostly a known id of ``kind``; else its stand-in, or junk."""
        return st.one_of(self.known(kind), self.known(kind), st.just(self.FAKE[kind]), ODD_TEXT)


# -- building blocks -------------------------------------------------------------------
ODD_TEXT = st.sampled_from(["", " ", "a.b", "*", ">", "a b", "\x00", "nul\x00in", "\n",
                            "tab\t", "x" * 201, "é", "😀", "\u202e", "..", "-", "A\n"])
TEXT = st.one_of(st.text(max_size=24), ODD_TEXT)
# What a valid request may say: any text but NUL (Postgres cannot store it), not blank.
GOOD_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"),
                    max_size=24).map(lambda t: t if t.strip() else f"{t}x")
SUBJECT_TOKEN = st.text(st.characters(min_codepoint=33, max_codepoint=126,
                                      exclude_characters=".*>"), min_size=1, max_size=12)
INT = st.one_of(st.integers(-3, 200), st.integers(-(2**63), 2**64 - 1), st.sampled_from(
    [0, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1]))
FLOAT = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.floats(-10, 1e5))
JSON = st.recursive(
    st.none() | st.booleans() | INT | FLOAT | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=10)
OFFSETS = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
DATETIME = st.one_of(
    st.integers(-(10**7), 10**8).map(lambda s: datetime.now(UTC) + timedelta(seconds=s)),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59),
                 timezones=st.none() | st.just(UTC) | OFFSETS))
MIN_SEQ = st.sampled_from([0] * 16 + [-1, 1, 3, -(2**63), 2**62])
HARDWARE = st.sampled_from(["1x H100S", "2x A100", "cpu", "8x H200", "1x NOPE", "H100S", "2x",
                            "0x A100", "1x h100s", "3x B300X"])
PURPOSES = st.sampled_from(["conversations", "preference", "preferences", "custom", "result",
                            "log", "Not A Purpose!", "a\n", "", "x" * 42])


def type_values(t: mi.Type) -> st.SearchStrategy[Any]:
    """Values of the msgspec type ``t``, edge cases included (they decode as ``t``)."""
    match t:
        case mi.StrType():
            return TEXT
        case mi.IntType():
            return INT
        case mi.FloatType():
            return FLOAT | INT.filter(lambda i: abs(i) < 2**53)
        case mi.BoolType():
            return st.booleans()
        case mi.NoneType():
            return st.none()
        case mi.DateTimeType():
            return DATETIME
        case mi.LiteralType(values=values):
            return st.sampled_from(values)
        case mi.UnionType(types=types):
            return st.one_of(*(type_values(x) for x in types))
        case mi.ListType(item_type=item):
            return st.lists(type_values(item), max_size=4)
        case mi.DictType(key_type=key, value_type=value):
            return st.dictionaries(type_values(key), type_values(value), max_size=4)
        case mi.AnyType():
            return JSON
    raise TypeError(f"no strategy for {t!r}")


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(GOOD_TEXT, inner, max_size=3)


GOOD_JSON = st.recursive(st.none() | st.booleans() | st.integers(-1000, 1000)
                         | st.floats(-1e6, 1e6) | GOOD_TEXT, _containers, max_leaves=8)
# Still valid, with numbers at the edges JSON and Postgres allow.
EDGY_JSON = st.recursive(st.none() | st.booleans() | INT | FLOAT | GOOD_TEXT, _containers,
                         max_leaves=8)
SOON = st.integers(60, 10**6).map(lambda s: datetime.now(UTC) + timedelta(seconds=s))


def good_values(t: mi.Type) -> st.SearchStrategy[Any]:
    """Values of the msgspec type ``t`` that a careful client would send."""
    match t:
        case mi.StrType():
            return GOOD_TEXT
        case mi.IntType():
            return st.integers(0, 100)
        case mi.FloatType():
            return st.floats(1, 1000)
        case mi.DateTimeType():
            return SOON
        case mi.UnionType(types=types):
            return st.one_of(*(good_values(x) for x in types))
        case mi.ListType(item_type=item):
            return st.lists(good_values(item), max_size=3)
        case mi.DictType(key_type=key, value_type=value):
            return st.dictionaries(good_values(key), good_values(value), max_size=3)
        case mi.AnyType():
            return GOOD_JSON
    return type_values(t)  # bool, None, literals: every value is a careful one


def rows(purpose: str) -> st.SearchStrategy[dict[str, Any]]:
    """Valid dataset rows of ``purpose`` (conversations or preference)."""
    part = st.fixed_dictionaries({"text": st.text(max_size=20)},
                                 optional={"weight": st.integers(0, 1) | st.floats(0, 1)})
    content = st.text(max_size=40) | st.lists(part, max_size=3)
    message = st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": content})
    messages = st.lists(message, min_size=1, max_size=4)
    if purpose == "conversations":
        return st.fixed_dictionaries({"messages": messages}) | st.fixed_dictionaries(
            {"text": st.text(max_size=60)}, optional={"meta": JSON})
    return st.fixed_dictionaries({"prompt": st.lists(message, max_size=2),
                                  "chosen": messages, "rejected": messages})


@st.composite
def corrupted(draw: st.DrawFn, data: bytes) -> tuple[bytes, str]:
    """``data`` with one random corruption, named."""
    how = draw(st.sampled_from(["none", "flip", "drop", "duplicate", "utf8", "huge", "blank",
                                "bom", "truncate", "crlf", "nul", "garbage_line", "swap"]))
    lines = data.split(b"\n")
    at = draw(st.integers(0, max(0, len(lines) - 1)))
    if how == "flip" and data:
        buf = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            buf[draw(st.integers(0, len(buf) - 1))] ^= draw(st.integers(1, 255))
        return bytes(buf), how
    if how == "drop":
        del lines[at]
    elif how == "duplicate":
        lines.insert(at, lines[at])
    elif how == "utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]))
        line = lines[at]
        cut = draw(st.integers(0, len(line)))
        lines[at] = line[:cut] + bad + line[cut:]
    elif how == "huge":  # longer than a chunk: the validator holds it across chunks
        size = draw(st.integers(1 << 20, 5 << 19))
        body = b"a" * size
        lines.insert(at, draw(st.sampled_from([b'{"text": "' + body + b'"}', body])))
    elif how == "blank":
        lines.insert(at, draw(st.sampled_from([b"", b"  ", b"\t", b"\r"])))
    elif how == "bom":
        lines[0] = b"\xef\xbb\xbf" + lines[0]
    elif how == "truncate":
        return data[:draw(st.integers(0, len(data)))], how
    elif how == "crlf":
        return data.replace(b"\n", b"\r\n"), how
    elif how == "nul":
        lines.insert(at, draw(st.sampled_from([b'{"text": "\\u0000"}', b"\x00", b'{"\x00":1}'])))
    elif how == "garbage_line":
        lines.insert(at, draw(st.binary(min_size=1, max_size=64)))
    elif how == "swap":
        lines[at] = lines[at].replace(b'"user"', b'"robot"').replace(b'"messages"', b'"m"')
    return b"\n".join(lines), how


# -- strategies ------------------------------------------------------------------------------
class Strategies:
    """Every kind of case; ids come from ``pool`` when a case is drawn."""

    def __init__(self, pool: Pool, default_org: str) -> None:
        self.pool, self.default_org = pool, default_org
        self.good = self._good()
        # Wild values that would only make cases slow: a future log position makes the
        # api wait (then answer 'unavailable'), so it is drawn rarely.
        self.wild = {"min_seq": MIN_SEQ, "v": st.integers(-2, 3) | INT}

    def _good(self) -> dict[str, st.SearchStrategy[Any]]:
        """Meaningful values of the fields that name something, by field name."""
        p, n = self.pool, self.pool.fresh
        fresh = lambda prefix: st.just(prefix).map(lambda x: f"{x}{next(n)}")  # noqa: E731
        hardware = st.sampled_from(["1x H100S", "2x A100", "8x H200"])
        return {
            "job_id": p.known("job"), "run_id": p.known("run"), "file_id": p.known("file"),
            "file": st.none() | p.known("file"), "upload_id": p.known("upload"),
            "worker_id": p.known("worker") | fresh("fuzz-w"), "token_id": p.known("token"),
            "name": p.known("secret") | GOOD_TEXT, "id_prefix": fresh("fuzz"),
            "purpose": st.sampled_from(["conversations", "preference", "custom", "result"]),
            "status": st.sampled_from(["pending", "in_progress", "completed", "failed",
                                       "canceled", None]),
            "type": st.sampled_from(["custom", "fine-tuning", "inference", "script", "api"]),
            "hardware_type": hardware | st.just("cpu"),
            "allowed_hardware": st.none() | st.lists(hardware, max_size=2),
            "limit": st.integers(1, 100), "min_seq": st.sampled_from([0, 0, 0, -1]),
            "v": st.just(protocol.PROTOCOL_VERSION), "request_id": st.none() | fresh("req"),
            "params": st.dictionaries(GOOD_TEXT, GOOD_JSON | p.known("file"), max_size=3)
            | st.fixed_dictionaries({"mounted_files": st.dictionaries(
                GOOD_TEXT, p.known("file"), max_size=2)}),
            "values": st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}",
                                                    fullmatch=True), GOOD_TEXT,
                                      min_size=1, max_size=3),
            "files": st.lists(st.fixed_dictionaries({"path": GOOD_TEXT,
                                                     "file": p.known("file")}), max_size=2),
            "events": st.lists(st.dictionaries(GOOD_TEXT, GOOD_JSON, max_size=3),
                               min_size=1, max_size=3),
            "seconds": st.floats(1, 86_400), "keys": st.none() | st.lists(GOOD_TEXT, max_size=2),
        }

    def field(self, f: Any) -> st.SearchStrategy[Any]:
        """Mostly a meaningful value of the field; else any value of its type."""
        literal = isinstance(f.type, mi.LiteralType)
        good = self.good.get(f.name) if not literal else None
        good = good if good is not None else good_values(f.type)
        wild = self.wild.get(f.name, type_values(f.type))
        return st.one_of(good, good, good, wild)

    def body(self, endpoint: str) -> st.SearchStrategy[dict[str, Any]]:
        """A request body of the endpoint's struct, each field drawn by :meth:`field`."""
        required, optional = {}, {}
        for f in mi.type_info(protocol.ENDPOINTS[endpoint]).fields:  # type: ignore[attr-defined]
            (required if f.required else optional)[f.encode_name] = self.field(f)
        return st.fixed_dictionaries(required, optional=optional)

    def org(self) -> st.SearchStrategy[str | None]:
        return st.one_of(st.none(), st.none(), st.none(), st.just("other-org"), SUBJECT_TOKEN)

    def typed(self, endpoint: str | None = None) -> st.SearchStrategy[Call]:
        return _endpoints(endpoint).flatmap(
            lambda e: st.builds(Call, st.just(e), self.body(e).map(msgspec.json.encode),
                                st.just("typed"), self.org(),
                                st.sampled_from(["anon"] * 4) | SUBJECT_TOKEN))

    def valid(self) -> st.SearchStrategy[Call]:
        """Commands that must be accepted, and append: each makes something new."""
        n = self.pool.fresh
        submit = st.builds(lambda params, script, image, hw: {
            "id_prefix": f"fuzz{next(n)}", "params": params, "script": script,
            "docker_image": image, "allowed_hardware": hw, "type": "custom"},
            st.dictionaries(GOOD_TEXT, EDGY_JSON, max_size=4), GOOD_TEXT, GOOD_TEXT,
            st.none() | st.lists(st.sampled_from(["1x H100S", "2x A100", "8x H200"]),
                                 max_size=2))
        register = st.builds(lambda hw, image: {
            "worker_id": f"fuzz-w{next(n)}", "docker_image": image, "hardware_type": hw},
            HARDWARE, GOOD_TEXT)
        token = st.builds(lambda name: {"name": name}, GOOD_TEXT)
        secrets = st.builds(lambda name, value: {"values": {f"S_{name}": value}},
                            st.from_regex(r"[A-Z0-9_]{1,8}", fullmatch=True), GOOD_TEXT)
        # A valid host is a host name (its dots and spaces become dashes); any other
        # character that cannot be in a subject is refused, and is fuzzed as invalid.
        host = st.one_of(SUBJECT_TOKEN, st.sampled_from(["box.lab.example", "my laptop"]))
        script = st.builds(lambda s, host: {"script": s, "host": host}, GOOD_TEXT, host)
        bodies = st.one_of(*(b.map(lambda body, e=e: (e, body)) for e, b in (
            ("jobs.submit", submit), ("agent.register", register), ("tokens.create", token),
            ("secrets.set", secrets), ("run.script.start", script))))
        return bodies.map(lambda eb: Call(eb[0], msgspec.json.encode(eb[1]), "valid"))

    @st.composite
    def _mutated(draw: st.DrawFn, self: Strategies,  # type: ignore[misc]
                 endpoint: str | None = None) -> Call:
        endpoint = draw(_endpoints(endpoint))
        body = draw(self.body(endpoint))
        fields = {f.encode_name: f for f in
                  mi.type_info(protocol.ENDPOINTS[endpoint]).fields}  # type: ignore[attr-defined]
        how = draw(st.sampled_from(["drop", "retype", "null", "unknown", "version", "number",
                                    "string", "deep", "duplicate", "truncate", "too_large",
                                    "not_object"]))
        name = draw(st.sampled_from(sorted(fields)))
        raw: bytes | None = None
        if how == "drop":
            required = [k for k, f in fields.items() if f.required] or [name]
            body.pop(draw(st.sampled_from(required)), None)
        elif how == "retype":  # a value of another JSON type than the field's
            body[name] = draw(JSON.filter(lambda v: not _same_kind(v, body.get(name))))
        elif how == "null":
            body[name] = None
        elif how == "unknown":
            body[draw(TEXT.filter(lambda k: k not in fields))] = draw(JSON)
        elif how == "version":
            body["v"] = draw(st.integers().filter(lambda v: v != protocol.PROTOCOL_VERSION))
        elif how in ("number", "string", "deep"):
            raw = draw(st.sampled_from({
                "number": [b"1e400", b"-1e400", b"18446744073709551616", b"-9223372036854775809",
                           b"1.5", b"NaN", b"Infinity", b"-0", b"0x10", b"01"],
                "string": [b'"\\ud800"', b'"\\udc00x"', b'"\\u0000"', b'"\x00"', b'"\xff\xfe"',
                           b'"\\x"', b'"\n"', b'"\xed\xa0\x80"', b'"' + b"\\u0000" * 50 + b'"'],
                "deep": [b"[" * 5000 + b"]" * 5000, b'{"a":' * 2000 + b"1" + b"}" * 2000],
            }[how]))
            body[name] = "@@RAW@@"
        elif how == "too_large":
            body[name] = "x" * (protocol.MAX_REQUEST_BYTES + draw(st.integers(1, 1000)))
        payload = msgspec.json.encode(body)
        if raw is not None:
            payload = payload.replace(b'"@@RAW@@"', raw)
        if how == "duplicate":
            payload = payload[:-1] + (b"," if len(payload) > 2 else b"") + json.dumps(
                {name: draw(JSON)})[1:-1].encode() + b"}"
        elif how == "truncate":  # a fraction: ids from the pool vary in length
            payload = payload[:draw(st.integers(0, 999)) * len(payload) // 1000]
        elif how == "not_object":
            payload = msgspec.json.encode(draw(JSON.filter(lambda v: not isinstance(v, dict))))
        return Call(endpoint, payload, f"mutated:{how}", draw(st.sampled_from([None] * 4)
                                                               | self.org()))

    def mutated(self, endpoint: str | None = None) -> st.SearchStrategy[Call]:
        return self._mutated(endpoint)

    def raw(self, endpoint: str | None = None) -> st.SearchStrategy[Call]:
        """Bytes that are not a request, to every endpoint (chunks, pinned ones included),
        with or without a reply subject, with random headers."""
        payloads = st.one_of(
            st.binary(max_size=300).map(lambda b: ("bytes", b)),
            JSON.map(lambda v: ("json", msgspec.json.encode(v))),
            st.text(max_size=100).map(lambda t: ("text", t.encode())),
            st.binary(max_size=60).map(lambda b: ("prefix", b'{"v":1,' + b)),
            st.sampled_from([b"", b"{", b"}", b"null", b"[]", b"{}", b'{"v":1}', b"\xef\xbb\xbf{}",
                             b"{} {}", b'{"v":1}\x00']).map(lambda b: ("fragment", b)))
        headers = st.none() | st.dictionaries(
            st.sampled_from([protocol.HEADER_UPLOAD, protocol.HEADER_OFFSET, "X-Junk"]),
            st.one_of(self.pool.ref("upload"), st.integers(-5, 10).map(str), SUBJECT_TOKEN),
            max_size=3)
        return st.builds(lambda e, p, h, r, org: Call(e, p[1], f"raw:{p[0]}", org, headers=h,
                                                       reply=r),
                         _endpoints(endpoint, ENDPOINTS), payloads, headers,
                         st.sampled_from([True] * 5 + [False]), st.sampled_from([None] * 3)
                         | self.org())

    def upload(self) -> st.SearchStrategy[Upload]:
        @st.composite
        def draw_upload(draw: st.DrawFn) -> Upload:
            purpose = draw(st.sampled_from(["conversations", "preference", "preferences",
                                            "custom"]))
            row_purpose = purpose if purpose in VALIDATED_PURPOSES else "conversations"
            lines = draw(st.lists(rows(row_purpose), min_size=0, max_size=8))
            data = b"".join(msgspec.json.encode(r) + b"\n" for r in lines)
            if draw(st.booleans()):
                data = data.rstrip(b"\n")
            data, how = draw(corrupted(data))
            sizes = draw(st.lists(st.integers(1, 1 << 18), min_size=1, max_size=6))
            misstep = draw(st.sampled_from(["none"] * 6 + [
                "skip", "repeat", "bad_offset", "no_header", "abort", "early_end", "double_end",
                "chunk_after_end"]))
            return Upload(purpose, data, tuple(sizes), misstep, f"{how}/{misstep}")
        return draw_upload()

    def whoami(self) -> st.SearchStrategy[Whoami]:
        return st.builds(Whoami, st.one_of(self.pool.known("token"), SUBJECT_TOKEN),
                         st.binary(max_size=64))

    def assignment(self) -> st.SearchStrategy[Assign]:
        fields = {f.name: type_values(f.type) for f in
                  mi.type_info(protocol.Assignment).fields}  # type: ignore[attr-defined]
        for name in ("job_id", "run_id", "worker_id"):
            fields[name] = st.one_of(self.good[name], fields[name])
        fields["org"] = st.sampled_from([self.default_org, "other-org"]) | TEXT
        # The script is opaque to the agent (sh runs it) and an agent may start it before
        # the api refuses the start: only harmless ones, never random shell text.
        fields["script"] = st.sampled_from(["true", "echo fuzz", "exit 3", "sleep 0.2"])
        # The tag of the message union: mostly an assignment, sometimes a notice or junk.
        fields["type"] = st.sampled_from(["assignment"] * 3 + ["run_notice"]) | TEXT
        typed = st.fixed_dictionaries(fields).map(
            lambda b: Assign(msgspec.json.encode(b), "typed"))
        return typed | st.binary(max_size=200).map(lambda b: Assign(b, "raw:bytes")) | \
            self._mutated().map(lambda c: Assign(c.payload, c.kind))

    def any_case(self) -> st.SearchStrategy[Case]:
        # Chosen by kind first: st.one_of would flatten the kinds' own alternatives and
        # weigh each kind by how many it has.
        kinds = [self.typed] * 3 + [self.mutated] * 2 + [self.raw] * 2 + [
            self.valid, self.upload, self.whoami, self.assignment]
        return st.sampled_from(kinds).flatmap(lambda kind: kind())


def _endpoints(endpoint: str | None,
               every: tuple[str, ...] = tuple(protocol.ENDPOINTS)) -> st.SearchStrategy[str]:
    return st.just(endpoint) if endpoint else st.sampled_from(every)


def _same_kind(a: Any, b: Any) -> bool:
    number = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b)
    if isinstance(a, number) and isinstance(b, number):
        return True
    return type(a) is type(b)


# -- running and checking cases ------------------------------------------------------------
class Broken(Exception):
    """A case broke a property; the message says which. ``appends``: the property is the
    count of messages appended while the case ran."""

    def __init__(self, message: str, appends: bool = False) -> None:
        super().__init__(message)
        self.appends = appends


class FuzzAgent(Agent):
    """The real agent, counting the assignment messages it is done with."""

    def __init__(self, settings: Settings, worker_id: str) -> None:
        super().__init__(settings, worker_id, "img", HardwareInfo.cpu(), managed=False)
        self.t.retry_for_s = 2.0
        self.handled = 0
        self.ended: BaseException | str | None = None
        self.registered = anyio.Event()
        self._changed = anyio.Event()

    def tick(self) -> None:
        self.handled += 1
        self._changed.set()

    async def call(self, endpoint: str, **fields: Any) -> Any:
        result = await super().call(endpoint, **fields)
        if endpoint == "agent.register":
            self.registered.set()
        return result

    def _valid_assignment(self, data: bytes) -> protocol.Assignment | None:
        assignment = super()._valid_assignment(data)
        if assignment is None:
            self.tick()  # malformed or foreign: dropped before it is queued
        return assignment

    async def _run_one(self, a: protocol.Assignment) -> None:
        try:
            await super()._run_one(a)
        finally:
            self.tick()

    async def run_until_ended(self) -> None:
        try:
            await self.run()
            self.ended = "returned"
        except Exception as exc:
            self.ended = exc
        finally:
            self.registered.set()
            self._changed.set()

    async def wait_handled(self, n: int) -> None:
        """Until ``n`` messages are dealt with, or the agent ended."""
        while self.handled < n and self.ended is None:
            self._changed = anyio.Event()
            await self._changed.wait()

    async def wait_ended(self) -> None:
        await self.wait_handled(1 << 62)


class Fuzzer:
    """Sends cases to a running stack and checks them; use :meth:`session`."""

    MAX_OPEN_UPLOADS = 16

    def __init__(self, settings: Settings, nc: Client, tg: Any, instance: str) -> None:
        self.settings, self.nc, self.tg, self.instance = settings, nc, tg, instance
        self.js = nc.jetstream()
        self.subjects = Subjects(settings.namespace)
        self.org = settings.default_org
        self.pool = Pool()
        self.strategies = Strategies(self.pool, self.org)
        self.open_uploads: list[tuple[str, str]] = []  # (org, upload id)
        self.agent: FuzzAgent
        self.timeout = 3 * settings.request_timeout_s

    @classmethod
    @asynccontextmanager
    async def session(cls, settings: Settings) -> AsyncIterator[Fuzzer]:
        """A fuzzer (and its agent) for the api service running on ``settings``."""
        nc = await nats.connect(settings.nats_url)
        try:
            info = json.loads((await nc.request("$SRV.INFO.openweights-api", b"",
                                                timeout=5)).data)
            instance = next(e["subject"].rsplit(".", 1)[1] for e in info["endpoints"]
                            if e["name"] == "files-upload-end")
            async with anyio.create_task_group() as tg:
                fuzzer = cls(settings, nc, tg, instance)
                await fuzzer.start_agent()
                yield fuzzer
                fuzzer.agent.stop("fuzzing done")
                with anyio.move_on_after(10):
                    await fuzzer.agent.wait_ended()
                tg.cancel_scope.cancel()
        finally:
            await nc.close()

    async def start_agent(self) -> None:
        # A dead agent reported itself stopped: its successor is another worker.
        worker_id = f"{AGENT_ID}-{next(self.pool.fresh)}"
        self.agent = FuzzAgent(self.settings, worker_id)
        self.tg.start_soon(self.agent.run_until_ended)
        await self.agent.registered.wait()
        self.pool.add("worker", worker_id)

    async def last_seq(self) -> int:
        info = await self.js.stream_info(self.subjects.events_stream)
        return int(info.state.last_seq)

    # -- one case ----------------------------------------------------------------------
    async def check(self, case: Case) -> Outcome:
        try:
            before = await self.last_seq()
            if isinstance(case, Call):
                status = await self._call(case, before)
            elif isinstance(case, Upload):
                status = await self._upload(case, before)
            elif isinstance(case, Whoami):
                status = await self._whoami(case, before)
            else:
                status = await self._assign(case, before)
            await self._alive()
        except Broken as exc:
            if exc.appends and self.agent.stopping.is_set():
                # The agent stopped by itself (see _alive) and reported it meanwhile: the
                # appends are not the case's alone, so the case is left unjudged.
                return Outcome(case.label, case.kind, "unjudged", str(exc))
            return Outcome(case.label, case.kind, "error", str(exc))
        return Outcome(case.label, case.kind, status)

    def _subject(self, endpoint: str, org: str | None = None, principal: str = "anon") -> str:
        subject = self.subjects.api(org or self.org, principal, endpoint)
        pinned = endpoint in protocol.INSTANCE_ENDPOINTS
        return f"{subject}.{self.instance}" if pinned else subject

    async def _ask(self, subject: str, payload: bytes, headers: dict[str, str] | None = None,
                   may_wait: bool = False) -> tuple[str, protocol.Reply | None]:
        """``(status, reply)``; raises Broken for no reply or a reply that is not typed."""
        try:
            msg = await self.nc.request(subject, payload, timeout=self.timeout, headers=headers)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise Broken(f"no reply on {subject} ({type(exc).__name__})") from None
        if msg.headers and protocol.HEADER_EOF in msg.headers:
            return "accepted", None  # files.read: raw bytes
        try:
            reply = protocol.reply_decoder.decode(msg.data)
        except msgspec.DecodeError:
            raise Broken(f"reply is not a Reply: {msg.data[:200]!r}") from None
        if reply.error is None:
            return "accepted", reply
        code, message = reply.error.code, reply.error.message
        if code not in BY_CODE:
            raise Broken(f"untyped error {code!r}: {message[:300]}")
        if not message.strip():
            raise Broken(f"error {code!r} without a message")
        if code in ("unavailable", "stack_unavailable") and not may_wait:
            raise Broken(f"{code} from a healthy stack: {message[:300]}")
        return f"rejected:{code}", reply

    async def _call(self, c: Call, before: int) -> str:
        subject = self._subject(c.endpoint, c.org, c.principal)
        reply = None
        if not c.reply:
            await self.nc.publish(subject, c.payload, headers=c.headers)
            await self.nc.flush()
            status = "unanswered"
        else:
            status, reply = await self._ask(subject, c.payload, c.headers,
                                            may_wait=_asks_future(c.payload, before))
        after = await self.last_seq()
        if status != "accepted" or c.endpoint in QUERIES:
            if after != before:
                raise Broken(f"{after - before} message(s) appended for a {status} "
                             f"{'query' if c.endpoint in QUERIES else 'command'}", True)
        elif reply is not None and after != before and reply.seq != after:
            raise Broken(f"appended up to {after} but replied seq {reply.seq}", True)
        if c.kind == "valid" and (status != "accepted" or after == before):
            why = f": {reply.error.message[:300]}" if reply and reply.error else ""
            raise Broken(f"a valid new command was {status}, appending {after - before}{why}",
                         status == "accepted")
        if status == "accepted" and reply is not None and c.org in (None, self.org):
            await self._harvest(c.endpoint, c.payload, reply.ok)
        return status

    async def _harvest(self, endpoint: str, payload: bytes, ok: Any) -> None:
        """Remember what an accepted request made, for later cases to refer to."""
        add = self.pool.add
        if endpoint == "jobs.submit":
            add("job", ok["id"])
        elif endpoint == "run.script.start":
            add("job", ok["job_id"])
            add("run", ok["run_id"])
        elif endpoint == "tokens.create":
            add("token", ok["id"])
        elif endpoint == "files.upload.end":
            add("file", ok["id"])
        elif endpoint == "secrets.set":
            for name in ok["set"]:
                add("secret", name)
        elif endpoint == "agent.register":
            add("worker", msgspec.json.decode(payload)["worker_id"])
        elif endpoint == "files.upload.begin":
            add("upload", ok["upload_id"])
            self.open_uploads.append((self.org, ok["upload_id"]))
            while len(self.open_uploads) > self.MAX_OPEN_UPLOADS:
                org, upload_id = self.open_uploads.pop(0)
                await self._ask(self._subject("files.upload.abort", org),
                                msgspec.json.encode({"upload_id": upload_id}))

    async def _whoami(self, w: Whoami, before: int) -> str:
        status, _ = await self._ask(self.subjects.whoami(w.principal), w.payload)
        if await self.last_seq() != before:
            raise Broken("whoami appended", True)
        return status

    async def _assign(self, a: Assign, before: int) -> str:
        handled = self.agent.handled
        await self.nc.publish(self.subjects.agent(self.org, self.agent.worker_id), a.payload)
        with anyio.move_on_after(self.timeout) as scope:
            await self.agent.wait_handled(handled + 1)
        if scope.cancelled_caught:
            raise Broken("the agent did not deal with the assignment in time")
        if self.agent.ended is None and await self.last_seq() != before:
            raise Broken("a bogus assignment appended", True)
        return "unanswered"

    async def _alive(self) -> None:
        """The api answers, the projector has projected the whole log, the agent runs."""
        body = msgspec.json.encode({"min_seq": -1, "limit": 1})
        try:
            status, _ = await self._ask(self._subject("jobs.list"), body)
        except Broken as exc:
            raise Broken(f"the services stopped answering: {exc}") from None
        if status != "accepted":
            raise Broken(f"the follow-up jobs.list was {status}")
        if self.agent.ended is not None:
            # It stops by itself when told to (a TTL moved into the past, say); it must
            # never raise. Either way a fresh one takes its place, so a long run goes on.
            ended = self.agent.ended
            await self.start_agent()
            if ended != "returned":
                raise Broken(f"the agent died: {ended!r}")

    # -- uploads -------------------------------------------------------------------------
    async def _upload(self, u: Upload, before: int) -> str:
        status, reply = await self._ask(self._subject("files.upload.begin"), msgspec.json.encode(
            {"filename": "data.jsonl", "purpose": u.purpose}))
        if reply is None or status != "accepted":
            raise Broken(f"files.upload.begin was {status}")
        upload_id: str = reply.ok["upload_id"]
        received = bytearray()
        gone: str | None = None  # why the upload no longer exists
        appended = 0

        async def send(data: bytes, offset: str | None, expect: set[str]) -> str:
            headers = None if offset is None else {protocol.HEADER_UPLOAD: upload_id,
                                                   protocol.HEADER_OFFSET: offset}
            status, _ = await self._ask(self._subject(protocol.UPLOAD_CHUNK), data, headers)
            if status not in expect:
                raise Broken(f"a chunk ({u.misstep}) was {status}, not one of {sorted(expect)}")
            return status

        chunks = list(_split(u.data, u.sizes))
        for i, chunk in enumerate(chunks):
            offset = str(len(received))
            if i == len(chunks) // 2 and gone is None:  # the misstep, half-way
                if u.misstep == "skip":
                    await send(chunk, str(len(received) + len(chunk) + 1), {"rejected:invalid"})
                elif u.misstep == "repeat" and i > 0:
                    await send(chunks[i - 1], str(len(received) - len(chunks[i - 1])),
                               {"accepted"})
                elif u.misstep == "bad_offset":
                    await send(chunk, "abc", {"rejected:invalid"})
                elif u.misstep == "no_header":
                    await send(chunk, None, {"rejected:not_found"})
                elif u.misstep == "abort":
                    status, _ = await self._ask(self._subject("files.upload.abort"),
                                                msgspec.json.encode({"upload_id": upload_id}))
                    if status != "accepted":
                        raise Broken(f"files.upload.abort was {status}")
                    gone = "aborted"
                elif u.misstep == "early_end":
                    gone, appended = await self._end(upload_id, u.purpose, bytes(received))
            if gone is not None:
                await send(chunk, offset, {"rejected:not_found"})
                continue
            if await send(chunk, offset, {"accepted", "rejected:invalid"}) == "accepted":
                received += chunk
                continue
            gone = "rejected:invalid"
            if u.misstep in ("none", "skip", "repeat") and is_valid_dataset(u.data, u.purpose):
                raise Broken("a chunk of a valid dataset was refused")
        if gone is None:
            gone, appended = await self._end(upload_id, u.purpose, bytes(received))
            outcome = gone
        else:
            outcome, _ = await self._ask(self._subject("files.upload.end"),
                                         msgspec.json.encode({"upload_id": upload_id}))
            if outcome != "rejected:not_found":
                raise Broken(f"files.upload.end of an upload already {gone} was {outcome}")
            outcome = gone
        if u.misstep == "chunk_after_end":
            await send(b"{}", str(len(received)), {"rejected:not_found"})
        if list((self.settings.home / "api" / "uploads").glob(f"{upload_id}*")):
            raise Broken("the upload's spool file was left behind")
        if await self.last_seq() != before + appended:
            raise Broken(f"the upload appended {await self.last_seq() - before}, not {appended}",
                         True)
        return outcome

    async def _end(self, upload_id: str, purpose: str, received: bytes) -> tuple[str, int]:
        """End the upload: accepted iff ``received`` is a valid dataset of ``purpose``;
        ``(status, messages appended)``."""
        before = await self.last_seq()
        status, reply = await self._ask(self._subject("files.upload.end"),
                                        msgspec.json.encode({"upload_id": upload_id}))
        after = await self.last_seq()
        valid = is_valid_dataset(received, purpose)
        if status != "accepted":
            if valid or status != "rejected:invalid" or after != before:
                raise Broken(f"files.upload.end of a {'valid' if valid else 'bad'} dataset "
                             f"was {status}, appending {after - before}")
            return status, 0
        if not valid:
            raise Broken("an invalid dataset was accepted")
        digest = FileDigest(self.org)
        digest.update(received)
        assert reply is not None
        if reply.ok["id"] != digest.file_id(purpose):
            raise Broken(f"file id {reply.ok['id']} is not the content's")
        if not (after == before + 1 == reply.seq or (after == before and reply.seq == 0)):
            raise Broken(f"the upload appended {after - before}, replying seq {reply.seq}", True)
        self.pool.add("file", reply.ok["id"])
        return status, after - before


def _split(data: bytes, sizes: tuple[int, ...]) -> Iterator[bytes]:
    """``data`` in chunks of the sizes in turn (at most about 32 chunks)."""
    at, least = 0, len(data) // 32 + 1
    for size in itertools.cycle(max(s, least) for s in sizes):
        if at >= len(data):
            return
        yield data[at:at + size]
        at += size


def _asks_future(payload: bytes, last_seq: int) -> bool:
    """The request asks to wait for a log position beyond the log: 'unavailable' is right."""
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):
        return False
    seq = body.get("min_seq") if isinstance(body, dict) else None
    return isinstance(seq, int) and not isinstance(seq, bool) and seq > last_seq


# -- fixtures -------------------------------------------------------------------------------
class Runner:
    """The blocking face of a :class:`Fuzzer` (hypothesis calls it from its thread)."""

    def __init__(self, fuzzer: Fuzzer, portal: BlockingPortal) -> None:
        self.fuzzer, self.portal = fuzzer, portal
        self.strategies = fuzzer.strategies

    def __call__(self, case: Case) -> Outcome:
        return self.portal.call(self.fuzzer.check, case)

    def call(self, endpoint: str, **body: Any) -> Outcome:
        """One typed request, checked like any case."""
        return self(Call(endpoint, msgspec.json.encode(body), "typed"))

    def raw(self, endpoint: str, payload: bytes) -> Outcome:
        """These bytes as a request to ``endpoint``, checked like any case."""
        return self(Call(endpoint, payload, "raw:given"))

    def assign(self, payload: bytes) -> Outcome:
        """These bytes on the agent's assignment subject, checked like any case."""
        return self(Assign(payload, "raw:given"))


def fuzz_settings(settings: Settings, secret_key: bool = True) -> Settings:
    # Short waits: a request for a future log position is refused within a second.
    return settings.model_copy(update={"request_timeout_s": 2.0, "heartbeat_s": 60.0,
                                       "secret_key": new_key() if secret_key else None})


@contextmanager
def running(settings: Settings) -> Iterator[Runner]:
    """The projector, the api service and an agent on ``settings``, and a runner."""
    with services_thread(settings), start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(Fuzzer.session(settings)) as fuzzer:
        yield Runner(fuzzer, portal)


@pytest.fixture
def fuzz(settings: Settings) -> Iterator[Runner]:
    with running(fuzz_settings(settings)) as runner:
        yield runner


@pytest.fixture
def fuzz_without_secret_key(settings: Settings) -> Iterator[Runner]:
    with running(fuzz_settings(settings, secret_key=False)) as runner:
        yield runner
