"""The schema, as one versioned list of migrations written for both dialects.

Append new migrations at the end with the next version number; never edit a released one. Each
migration carries its SQLite text (`sql`) and, where the dialects differ, its PostgreSQL text
(`postgres`): the two must leave the same tables, columns and rules behind, so the code above the
database reads and writes both alike. PostgreSQL types are chosen to behave like SQLite's: REAL is
DOUBLE PRECISION (timestamps in seconds need the precision), ids are BIGINT identities.

The audit trail is append-only on both, enforced by the database itself (triggers), so no bug or
hand-typed statement can rewrite history.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    postgres: str | None = None  # None: `sql` is valid on PostgreSQL too

    def text_for(self, dialect: str) -> str:
        return self.postgres if dialect == "postgresql" and self.postgres is not None else self.sql


# An append-only table on PostgreSQL: every UPDATE, DELETE and TRUNCATE fails with this function.
_PG_APPEND_ONLY = """
        CREATE FUNCTION callbot_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
        END
        $$;
"""


def _pg_append_only(table: str) -> str:
    return f"""
        CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION callbot_append_only();
        CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION callbot_append_only();
"""


MIGRATIONS: list[Migration] = [
    Migration(
        1,
        "idempotency claims",
        """
        CREATE TABLE claims (
            key TEXT PRIMARY KEY,
            claimed_at REAL NOT NULL
        );
        CREATE INDEX claims_by_time ON claims (claimed_at)
        """,
        postgres="""
        CREATE TABLE claims (
            key TEXT PRIMARY KEY,
            claimed_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX claims_by_time ON claims (claimed_at)
        """,
    ),
    Migration(
        2,
        "audit trail and followed calls",
        """
        CREATE TABLE audit_attempts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            team_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            origin TEXT NOT NULL,
            repeat_of INTEGER REFERENCES audit_attempts (id),
            number_masked TEXT NOT NULL,
            number_hash TEXT,
            flow TEXT NOT NULL,
            flow_id TEXT,
            caller_id TEXT,
            decision TEXT NOT NULL,
            reason TEXT
        );
        CREATE INDEX audit_attempts_by_user ON audit_attempts (team_id, user_id, id);
        CREATE INDEX audit_attempts_by_number ON audit_attempts (team_id, number_hash, id);
        CREATE TRIGGER audit_attempts_no_update BEFORE UPDATE ON audit_attempts
        BEGIN SELECT RAISE(ABORT, 'audit_attempts is append-only'); END;
        CREATE TRIGGER audit_attempts_no_delete BEFORE DELETE ON audit_attempts
        BEGIN SELECT RAISE(ABORT, 'audit_attempts is append-only'); END;

        CREATE TABLE audit_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            attempt_id INTEGER NOT NULL REFERENCES audit_attempts (id),
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            actor_id TEXT,
            reason TEXT,
            session_id TEXT,
            outcome TEXT,
            answered_by TEXT,
            duration_seconds REAL
        );
        CREATE INDEX audit_events_by_attempt ON audit_events (attempt_id, id);
        CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
        BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
        CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
        BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;

        CREATE TABLE audit_keys (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            created_at TEXT NOT NULL
        );

        CREATE TABLE calls (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            attempt_id INTEGER REFERENCES audit_attempts (id),
            created_at REAL NOT NULL,
            team_id TEXT NOT NULL,
            requester_id TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            parent_ts TEXT,
            status_ts TEXT,
            e164 TEXT,
            number_masked TEXT NOT NULL,
            flow_id TEXT NOT NULL,
            flow_name TEXT NOT NULL,
            caller_id TEXT,
            placement TEXT NOT NULL,
            note TEXT,
            session_id TEXT UNIQUE,
            state TEXT NOT NULL,
            following INTEGER NOT NULL,
            answered INTEGER NOT NULL DEFAULT 0,
            answered_by TEXT,
            outcome TEXT,
            duration_seconds REAL,
            hung_up_by TEXT,
            called_again_by TEXT,
            shown_digest TEXT,
            marked INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX calls_being_followed ON calls (following)
        """,
        postgres=_PG_APPEND_ONLY + """
        CREATE TABLE audit_attempts (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            at TEXT NOT NULL,
            team_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            origin TEXT NOT NULL,
            repeat_of BIGINT REFERENCES audit_attempts (id),
            number_masked TEXT NOT NULL,
            number_hash TEXT,
            flow TEXT NOT NULL,
            flow_id TEXT,
            caller_id TEXT,
            decision TEXT NOT NULL,
            reason TEXT
        );
        CREATE INDEX audit_attempts_by_user ON audit_attempts (team_id, user_id, id);
        CREATE INDEX audit_attempts_by_number ON audit_attempts (team_id, number_hash, id);

        CREATE TABLE audit_events (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            attempt_id BIGINT NOT NULL REFERENCES audit_attempts (id),
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            actor_id TEXT,
            reason TEXT,
            session_id TEXT,
            outcome TEXT,
            answered_by TEXT,
            duration_seconds DOUBLE PRECISION
        );
        CREATE INDEX audit_events_by_attempt ON audit_events (attempt_id, id);

        CREATE TABLE audit_keys (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            created_at TEXT NOT NULL
        );

        CREATE TABLE calls (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            attempt_id BIGINT REFERENCES audit_attempts (id),
            created_at DOUBLE PRECISION NOT NULL,
            team_id TEXT NOT NULL,
            requester_id TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            parent_ts TEXT,
            status_ts TEXT,
            e164 TEXT,
            number_masked TEXT NOT NULL,
            flow_id TEXT NOT NULL,
            flow_name TEXT NOT NULL,
            caller_id TEXT,
            placement TEXT NOT NULL,
            note TEXT,
            session_id TEXT UNIQUE,
            state TEXT NOT NULL,
            following INTEGER NOT NULL,
            answered INTEGER NOT NULL DEFAULT 0,
            answered_by TEXT,
            outcome TEXT,
            duration_seconds DOUBLE PRECISION,
            hung_up_by TEXT,
            called_again_by TEXT,
            shown_digest TEXT,
            marked INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX calls_being_followed ON calls (following);
        """ + _pg_append_only("audit_attempts") + _pg_append_only("audit_events"),
    ),
    Migration(
        3,
        "rate limits and pending confirmations",
        # Numbers are kept as an HMAC under a random key made here (see bot/calls/limits.py), never
        # in clear; pending confirmations hold the request until it is confirmed, cancelled or
        # expires.
        """
        CREATE TABLE hash_keys (
            name TEXT PRIMARY KEY,
            key TEXT NOT NULL
        );
        INSERT INTO hash_keys (name, key) VALUES ('phone_number', lower(hex(randomblob(32))));
        CREATE TABLE rate_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            user_key TEXT NOT NULL,
            number_key TEXT NOT NULL,
            flow_id TEXT NOT NULL
        );
        CREATE INDEX rate_events_by_time ON rate_events (at);
        CREATE INDEX rate_events_by_user ON rate_events (user_key, at);
        CREATE INDEX rate_events_by_number ON rate_events (number_key, at);
        CREATE TABLE pending_confirmations (
            id TEXT PRIMARY KEY,
            created_at REAL NOT NULL,
            user_id TEXT NOT NULL,
            reasons TEXT NOT NULL,
            request TEXT NOT NULL
        );
        CREATE INDEX pending_confirmations_by_time ON pending_confirmations (created_at)
        """,
        postgres="""
        CREATE TABLE hash_keys (
            name TEXT PRIMARY KEY,
            key TEXT NOT NULL
        );
        INSERT INTO hash_keys (name, key)
            VALUES ('phone_number', md5(gen_random_uuid()::text) || md5(gen_random_uuid()::text));
        CREATE TABLE rate_events (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            at DOUBLE PRECISION NOT NULL,
            user_key TEXT NOT NULL,
            number_key TEXT NOT NULL,
            flow_id TEXT NOT NULL
        );
        CREATE INDEX rate_events_by_time ON rate_events (at);
        CREATE INDEX rate_events_by_user ON rate_events (user_key, at);
        CREATE INDEX rate_events_by_number ON rate_events (number_key, at);
        CREATE TABLE pending_confirmations (
            id TEXT PRIMARY KEY,
            created_at DOUBLE PRECISION NOT NULL,
            user_id TEXT NOT NULL,
            reasons TEXT NOT NULL,
            request TEXT NOT NULL
        );
        CREATE INDEX pending_confirmations_by_time ON pending_confirmations (created_at)
        """,
    ),
    Migration(
        4,
        "on-call overrides",
        """
        CREATE TABLE oncall_overrides (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id TEXT NOT NULL,
            replaces TEXT NOT NULL,
            taken_by TEXT NOT NULL,
            starts_at REAL NOT NULL,
            ends_at REAL NOT NULL
        );
        CREATE INDEX oncall_overrides_by_end ON oncall_overrides (ends_at)
        """,
        postgres="""
        CREATE TABLE oncall_overrides (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            user_id TEXT NOT NULL,
            replaces TEXT NOT NULL,
            taken_by TEXT NOT NULL,
            starts_at DOUBLE PRECISION NOT NULL,
            ends_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX oncall_overrides_by_end ON oncall_overrides (ends_at)
        """,
    ),
    Migration(
        5,
        "on-call escalations",
        """
        CREATE TABLE escalations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            request_key TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            team_id TEXT NOT NULL,
            requester_id TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            thread_ts TEXT,
            message_ts TEXT,
            origin TEXT NOT NULL,
            flow_id TEXT NOT NULL,
            flow_name TEXT NOT NULL,
            reason TEXT,
            answer_timeout REAL NOT NULL,
            people TEXT NOT NULL,
            step INTEGER NOT NULL DEFAULT 0,
            step_started_at REAL,
            step_deadline REAL,
            step_call_id INTEGER REFERENCES calls (id),
            state TEXT NOT NULL,
            answered_by TEXT,
            stopped_by TEXT,
            finished_at REAL,
            shown_digest TEXT
        );
        CREATE INDEX escalations_by_state ON escalations (state);

        CREATE TABLE escalation_steps (
            escalation_id INTEGER NOT NULL REFERENCES escalations (id),
            step INTEGER NOT NULL,
            user_id TEXT NOT NULL,
            outcome TEXT NOT NULL,
            number_masked TEXT,
            call_id INTEGER,
            detail TEXT,
            PRIMARY KEY (escalation_id, step)
        )
        """,
        postgres="""
        CREATE TABLE escalations (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            request_key TEXT NOT NULL UNIQUE,
            created_at DOUBLE PRECISION NOT NULL,
            team_id TEXT NOT NULL,
            requester_id TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            thread_ts TEXT,
            message_ts TEXT,
            origin TEXT NOT NULL,
            flow_id TEXT NOT NULL,
            flow_name TEXT NOT NULL,
            reason TEXT,
            answer_timeout DOUBLE PRECISION NOT NULL,
            people TEXT NOT NULL,
            step INTEGER NOT NULL DEFAULT 0,
            step_started_at DOUBLE PRECISION,
            step_deadline DOUBLE PRECISION,
            step_call_id BIGINT REFERENCES calls (id),
            state TEXT NOT NULL,
            answered_by TEXT,
            stopped_by TEXT,
            finished_at DOUBLE PRECISION,
            shown_digest TEXT
        );
        CREATE INDEX escalations_by_state ON escalations (state);

        CREATE TABLE escalation_steps (
            escalation_id BIGINT NOT NULL REFERENCES escalations (id),
            step INTEGER NOT NULL,
            user_id TEXT NOT NULL,
            outcome TEXT NOT NULL,
            number_masked TEXT,
            call_id BIGINT,
            detail TEXT,
            PRIMARY KEY (escalation_id, step)
        )
        """,
    ),
    Migration(
        6,
        "one key for phone number hashes; rate_events.user_id",
        # The audit trail's key stays (its hashes are kept for years and can't be recomputed); the
        # limits' own key goes, so rate events recorded before this migration no longer match a
        # number (the per-number limit and the repeat question start afresh, for one window).
        # rate_events.user_key always held the raw Slack user id: the name now says so.
        """
        DROP TABLE hash_keys;
        ALTER TABLE audit_keys RENAME TO hash_keys;
        ALTER TABLE rate_events RENAME COLUMN user_key TO user_id
        """,
    ),
    Migration(
        7,
        "escalations end on an acknowledgement; the page each person got in Slack",
        # Escalations started before this ran under the old rule (the call connecting ends them):
        # ack_mode 'answer' keeps it for them.
        """
        ALTER TABLE escalations ADD COLUMN ack_mode TEXT NOT NULL DEFAULT 'answer';
        ALTER TABLE escalations ADD COLUMN acknowledged_by TEXT;
        ALTER TABLE escalations ADD COLUMN acknowledged_at REAL;
        ALTER TABLE escalations ADD COLUMN acknowledged_via TEXT;
        ALTER TABLE escalations ADD COLUMN acknowledged_step INTEGER;

        CREATE TABLE escalation_pages (
            escalation_id INTEGER NOT NULL REFERENCES escalations (id),
            step INTEGER NOT NULL,
            user_id TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            message_ts TEXT NOT NULL,
            link TEXT,
            shown_digest TEXT,
            PRIMARY KEY (escalation_id, step)
        );
        CREATE INDEX escalations_by_requester ON escalations (requester_id, created_at)
        """,
        postgres="""
        ALTER TABLE escalations ADD COLUMN ack_mode TEXT NOT NULL DEFAULT 'answer';
        ALTER TABLE escalations ADD COLUMN acknowledged_by TEXT;
        ALTER TABLE escalations ADD COLUMN acknowledged_at DOUBLE PRECISION;
        ALTER TABLE escalations ADD COLUMN acknowledged_via TEXT;
        ALTER TABLE escalations ADD COLUMN acknowledged_step INTEGER;

        CREATE TABLE escalation_pages (
            escalation_id BIGINT NOT NULL REFERENCES escalations (id),
            step INTEGER NOT NULL,
            user_id TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            message_ts TEXT NOT NULL,
            link TEXT,
            shown_digest TEXT,
            PRIMARY KEY (escalation_id, step)
        );
        CREATE INDEX escalations_by_requester ON escalations (requester_id, created_at)
        """,
    ),
    Migration(
        8,
        "leases and replicas",
        # Who runs what: one lease per followed call or running escalation, held by one replica and
        # renewed while it lives; another takes the work over once the lease has expired.
        """
        CREATE TABLE leases (
            kind TEXT NOT NULL,
            row_id INTEGER NOT NULL,
            owner TEXT NOT NULL,
            expires_at REAL NOT NULL,
            PRIMARY KEY (kind, row_id)
        );
        CREATE INDEX leases_by_owner ON leases (owner);
        CREATE TABLE replicas (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            started_at REAL NOT NULL,
            seen_at REAL NOT NULL
        )
        """,
        postgres="""
        CREATE TABLE leases (
            kind TEXT NOT NULL,
            row_id BIGINT NOT NULL,
            owner TEXT NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (kind, row_id)
        );
        CREATE INDEX leases_by_owner ON leases (owner);
        CREATE TABLE replicas (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            started_at DOUBLE PRECISION NOT NULL,
            seen_at DOUBLE PRECISION NOT NULL
        )
        """,
    ),
]
