"""A requester's own escalation limit (`[oncall] escalations_per_person`), counted in the database.

The count that decides is made in the transaction writing the escalation's row
(`EscalationStore.create(limit=...)`), as the calls' rate limits are (bot/calls/limits.py): alone
on SQLite; on PostgreSQL under the requester's advisory lock, so two submissions by one person, on
any replica, count one after the other. The form's early check (`oldest_in_the_way`) only spares the
common case a trip through the start.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.storage.database import POSTGRESQL, Connection


@dataclass(frozen=True)
class OwnLimit:
    """At most `count` escalations by the requester created after `since` (Unix time): one
    created exactly a window ago has left it, as a call has left the calls' windows."""

    count: int
    since: float


class OwnLimitReached(Exception):
    """`create` refused the row: its requester has started `OwnLimit.count` already; the one
    that must leave the window before another fits was created at `oldest`."""

    def __init__(self, requester_id: str, oldest: float) -> None:
        super().__init__(requester_id)
        self.oldest = oldest


async def oldest_in_the_way(conn: Connection, requester_id: str, since: float, count: int,
                            *, besides: str | None = None) -> float | None:
    """When the escalation by `requester_id` that must leave the window (since `since`) before
    one more fits was created: the `count`-th newest; None if there are fewer. The window is
    open at its old end (as bot/calls/limits.py's): at the instant a refusal names, one fits."""
    row = await conn.fetchone(
        "SELECT created_at FROM escalations WHERE requester_id = ? AND created_at > ?"
        " AND request_key <> ? ORDER BY created_at DESC LIMIT 1 OFFSET ?",
        (requester_id, since, besides or "", count - 1),
    )
    return float(row["created_at"]) if row is not None else None


async def check_within(conn: Connection, dialect: str, limit: OwnLimit, requester_id: str,
                       request_key: str) -> None:
    """OwnLimitReached if the requester's other escalations since `limit.since` number
    `limit.count` already; in the transaction that then writes the row."""
    if dialect == POSTGRESQL:
        # Like rate_slot.py's per-user lock, in a namespace of its own; a statement of its own,
        # so that the count after it reads what was committed while it waited.
        await conn.fetchone(
            "SELECT pg_advisory_xact_lock("
            "hashtextextended(current_schema() || ' escalations by ' || ?, 0))",
            (requester_id,),
        )
    oldest = await oldest_in_the_way(conn, requester_id, limit.since, limit.count,
                                     besides=request_key)
    if oldest is not None:
        raise OwnLimitReached(requester_id, oldest)
