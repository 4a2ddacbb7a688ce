"""The event log port (``openweights.eventlog.EventLog``): every adapter passes the same
suite. JetStream is the production log; the in-memory log stands in for it in pure
tests of the command path, so it must behave the same way on every clause here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import nats
import pytest

from openweights.adapters.memory import InMemoryEventLog
from openweights.adapters.nats.eventlog import JetStreamEventLog
from openweights.adapters.nats.streams import ensure_streams
from openweights.config import Settings
from openweights.errors import ConcurrencyConflict
from openweights.eventlog import EventLog, StoredMessage
from openweights.events import Actor, OrganizationCreated, SecretRemoved, SecretSet, decode
from openweights.subjects import Subjects

pytestmark = pytest.mark.anyio
AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
BY = Actor("operator", "contract")


@pytest.fixture(params=["jetstream", "memory"])
async def log(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[EventLog]:
    if request.param == "memory":
        yield InMemoryEventLog()
        return
    subjects = Subjects(settings.namespace)
    nc = await nats.connect(settings.nats_url)
    try:
        await ensure_streams(nc.jetstream(), settings, subjects)
        yield JetStreamEventLog(nc, nc.jetstream(), subjects)
    finally:
        await nc.close()


@pytest.fixture
def subjects(settings: Settings) -> Subjects:
    return Subjects(settings.namespace)


def secret_set(name: str, value: str = "c1") -> SecretSet:
    return SecretSet(at=AT, by=BY, org="org-a", name=name, ciphertext=value)


async def read_all(log: EventLog, **kwargs: object) -> list[StoredMessage]:
    out: list[StoredMessage] = []

    async def on_batch(batch: list[StoredMessage]) -> None:
        out.extend(batch)

    await log.read(on_batch, **kwargs)  # type: ignore[arg-type]
    return out


async def test_an_empty_log_has_no_positions(log: EventLog, subjects: Subjects) -> None:
    assert await log.last_seq() == 0
    assert await log.last_subject_seq(subjects.aggregate("org-a", "secret", "X")) == 0
    assert await read_all(log) == []


async def test_appends_get_increasing_positions_and_read_back_in_order(
        log: EventLog, subjects: Subjects) -> None:
    a, b = subjects.aggregate("org-a", "secret", "A"), subjects.aggregate("org-a", "secret", "B")
    first = await log.append(a, [secret_set("A")], expected_last_subject_seq=0)
    second = await log.append(b, [secret_set("B")], expected_last_subject_seq=0)
    third = await log.append(a, [secret_set("A", "c2"), SecretRemoved(
        at=AT, by=BY, org="org-a", name="A")], expected_last_subject_seq=first.seq)
    assert 0 < first.seq < second.seq < third.seq
    assert not (first.duplicate or second.duplicate or third.duplicate)
    assert await log.last_seq() == third.seq
    assert await log.last_subject_seq(a) == third.seq
    assert await log.last_subject_seq(b) == second.seq
    stored = await read_all(log)
    assert [(m.seq, m.subject) for m in stored] == [(first.seq, a), (second.seq, b),
                                                    (third.seq, a)]
    # One message holds one decision: its events, in order, decode as appended.
    assert [e.tag for e in decode(stored[2].data)] == ["secret.set/1", "secret.removed/1"]
    assert all(m.ts_ns > 0 for m in stored)


async def test_a_stale_expected_sequence_appends_nothing(log: EventLog, subjects: Subjects
                                                         ) -> None:
    subject = subjects.aggregate("org-a", "secret", "A")
    first = await log.append(subject, [secret_set("A")], expected_last_subject_seq=0)
    for stale in (0, first.seq + 1):
        with pytest.raises(ConcurrencyConflict):
            await log.append(subject, [secret_set("A", "lost")],
                             expected_last_subject_seq=stale)
    assert await log.last_seq() == first.seq
    # Without an expectation, an append is unconditional.
    later = await log.append(subject, [secret_set("A", "c3")], expected_last_subject_seq=None)
    assert later.seq > first.seq


async def test_a_repeated_message_id_appends_once(log: EventLog, subjects: Subjects) -> None:
    subject = subjects.aggregate("org-a", "secret", "A")
    first = await log.append(subject, [secret_set("A")], expected_last_subject_seq=0,
                             msg_id="request-1")
    # A retry decided on the latest state (or unconditional) is recognised as a duplicate;
    # the expected sequence is checked first, so one decided on a stale state conflicts.
    again = await log.append(subject, [secret_set("A")], expected_last_subject_seq=first.seq,
                             msg_id="request-1")
    assert (again.seq, again.duplicate, first.duplicate) == (first.seq, True, False)
    unconditional = await log.append(subject, [secret_set("A")],
                                     expected_last_subject_seq=None, msg_id="request-1")
    assert (unconditional.seq, unconditional.duplicate) == (first.seq, True)
    with pytest.raises(ConcurrencyConflict):
        await log.append(subject, [secret_set("A")], expected_last_subject_seq=0,
                         msg_id="request-1")
    other = await log.append(subject, [secret_set("A", "c2")], expected_last_subject_seq=first.seq,
                             msg_id="request-2")
    assert other.seq > first.seq and not other.duplicate
    assert len(await read_all(log)) == 2


async def test_reads_filter_by_subject_wildcards_and_start_anywhere(
        log: EventLog, subjects: Subjects) -> None:
    org_subject = subjects.aggregate("org-a", "org", "org-a")
    await log.append(org_subject, [OrganizationCreated(at=AT, by=BY, org="org-a", name="A")],
                     expected_last_subject_seq=0)
    secrets = [(await log.append(subjects.aggregate(org, "secret", name), [secret_set(name)],
                                 expected_last_subject_seq=0)).seq
               for org, name in (("org-a", "A"), ("org-b", "B"), ("org-a", "C"))]
    only_secrets = await read_all(log, filter_subjects=[f"{subjects.ns}.*.secret.*"])
    assert [m.seq for m in only_secrets] == secrets
    of_org_a = await read_all(log, filter_subjects=[f"{subjects.ns}.org-a.>"])
    assert len(of_org_a) == 3 and all(".org-a." in m.subject for m in of_org_a)
    assert [m.seq for m in await read_all(log, start_seq=secrets[1])] == secrets[1:]
    assert await read_all(log, start_seq=secrets[2] + 1) == []


async def test_read_returns_the_last_position_it_delivered(log: EventLog, subjects: Subjects
                                                           ) -> None:
    async def ignore(batch: list[StoredMessage]) -> None:
        return None

    assert await log.read(ignore, start_seq=1) == 0
    seq = (await log.append(subjects.aggregate("org-a", "secret", "A"), [secret_set("A")],
                            expected_last_subject_seq=0)).seq
    assert await log.read(ignore) == seq
    assert await log.read(ignore, start_seq=seq + 1) == seq
