"""PostgreSQL's side of the rate limits (bot/calls/limits.py): check every window and take a slot
in one statement, under a lock that only the limits take.

Counting a window and then recording the attempt must not interleave with another attempt's, or two
racing requests (on any replica) could both take the last slot. On SQLite `BEGIN IMMEDIATE` already
runs one writer at a time. On PostgreSQL the checks and the insert run inside this function, called
as one autocommit statement: its advisory lock is taken, the windows counted (each statement in a
PL/pgSQL function sees every attempt committed before it, so the one committed by the previous
holder of the lock too), the slot inserted and the lock let go, all within the server, in one round
trip. A lock held across round trips to a busy bot made every attempt of every replica wait for the
last one's event loop (1,000 calls: seconds); here it is held for well under a millisecond.

The lock key is the one every writing transaction took before migration 10 (0x63616C6C, "call"),
so a replica not yet updated and an updated one still exclude each other's attempts.
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
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtext(current_schema()), {LIMITS_LOCK});
            DELETE FROM rate_events AS e WHERE e.at <= p_forget_before;
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
