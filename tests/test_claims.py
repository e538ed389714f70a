"""Claims (bot/storage/claims.py): the first claim of a key wins, later ones lose until it expires;
on both databases (PostgreSQL: one statement; expired claims of other keys cleared now and then)."""

from __future__ import annotations

import time

from bot.storage.claims import CLAIM_LIFETIME_SECONDS, CLAIM_PURGE_EVERY_SECONDS, Claims
from bot.storage.database import Connection, Database
from tests.round_trips import Counting


async def test_a_key_is_claimed_once_until_its_claim_expires(db: Database) -> None:
    now = [1_000_000.0]
    claims = Claims(db, clock=lambda: now[0])
    assert await claims.claim("k")
    assert not await claims.claim("k")
    assert await claims.claim("other")
    now[0] += 3600  # a redelivery, a retry or a double click an hour later still finds it
    assert not await claims.claim("k")
    now[0] += CLAIM_LIFETIME_SECONDS - 3600 + 1
    assert await claims.claim("k")  # the expired claim was cleared, and the key is free again
    assert not await claims.claim("k")
    row = await db.fetchone("SELECT count(*) FROM claims")
    assert row is not None and int(row[0]) == 1


async def test_a_claim_is_one_round_trip_once_expired_claims_were_cleared(db: Database) -> None:
    now = [1_000_000.0]
    counting = Counting(db)
    claims = Claims(counting, clock=lambda: now[0])  # type: ignore[arg-type]
    assert await claims.claim("a")
    counting.trips.clear()
    for key in ("b", "c", "a"):
        await claims.claim(key)
    assert len(counting.trips) == 3, counting.trips
    # Now and then the expired claims of other keys are cleared: one more trip.
    now[0] += CLAIM_PURGE_EVERY_SECONDS
    counting.trips.clear()
    assert await claims.claim("d")
    assert len(counting.trips) == (2 if db.dialect == "postgresql" else 1)


async def test_a_claim_is_granted_again_to_its_holder_and_to_nobody_else(db: Database) -> None:
    # A holder whose claim committed but whose answer was lost asks again and is granted it.
    claims = Claims(db)
    assert await claims.claim("k", holder="first try")
    assert await claims.claim("k", holder="first try")
    assert not await claims.claim("k", holder="someone else")
    assert not await claims.claim("k")
    assert await claims.claim("unnamed")
    assert not await claims.claim("unnamed")  # without a holder, never granted twice
    assert not await claims.claim("unnamed", holder="first try")


async def test_what_a_claim_guards_is_written_once_and_its_later_claims_are_refused(
    db: Database,
) -> None:
    """A post kept in the outbox with its claim (`then`): a second delivery of the same request
    is refused, and the post is not written a second time (Slack would show it twice)."""
    claims = Claims(db)
    written: list[str] = []

    async def keep_the_post(conn: Connection) -> None:
        written.append("post")

    assert await claims.claim("k", then=keep_the_post)
    assert not await claims.claim("k", then=keep_the_post)
    assert not await claims.claim("k", holder="someone else", then=keep_the_post)
    assert written == ["post"]


async def test_a_claim_from_before_holders_is_granted_to_nobody(db: Database) -> None:
    # Written as a callbot from before migration 15 writes it: no holder.
    await db.execute("INSERT INTO claims (key, claimed_at) VALUES (?, ?)", ("old", time.time()))
    claims = Claims(db)
    assert not await claims.claim("old", holder="a retry")
    assert not await claims.claim("old")


async def test_a_claim_taken_over_lives_a_full_lifetime_from_the_takeover(db: Database) -> None:
    now = [1_000_000.0]
    claims = Claims(db, clock=lambda: now[0])
    assert await claims.claim("step", holder="a replica that died")
    now[0] += CLAIM_LIFETIME_SECONDS - 60
    async with db.transaction() as tx:
        await claims.take_over_in(tx, "step", holder="the replica that took over")
    now[0] += 120  # past the first claim's lifetime, well within the takeover's
    assert not await claims.claim("step", holder="anyone else")
    assert await claims.holder("step") == "the replica that took over"
