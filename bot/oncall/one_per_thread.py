"""One running escalation per Slack thread: a second Escalate to on-call on a message of a thread
whose chain is still paging (two responders on one incident, one person in two tabs) starts
nothing, and its requester is told whose escalation is running there.

Decided in the transaction that writes the new escalation's row (`EscalationStore.create`), as
the requester's own limit is (bot/oncall/escalation_limit.py): alone on SQLite; on PostgreSQL under
an advisory lock of the thread, taken after the requester's, so two submissions on any replica
decide one after the other. Only a chain still dialling (`running`) holds its thread: one being
stopped or acknowledged calls nobody new, and one that ended leaves the thread free for another.
A repeat of the same request (its `request_key`) is not counted against itself.
"""

from __future__ import annotations

from typing import Any

from bot.storage.database import POSTGRESQL, Connection

RUNNING = "running"  # EscalationState.RUNNING


class ThreadBusy(Exception):
    """`create` refused the row: escalation `escalation_id`, by `requester_id`, runs in the
    thread."""

    def __init__(self, escalation_id: int, requester_id: str) -> None:
        super().__init__(escalation_id, requester_id)
        self.escalation_id = escalation_id
        self.requester_id = requester_id


async def check_thread_free(conn: Connection, dialect: str, values: dict[str, Any]) -> None:
    """ThreadBusy if another escalation runs in the thread of the row `values` (team_id,
    channel_id, thread_ts, request_key); in the transaction that then writes the row."""
    where = (values["team_id"], values["channel_id"], values["thread_ts"])
    if dialect == POSTGRESQL:
        # A statement of its own, so that the read after it sees what was committed meanwhile.
        await conn.fetchone(
            "SELECT pg_advisory_xact_lock(hashtextextended("
            "current_schema() || ' escalations in ' || ? || ' ' || ? || ' ' || ?, 0))",
            where,
        )
    row = await conn.fetchone(
        "SELECT id, requester_id FROM escalations WHERE team_id = ? AND channel_id = ?"
        " AND thread_ts = ? AND state = ? AND request_key <> ? ORDER BY id LIMIT 1",
        (*where, RUNNING, values["request_key"]),
    )
    if row is not None:
        raise ThreadBusy(int(row["id"]), str(row["requester_id"]))
