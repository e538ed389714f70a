"""`callbot check`: the database is reachable, writable, and migrated or migratable by the bot."""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from pathlib import Path

from bot.config.settings import Settings, database_url
from bot.ops.checkup import Checkup
from bot.ops.findings import Finding, at_most, failed, passed, skipped
from bot.ops.migrate_db import TABLES
from bot.storage.backend import DatabaseUrlError, check_url
from bot.storage.database import MIGRATIONS, POSTGRESQL, Database, dialect_of, sqlite_path
from bot.storage.leases import LEASES_MIGRATION, Replica, replicas_alive


async def check_database(c: Checkup) -> list[Finding]:
    subject = "Database"
    if c.settings is not None:
        url, lease_seconds = c.settings.database_url, c.settings.lease_seconds
    else:  # another setting is wrong: DATABASE_URL, read alone, is checked all the same
        try:
            url = database_url(**c.overrides)
            check_url(url)
        except DatabaseUrlError:  # its own ✗ is among the settings' lines
            return skipped(subject, "not checked (fix DATABASE_URL first)")
        lease_seconds = float(Settings.model_fields["lease_seconds"].default)
    latest = max((m.version for m in MIGRATIONS), default=0)
    if dialect_of(url) == POSTGRESQL:
        return await _check_postgres(url, latest, lease_seconds)
    raw = sqlite_path(url)
    if raw == ":memory:":
        return passed(subject, "in memory: nothing is kept across restarts (set DATABASE_URL to "
                               "a file to keep call history and limits)")
    path = Path(raw)
    if not path.exists():
        parent = _existing_ancestor(path.parent)
        if os.access(parent, os.W_OK | os.X_OK):
            return passed(subject, f"{path} does not exist yet; the bot creates and migrates it "
                                   "at start-up")
        return failed(subject, f"{path} does not exist and {parent} is not writable",
                      "give the bot's user write access there, or point DATABASE_URL elsewhere "
                      "(in the container image: a volume at /data)")
    if not os.access(path, os.R_OK | os.W_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
        return failed(subject, f"{path} or its directory is not writable for this user",
                      "give the bot's user read and write access to the file and its directory")
    db = Database(url)
    try:
        await db.open_read_only()
        await db.fetchone("SELECT 1")
        version = await db.schema_version()
        alive = await _replicas(db, version, lease_seconds)
    except Exception as exc:  # sqlite3 errors say what is wrong with the file, nothing secret
        return failed(subject, f"{path} can't be read as a database ({exc})",
                      "point DATABASE_URL at callbot's database, or move this file away so the bot "
                      "creates a new one")
    finally:
        await db.close()
    return _schema_finding(str(path), version, latest, "back the file up first: callbot backup",
                           alive)


async def _check_postgres(url: str, latest: int, lease_seconds: float) -> list[Finding]:
    subject = "Database"
    where = without_password(url)
    db = Database(url)
    try:
        await db.open_read_only()
        version = await db.schema_version()
        alive = await _replicas(db, version, lease_seconds)
        cannot = await _why_it_may_not_migrate(db) if version < latest else None
        missing = await _missing_privileges(db) if version == latest else None
    except Exception as exc:  # the driver's words say what failed (refused, auth, no database)
        return failed(subject, f"{where} can't be reached ({type(exc).__name__}: "
                               f"{without_password(str(exc))})",
                      "check DATABASE_URL (host, port, user, password, database name) and that "
                      "PostgreSQL accepts connections from here")
    finally:
        await db.close()
    backup = "take a backup first: pg_dump"
    if missing:
        return failed(subject, f"{where} is migrated, but {missing}",
                      "as the tables' owner, run README's GRANT statements (Databases) again: a "
                      "migration's new tables are not covered by the GRANTs run before it")
    if cannot is not None:
        return failed(subject, f"{where} is at schema version {version}; this callbot needs "
                               f"{latest}, and {cannot}",
                      f"start this callbot once as the role that owns the tables (it migrates "
                      f"them at start-up; {backup}), then the bots as this one (README: "
                      "Databases)")
    return _schema_finding(where, version, latest, backup, alive)


async def _why_it_may_not_migrate(db: Database) -> str | None:
    """Why this role can't apply the migrations at start-up (README, "Databases": the bots may
    run as a role that owns nothing, the owner migrating after each upgrade); None if it can."""
    row = await db.fetchone(
        "SELECT current_user, current_schema(),"
        " COALESCE(has_schema_privilege(current_schema(), 'CREATE'), false),"
        " array(SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        "  WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
        "  AND NOT pg_has_role(c.relowner, 'USAGE') ORDER BY 1),"
        " (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        "  WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p'))")
    assert row is not None
    user, schema, may_create, not_owned, tables = row[0], row[1], row[2], list(row[3]), row[4]
    if not_owned:
        owns = ("it owns none of its tables" if len(not_owned) == tables else
                f"it does not own {at_most(not_owned)}")
        return f"{user} may not migrate it ({owns})"
    if not may_create:
        return f"{user} may not migrate it (it may not create tables in schema {schema})"
    return None


# What the bots do with each table (README, "Databases": the audit trail only read and added to).
_APPEND_ONLY = ("audit_attempts", "audit_events")
_ROWS_CHANGED = (*(t for t in TABLES if t not in _APPEND_ONLY), "leases", "replicas")


async def _missing_privileges(db: Database) -> str | None:
    """What this role may not do to the rows of a table the bots use, in words; None when
    nothing. A role owning nothing was granted what the tables were when its GRANTs ran."""
    rows = await db.fetchall(
        "SELECT current_user, t.name, string_agg(p.priv, ', ' ORDER BY p.n)"
        " FROM unnest(?::text[], ?::int[]) AS t(name, append_only)"
        " CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE'])"
        "  WITH ORDINALITY AS p(priv, n)"
        " WHERE to_regclass(t.name) IS NOT NULL AND (t.append_only = 0 OR p.n <= 2)"
        " AND NOT has_table_privilege(to_regclass(t.name), p.priv)"
        " GROUP BY t.name ORDER BY t.name",
        ([*_APPEND_ONLY, *_ROWS_CHANGED], [1] * len(_APPEND_ONLY) + [0] * len(_ROWS_CHANGED)))
    if not rows:
        return None
    said = at_most([f"{row[2]} {row[1]}" for row in rows], sep="; ", more="more tables")
    return f"{rows[0][0]} may not {said}"


async def _replicas(db: Database, version: int, lease_seconds: float) -> list[Replica]:
    if version < LEASES_MIGRATION:
        return []
    return await replicas_alive(db, lease_seconds, time.time())


def _schema_finding(
    where: str, version: int, latest: int, backup: str, alive: list[Replica]
) -> list[Finding]:
    subject = "Database"
    if version > latest:
        return failed(subject, f"{where} is at schema version {version}, newer than this callbot "
                               f"knows ({latest})",
                      "run the callbot version that migrated it (or a newer one)")
    running = ", ".join(f"{r.id} (up since {_utc(r.started_at)})" for r in alive) or "none"
    if version < latest:
        # An upgrade's check before its first start, or a first start on PostgreSQL: the bot
        # migrates it then (a gate on this check would otherwise never let it start).
        return passed(subject, f"{where} is reachable, at schema version {version}; the bot "
                               f"migrates it to {latest} at start-up ({backup}); replicas alive: "
                               f"{running}")
    return passed(subject, f"{where} is reachable and migrated (schema version {version}); "
                           f"replicas alive: {running}")


def _utc(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def without_password(text: str) -> str:
    """`postgresql://bot:secret@db/callbot` → `postgresql://bot:•••@db/callbot`.

    Up to the @ before the host: the first @ that the next /, ?, # or the URL's end follows with
    no @ between. So a password holding an unencoded @ or / is hidden whole, and a URL whose query
    holds an @ still shows its host. Only one with an @ and then a / in its password would show
    part of it, and DATABASE_URL and migrate-db refuse those (check_url). A password given as a
    query parameter (`?password=…`, libpq's and asyncpg's other place for it; `sslpassword`, the
    client key's) is hidden up to the next parameter."""
    return _QUERY_PASSWORD.sub(r"\1•••", _PASSWORD.sub(r"\1•••@", text))


_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)\S*?@(?=[^@/?#\s]*(?:[/?#\s]|$))")
_QUERY_PASSWORD = re.compile(r"([?&](?:ssl)?password=)[^&#\s]*", re.IGNORECASE)


def _existing_ancestor(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
