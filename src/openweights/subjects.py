"""Subject and stream names: one place, parameterised by the namespace.

- ``<ns>.<org>.<kind>.<id>``: the history of one aggregate (stream ``<NS>_EVENTS``).
  The high-volume run events of every run of a job live on ``<ns>.<org>.run.<job_id>``:
  the same stream, but not the job's own subject, so a job's history stays short while
  one wildcard (``<ns>live.<org>.*.<job_id>``) still follows a job and all its runs.
- ``<ns>live.<org>.<kind>.<id>``: the same messages republished by JetStream with
  their stream sequence in headers: what clients subscribe to for live data.
- ``<ns>log.<org>.<worker_id>.<run_id>``: a job's output lines (stream ``<NS>_LOGS``,
  aged out), published by the agent: a worker's credentials allow only its own worker
  id, so a run's lines are those under the worker that holds the run.
- ``<ns>logkept.<org>.<worker_id>.<run_id>``: where those lines are stored. No stream
  takes ``<ns>log`` itself: the api's log gate keeps each line within its run's and
  organization's limits here (and acknowledges it to a publisher that asked, as the
  stream would), so what a worker publishes reaches the disk only through the gate.
- ``<ns>hb.<org>.<worker_id>``: heartbeats (stream ``<NS>_HEARTBEATS``, last one kept).
- ``<ns>api.<org>.<principal>.<endpoint>``: requests to the api service. The principal
  (a token id) is part of the subject so NATS permissions make it unforgeable.
- ``<ns>whoami.<principal>``: which organization and role a token has.
- ``<ns>refused.<principal>``: why a token was refused (the only subject a refused
  connection may publish to, see :mod:`openweights.refusal`).
- ``<ns>agent.<org>.<worker_id>``: assignments to one agent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from openweights.errors import InvalidRequest

# A subject token: no dots, wildcards or whitespace; bounded length.
_TOKEN = re.compile(r"^[^.*>\s]{1,200}$")


def check_token(value: str, what: str = "id") -> str:
    """``value`` if it can be one token of a subject, else :class:`InvalidRequest` naming
    ``what``. The one check for every id that becomes part of a subject (the api's
    request decoders run it on each id field, see :mod:`openweights.api.protocol`)."""
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):  # "$" passes "a\n"
        raise InvalidRequest(
            f"{what} {value!r} is not usable: it must be 1-200 characters without "
            "dots, '*', '>' or whitespace"
        )
    return value


@dataclass(frozen=True)
class Subjects:
    ns: str = "ow"

    @property
    def stream_prefix(self) -> str:
        return self.ns.upper().replace("-", "_")

    # streams
    @property
    def events_stream(self) -> str:
        return f"{self.stream_prefix}_EVENTS"

    @property
    def logs_stream(self) -> str:
        return f"{self.stream_prefix}_LOGS"

    @property
    def heartbeats_stream(self) -> str:
        return f"{self.stream_prefix}_HEARTBEATS"

    # aggregate subjects
    def aggregate(self, org: str, kind: str, agg_id: str) -> str:
        return f"{self.ns}.{check_token(org, 'organization')}.{kind}.{check_token(agg_id)}"

    def job(self, org: str, job_id: str) -> str:
        return self.aggregate(org, "job", job_id)

    def run(self, org: str, job_id: str) -> str:
        """Run events (metrics, files) of every run of job ``job_id``."""
        return self.aggregate(org, "run", job_id)

    def worker(self, org: str, worker_id: str) -> str:
        return self.aggregate(org, "worker", worker_id)

    def file(self, org: str, file_id: str) -> str:
        return self.aggregate(org, "file", file_id)

    @property
    def all_events(self) -> str:
        return f"{self.ns}.*.*.*"

    def state_filter(self, kinds: Iterable[str]) -> list[str]:
        """The histories of every aggregate of ``kinds``, in every organization."""
        return [f"{self.ns}.*.{k}.*" for k in kinds]

    # live, logs, heartbeats, rpc
    @property
    def live_prefix(self) -> str:
        return f"{self.ns}live"

    def live(self, org: str, kind: str = "*", agg_id: str = "*") -> str:
        return f"{self.live_prefix}.{org}.{kind}.{agg_id}"

    def log(self, org: str, run_id: str, worker_id: str) -> str:
        return (f"{self.ns}log.{check_token(org, 'organization')}."
                f"{check_token(worker_id, 'worker id')}.{check_token(run_id)}")

    def kept_log(self, org: str, run_id: str, worker_id: str) -> str:
        """Where the log gate stores the lines that ``log(...)`` takes in."""
        return f"{self.kept_log_prefix}{self.log(org, run_id, worker_id)[len(self.ns) + 3:]}"

    @property
    def kept_log_prefix(self) -> str:
        return f"{self.ns}logkept"

    @property
    def all_kept_logs(self) -> str:
        return f"{self.ns}logkept.*.*.*"

    def live_log(self, org: str, run_id: str, worker_id: str) -> str:
        """One run's lines as they are stored. Read a run's lines only under the worker
        that holds it (stored or live): a worker may publish under its own id with any
        run id, so another run's id in its subjects proves nothing."""
        return (f"{self.ns}livelog.{check_token(org, 'organization')}."
                f"{check_token(worker_id, 'worker id')}.{check_token(run_id)}")

    @property
    def all_logs(self) -> str:
        return f"{self.ns}log.*.*.*"

    def heartbeat(self, org: str, worker_id: str) -> str:
        return f"{self.ns}hb.{org}.{worker_id}"

    @property
    def all_heartbeats(self) -> str:
        return f"{self.ns}hb.*.*"

    def api(self, org: str, principal: str, endpoint: str) -> str:
        return f"{self.ns}api.{org}.{principal}.{endpoint}"

    def whoami(self, principal: str) -> str:
        return f"{self.ns}whoami.{principal}"

    def refusal(self, principal: str) -> str:
        return f"{self.ns}refused.{principal}"

    def agent(self, org: str, worker_id: str) -> str:
        return f"{self.ns}agent.{org}.{worker_id}"

    @staticmethod
    def parse(subject: str) -> tuple[str, str, str]:
        """``(org, kind, id)`` of an aggregate subject."""
        _, org, kind, agg_id = subject.split(".", 3)
        return org, kind, agg_id
