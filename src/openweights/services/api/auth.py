"""Who is asking, and may they? The principal comes from the request's subject.

With auth on, NATS permissions (granted by the auth callout) let a connection publish
only under its own token id, so the subject's principal is unforgeable; this module
then checks the token is live, belongs to the subject's organization, and has the
role the endpoint needs. With auth off (a stack without tokens) every caller is an
admin of the subject's organization.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from openweights.domain.token import TokenState
from openweights.errors import AuthenticationError, Forbidden
from openweights.events import Actor

ADMIN_ONLY = frozenset({"tokens.create", "tokens.list", "tokens.revoke", "secrets.set",
                        "secrets.show", "secrets.remove", "costs.limit.set"})
# What a worker's credentials may do: its own runs, its machine, the files its jobs need.
WORKER = frozenset({"agent.register", "agent.run.start", "agent.run.end", "agent.run.uploaded",
                    "agent.stopped", "agent.ttl", "agent.secrets", "files.upload.begin",
                    "files.upload.chunk", "files.upload.end", "files.upload.abort",
                    "files.get", "files.read", "run.log", "jobs.get", "logs.read",
                    "models.get"})


class Principal(msgspec.Struct, frozen=True):
    org: str
    id: str
    role: str  # admin | user | worker
    worker_id: str | None = None

    @property
    def actor(self) -> Actor:
        return Actor("agent" if self.role == "worker" else "client", self.id)


def resolve(auth: bool, org: str, principal: str, token: TokenState | None,
            now: datetime | None = None) -> Principal:
    if not auth:
        return Principal(org=org, id=principal, role="admin")
    now = now or datetime.now(UTC)
    if token is None or token.org != org or not token.usable(now):
        # Same answer for unknown, other-org, revoked and expired: reveal nothing.
        raise AuthenticationError("this token is unknown, revoked or expired")
    return Principal(org=org, id=token.id, role=token.role, worker_id=token.worker_id)


def check_endpoint(p: Principal, endpoint: str) -> None:
    if p.role in ("admin", "service"):
        return
    if p.role == "worker":
        if endpoint not in WORKER:
            raise Forbidden(f"worker credentials cannot call {endpoint}")
        return
    if endpoint in ADMIN_ONLY or endpoint.startswith("agent."):
        raise Forbidden(f"{endpoint} needs an admin token (`ow token create --role admin`)")


def check_worker(p: Principal, worker_id: str) -> None:
    """A worker token speaks only for its own worker."""
    if p.role == "worker" and p.worker_id != worker_id:
        raise Forbidden(f"these credentials belong to worker {p.worker_id!r}, not {worker_id!r}")
