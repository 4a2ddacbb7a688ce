"""The NATS client protocol, sans I/O: just what a bulk JetStream read needs.

:class:`Parser` is told the bytes that arrived and says what happened: stored messages
of the consumer being read (in bulk, as :class:`StoredMessage`), and the few other
things a reader must act on (:class:`Control`: a flow-control request, a heartbeat, a
reply to a request, a PING, a server error). The caller does the I/O
(:mod:`openweights.adapters.nats.bulk`). Frames, from the protocol documentation:

    MSG <subject> <sid> [reply] <size>\\r\\n<payload>\\r\\n
    HMSG <subject> <sid> [reply] <header size> <total size>\\r\\n<headers><payload>\\r\\n
    PING | PONG | +OK | -ERR '<text>' | INFO {json}   (each ending in \\r\\n)

A JetStream delivery's reply subject carries its metadata:
``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>``
(v2 inserts ``<domain>.<account hash>`` after ``$JS.ACK`` and appends a token).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum

from openweights.adapters.nats.reader import StoredMessage

CRLF = b"\r\n"
MAX_CONTROL_LINE = 64 * 1024


class ProtocolError(ValueError):
    """The bytes are not the NATS protocol we expected (the connection is unusable)."""


class Kind(Enum):
    FLOW_CONTROL = "flow control request"  # answer (an empty message to ``reply``) once
    HEARTBEAT = "idle heartbeat"           # the messages before it were handled
    GAP = "consumer sequence gap"          # a delivery went missing: restart the consumer
    REPLY = "reply"                        # a message on any other subscription
    PING = "ping"                          # answer PONG
    PONG = "pong"
    OK = "+OK"
    STATUS = "status"                      # another status on the deliveries (409...)
    ERROR = "server error"                 # -ERR; the server closes the connection after most
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Control:
    kind: Kind
    sid: int = 0
    subject: str = ""
    reply: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes = b""
    text: str = ""  # the status description, the error text or the INFO JSON

    @property
    def status(self) -> int:
        """The inline status code of a status message (``503``: no responders), else 0."""
        return int(self.headers.get("Status", "0"))


def parse_headers(block: bytes) -> dict[str, str]:
    """``NATS/1.0[ <status>[ <description>]]\\r\\nKey: value\\r\\n...\\r\\n\\r\\n``.

    The status line lands in ``Status`` and ``Description`` (as nats-py does).
    """
    lines = block.decode(errors="replace").split("\r\n")
    if not lines[0].startswith("NATS/1.0"):
        raise ProtocolError(f"bad header block {block[:40]!r}")
    out: dict[str, str] = {}
    status = lines[0][len("NATS/1.0"):].strip()
    if status:
        code, _, description = status.partition(" ")
        out["Status"], out["Description"] = code, description
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip()] = value.strip()
    return out


def ack_metadata(reply: bytes) -> tuple[int, int, int, int]:
    """``(stream seq, consumer seq, timestamp ns, pending)`` from a delivery's reply."""
    tokens = reply.split(b".")
    if len(tokens) == 9:  # v1
        return int(tokens[5]), int(tokens[6]), int(tokens[7]), int(tokens[8])
    if len(tokens) >= 12:  # v2: domain and account hash in front, a token at the end
        return int(tokens[7]), int(tokens[8]), int(tokens[9]), int(tokens[10])
    raise ProtocolError(f"not a JetStream delivery: reply subject {reply[:80]!r}")


class Parser:
    """Frames from the bytes of one connection; deliveries on ``deliver_sid`` in bulk.

    It checks the consumer sequence of every delivery (and of each heartbeat): the first
    one out of order yields a ``GAP`` control, and deliveries are dropped until the
    caller :meth:`follow` s a new consumer. Never silent loss.
    """

    def __init__(self) -> None:
        self._rest = b""
        self._sid = b""
        self._next_cseq = 1
        self._gap = False
        self._v1: bool | None = None  # the form of the consumer's ack subjects
        # Index (in the last feed's messages) of the first delivered with nothing pending
        # after it: where a read that does not follow the stream is caught up.
        self.caught_up_at: int | None = None

    def follow(self, deliver_sid: int) -> None:
        """Deliveries of a new consumer arrive on ``deliver_sid``, from consumer seq 1."""
        self._sid = str(deliver_sid).encode()
        self._next_cseq = 1
        self._gap = False
        self._v1 = None

    def feed(self, data: bytes) -> tuple[list[StoredMessage], list[Control]]:
        """Messages delivered in order, and the controls seen, in this chunk of bytes."""
        try:
            return self._feed(data)
        except (ValueError, IndexError) as exc:  # a size or sequence that is no number...
            raise ProtocolError(f"malformed frame: {exc}") from exc

    def _feed(self, data: bytes) -> tuple[list[StoredMessage], list[Control]]:
        buf = self._rest + data if self._rest else data
        msgs: list[StoredMessage] = []
        controls: list[Control] = []
        pos, n, sid, caught, nxt, v1 = 0, len(buf), self._sid, -1, self._next_cseq, self._v1
        find, append = buf.find, msgs.append
        # One pass, a frame at a time; the hot path (a delivery) is inlined: it runs once
        # per stored message.
        while True:
            eol = find(CRLF, pos)
            if eol < 0:
                if n - pos > MAX_CONTROL_LINE:
                    raise ProtocolError("control line too long")
                break
            op = buf[pos]
            # M: MSG <subject> <sid> [reply] <size>
            # H: HMSG <subject> <sid> [reply] <header size> <size>
            if op == 77 or op == 72:
                hmsg = op == 72
                args = buf[pos + 4 + hmsg:eol].split(b" ")
                start = eol + 2
                body = start + int(args[-2]) if hmsg else start
                end = start + int(args[-1])
                with_reply = len(args) == 4 + hmsg
            else:
                controls.append(_op(buf[pos:eol]))
                pos = eol + 2
                continue
            if end + 2 > n:
                break
            pos = end + 2
            if args[1] != sid:
                reply = args[2].decode() if with_reply else ""
                controls.append(_reply(args, reply, buf[start:body], buf[body:end]))
            elif body == end and body != start and buf.startswith(b"NATS/1.0 ", start):
                self._next_cseq = nxt
                controls += self._status(args[2].decode() if with_reply else "",
                                         buf[start:body])
            elif not self._gap:
                if v1 is None:
                    v1 = self._v1 = args[2].count(b".") == 8
                if v1:
                    _, s, c, t, p = args[2].rsplit(b".", 4)
                    sseq, cseq, ts, done = int(s), int(c), int(t), p == b"0"
                else:
                    sseq, cseq, ts, left = ack_metadata(args[2])
                    done = left == 0
                if cseq != nxt:
                    self._next_cseq = nxt
                    controls.append(self._lost(cseq))
                    continue
                nxt += 1
                append(StoredMessage(sseq, ts, args[0].decode(), buf[body:end]))
                if done and caught < 0:
                    caught = len(msgs) - 1
        self._next_cseq = nxt
        self._rest = buf[pos:]
        self.caught_up_at = caught if caught >= 0 else None
        return msgs, controls

    def _lost(self, cseq: int) -> Control:
        self._gap = True
        return Control(Kind.GAP, text=f"consumer sequence {cseq}, expected {self._next_cseq}")

    def _status(self, reply: str, block: bytes) -> list[Control]:
        headers = parse_headers(block)
        desc = headers.get("Description", "")
        if headers.get("Status") != "100":
            return [Control(Kind.STATUS, reply=reply, headers=headers, text=desc)]
        if desc.startswith("FlowControl"):
            return [Control(Kind.FLOW_CONTROL, reply=reply, headers=headers, text=desc)]
        out = [Control(Kind.HEARTBEAT, headers=headers, text=desc)]
        last = headers.get("Nats-Last-Consumer")
        if last is not None and int(last) != self._next_cseq - 1 and not self._gap:
            out.append(self._lost(int(last)))
        return out


def _reply(args: list[bytes], reply: str, headers: bytes, data: bytes) -> Control:
    return Control(Kind.REPLY, sid=int(args[1]), subject=args[0].decode(), reply=reply,
                   headers=parse_headers(headers) if headers else {}, data=data)


def _op(line: bytes) -> Control:
    word, _, rest = line.partition(b" ")
    if word == b"PING":
        return Control(Kind.PING)
    if word == b"PONG":
        return Control(Kind.PONG)
    if word == b"+OK":
        return Control(Kind.OK)
    if word == b"-ERR":
        return Control(Kind.ERROR, text=rest.decode(errors="replace").strip().strip("'"))
    if word == b"INFO":
        return Control(Kind.INFO, text=rest.decode())
    raise ProtocolError(f"unknown protocol line {line[:80]!r}")


# -- what a client sends ------------------------------------------------------------------
def connect_line(options: dict[str, object]) -> bytes:
    return b"CONNECT " + json.dumps(options, separators=(",", ":")).encode() + CRLF


def sub(subject: str, sid: int) -> bytes:
    return f"SUB {subject} {sid}\r\n".encode()


def unsub(sid: int) -> bytes:
    return f"UNSUB {sid}\r\n".encode()


def pub(subject: str, payload: bytes = b"", reply: str = "") -> bytes:
    head = f"PUB {subject} {reply} {len(payload)}" if reply else f"PUB {subject} {len(payload)}"
    return head.encode() + CRLF + payload + CRLF
