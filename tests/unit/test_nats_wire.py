"""The sans-I/O NATS parser of the bulk reader: frames in, deliveries and controls out."""

from __future__ import annotations

import pytest

from openweights.adapters.nats.reader import StoredMessage
from openweights.adapters.nats.wire import Kind, Parser, ProtocolError, ack_metadata, pub


def _ack(sseq: int, cseq: int, pending: int, ts: int = 1_700_000_000_000_000_000) -> str:
    return f"$JS.ACK.EV.c1.1.{sseq}.{cseq}.{ts + sseq}.{pending}"


def _msg(sid: int, sseq: int, cseq: int, pending: int, data: bytes) -> bytes:
    reply = _ack(sseq, cseq, pending)
    return f"MSG ev.{sseq} {sid} {reply} {len(data)}\r\n".encode() + data + b"\r\n"


def _hmsg(sid: int, subject: str, reply: str, headers: bytes, data: bytes = b"") -> bytes:
    head = f"HMSG {subject} {sid} {reply} {len(headers)} {len(headers) + len(data)}".replace(
        "  ", " ")
    return head.encode() + b"\r\n" + headers + data + b"\r\n"


def _stream(n: int, sid: int = 2) -> bytes:
    out = b""
    for i in range(1, n + 1):
        if i % 2:
            out += _msg(sid, i * 3, i, n - i, b'[{"k":%d}]' % i)
        else:  # a stored message with headers of its own
            out += _hmsg(sid, f"ev.{i * 3}", _ack(i * 3, i, n - i), b"NATS/1.0\r\nA: b\r\n\r\n",
                         b'[{"k":%d}]' % i)
    return out


def _expected(n: int) -> list[StoredMessage]:
    return [StoredMessage(i * 3, 1_700_000_000_000_000_000 + i * 3, f"ev.{i * 3}",
                          b'[{"k":%d}]' % i) for i in range(1, n + 1)]


@pytest.mark.parametrize("chunk", [1, 7, 64, 10**6])
def test_frames_split_anywhere_give_the_same_messages(chunk: int) -> None:
    parser = Parser()
    parser.follow(2)
    data, got, caught_up = _stream(25), [], []
    for i in range(0, len(data), chunk):
        msgs, controls = parser.feed(data[i:i + chunk])
        assert controls == []
        got += msgs
        if parser.caught_up_at is not None:
            caught_up.append(msgs[parser.caught_up_at])
    assert got == _expected(25)
    assert caught_up == got[-1:]  # only the last one said nothing is pending


def test_caught_up_at_names_the_first_message_with_nothing_pending() -> None:
    parser = Parser()
    parser.follow(2)
    msgs, _ = parser.feed(_msg(2, 1, 1, 1, b"a") + _msg(2, 2, 2, 0, b"b") + _msg(2, 3, 3, 0, b"c"))
    assert [m.seq for m in msgs] == [1, 2, 3] and parser.caught_up_at == 1
    parser.feed(_msg(2, 4, 4, 5, b"d"))
    assert parser.caught_up_at is None


def test_a_gap_in_the_consumer_sequence_stops_deliveries_until_a_new_consumer() -> None:
    parser = Parser()
    parser.follow(2)
    msgs, controls = parser.feed(_msg(2, 1, 1, 9, b"a") + _msg(2, 3, 3, 7, b"c")
                                 + _msg(2, 4, 4, 6, b"d"))
    assert [m.seq for m in msgs] == [1]
    assert [c.kind for c in controls] == [Kind.GAP]
    assert "expected 2" in controls[0].text
    parser.follow(3)  # a new consumer from seq 2, on a new subscription
    msgs, controls = parser.feed(_msg(2, 5, 5, 5, b"stale") + _msg(3, 2, 1, 8, b"b"))
    assert [m.seq for m in msgs] == [2]
    assert [(c.kind, c.sid) for c in controls] == [(Kind.REPLY, 2)]  # old sid: not a delivery


def test_a_heartbeat_that_reports_more_deliveries_than_seen_is_a_gap() -> None:
    parser = Parser()
    parser.follow(2)
    ok = b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 1\r\nNats-Last-Stream: 1\r\n\r\n"
    lost = ok.replace(b"Consumer: 1", b"Consumer: 2")
    _, controls = parser.feed(_msg(2, 1, 1, 0, b"a") + _hmsg(2, "_INBOX.x", "", ok))
    assert [c.kind for c in controls] == [Kind.HEARTBEAT]
    _, controls = parser.feed(_hmsg(2, "_INBOX.x", "", lost))
    assert [c.kind for c in controls] == [Kind.HEARTBEAT, Kind.GAP]


def test_flow_control_stalled_and_other_statuses() -> None:
    parser = Parser()
    parser.follow(2)
    fc = _hmsg(2, "_INBOX.x", "$JS.FC.EV.abc.1", b"NATS/1.0 100 FlowControl Request\r\n\r\n")
    stalled = _hmsg(2, "_INBOX.x", "", b"NATS/1.0 100 Idle Heartbeat\r\n"
                    b"Nats-Last-Consumer: 0\r\nNats-Consumer-Stalled: $JS.FC.EV.abc.2\r\n\r\n")
    gone = _hmsg(2, "_INBOX.x", "", b"NATS/1.0 409 Consumer Deleted\r\n\r\n")
    msgs, controls = parser.feed(fc + stalled + gone)
    assert msgs == []
    assert [(c.kind, c.reply) for c in controls] == [
        (Kind.FLOW_CONTROL, "$JS.FC.EV.abc.1"), (Kind.HEARTBEAT, ""), (Kind.STATUS, "")]
    assert controls[1].headers["Nats-Consumer-Stalled"] == "$JS.FC.EV.abc.2"
    assert (controls[2].status, controls[2].text) == (409, "Consumer Deleted")


def test_replies_on_other_subscriptions_and_protocol_lines() -> None:
    parser = Parser()
    parser.follow(2)
    no_responders = _hmsg(1, "_INBOX.api.2", "", b"NATS/1.0 503\r\n\r\n")
    data = (b'INFO {"server_id":"x"}\r\nPING\r\nPONG\r\n+OK\r\n'
            b"MSG _INBOX.api.2 1 5\r\nhello\r\n" + no_responders
            + b"-ERR 'Authorization Violation'\r\n")
    msgs, controls = parser.feed(data)
    assert msgs == []
    assert [c.kind for c in controls] == [Kind.INFO, Kind.PING, Kind.PONG, Kind.OK, Kind.REPLY,
                                          Kind.REPLY, Kind.ERROR]
    assert (controls[4].subject, controls[4].data) == ("_INBOX.api.2", b"hello")
    assert controls[5].status == 503
    assert controls[6].text == "Authorization Violation"


def test_garbage_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        Parser().feed(b"HELLO there\r\n")
    parser = Parser()
    parser.follow(2)
    with pytest.raises(ProtocolError):
        parser.feed(b"MSG ev.1 2 not.an.ack 1\r\nx\r\n")


def test_ack_metadata_v1_and_v2() -> None:
    assert ack_metadata(b"$JS.ACK.EV.c.1.10.4.123.7") == (10, 4, 123, 7)
    assert ack_metadata(b"$JS.ACK.dom.acchash.EV.c.1.10.4.123.7.tok") == (10, 4, 123, 7)


def test_pub_frames() -> None:
    assert pub("a.b") == b"PUB a.b 0\r\n\r\n"
    assert pub("a.b", b"xy", reply="r.1") == b"PUB a.b r.1 2\r\nxy\r\n"
