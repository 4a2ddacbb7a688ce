"""The few NATS JWTs an auth callout needs, written by hand on ``nkeys`` + PyNaCl.

A NATS JWT is ``base64url(header).base64url(claims).base64url(ed25519 signature)``,
unpadded, with header ``{"typ":"JWT","alg":"ed25519-nkey"}``. The signer's public nkey
is the ``iss`` claim, so a token carries what is needed to verify it; *whom* to trust
is the caller's decision (the expected issuer prefix, or an exact issuer).

Only the shapes nats-server's auth callout reads are built here (nats-io/jwt v2):
the user claims it places a connection with, and the authorization response.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from typing import Any

import nacl.exceptions
import nacl.signing
import nkeys

from openweights.errors import OpenWeightsError

_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class JwtError(OpenWeightsError):
    """A NATS JWT is malformed, unsigned by its issuer or of the wrong kind."""

    code = "invalid_jwt"
    hint = "check that the sender is a nats-server (or signer) you configured"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _seed(seed: bytes | str) -> bytes:
    return seed.encode() if isinstance(seed, str) else seed


def new_account_seed() -> bytes:
    """A fresh account (``SA...``) seed; nkeys 0.2 has no key generation of its own."""
    return bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT))


def public_key(seed: bytes | str) -> str:
    """The public nkey (``A...`` for an account seed) that signatures verify against."""
    return bytes(nkeys.from_seed(bytearray(_seed(seed))).public_key).decode()


def _claims_hash(claims: dict[str, Any]) -> str:
    # nats-io/jwt sets jti to base32(sha512/256(claims JSON)). The server does not check
    # it; it only has to be unique per token, which the hash (with iat) makes it.
    body = json.dumps({k: v for k, v in claims.items() if k != "jti"}, sort_keys=True)
    digest = hashlib.new("sha512_256", body.encode()).digest()
    return base64.b32encode(digest).rstrip(b"=").decode()


def encode_jwt(claims: dict[str, Any], seed: bytes | str) -> str:
    """Sign ``claims`` with ``seed``; ``iss``, ``iat`` (unless given) and ``jti`` are set here."""
    kp = nkeys.from_seed(bytearray(_seed(seed)))
    body = dict(claims)
    body["iss"] = bytes(kp.public_key).decode()
    body.setdefault("iat", int(time.time()))
    body["jti"] = _claims_hash(body)
    signed = f"{_b64(_json(_HEADER))}.{_b64(_json(body))}"
    return f"{signed}.{_b64(kp.sign(signed.encode()))}"


def _verify_key(public: str) -> nacl.signing.VerifyKey:
    # A public nkey is base32(prefix byte + 32 key bytes + CRC16, little endian).
    try:
        raw = base64.b32decode(public + "=" * (-len(public) % 8))
    except (binascii.Error, ValueError) as exc:
        raise JwtError(f"issuer {public!r} is not a base32 nkey") from exc
    if len(raw) != 35 or not nkeys.valid_public_prefix_byte(raw[0]):
        raise JwtError(f"issuer {public!r} is not a public nkey")
    if nkeys.crc16_checksum(raw[:33]) != raw[33:]:
        raise JwtError(f"issuer {public!r} fails its checksum")
    return nacl.signing.VerifyKey(raw[1:33])


def decode_and_verify(token: str, *, expect_issuer_prefix: str = "N") -> dict[str, Any]:
    """The claims of ``token`` once its issuer's signature checks out.

    ``expect_issuer_prefix`` names the issuer's role: ``N`` (a server, the default, as
    for authorization requests), ``A`` (an account), ``U``, ``O``. Raises
    :class:`JwtError` for anything else: garbled, wrong header, wrong issuer role or a
    signature that does not verify.
    """
    parts = token.strip().split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        raise JwtError("not a JWT: expected three dot-separated parts")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except (binascii.Error, ValueError) as exc:
        raise JwtError(f"not a JWT: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JwtError("not a JWT: header and claims must be JSON objects")
    if str(header.get("typ", "")).upper() != "JWT" or header.get("alg") != "ed25519-nkey":
        raise JwtError(f"unsupported JWT header {header!r}: expected ed25519-nkey")
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not issuer.startswith(expect_issuer_prefix):
        raise JwtError(f"issuer {issuer!r} is not an {expect_issuer_prefix!r} key")
    try:
        _verify_key(issuer).verify(f"{parts[0]}.{parts[1]}".encode(), signature)
    except nacl.exceptions.BadSignatureError as exc:
        raise JwtError(f"signature of issuer {issuer} does not verify") from exc
    except ValueError as exc:  # a signature of the wrong length
        raise JwtError(f"signature of issuer {issuer} is malformed: {exc}") from exc
    return claims


def peek_claims(token: str | bytes) -> dict[str, Any] | None:
    """The claims of ``token`` *without* verifying them, or None if it has none.

    Only for addressing a refusal to a request whose signature failed; never trust them.
    """
    try:
        text = token.decode() if isinstance(token, bytes) else token
        claims = json.loads(_unb64(text.strip().split(".")[1]))
    except (IndexError, UnicodeDecodeError, ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def _permission(allow: list[str], deny: list[str]) -> dict[str, list[str]]:
    # nats-server reads an empty allow list as "no restriction at all"
    # (buildPermissionsFromJwt), so "may do nothing" must be spelled as deny-everything.
    if not allow:
        return {"deny": [">"]}
    return {"allow": list(allow), "deny": list(deny)} if deny else {"allow": list(allow)}


def user_jwt(
    user_nkey: str,
    account: str,
    name: str,
    pub_allow: list[str],
    pub_deny: list[str],
    sub_allow: list[str],
    sub_deny: list[str],
    issuer_seed: bytes | str,
    *,
    expires_at: int | None = None,
) -> str:
    """The user claims placing connection ``user_nkey`` into config-mode ``account``.

    ``aud`` names the account (config mode; ``issuer_account`` is refused there).
    ``name`` shows in server logs and connz as the authorized user. ``expires_at`` (unix
    seconds) becomes ``exp``: the server closes the connection then ("User
    Authentication Expired", which nats-py treats as fatal: no reconnect). So it is only
    for credentials that end then; revocation before it is by KICK.
    """
    nats = {
        "pub": _permission(pub_allow, pub_deny),
        "sub": _permission(sub_allow, sub_deny),
        "subs": -1, "data": -1, "payload": -1,
        "type": "user", "version": 2,
    }
    claims: dict[str, Any] = {"sub": user_nkey, "aud": account, "name": name, "nats": nats}
    if expires_at is not None:
        claims["exp"] = expires_at
    return encode_jwt(claims, issuer_seed)


def authorization_response(
    request_claims: dict[str, Any],
    user_jwt: str | None = None,
    error: str | None = None,
    *,
    issuer_seed: bytes | str,
) -> str:
    """The answer to one authorization request: exactly one of ``user_jwt`` or ``error``.

    The server matches ``sub`` to the connection's nkey and ``aud`` to its own id, so
    both come from the request; the client only ever sees "Authorization Violation",
    while ``error`` lands in the server log.
    """
    if (user_jwt is None) == (error is None):
        raise ValueError("authorization_response needs exactly one of user_jwt or error")
    request = request_claims.get("nats", {})
    nats: dict[str, Any] = {"type": "authorization_response", "version": 2}
    if user_jwt is not None:
        nats["jwt"] = user_jwt
    else:
        nats["error"] = error
    claims = {"sub": request.get("user_nkey", ""),
              "aud": request.get("server_id", {}).get("id", ""), "nats": nats}
    return encode_jwt(claims, issuer_seed)
