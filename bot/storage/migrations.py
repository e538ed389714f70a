"""The schema, as one versioned list of migrations, each written once for both dialects.

Append new migrations at the end with the next version number; never edit a released one
(tests/test_migrations.py holds a checksum of every released text, per dialect). Both dialects must
leave the same tables, columns and rules behind, so the code above the database reads and writes
both alike. A migration is written once, naming in braces where the dialects differ
(bot/storage/written_once.py says how).

The audit trail is append-only on both, enforced by the database itself (triggers), so no bug or
hand-typed statement can rewrite history (bot/storage/append_only.py).
"""

from __future__ import annotations

from bot.storage.append_only import PG_APPEND_ONLY, pg_append_only, sqlite_append_only
from bot.storage import rate_slot
from bot.storage.written_once import Migration

__all__ = ["MIGRATIONS", "Migration"]

MIGRATIONS: list[Migration] = [
    Migration.written_once(
        1,
        "idempotency claims",
        """
        CREATE TABLE claims (
            key TEXT PRIMARY KEY,
            claimed_at {float} NOT NULL
        );
        CREATE INDEX claims_by_time ON claims (claimed_at)
        """,
    ),
    Migration.written_once(
        2,
        "audit trail and followed calls",
        """{append_only_function}
        CREATE TABLE audit_attempts (
            id {id},
            at TEXT NOT NULL,
            team_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            origin TEXT NOT NULL,
            repeat_of {id_ref} REFERENCES audit_attempts (id),
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
{audit_attempts_append_only}
        CREATE TABLE audit_events (
            id {id},
            attempt_id {id_ref} NOT NULL REFERENCES audit_attempts (id),
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            actor_id TEXT,
            reason TEXT,
            session_id TEXT,
            outcome TEXT,
            answered_by TEXT,
            duration_seconds {float}
        );
        CREATE INDEX audit_events_by_attempt ON audit_events (attempt_id, id);
{audit_events_append_only}
        CREATE TABLE audit_keys (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            created_at TEXT NOT NULL
        );

        CREATE TABLE calls (
            id {id},
            attempt_id {id_ref} REFERENCES audit_attempts (id),
            created_at {float} NOT NULL,
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
            duration_seconds {float},
            hung_up_by TEXT,
            called_again_by TEXT,
            shown_digest TEXT,
            marked INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX calls_being_followed ON calls (following){end}""",
        # The append-only rules: on SQLite after each table, on PostgreSQL a function first and the
        # triggers last (as released).
        append_only_function=("", PG_APPEND_ONLY),
        audit_attempts_append_only=(sqlite_append_only("audit_attempts"), ""),
        audit_events_append_only=(sqlite_append_only("audit_events"), ""),
        end=("\n        ", ";\n        " + pg_append_only("audit_attempts")
             + pg_append_only("audit_events")),
    ),
    Migration.written_once(
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
        INSERT INTO hash_keys (name, key){phone_number_key};
        CREATE TABLE rate_events (
            id {id},
            at {float} NOT NULL,
            user_key TEXT NOT NULL,
            number_key TEXT NOT NULL,
            flow_id TEXT NOT NULL
        );
        CREATE INDEX rate_events_by_time ON rate_events (at);
        CREATE INDEX rate_events_by_user ON rate_events (user_key, at);
        CREATE INDEX rate_events_by_number ON rate_events (number_key, at);
        CREATE TABLE pending_confirmations (
            id TEXT PRIMARY KEY,
            created_at {float} NOT NULL,
            user_id TEXT NOT NULL,
            reasons TEXT NOT NULL,
            request TEXT NOT NULL
        );
        CREATE INDEX pending_confirmations_by_time ON pending_confirmations (created_at)
        """,
        phone_number_key=(
            " VALUES ('phone_number', lower(hex(randomblob(32))))",
            "\n            VALUES ('phone_number', md5(gen_random_uuid()::text)"
            " || md5(gen_random_uuid()::text))",
        ),
    ),
    Migration.written_once(
        4,
        "on-call overrides",
        """
        CREATE TABLE oncall_overrides (
            id {id},
            user_id TEXT NOT NULL,
            replaces TEXT NOT NULL,
            taken_by TEXT NOT NULL,
            starts_at {float} NOT NULL,
            ends_at {float} NOT NULL
        );
        CREATE INDEX oncall_overrides_by_end ON oncall_overrides (ends_at)
        """,
    ),
    Migration.written_once(
        5,
        "on-call escalations",
        """
        CREATE TABLE escalations (
            id {id},
            request_key TEXT NOT NULL UNIQUE,
            created_at {float} NOT NULL,
            team_id TEXT NOT NULL,
            requester_id TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            thread_ts TEXT,
            message_ts TEXT,
            origin TEXT NOT NULL,
            flow_id TEXT NOT NULL,
            flow_name TEXT NOT NULL,
            reason TEXT,
            answer_timeout {float} NOT NULL,
            people TEXT NOT NULL,
            step INTEGER NOT NULL DEFAULT 0,
            step_started_at {float},
            step_deadline {float},
            step_call_id {id_ref} REFERENCES calls (id),
            state TEXT NOT NULL,
            answered_by TEXT,
            stopped_by TEXT,
            finished_at {float},
            shown_digest TEXT
        );
        CREATE INDEX escalations_by_state ON escalations (state);

        CREATE TABLE escalation_steps (
            escalation_id {id_ref} NOT NULL REFERENCES escalations (id),
            step INTEGER NOT NULL,
            user_id TEXT NOT NULL,
            outcome TEXT NOT NULL,
            number_masked TEXT,
            call_id {id_ref},
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
    Migration.written_once(
        7,
        "escalations end on an acknowledgement; the page each person got in Slack",
        # Escalations started before this ran under the old rule (the call connecting ends them):
        # ack_mode 'answer' keeps it for them.
        """
        ALTER TABLE escalations ADD COLUMN ack_mode TEXT NOT NULL DEFAULT 'answer';
        ALTER TABLE escalations ADD COLUMN acknowledged_by TEXT;
        ALTER TABLE escalations ADD COLUMN acknowledged_at {float};
        ALTER TABLE escalations ADD COLUMN acknowledged_via TEXT;
        ALTER TABLE escalations ADD COLUMN acknowledged_step INTEGER;

        CREATE TABLE escalation_pages (
            escalation_id {id_ref} NOT NULL REFERENCES escalations (id),
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
    Migration.written_once(
        8,
        "leases and replicas",
        # Who runs what: one lease per followed call or running escalation, held by one replica and
        # renewed while it lives; another takes the work over once the lease has expired.
        """
        CREATE TABLE leases (
            kind TEXT NOT NULL,
            row_id {id_ref} NOT NULL,
            owner TEXT NOT NULL,
            expires_at {float} NOT NULL,
            PRIMARY KEY (kind, row_id)
        );
        CREATE INDEX leases_by_owner ON leases (owner);
        CREATE TABLE replicas (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            started_at {float} NOT NULL,
            seen_at {float} NOT NULL
        )
        """,
    ),
    Migration.written_once(
        9,
        "Slack posts kept until delivered",
        # A post whose result matters (a call's status message, an escalation's thread posts) is
        # written here before it is sent and deleted once delivered: a replica that died with one
        # in flight leaves it to the next start (or another replica), which repairs it.
        """
        CREATE TABLE slack_posts (
            id {id},
            created_at {float} NOT NULL,
            owner TEXT NOT NULL,
            purpose TEXT NOT NULL,
            subject {id_ref},
            channel TEXT NOT NULL,
            thread_ts TEXT NOT NULL,
            broadcast INTEGER NOT NULL DEFAULT 0,
            message TEXT NOT NULL
        );
        CREATE INDEX slack_posts_by_owner ON slack_posts (owner)
        """,
    ),
    # SQLite needs nothing: BEGIN IMMEDIATE already runs one writer at a time.
    Migration(10, "rate limits checked and taken in one statement on PostgreSQL", "",
              postgres=rate_slot.RATE_SLOT_FUNCTION),
    # SQLite needs nothing: the same writes are one BEGIN IMMEDIATE transaction there.
    Migration(11, "the writes before a call's POST in one statement on PostgreSQL", "",
              postgres=rate_slot.WRITE_TOGETHER_FUNCTION),
    Migration(
        12,
        "spooled audit records keep their key",
        # The spool's key (bot/audit/spool.py) is kept with the row it wrote, unique: a record
        # drained again, however much later, writes nothing. A claim (24 h) could not say so.
        """
        ALTER TABLE audit_attempts ADD COLUMN spool_key TEXT;
        ALTER TABLE audit_events ADD COLUMN spool_key TEXT;
        CREATE UNIQUE INDEX audit_attempts_by_spool_key ON audit_attempts (spool_key)
            WHERE spool_key IS NOT NULL;
        CREATE UNIQUE INDEX audit_events_by_spool_key ON audit_events (spool_key)
            WHERE spool_key IS NOT NULL
        """,
    ),
    Migration(
        13,
        "/call history in the order the attempts happened",
        # Newest first by `at` (an ISO time in UTC, always in one format: its text sorts in time),
        # not by id: a record written from the spool came after calls that happened later. Every
        # team's history, one person's, one number's (bot/audit/trail.py: AuditLog.history).
        """
        CREATE INDEX audit_attempts_by_time ON audit_attempts (at, id);
        CREATE INDEX audit_attempts_by_user_time ON audit_attempts (user_id, at, id);
        CREATE INDEX audit_attempts_by_number_time ON audit_attempts (number_hash, at, id);
        DROP INDEX audit_attempts_by_user;
        DROP INDEX audit_attempts_by_number
        """,
    ),
    Migration(
        14,
        "the calls still dialling, found without reading every call",
        # Every lease keeper's round asks for them (bot/calls/follow.py: reconcile_dialling). A row
        # is "dialling" only while its POST is in flight, so this index holds a handful of rows
        # however many calls were ever made. The query names the same literal, not a parameter: a
        # partial index serves only a predicate the planner can match when it plans (SQLite
        # always, PostgreSQL once it plans a prepared statement for any value).
        """
        CREATE INDEX calls_dialling ON calls (id) WHERE placement = 'dialling'
        """,
    ),
    Migration(
        15,
        "who holds a claim, so a claim whose answer was lost is known again by its holder",
        # A claim committed but its answer lost (a connection dropped after COMMIT, a failover) is
        # tried again; without a holder the retry finds the key taken and the page or step it
        # guards is never done by anyone (bot/storage/claims.py). NULL: claimed by a callbot from
        # before this column, or by a caller that never retries.
        """
        ALTER TABLE claims ADD COLUMN holder TEXT
        """,
    ),
    Migration(
        16,
        "why a followed call's session can't be read, for its status message",
        # Set by bot/calls/polling.py after reads fail for CALL_FIND_SECONDS, cleared by the next
        # read: the status message is drawn from the row, after a restart too.
        """
        ALTER TABLE calls ADD COLUMN unreadable TEXT
        """,
    ),
    # Its parent, posted as its POST left: a call found left dialling is told there (follow.py).
    Migration(17, "where a call left being dialled was posted",
              "ALTER TABLE calls ADD COLUMN parent_posted_ts TEXT"),
    # What a request's claim keeps, until its call's row is written, for a take-over round to tell
    # its requester should its replica die first (bot/calls/untold.py); that write clears it.
    Migration(18, "a claimed request's note of whom to tell", rate_slot.UNTOLD_COLUMN,
              postgres=rate_slot.UNTOLD_COLUMN + ";" + rate_slot.WRITE_TOGETHER_UNTOLD_FUNCTION),
    Migration.written_once(
        19,
        "an \"are you sure?\" question in the audit trail",
        # A question asked is an attempt of its own (decision `asked`): its pending row keeps that
        # attempt's id, so whatever ends it (a click, its expiry) is recorded as that attempt's
        # event; the attempt of the request its Call started names it. NULL: asked, or made, by a
        # callbot from before this migration (bot/audit/trail.py, bot/calls/confirmations.py).
        """
        ALTER TABLE pending_confirmations ADD COLUMN attempt_id {id_ref};
        ALTER TABLE audit_attempts ADD COLUMN confirmed_question {id_ref}
            REFERENCES audit_attempts (id)
        """,
    ),
]
