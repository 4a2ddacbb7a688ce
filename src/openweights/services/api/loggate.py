"""The log gate: the one way a job's output lines reach the disk.

Agents publish each line to ``<ns>log.<org>.<worker>.<run>``, which no stream stores;
the gate takes it (queue group ``loggate``), cuts a line over ``log_max_msg_bytes``,
and stores it as ``<ns>logkept...`` (stream ``<NS>_LOGS``) if the run's and the
organization's limits allow (:class:`openweights.ratelimit.LogLimits`). A publisher that
asked for an acknowledgement gets the stream's own (the line is stored with the
publisher's reply subject), or a JetStream-shaped error naming the limit; a run over a
limit gets one note a second in its output saying its lines are dropped. An
organization over its size has its oldest lines purged, so it keeps its newest.

Lines of one run are stored in the order the gate receives them, so a stack runs the
gate in one api instance (``OW_LOG_GATE=0`` on the others).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import anyio
import nats.errors
import structlog
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from openweights.config import Settings
from openweights.ratelimit import LogBounds, LogLimits
from openweights.subjects import Subjects

log = structlog.get_logger("api.loggate")
CUT = b" [openweights: line cut]\n"
NOTE_EVERY_S = 1.0
SWEEP_EVERY_S = 60.0


def bounds_of(s: Settings) -> LogBounds:
    return LogBounds(s.log_run_bytes_per_s, s.log_run_burst_bytes, s.log_run_max_bytes,
                     s.log_org_bytes_per_s, s.log_org_burst_bytes, s.log_org_max_bytes)


class LogGate:
    def __init__(self, nc: Client, js: JetStreamContext, settings: Settings,
                 subjects: Subjects, clock: Callable[[], float] = time.monotonic) -> None:
        self.nc, self.js, self.subjects, self.clock = nc, js, subjects, clock
        self.limits = LogLimits(bounds_of(settings))
        self.max_line = settings.log_max_msg_bytes
        self.intake = len(f"{subjects.ns}log")  # the subject's head, before ".<org>..."
        self.noted: dict[str, float] = {}  # run subject -> when a note last went out
        self.swept = clock()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        sub = await self.nc.subscribe(self.subjects.all_logs, queue="loggate", cb=self.on_line,
                                      pending_msgs_limit=100_000,
                                      pending_bytes_limit=256 << 20)
        log.info("loggate.started", intake=self.subjects.all_logs)
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()

    async def on_line(self, msg: Msg) -> None:
        tail = msg.subject[self.intake:]  # ".<org>.<worker>.<run>"
        # A run's budget is keyed by "<worker>.<run>": a worker that sends under another's
        # run id spends its own budget (and those lines are never read: logs.read takes a
        # run's lines from the worker that holds it).
        _, org, run = tail.split(".", 2)
        data = msg.data
        if len(data) > self.max_line:
            data = data[:self.max_line - len(CUT)] + CUT
        now = self.clock()
        why = self.limits.refusal(org, run, len(data), now)
        kept = self.subjects.kept_log_prefix + tail
        if why is None:
            # The stream acknowledges to the publisher's own reply subject, if any.
            await self.nc.publish(kept, data, reply=msg.reply or "")
            if (keep := self.limits.keep_newest(org, len(data))) is not None:
                await self._purge(org, keep)
        else:
            await self._refuse(msg, kept, why, now)
        if now - self.swept > SWEEP_EVERY_S:
            self._sweep(now)

    async def _refuse(self, msg: Msg, kept: str, why: str, now: float) -> None:
        if msg.reply:
            await self.nc.publish(msg.reply, json.dumps({"error": {
                "code": 429, "err_code": 10999,
                "description": f"line dropped: {why}"}}).encode())
        if now - self.noted.get(kept, -NOTE_EVERY_S) >= NOTE_EVERY_S:
            self.noted[kept] = now
            await self.nc.publish(kept, f"[openweights: output dropped: {why}]\n".encode())

    async def _purge(self, org: str, keep: int) -> None:
        """An organization over its size keeps its newest ``keep`` lines."""
        try:
            await self.js.purge_stream(self.subjects.logs_stream,
                                       subject=f"{self.subjects.kept_log_prefix}.{org}.>",
                                       keep=keep)
        except nats.errors.Error as exc:  # JetStream away: the stream's bounds still hold
            log.warning("loggate.purge_failed", org=org, error=str(exc))
        else:
            log.info("loggate.org_over_size", org=org, kept_lines=keep)

    def _sweep(self, now: float) -> None:
        self.swept = now
        self.limits.sweep(now)
        for key in [k for k, at in self.noted.items() if now - at > NOTE_EVERY_S]:
            del self.noted[key]
