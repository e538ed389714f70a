"""`callbot migrate-db POSTGRES_URL`: move a SQLite installation's data to PostgreSQL.

Stop the bot first: the file must not change during the copy, and a copy made while a bot still
writes to it would leave behind whatever it writes next (a call placed, its audit record, a post
still to send). So a bot seen alive on either database (the replicas' heartbeats, as `callbot
check` reads them) refuses the copy, before either database is changed (an older bot still
running would otherwise go on under a schema it doesn't know); so does a database a newer callbot
migrated. Then both are brought to this callbot's schema, the PostgreSQL one must hold no callbot
data yet, and every table is copied in one
transaction (all or nothing), ids kept, so the audit trail, limits, pending confirmations,
overrides, escalations and the Slack posts still to deliver (bot/slack/outbox.py) carry on as they
were; the number hash key comes along, so `/call history` still finds the numbers recorded before,
and so does the database's id, so audit records spooled for the SQLite database are still written
(bot/audit/spool.py). The replicas' heartbeats are not copied: they belong to running processes.
Leases are, each left lapsed as a bot stopping leaves them, so the first bot on PostgreSQL takes
over the work they name (an end Slack refused to show until the bot stopped). Then point
DATABASE_URL at PostgreSQL and start the bots.

Audit records a bot of the SQLite database left in its spool (the database failed, then the bot
stopped) are written into the SQLite database first, as its next start would have: the PostgreSQL
bots' spool is another file (`./callbot.audit-spool` unless AUDIT_SPOOL says), so they would never
be written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from bot.audit.trail import AuditLog
from bot.storage.database import (
    MIGRATIONS, POSTGRESQL, SQLITE, Database, DatabaseUrlError, check_url, dialect_of, sqlite_path,
)
from bot.storage.leases import DEFAULT_LEASE_SECONDS, LEASES_MIGRATION, NOBODY, replicas_alive

# In an order that satisfies the foreign keys.
TABLES = (
    "hash_keys",
    "claims",
    "audit_attempts",
    "audit_events",
    "calls",
    "rate_events",
    "pending_confirmations",
    "oncall_overrides",
    "escalations",
    "escalation_steps",
    "escalation_pages",
    "slack_posts",
)
# Tables whose ids PostgreSQL generates: their counters must start past the copied ids.
GENERATED_IDS = ("audit_attempts", "audit_events", "calls", "rate_events", "oncall_overrides",
                 "escalations", "slack_posts")


class MigrationRefused(Exception):
    """Nothing was copied: the reason, in words for the operator."""


@dataclass
class Moved:
    rows: dict[str, int] = field(default_factory=dict)  # rows copied, per table
    spooled: int = 0  # audit records written from the SQLite database's spool before the copy
    left_in_spool: int = 0  # records of its spool the SQLite database would not take (logged)


async def migrate_db(
    sqlite_url: str, postgres_url: str, spool: Path | None = None, *,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> Moved:
    """Copy every table of the SQLite database into the empty PostgreSQL one, after writing into
    it the audit records waiting in `spool` (its bots' AUDIT_SPOOL). A replica seen within
    `lease_seconds` (the bots' LEASE_SECONDS) on either database is a bot still running there."""
    if dialect_of(sqlite_url) != SQLITE:
        raise MigrationRefused("DATABASE_URL must name the SQLite database to copy (sqlite:///…)")
    if dialect_of(postgres_url) != POSTGRESQL:
        raise MigrationRefused("the target must be a postgresql:// URL")
    try:
        check_url(postgres_url)
    except DatabaseUrlError as exc:
        raise MigrationRefused(f"the target URL: {exc}") from None
    path = sqlite_path(sqlite_url)
    # Opening a file that isn't there would create an empty database, and "copied no rows" would
    # pass for a move.
    if path == ":memory:" or not Path(path).is_file():
        raise MigrationRefused(f"{path} does not exist: check DATABASE_URL (the SQLite database "
                               "to copy)")
    # Before either is migrated: a bot still running there (an older one, its operator running
    # the newer callbot's migrate-db first) would go on under a schema it doesn't know, and refuse
    # to start again once stopped.
    for url, name, then in ((sqlite_url, "SQLite", "stop every bot using it"),
                            (postgres_url, "PostgreSQL", "stop it; start the bots after the copy")):
        await _refuse_a_running_bot(url, name, then, lease_seconds)
    source, target = Database(sqlite_url), Database(postgres_url)
    try:
        await source.open()
        await target.open()
        for table in (*TABLES, "leases"):
            if await target.fetchone(f"SELECT 1 FROM {table} LIMIT 1") is not None:
                raise MigrationRefused(
                    f"the PostgreSQL database already holds callbot data ({table}): copy into an "
                    "empty database"
                )
        moved = Moved()
        if spool is not None and spool.exists():
            waiting = await AuditLog.spool_of(source, spool)
            moved.spooled = await waiting.drain()
            moved.left_in_spool = waiting.held()
        copied = moved.rows
        async with target.transaction() as tx:
            for table in TABLES:
                rows = await source.fetchall(f"SELECT * FROM {table}")
                if rows:
                    columns = list(rows[0].keys())
                    insert = (f"INSERT INTO {table} ({', '.join(columns)})"
                              f" VALUES ({', '.join('?' * len(columns))})")
                    for row in rows:
                        await tx.execute(insert, [row[column] for column in columns])
                copied[table] = len(rows)
            # Each lease left lapsed, as a bot stopping leaves them: the work it names (an end
            # Slack refused to show until the bot stopped) is the first PostgreSQL bot's to take
            # over, as the next start's on the same database (bot/storage/leases.py).
            leases = await source.fetchall("SELECT kind, row_id FROM leases")
            for lease in leases:
                await tx.execute("INSERT INTO leases (kind, row_id, owner, expires_at)"
                                 " VALUES (?, ?, ?, 0)", (lease[0], lease[1], NOBODY))
            copied["leases"] = len(leases)
            for table in GENERATED_IDS:
                await tx.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                )
        return moved
    finally:
        await target.close()
        await source.close()


async def _refuse_a_running_bot(url: str, name: str, then: str, lease_seconds: float) -> None:
    """Read only: a database a newer callbot migrated, or one a bot still runs on, is refused
    before anything is written to it."""
    db = Database(url)
    await db.open_read_only()
    try:
        version = await db.schema_version()
        if version > (known := max(m.version for m in MIGRATIONS)):
            raise MigrationRefused(
                f"the {name} database is at schema version {version}, newer than this callbot "
                f"knows ({known}): run migrate-db of the callbot version that migrated it, or a "
                "newer one")
        if version < LEASES_MIGRATION:  # no replicas table: no bot of it says it runs
            return
        now = time.time()
        alive = await replicas_alive(db, lease_seconds, now)
    finally:
        await db.close()
    if alive:
        seen = ", ".join(f"{r.host} (seen {max(now - r.seen_at, 0):.0f} s ago)" for r in alive)
        raise MigrationRefused(
            f"a bot is running on the {name} database: {seen}; {then}, then run migrate-db again "
            f"(a bot killed rather than stopped is forgotten {lease_seconds:.0f} s after it was "
            "last seen)"
        )
