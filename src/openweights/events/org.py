"""Events of organizations, API tokens, secrets and files."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from openweights.events.base import Event

TokenRole = Literal["admin", "user", "worker", "service"]


class OrganizationCreated(Event, frozen=True, tag="org.created/1"):
    org: str
    name: str


class TokenCreated(Event, frozen=True, tag="token.created/1"):
    """Only the sha256 of the token and a short display prefix are ever recorded."""

    org: str
    token_id: str
    name: str
    role: TokenRole
    token_hash: str
    token_prefix: str
    expires_at: datetime | None = None
    worker_id: str | None = None


class TokenRevoked(Event, frozen=True, tag="token.revoked/1"):
    org: str
    token_id: str


class SecretSet(Event, frozen=True, tag="secret.set/1"):
    """The value is encrypted with the operator's key before it is appended."""

    org: str
    name: str
    ciphertext: str


class SecretRemoved(Event, frozen=True, tag="secret.removed/1"):
    org: str
    name: str


class FileCreated(Event, frozen=True, tag="file.created/1"):
    org: str
    file_id: str
    filename: str
    purpose: str
    bytes: int
    sha256: str


class SpendingLimitSet(Event, frozen=True, tag="org.spending_limit_set/1"):
    """An admin set the organization's lifetime spending limit (USD; None: no limit).
    Once its accrued spend reaches it, submissions are refused and its work canceled."""

    org: str
    limit_usd: float | None


class TokenSpendingLimitSet(Event, frozen=True, tag="token.spending_limit_set/1"):
    """An admin set a token's lifetime spending limit (USD; None: no limit): what the
    jobs it submitted cost."""

    org: str
    token_id: str
    limit_usd: float | None


ORG_EVENTS = (
    OrganizationCreated, TokenCreated, TokenRevoked, SecretSet, SecretRemoved, FileCreated,
    SpendingLimitSet, TokenSpendingLimitSet,
)
