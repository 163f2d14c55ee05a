"""Encryption of context at rest (BRIDGE_STORE_ENCRYPTION_KEY): Fernet, with rotation.

The first key encrypts; every listed key decrypts, so rotating is: put a new key first, keep the old
ones until everything written under them has expired (the context and upload TTLs), then drop them.
Records written before encryption was turned on (plain JSON) are still read, so enabling it loses
no conversation; every write after that is encrypted. Once those have expired, turn on
`BRIDGE_STORE_REQUIRE_ENCRYPTION` (`require_sealed`): a plain record then reads as absent, so whoever
can write to Redis (but holds no key) cannot plant a conversation or an upload record.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

_PREFIX = "enc1:"


def new_store_key() -> str:
    """A fresh Fernet key (32 random bytes, url-safe base64)."""
    return Fernet.generate_key().decode("ascii")


class Sealer:
    """Seals and opens the JSON the context store writes."""

    def __init__(self, keys: Sequence[str], *, require_sealed: bool = False) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        try:
            self._fernet = MultiFernet([Fernet(key.encode("ascii")) for key in keys])
        except (ValueError, UnicodeEncodeError):
            raise ValueError("each key must be 32 url-safe base64-encoded bytes (a Fernet key)") from None
        self.require_sealed = require_sealed

    def seal(self, plaintext: str) -> str:
        """The encrypted form of `plaintext`, marked so readers can tell it from plain JSON."""
        return _PREFIX + self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def open(self, stored: str | None) -> str | None:
        """The plaintext of a stored value; None when no configured key opens it (or it is absent).

        A plain (unsealed) value is returned as it is, unless `require_sealed`: then it is None too.
        """
        if stored is None:
            return None
        if not stored.startswith(_PREFIX):
            # Written before encryption was enabled, or planted by someone without a key.
            return None if self.require_sealed else stored
        try:
            return self._fernet.decrypt(stored[len(_PREFIX) :].encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeDecodeError):
            return None
