"""The audit trail's append-only rules (bot/storage/migrations.py, migration 2): the database itself
refuses to rewrite history, so no bug or hand-typed statement can. Kept apart from the migration
list for its length; the texts are released and frozen (tests/test_migrations.py)."""

from __future__ import annotations


def sqlite_append_only(table: str) -> str:
    """SQLite refuses every UPDATE and DELETE on `table` (it has no TRUNCATE)."""
    return "".join(
        f"        CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table}\n"
        f"        BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;\n"
        for verb in ("UPDATE", "DELETE")
    )


# An append-only table on PostgreSQL: every UPDATE, DELETE and TRUNCATE fails with this function.
PG_APPEND_ONLY = """
        CREATE FUNCTION callbot_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
        END
        $$;
"""


def pg_append_only(table: str) -> str:
    return f"""
        CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION callbot_append_only();
        CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION callbot_append_only();
"""
