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
