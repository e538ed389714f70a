"""One keyed hash for phone numbers, shared by the audit trail and the rate limits.

A number is kept as HMAC-SHA256 of its E.164 form, never in clear: the audit trail can find the
records of a number (`/call history +1814…`) and the limits can count calls to it, without either
table saying which number it is. The key is `AUDIT_HASH_KEY` when set, else one generated at first
start and kept in the database (`hash_keys`); hashes made under one key don't match those made under
another, so the key never changes once records exist.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from bot.storage.database import Database

KEY_NAME = "number_hash"
MIN_KEY_BYTES = 16


class NumberHasher:
    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the number hash key must be at least {MIN_KEY_BYTES} bytes")
        self._key = key

    @classmethod
    async def open(cls, db: Database, configured_key: str | None = None) -> NumberHasher:
        """With no configured key, use the database's own, generating it on first use."""
        if configured_key:
            return cls(configured_key.encode())
        return cls(bytes.fromhex(await kept_value(db, KEY_NAME, secrets.token_hex(32))))

    def __call__(self, e164: str) -> str:
        return hmac.new(self._key, e164.encode(), hashlib.sha256).hexdigest()


async def kept_value(db: Database, name: str, new_value: str) -> str:
    """The value the database keeps under `name` in `hash_keys`, `new_value` if it had none yet:
    replicas starting together on one database agree on one value (ON CONFLICT DO NOTHING)."""
    created = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO hash_keys (name, value, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (name, new_value, created),
        )
        row = await tx.fetchone("SELECT value FROM hash_keys WHERE name = ?", (name,))
    assert row is not None
    return str(row[0])
