"""PostgreSQL's side of the rate limits (bot/calls/limits.py): check every window and take a slot
in one statement, holding only the locks of what it counts.

Counting a window and then recording the attempt must not interleave with another attempt that
counts the same window, or two racing requests (on any replica) could both take the last slot. On
SQLite `BEGIN IMMEDIATE` already runs one writer at a time. On PostgreSQL the checks and the insert
run inside this function (one round trip; each statement in a PL/pgSQL function sees every attempt
committed before it), under advisory locks held until the transaction that takes the slot ends:

- the requester's and the number's own locks (taken in the order of their keys, so that two
  attempts never wait for each other): attempts by one person, or to one number, take turns;
  attempts by other people to other numbers don't wait for them;
- the per_day window counts every call, so it has a lock for all, the one every writing
  transaction took before migration 10 (a replica not yet updated and an updated one still
  exclude each other's attempts). It is taken shared, so attempts don't wait for each other,
  while the window is far from full: more than `max_connections` slots left. Each attempt in
  flight holds a connection and takes one slot, so attempts that no lock orders can't overfill
  it. Closer to the limit it is taken exclusively and every attempt takes its turn.

A lock held across round trips to a busy bot makes every attempt it covers wait for the last one's
event loop (1,000 calls: seconds); these are held for one statement in the common case, or until
the dialling transaction that takes the slot commits, and then only by the attempts that share a
person or a number.

Since migration 11 the dialling transaction is itself one statement, `callbot_write_together`
(below; bot/storage/together.py): it takes the slot with this function and writes the call's rows,
so the slot's locks are held for that one statement, never across a round trip to the bot.
"""

from __future__ import annotations

LIMITS_LOCK = 0x63616C6C  # "call"; per schema (hashtext(current_schema()) is mixed in)

# Arguments: now; the requester, the number's key, the flow; since when a call of the same three is
# a repeat (NULL: not asked); the age past which attempts are cleared; then (count, seconds) of the
# per_user, per_number and per_day windows. One row back: (scope, at, NULL) for the first window
# that refuses (scope 'repeat' with the last such call's time, or the window's name with the time of
# the attempt that must leave it first), else (NULL, NULL, the new slot's id).
RATE_SLOT_FUNCTION = f"""
        CREATE FUNCTION callbot_rate_slot(
            p_now DOUBLE PRECISION, p_user TEXT, p_number TEXT, p_flow TEXT,
            p_repeat_since DOUBLE PRECISION, p_forget_before DOUBLE PRECISION,
            p_user_count INTEGER, p_user_seconds DOUBLE PRECISION,
            p_number_count INTEGER, p_number_seconds DOUBLE PRECISION,
            p_day_count INTEGER, p_day_seconds DOUBLE PRECISION
        ) RETURNS TABLE (refused_by TEXT, refused_at DOUBLE PRECISION, slot_id BIGINT)
        LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
            found_at DOUBLE PRECISION;
            new_id BIGINT;
            user_lock BIGINT := hashtextextended(current_schema() || ' user ' || p_user, 0);
            number_lock BIGINT := hashtextextended(current_schema() || ' number ' || p_number, 0);
            in_day BIGINT;
        BEGIN
            PERFORM pg_advisory_xact_lock(LEAST(user_lock, number_lock));
            PERFORM pg_advisory_xact_lock(GREATEST(user_lock, number_lock));
            SELECT count(*) INTO in_day FROM rate_events AS e WHERE e.at > p_now - p_day_seconds;
            IF in_day + current_setting('max_connections')::INTEGER < p_day_count THEN
                PERFORM pg_advisory_xact_lock_shared(hashtext(current_schema()), {LIMITS_LOCK});
            ELSE
                PERFORM pg_advisory_xact_lock(hashtext(current_schema()), {LIMITS_LOCK});
            END IF;
            -- Attempts past every window; those another attempt is clearing are left to it.
            DELETE FROM rate_events AS e WHERE e.id IN (
                SELECT old.id FROM rate_events AS old WHERE old.at <= p_forget_before
                FOR UPDATE SKIP LOCKED);
            IF p_repeat_since IS NOT NULL THEN
                SELECT MAX(e.at) INTO found_at FROM rate_events AS e
                    WHERE e.user_id = p_user AND e.number_key = p_number AND e.flow_id = p_flow
                    AND e.at > p_repeat_since;
                IF found_at IS NOT NULL THEN
                    RETURN QUERY SELECT 'repeat'::TEXT, found_at, NULL::BIGINT;
                    RETURN;
                END IF;
            END IF;
            SELECT e.at INTO found_at FROM rate_events AS e
                WHERE e.at > p_now - p_user_seconds AND e.user_id = p_user
                ORDER BY e.at DESC LIMIT 1 OFFSET p_user_count - 1;
            IF FOUND THEN
                RETURN QUERY SELECT 'per_user'::TEXT, found_at, NULL::BIGINT;
                RETURN;
            END IF;
            SELECT e.at INTO found_at FROM rate_events AS e
                WHERE e.at > p_now - p_number_seconds AND e.number_key = p_number
                ORDER BY e.at DESC LIMIT 1 OFFSET p_number_count - 1;
            IF FOUND THEN
                RETURN QUERY SELECT 'per_number'::TEXT, found_at, NULL::BIGINT;
                RETURN;
            END IF;
            SELECT e.at INTO found_at FROM rate_events AS e
                WHERE e.at > p_now - p_day_seconds
                ORDER BY e.at DESC LIMIT 1 OFFSET p_day_count - 1;
            IF FOUND THEN
                RETURN QUERY SELECT 'per_day'::TEXT, found_at, NULL::BIGINT;
                RETURN;
            END IF;
            INSERT INTO rate_events (at, user_id, number_key, flow_id)
                VALUES (p_now, p_user, p_number, p_flow) RETURNING id INTO new_id;
            RETURN QUERY SELECT NULL::TEXT, NULL::DOUBLE PRECISION, new_id;
        END
        $$
"""

# The writes before a call's POST in one statement (bot/storage/together.py). Arguments:
# callbot_rate_slot's as a JSON array (NULL: no slot is taken), and the rows as a JSON array of
# {"table", "values": {column: value}, "ids": {column: table of an earlier row}}, each row whole
# but its id (a column left out is NULL, not its default; a table not named below is refused).
# One row back: the slot's answer (as callbot_rate_slot's) and, unless it was refused, the rows
# inserted (each as a JSON object of all its columns), in order. A row refused raises, and the
# statement with everything it wrote is undone.
WRITE_TOGETHER_FUNCTION = """
        CREATE FUNCTION callbot_write_together(p_slot JSONB, p_rows JSONB)
        RETURNS TABLE (refused_by TEXT, refused_at DOUBLE PRECISION, slot_id BIGINT,
                       inserted JSONB)
        LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
            v_refused_by TEXT;
            v_refused_at DOUBLE PRECISION;
            v_slot_id BIGINT;
            v_row JSONB;
            v_values JSONB;
            v_new JSONB;
            v_ids JSONB := '{}';
            v_inserted JSONB := '[]';
        BEGIN
            IF p_slot IS NOT NULL THEN
                SELECT s.refused_by, s.refused_at, s.slot_id
                    INTO v_refused_by, v_refused_at, v_slot_id
                    FROM callbot_rate_slot(
                        (p_slot->>0)::DOUBLE PRECISION, p_slot->>1, p_slot->>2, p_slot->>3,
                        (p_slot->>4)::DOUBLE PRECISION, (p_slot->>5)::DOUBLE PRECISION,
                        (p_slot->>6)::INTEGER, (p_slot->>7)::DOUBLE PRECISION,
                        (p_slot->>8)::INTEGER, (p_slot->>9)::DOUBLE PRECISION,
                        (p_slot->>10)::INTEGER, (p_slot->>11)::DOUBLE PRECISION) AS s;
                IF v_refused_by IS NOT NULL THEN
                    RETURN QUERY SELECT v_refused_by, v_refused_at, NULL::BIGINT, NULL::JSONB;
                    RETURN;
                END IF;
            END IF;
            FOR v_row IN SELECT r.value FROM jsonb_array_elements(p_rows) AS r LOOP
                v_values := v_row->'values';
                SELECT v_values || COALESCE(jsonb_object_agg(i.key, v_ids->(i.value#>>'{}')),
                                            '{}')
                    INTO v_values FROM jsonb_each(v_row->'ids') AS i;
                -- One static statement per table (its plan is kept for the session, where a
                -- statement built here would be planned anew for every row): the row comes
                -- whole from the bot, and its id, if it has one, from the table's identity.
                CASE v_row->>'table'
                    WHEN 'audit_attempts' THEN
                        INSERT INTO audit_attempts AS new OVERRIDING USER VALUE SELECT r.*
                            FROM jsonb_populate_record(NULL::audit_attempts, v_values) AS r
                            RETURNING to_jsonb(new) INTO v_new;
                    WHEN 'calls' THEN
                        INSERT INTO calls AS new OVERRIDING USER VALUE SELECT r.*
                            FROM jsonb_populate_record(NULL::calls, v_values) AS r
                            RETURNING to_jsonb(new) INTO v_new;
                    WHEN 'leases' THEN
                        INSERT INTO leases AS new SELECT r.*
                            FROM jsonb_populate_record(NULL::leases, v_values) AS r
                            RETURNING to_jsonb(new) INTO v_new;
                END CASE;
                v_ids := v_ids || jsonb_build_object(v_row->>'table', v_new->'id');
                v_inserted := v_inserted || jsonb_build_array(v_new);
            END LOOP;
            RETURN QUERY SELECT NULL::TEXT, NULL::DOUBLE PRECISION, v_slot_id, v_inserted;
        END
        $$
"""

# Migration 18: what a request's claim keeps for its requester until its call's row is written
# (bot/calls/untold.py; NULL: nothing to tell), and the few notes kept found without reading every
# claim (the literal predicate, as calls_dialling's).
UNTOLD_COLUMN = """
        ALTER TABLE claims ADD COLUMN untold TEXT;
        CREATE INDEX claims_untold ON claims (key) WHERE untold IS NOT NULL
"""

# The writes before a call's POST for a request whose claim keeps a note (bot/storage/together.py):
# callbot_write_together's arguments, then the claim's key and its note as written. The note is
# locked first and cleared once the rows are written, in the same statement. A note not there as
# written (a take-over round has told the requester the call was not placed: this replica stalled
# meanwhile) writes nothing and answers 'told'; a slot refused leaves the note as it was.
WRITE_TOGETHER_UNTOLD_FUNCTION = """
        CREATE FUNCTION callbot_write_together(p_slot JSONB, p_rows JSONB, p_key TEXT,
                                               p_untold TEXT)
        RETURNS TABLE (refused_by TEXT, refused_at DOUBLE PRECISION, slot_id BIGINT,
                       inserted JSONB)
        LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
            v_written RECORD;
        BEGIN
            PERFORM 1 FROM claims AS c WHERE c.key = p_key AND c.untold = p_untold FOR UPDATE;
            IF NOT FOUND THEN
                RETURN QUERY SELECT 'told'::TEXT, NULL::DOUBLE PRECISION, NULL::BIGINT,
                                    NULL::JSONB;
                RETURN;
            END IF;
            SELECT w.refused_by AS w_refused_by, w.refused_at AS w_refused_at,
                   w.slot_id AS w_slot_id, w.inserted AS w_inserted
                INTO v_written FROM callbot_write_together(p_slot, p_rows) AS w;
            IF v_written.w_refused_by IS NULL THEN
                UPDATE claims AS c SET untold = NULL WHERE c.key = p_key;
            END IF;
            RETURN QUERY SELECT v_written.w_refused_by, v_written.w_refused_at,
                                v_written.w_slot_id, v_written.w_inserted;
        END
        $$
"""
