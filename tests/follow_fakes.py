"""Fakes for following a call without Slack (test_follow_units.py, test_follow_pace.py,
test_follow_stages.py): Evo Voice answering polls from a script, the Slack side recording edits, a
clock the test sets, a call's row, and `follow`, which follows one call to its end."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.audit.trail import AuditLog
from bot.calls.follow import CallFollower, FollowTiming
from bot.calls.status_views import AckTest, no_ack_outcomes
from bot.calls.store import CallState, CallStore, Placement, TrackedCall
from bot.evovoice.client import Session, SessionsFound
from bot.evovoice.clock import ServerClock
from bot.slack.blocks import Message
from bot.storage.database import Database

T0 = 1_800_000_000.0
TIMING = FollowTiming(first_interval=2.0, max_interval=15.0, growth=1.5, find_for=120.0,
                      follow_for=3600.0, number_retention=86400.0, ring_for=180.0)


def session(state: str = "Ringing", **fields: Any) -> Session:
    values = {"id": "sess-1", "callState": state, "dateCreated": "2027-01-15T08:00:00.000Z"}
    values.update(fields)
    return Session.model_validate(values)


class FakeEvo:
    """Answers polls of a session from a script; the last answer repeats."""

    hang_up_method = "DELETE"  # as the client's: PatchSession only once EndSession is refused
    clock = ServerClock()  # Evo Voice's, as the client's: agreeing with the bot's

    def __init__(self, answers: list[Session | Exception]) -> None:
        self.answers = answers
        self.polls = 0

    async def poll_session(self, session_id: str, account_ids: list[str]) -> Session:
        answer = self.answers[min(self.polls, len(self.answers) - 1)]
        self.polls += 1
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def find_sessions(self, *args: Any, **kwargs: Any) -> SessionsFound:
        return SessionsFound()


PARENT_TS = "1.1"


class FakeNotifier:
    def __init__(self) -> None:
        self.edits: list[Message] = []  # of the status message
        self.parent_edits: list[Message] = []
        self.reactions: list[str] = []

    async def update(self, channel: str, ts: str, message: Message) -> bool:
        (self.parent_edits if ts == PARENT_TS else self.edits).append(message)
        return True

    async def react(self, channel: str, ts: str, emoji: str) -> bool:
        self.reactions.append(emoji)
        return True


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def new_call(store: CallStore, **values: Any) -> TrackedCall:
    row: dict[str, Any] = dict(
        attempt_id=None, created_at=T0, team_id="T0", requester_id="U0", channel_id="C0",
        parent_ts=PARENT_TS, status_ts="1.2", e164="+18144043093", number_masked="+1 814 ••• 3093",
        flow_id="flow-esc", flow_name="Escalation", caller_id=None, placement="placed",
        note=None, session_id="sess-1", state="ringing", following=True,
    )
    row.update(values)
    return await store.insert(**row)


async def follow(
    db: Database, evo: FakeEvo, *, clock: Clock | None = None, audit: AuditLog | None = None,
    acknowledges: AckTest = no_ack_outcomes, **call: Any,
) -> tuple[TrackedCall, FakeNotifier, list[float]]:
    """Follow one call to its end; return it as stored, the Slack side, and each pause asked for."""
    store, notifier, pauses = CallStore(db), FakeNotifier(), []

    async def pause(wake: asyncio.Event, seconds: float) -> None:
        pauses.append(seconds)
        assert len(pauses) < 100, "the follower never stopped"

    follower = CallFollower(
        evo=evo, notifier=notifier, store=store, audit=audit,  # type: ignore[arg-type]
        account_ids=["acct-1"], timing=TIMING, clock=clock or Clock(), pause=pause,
        acknowledges=acknowledges,
    )
    tracked = await new_call(store, **call)
    await follower.begin(tracked, tracked.status_ts)
    await asyncio.wait_for(asyncio.gather(*follower.tasks()), 5)
    final = await store.get(tracked.id)
    assert final is not None
    return final, notifier, pauses


def tracked(**values: Any) -> TrackedCall:
    row: dict[str, Any] = dict(
        id=7,
        attempt_id=1,
        created_at=T0,
        team_id="T0",
        requester_id="U0",
        channel_id="C0",
        parent_ts="1.1",
        status_ts="1.2",
        e164="+18144043093",
        number_masked="+1 814 ••• 3093",
        flow_id="flow-esc",
        flow_name="Escalation",
        caller_id="+18145550100",
        placement=Placement.PLACED,
        note=None,
        session_id="sess-1",
        state=CallState.RINGING,
        following=True,
    )
    row.update(values)
    return TrackedCall(**row)
