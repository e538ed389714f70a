"""On-call escalations in the database: each chain's state, and what became of each step.

    escalations        one row per escalation: who asked, where its thread is, the order of
                       people (frozen when it started), the step it is at, that step's deadline
                       (an absolute Unix time) and call, and its state
    escalation_steps   one row per step reached: the person, the outcome, the call placed
    escalation_pages   the direct message each person got when their step began (with I'm on
                       it), so a click on it can be checked and the message edited at the end

The chain is driven from these rows (bot.escalation), so a restarted bot carries on where the last
one stopped. Changes that decide what happens next are compare-and-set (`begin_step`, `advance`,
`set_state`): only one writer wins, however many tasks or clicks race for it.

A requester's own limit is counted in the transaction writing the row (`create(limit=...)`,
bot/oncall/escalation_limit.py).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from bot.oncall.escalation_limit import OwnLimit, check_within, oldest_in_the_way
from bot.oncall.one_per_thread import check_thread_free
from bot.storage.database import Connection, Database
from bot.storage.leases import LAPSED_ROWS


class EscalationState(StrEnum):
    RUNNING = "running"
    STOPPING = "stopping"  # Stop escalation was clicked; the chain winds down (hangs up, says so)
    # Someone acknowledged (I'm on it, or a flow outcome); the chain winds down like STOPPING.
    ACKNOWLEDGING = "acknowledging"
    ACKNOWLEDGED = "acknowledged"
    ANSWERED = "answered"  # `ack = "answer"`: the call connected
    STOPPED = "stopped"
    EXHAUSTED = "exhausted"  # everybody was tried, nobody answered
    FAILED = "failed"  # could not go on: the requester lost the right to escalate (the one cause)


ACTIVE_STATES = frozenset(
    {EscalationState.RUNNING, EscalationState.STOPPING, EscalationState.ACKNOWLEDGING}
)


class StepOutcome(StrEnum):
    CALLING = "calling"
    ANSWERED = "answered"
    ACKNOWLEDGED = "acknowledged"
    NO_ANSWER = "no_answer"  # not answered within answer_timeout
    # Connected but not acknowledged: ended (voicemail, a pocket answer) or still on at the deadline
    NOT_ACKNOWLEDGED = "not_acknowledged"
    ENDED = "ended"  # the call ended unanswered before the timeout
    SKIPPED = "skipped"  # no usable phone number
    FAILED = "failed"  # the call was refused or could not be placed
    # Written by earlier versions for a step claimed by a bot that stopped before recording its
    # call; such a step is now taken over and dialled (bot/oncall/step_claims.py). Still shown.
    UNKNOWN = "unknown"
    STOPPED = "stopped"  # Stop escalation while this step's call was ringing
    CALLED_OFF = "called_off"  # someone else acknowledged while this step's call was ringing


class AckMode(StrEnum):
    """What ends a step (`[oncall] ack`), frozen in each escalation when it starts."""

    ACKNOWLEDGE = "acknowledge"
    ANSWER = "answer"


class AckVia(StrEnum):
    BUTTON = "button"  # I'm on it, on the page or the escalation's message
    OUTCOME = "outcome"  # the call's session outcome is one of `ack_outcomes`
    ANSWER = "answer"  # `ack = "answer"`: the call connected


@dataclass(frozen=True)
class Target:
    """One person in an escalation's order, and why they are in it (rotation, override, …)."""

    user_id: str
    source: str


@dataclass(frozen=True)
class Escalation:
    id: int
    request_key: str
    created_at: float
    team_id: str
    requester_id: str
    channel_id: str
    thread_ts: str | None  # its thread: the message's it was raised on, else the card's
    message_ts: str | None  # its card, once posted (with I'm on it and Stop escalation)
    origin: str
    flow_id: str
    flow_name: str
    reason: str | None
    answer_timeout: float
    people: tuple[Target, ...]
    step: int
    step_started_at: float | None
    step_deadline: float | None
    step_call_id: int | None
    state: str
    answered_by: str | None = None
    stopped_by: str | None = None
    finished_at: float | None = None
    shown_digest: str | None = None
    ack_mode: str = AckMode.ANSWER
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    acknowledged_via: str | None = None
    acknowledged_step: int | None = None

    @property
    def acknowledges(self) -> bool:
        """Whether its steps need an acknowledgement (else the call connecting is enough)."""
        return self.ack_mode == AckMode.ACKNOWLEDGE

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def target(self) -> Target | None:
        """The person of the current step; None once everybody was tried."""
        return self.people[self.step] if self.step < len(self.people) else None


@dataclass(frozen=True)
class Step:
    step: int
    user_id: str
    outcome: str
    number_masked: str | None = None
    call_id: int | None = None
    detail: str | None = None


_COLUMNS = tuple(f.name for f in fields(Escalation))
_UPDATABLE = frozenset(_COLUMNS) - {
    "id", "request_key", "created_at", "team_id", "requester_id", "channel_id", "origin", "people",
    "step", "state",  # changed only by the compare-and-set methods
    "acknowledged_by", "acknowledged_at", "acknowledged_via", "acknowledged_step",  # acknowledge()
}


@dataclass(frozen=True)
class Page:
    """The direct message a person got when their step began."""

    escalation_id: int
    step: int
    user_id: str
    channel_id: str
    message_ts: str
    link: str | None = None  # to the escalation's message
    shown_digest: str | None = None


def _escalation(row: Any) -> Escalation:
    values = {name: row[name] for name in _COLUMNS}
    values["people"] = tuple(Target(str(u), str(s)) for u, s in json.loads(values["people"]))
    return Escalation(**values)


def _step(row: Any) -> Step:
    return Step(**{f.name: row[f.name] for f in fields(Step)})


class EscalationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def db(self) -> Database:
        """The database the rows live in (a step's claim is written beside them)."""
        return self._db

    async def create(
        self, *, people: list[Target],
        then: Callable[[Connection, int], Awaitable[None]] | None = None,
        limit: OwnLimit | None = None, **values: Any,
    ) -> Escalation | None:
        """A new running escalation; None if one with this `request_key` exists (a repeat).
        `then(conn, row_id)`, if given, writes in the same transaction (the row's lease, so that
        no replica ever sees the row without it). With `limit`, OwnLimitReached (and nothing
        written) when the requester's other escalations since `limit.since` number
        `limit.count` already; with a `thread_ts`, ThreadBusy (nothing written) when another
        escalation runs in that thread (bot/oncall/one_per_thread.py)."""
        values = {**values, "people": json.dumps([[t.user_id, t.source] for t in people]),
                  "state": str(EscalationState.RUNNING), "step": 0}
        unknown = set(values) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown columns: {sorted(unknown)}")
        names = list(values)
        sql = (f"INSERT INTO escalations ({', '.join(names)}) VALUES"
               f" ({', '.join('?' * len(names))}) ON CONFLICT DO NOTHING RETURNING *")

        async def create(conn: Connection) -> Escalation | None:
            if limit is not None:
                await check_within(conn, self._db.dialect, limit, values["requester_id"],
                                   values["request_key"])
            if in_a_thread:
                await check_thread_free(conn, self._db.dialect, values)
            row = await conn.fetchone(sql, [values[name] for name in names])
            if row is None:
                return None
            escalation = _escalation(row)
            if then is not None:
                await then(conn, escalation.id)
            return escalation

        in_a_thread = values.get("thread_ts") is not None
        alone = then is not None or limit is not None or in_a_thread
        return await (self._db.atomic(create) if alone else create(self._db))

    async def get(self, escalation_id: int) -> Escalation | None:
        row = await self._db.fetchone("SELECT * FROM escalations WHERE id = ?", (escalation_id,))
        return _escalation(row) if row is not None else None

    async def active(self) -> list[Escalation]:
        states = sorted(ACTIVE_STATES)
        rows = await self._db.fetchall(
            f"SELECT * FROM escalations WHERE state IN ({','.join('?' * len(states))}) ORDER BY id",
            states,
        )
        return [_escalation(row) for row in rows]

    async def over_with_lapsed_lease(
        self, kind: str, now: float, created_after: float
    ) -> list[Escalation]:
        """The escalations over, started at `created_after` or later, whose lease (`kind`,
        bot/storage/leases.py) lapsed before `now`: the replica showing their end died, or
        stopped. Read by every lease keeper's round: only the leases table is walked."""
        states = sorted(ACTIVE_STATES)
        rows = await self._db.fetchall(
            f"SELECT * FROM escalations WHERE id IN ({LAPSED_ROWS})"
            f" AND state NOT IN ({','.join('?' * len(states))}) AND created_at >= ? ORDER BY id",
            (kind, now, *states, created_after),
        )
        return [_escalation(row) for row in rows]

    async def update(self, escalation_id: int, **values: Any) -> None:
        unknown = set(values) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        if values:
            assignments = ", ".join(f"{name} = ?" for name in values)
            await self._db.execute(
                f"UPDATE escalations SET {assignments} WHERE id = ?",
                (*values.values(), escalation_id),
            )

    async def begin_step(self, escalation_id: int, step: int, started: float,
                         deadline: float) -> bool:
        """Mark `step` begun, with its deadline; False if it was begun already (or moved on)."""
        changed = await self._db.execute(
            "UPDATE escalations SET step_started_at = ?, step_deadline = ?, step_call_id = NULL"
            " WHERE id = ? AND step = ? AND step_started_at IS NULL AND state = ?",
            (started, deadline, escalation_id, step, str(EscalationState.RUNNING)),
        )
        return changed == 1

    async def set_step_call(
        self, escalation_id: int, step: int, call_id: int, deadline: float, *,
        on: Connection | None = None,
    ) -> None:
        """The step's call, and its deadline counted from when it was placed. `on`: the caller's
        transaction (bot/oncall/step_claims.py records it before the POST only while the step's
        claim is still its own)."""
        await (on or self._db).execute(
            "UPDATE escalations SET step_call_id = ?, step_deadline = ? WHERE id = ? AND step = ?",
            (call_id, deadline, escalation_id, step),
        )

    async def advance(self, escalation_id: int, step: int, *, on: Connection | None = None) -> bool:
        """Move from `step` to the next one; False if the chain was no longer at `step`. `on`:
        the caller's transaction."""
        changed = await (on or self._db).execute(
            "UPDATE escalations SET step = step + 1, step_started_at = NULL, step_deadline = NULL,"
            " step_call_id = NULL WHERE id = ? AND step = ?",
            (escalation_id, step),
        )
        return changed == 1

    async def set_state(
        self, escalation_id: int, before: frozenset[str] | set[str], after: str, **values: Any
    ) -> bool:
        """Change the state if it is one of `before` (and set `values`); False otherwise."""
        unknown = set(values) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        states = sorted(before)
        assignments = ", ".join(["state = ?", *(f"{name} = ?" for name in values)])
        changed = await self._db.execute(
            f"UPDATE escalations SET {assignments}"
            f" WHERE id = ? AND state IN ({','.join('?' * len(states))})",
            (after, *values.values(), escalation_id, *states),
        )
        return changed == 1

    async def record_step(
        self,
        escalation_id: int,
        step: int,
        user_id: str,
        outcome: StepOutcome,
        *,
        number_masked: str | None = None,
        call_id: int | None = None,
        detail: str | None = None,
        on: Connection | None = None,
    ) -> None:
        """What became of a step. Once the step has an outcome other than `calling`, it stays.
        `on`: the caller's transaction."""
        await (on or self._db).execute(
            "INSERT INTO escalation_steps"
            " (escalation_id, step, user_id, outcome, number_masked, call_id, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (escalation_id, step) DO UPDATE SET outcome = excluded.outcome,"
            " number_masked = COALESCE(excluded.number_masked, escalation_steps.number_masked),"
            " call_id = COALESCE(excluded.call_id, escalation_steps.call_id),"
            " detail = COALESCE(excluded.detail, escalation_steps.detail)"
            " WHERE escalation_steps.outcome = 'calling'",
            (escalation_id, step, user_id, str(outcome), number_masked, call_id, detail),
        )

    async def steps(self, escalation_id: int) -> list[Step]:
        rows = await self._db.fetchall(
            "SELECT * FROM escalation_steps WHERE escalation_id = ? ORDER BY step",
            (escalation_id,),
        )
        return [_step(row) for row in rows]

    async def acknowledge(
        self, escalation_id: int, *, by: str, at: float, via: AckVia,
        before: frozenset[str] | set[str] = frozenset({EscalationState.RUNNING}),
        after: str = EscalationState.ACKNOWLEDGING,
    ) -> bool:
        """Record the first acknowledgement; False if the escalation was acknowledged already, or
        no longer in one of `before`."""
        states = sorted(before)
        marks = ",".join("?" * len(states))
        changed = await self._db.execute(
            "UPDATE escalations SET state = ?, acknowledged_by = ?, acknowledged_at = ?,"
            " acknowledged_via = ?, acknowledged_step = step"
            f" WHERE id = ? AND acknowledged_by IS NULL AND state IN ({marks})",
            (after, by, at, str(via), escalation_id, *states),
        )
        return changed == 1

    async def own_limit_full(self, requester_id: str, since: float, count: int) -> float | None:
        """With `count` escalations started by `requester_id` since `since` already (their own
        limit): when the one that must leave the window first was created; else None."""
        return await oldest_in_the_way(self._db, requester_id, since, count)

    async def add_page(self, page: Page) -> None:
        await self._db.execute(
            "INSERT INTO escalation_pages"
            " (escalation_id, step, user_id, channel_id, message_ts, link, shown_digest)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (page.escalation_id, page.step, page.user_id, page.channel_id, page.message_ts,
             page.link, page.shown_digest),
        )

    async def pages(self, escalation_id: int) -> list[Page]:
        rows = await self._db.fetchall(
            "SELECT * FROM escalation_pages WHERE escalation_id = ? ORDER BY step",
            (escalation_id,),
        )
        return [_page(row) for row in rows]

    async def set_page_digest(self, escalation_id: int, step: int, digest: str) -> None:
        await self._db.execute(
            "UPDATE escalation_pages SET shown_digest = ? WHERE escalation_id = ? AND step = ?",
            (digest, escalation_id, step),
        )

    async def recent_for(self, user_id: str, count: int) -> list[Escalation]:
        """The latest escalations `user_id` started or was paged in, newest first."""
        rows = await self._db.fetchall(
            "SELECT * FROM escalations WHERE requester_id = ? OR id IN"
            " (SELECT escalation_id FROM escalation_steps WHERE user_id = ?)"
            " ORDER BY created_at DESC, id DESC LIMIT ?",
            (user_id, user_id, count),
        )
        return [_escalation(row) for row in rows]


def _page(row: Any) -> Page:
    return Page(**{f.name: row[f.name] for f in fields(Page)})
