"""Organization secrets, encrypted at rest with the operator's key (``OW_SECRET_KEY``).

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``): only ciphertext is ever
appended to the log or stored in the read models.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from openweights.errors import InvalidRequest, SecretKeyMissing


def new_key() -> str:
    return Fernet.generate_key().decode()


def load_or_create_key(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = new_key()
    path.write_text(key)
    path.chmod(0o600)
    return key


class SecretBox:
    def __init__(self, key: str | None) -> None:
        self._fernet = Fernet(key.encode()) if key else None

    def _f(self) -> Fernet:
        if self._fernet is None:
            raise SecretKeyMissing("OW_SECRET_KEY is not set: secrets cannot be stored or read")
        return self._fernet

    def encrypt(self, value: str) -> str:
        return self._f().encrypt(value.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._f().decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise InvalidRequest(
                "a stored secret cannot be decrypted with this OW_SECRET_KEY (was the key "
                "changed?); set the secret again") from exc
