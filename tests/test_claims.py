"""Claims (bot/storage/claims.py): the first claim of a key wins, later ones lose until it expires;
on both databases (PostgreSQL runs its two statements without a transaction around them)."""

from __future__ import annotations

from bot.storage.claims import CLAIM_LIFETIME_SECONDS, Claims
from bot.storage.database import Database


async def test_a_key_is_claimed_once_until_its_claim_expires(db: Database) -> None:
    now = [1_000_000.0]
    claims = Claims(db, clock=lambda: now[0])
    assert await claims.claim("k")
    assert not await claims.claim("k")
    assert await claims.claim("other")
    now[0] += CLAIM_LIFETIME_SECONDS + 1
    assert await claims.claim("k")  # the expired claim was cleared, and the key is free again
    assert not await claims.claim("k")
    row = await db.fetchone("SELECT count(*) FROM claims")
    assert row is not None and int(row[0]) == 1
