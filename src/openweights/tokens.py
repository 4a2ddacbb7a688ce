"""API tokens: ``ow_`` + 48 hex characters, shown once, stored only as a hash.

The token id is derived from the token's hash, so a client knows its own id (it is the
principal in its request subjects) without the server storing anything reversible.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from openweights.errors import AuthenticationError

TOKEN = re.compile(r"^ow_[0-9a-f]{48}$")


def new_token() -> str:
    return "ow_" + secrets.token_hex(24)


def check(token: str) -> str:
    if not isinstance(token, str) or not TOKEN.match(token):
        raise AuthenticationError(
            "OPENWEIGHTS_API_KEY is not an openweights token (expected 'ow_' followed by "
            "48 hex characters); create one with `ow token create`")
    return token


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_id(token: str) -> str:
    """``tok-`` + 16 hex of the hash: safe to show, log and put in subjects."""
    return "tok-" + token_hash(token)[:16]


def token_prefix(token: str) -> str:
    """What lists show: ``ow_`` and the first 8 hex characters."""
    return token[:11]
