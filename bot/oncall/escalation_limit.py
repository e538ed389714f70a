"""A requester's own escalation limit (`[oncall] escalations_per_person`), counted in the database.

The count that decides is made in the transaction writing the escalation's row
(`EscalationStore.create(limit=...)`), as the calls' rate limits are (bot/calls/limits.py): alone
on SQLite; on PostgreSQL under the requester's advisory lock, so two submissions by one person, on
any replica, count one after the other. The form's early check (`started_by`) only spares the
common case a trip through the start.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.storage.database import POSTGRESQL, Connection


@dataclass(frozen=True)
class OwnLimit:
    """At most `count` escalations by the requester created since `since` (Unix time)."""

    count: int
    since: float


class OwnLimitReached(Exception):
    """`create` refused the row: its requester has started `OwnLimit.count` already."""


async def started_by(conn: Connection, requester_id: str, since: float,
                     *, besides: str | None = None) -> int:
    """How many escalations `requester_id` started since `since`, the one of request key
    `besides` (a repeat of it is ignored, not counted against itself) left out."""
    row = await conn.fetchone(
        "SELECT COUNT(*) AS n FROM escalations"
        " WHERE requester_id = ? AND created_at >= ? AND request_key <> ?",
        (requester_id, since, besides or ""),
    )
    return int(row["n"]) if row is not None else 0


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
    if await started_by(conn, requester_id, limit.since, besides=request_key) >= limit.count:
        raise OwnLimitReached(requester_id)
