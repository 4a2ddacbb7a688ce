"""The package's small error tree.

Every error says what went wrong *and* what to do about it (``hint``). Services send
errors over the wire as ``(code, message)``; :data:`BY_CODE` turns them back into these
classes in the SDK, so a caller catches the same types locally and remotely.
"""

from __future__ import annotations

from typing import ClassVar


class OpenWeightsError(Exception):
    """Base of every error openweights raises on purpose."""

    code: ClassVar[str] = "error"
    hint: ClassVar[str] = "see the message"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def advice(self) -> str:
        """What to do, shown after the message: the class's hint, unless the message
        already names the command that helps (in backquotes); then nothing, so that no
        advice is given twice."""
        return "" if "`" in self.message else self.hint


class InvalidRequest(OpenWeightsError, ValueError):
    """The request itself is wrong: fix the named field or value and send it again."""

    code = "invalid"
    hint = "fix the named field and retry"


# What lists each kind of object a NotFound names first ("file 'file-…' not found").
_LISTED_BY = {
    "job": "check the job id; `ow ls` lists your jobs",
    "run": "check the run id; `ow show <job id>` lists a job's runs",
    "file": "check the file id; `ow events <job id>` names the files a job returned, "
            "`ow files upload` stores a new one",
    "worker": "check the worker id; `ow show <job id>` names the worker of each run",
    "token": "check the token id; `ow token ls` lists your tokens",
    "secret": "check the name; `ow env ls` lists your secrets",
    "upload": "start the upload again",
}


class NotFound(OpenWeightsError, KeyError):
    """No such object in your organization: check its id (``ow ls`` lists jobs, ``ow
    token ls`` tokens, ``ow env ls`` secrets)."""

    code = "not_found"
    hint = "check the id"

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message

    def advice(self) -> str:
        """The command that lists the kind of object the message names."""
        if "`" in self.message:
            return ""
        return _LISTED_BY.get(self.message.split(" ", 1)[0], self.hint)


class Conflict(OpenWeightsError):
    """The object changed state meanwhile: refresh it and decide again."""

    code = "conflict"
    hint = "refresh the object and retry if it still makes sense"


class IllegalTransition(Conflict):
    """A command does not apply in the aggregate's current state (named in the message)."""

    code = "illegal_transition"

    def __init__(self, aggregate: str, state: str, command: str, detail: str = "",
                 message: str | None = None) -> None:
        self.aggregate, self.state, self.command = aggregate, state, command
        extra = f": {detail}" if detail else ""
        super().__init__(message or f"{aggregate} in state '{state}' cannot accept "
                         f"{command}{extra}")


class Fenced(Conflict):
    """A worker spoke for a run it no longer owns; its update was ignored. Nothing to do."""

    code = "fenced"


class ConcurrencyConflict(Conflict):
    """Another writer appended to the same aggregate first; re-read it and decide again."""

    code = "concurrency_conflict"
    retryable = True


class Forbidden(OpenWeightsError, PermissionError):
    """Your credentials do not allow this: use a token with the needed role."""

    code = "forbidden"
    hint = "use a token of the right organization and role"


class AuthenticationError(OpenWeightsError):
    """The API token is unknown, revoked or expired: set OPENWEIGHTS_API_KEY to a valid
    one (`ow token ls` shows each token's status, `ow token create` makes a new one)."""

    code = "unauthenticated"
    hint = ("set OPENWEIGHTS_API_KEY to a valid token (`ow token ls` shows each token's "
            "status, `ow token create` makes a new one)")


class UnknownToken(AuthenticationError):
    """This stack has no such token (a typo, another stack's, or one never created)."""

    code = "unknown_token"
    hint = ("check OPENWEIGHTS_API_KEY (`ow token ls` with a working token lists your "
            "organization's tokens)")


class RevokedToken(AuthenticationError):
    """An admin revoked this token: use another one, or ask an admin for a new one."""

    code = "revoked_token"
    hint = "ask an admin of your organization for a new token (`ow token create`)"


class ExpiredToken(AuthenticationError):
    """The token is past its expiry: mint a new one."""

    code = "expired_token"
    hint = "mint a new token with `ow token create --expires 30d`"


class Unavailable(OpenWeightsError, ConnectionError):
    """A service did not answer in time; the SDK retries these, you may retry too."""

    code = "unavailable"
    hint = "retry; check that `ow up` (or your deployment) is running"
    retryable = True


class RateLimited(Unavailable):
    """Sent faster than this organization's or this run's limit: slow down (the SDK
    retries with backoff, so a burst only waits)."""

    code = "rate_limited"
    hint = "send less often; the message says when to retry"


class StackUnavailable(Unavailable):
    """The openweights stack is not reachable: start it with `ow up` or set OW_NATS_URL."""

    code = "stack_unavailable"


class PayloadTooLarge(InvalidRequest):
    """The request exceeds the size limit: upload large data as a file and pass its id."""

    code = "too_large"


class ReplyTooLarge(OpenWeightsError):
    """An answer would not fit in one message of the server: ask for less (a smaller
    ``limit``, fewer ``keys``) or read the large value through its own paged call."""

    code = "reply_too_large"
    hint = "ask for less, or read the large value page by page"


class SpendingLimitReached(Forbidden):
    """What this organization or token spent reached its spending limit: nothing new is
    accepted until an admin raises it (`ow cost limit set`); `ow cost` shows the spend."""

    code = "spending_limit"
    hint = "an admin raises the limit with `ow cost limit set`; `ow cost` shows the spend"


class NotConnected(OpenWeightsError, RuntimeError):
    """The async client knows its organization once connected: ``await aow.connect()``
    (or make any call) before reading ``organization_id``, ``org_name`` or ``hf_org``."""

    code = "not_connected"
    hint = "await aow.connect() first"


class SecretKeyMissing(OpenWeightsError):
    """No key to encrypt secrets with: set OW_SECRET_KEY (`ow up` creates one locally)."""

    code = "secret_key_missing"
    hint = "set OW_SECRET_KEY (`ow up` creates one locally)"


BY_CODE: dict[str, type[OpenWeightsError]] = {
    cls.code: cls
    for cls in (
        OpenWeightsError, InvalidRequest, NotFound, Conflict, IllegalTransition, Fenced,
        ConcurrencyConflict, Forbidden, AuthenticationError, UnknownToken, RevokedToken,
        ExpiredToken, Unavailable, StackUnavailable,
        RateLimited,
        PayloadTooLarge, ReplyTooLarge, SecretKeyMissing, NotConnected, SpendingLimitReached,
    )
}


def from_wire(code: str, message: str) -> OpenWeightsError:
    """Rebuild a typed error received from a service (unknown codes stay generic)."""
    cls = BY_CODE.get(code, OpenWeightsError)
    if cls is IllegalTransition:
        err = Conflict.__new__(IllegalTransition)
        OpenWeightsError.__init__(err, message)
        return err
    return cls(message)
