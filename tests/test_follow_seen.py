"""What a poll has seen stays seen: an answer, who answered, an outcome read while the call was on;
and a call some other task has finished is left as it is. Without Slack (tests/follow_fakes.py).
Gaps a mutation audit of the follower went through."""

from __future__ import annotations

import asyncio

import pytest

from bot.calls import status_views as call_views
from bot.calls.follow import CallFollower
from bot.calls.status_message import digest
from bot.calls.store import CallState, CallStore, Placement, TrackedCall
from bot.evovoice.client import NotFound, Session
from bot.evovoice.errors import ServerError
from bot.storage.database import Database
from tests.follow_fakes import (
    T0,
    TIMING,
    Clock,
    FakeEvo,
    FakeNotifier,
    follow,
    new_call,
    session,
)

ENDED = {"ended": True, "callState": "Disconnected", "dateCompleted": "2027-01-15T08:01:00Z"}


@pytest.mark.parametrize("after", ["Passive", "Ringing"])
async def test_a_call_seen_connected_stays_picked_up_whatever_it_reads_after(
    db: Database, after: str
) -> None:
    # What Passive means nothing public says, and a flow may ring someone else after answering:
    # once seen connected, the call was picked up, whatever the reads before its end say.
    answers: list[Session | Exception] = [
        session("Connected"), session(after), session(after), session(**ENDED),
    ]
    call, notifier, _ = await follow(db, FakeEvo(answers))
    assert call.state == CallState.ENDED and call.answered
    assert notifier.reactions == [call_views.MARK_PICKED_UP]
    assert "☎️ Ended: connected" in notifier.edits[-1].text


async def test_an_acknowledging_outcome_outlives_a_later_outcome(db: Database) -> None:
    # "press 1" read while the call was on, then the session ends with an outcome of its own (a
    # flow, or Evo Voice, writing it at the end): the call was acknowledged, as it was shown, and
    # its end must not take that back as "picked up by a person or a voicemail".
    answers: list[Session | Exception] = [
        session("Connected", outcome="Pressed 1"), session(**ENDED, outcome="Completed"),
    ]
    call, notifier, _ = await follow(db, FakeEvo(answers),
                                     acknowledges=lambda outcome: outcome == "Pressed 1")
    assert "🟢 Connected: acknowledged" in notifier.edits[0].text
    assert call.outcome == "Pressed 1"
    assert notifier.reactions == [call_views.MARK_ACKNOWLEDGED]
    assert "✅ Ended: Pressed 1 (acknowledged)" in notifier.edits[-1].text


@pytest.mark.parametrize("then", ["the same", "a 404"])
async def test_an_end_read_without_an_outcome_is_read_once_more_before_it_is_told(
    db: Database, then: str
) -> None:
    # A flow's outcome may be written a moment after the session reads over: one more read,
    # after the first pace. Should the session be gone by then, the end is told as read, not
    # lost to a call "no longer followed".
    over = session("Disconnected", ended=True, dateCompleted="2027-01-15T08:01:00Z")
    second: Session | Exception = {
        "the same": over, "a 404": NotFound(404, "Session not found"),
    }[then]
    evo = FakeEvo([session("Connected"), over, second])
    call, notifier, pauses = await follow(db, evo)
    assert evo.polls == 3 and pauses[-1] == TIMING.first_interval
    assert call.state == CallState.ENDED and call.answered and call.duration_seconds == 60.0
    assert notifier.reactions == [call_views.MARK_PICKED_UP]
    assert [m.text.count("Ended") for m in notifier.edits] == [0, 1]  # told once, at the end


class Ticking(Clock):
    """A clock 10 s on at every reading."""

    def __call__(self) -> float:
        self.now += 10.0
        return self.now


async def test_an_end_read_once_more_while_evo_voice_fails_is_told_once_reads_failed_long(
    db: Database,
) -> None:
    # The read after the end fails (Evo Voice failing): that says nothing of an outcome written
    # since, so it is tried at each poll; once reads have failed for `find_for`, the end is told
    # as read, not lost to a call "no longer followed" (test_ack_end_reads.py: through the bot).
    over = session("Disconnected", ended=True, dateCompleted="2027-01-15T08:01:00Z")
    evo = FakeEvo([session("Connected"), over, ServerError(500, "Internal server error")])
    call, notifier, _ = await follow(db, evo, clock=Ticking())
    assert evo.polls > 3
    assert call.state == CallState.ENDED and call.answered and call.duration_seconds == 60.0
    assert notifier.reactions == [call_views.MARK_PICKED_UP]
    assert [m.text.count("Ended") for m in notifier.edits] == [0, 1]  # told once, at the end


async def test_who_answered_is_shown_as_soon_as_a_read_names_them(db: Database) -> None:
    # Connected first without a name, then with one, then without again (a read that leaves it
    # out): the name shows at once, and the end keeps it.
    answers: list[Session | Exception] = [
        session("Connected"),
        session("Connected", answeredByName="Alice Example"),
        session("Connected"),
        session(**ENDED),
    ]
    call, notifier, _ = await follow(db, FakeEvo(answers))
    assert any("🟢 Connected (answered by Alice Example)" in m.text for m in notifier.edits)
    assert call.answered_by == "Alice Example"
    assert "answered by Alice Example" in notifier.edits[-1].text


async def test_an_outcome_read_during_the_call_is_kept_until_its_end(db: Database) -> None:
    # The flow's "press 1" shows on a read where nothing else changed; later reads (and the end)
    # may leave `outcome` empty: it is kept, for the end's words and for an escalation waiting on
    # it (whether Evo Voice keeps an outcome is unknown: docs/evovoice-api.md).
    answers: list[Session | Exception] = [
        session("Connected"),
        session("Connected", outcome="Pressed 1"),
        session("Connected", outcome=""),
        session("Connected"),
        session(**ENDED),
    ]
    store, seen = CallStore(db), []

    def acknowledges(outcome: str | None) -> bool:
        return outcome == "Pressed 1"

    class Watching(FakeEvo):
        async def poll_session(self, session_id: str, account_ids: list[str]) -> Session:
            [row] = await store.being_followed()
            seen.append(row.outcome)
            return await super().poll_session(session_id, account_ids)

    call, notifier, _ = await follow(db, Watching(answers), acknowledges=acknowledges)
    assert seen == [None, None, "Pressed 1", "Pressed 1", "Pressed 1"]
    assert any("🟢 Connected: acknowledged" in m.text for m in notifier.edits)
    assert call.outcome == "Pressed 1"
    assert notifier.reactions == [call_views.MARK_ACKNOWLEDGED]


async def test_a_call_hung_up_with_end_session_ends_when_its_session_says_disconnected(
    db: Database,
) -> None:
    # EndSession (DELETE) writes nothing into the session: "Disconnected" after it is Evo Voice's
    # own word, so the call seen connected is over, even before `ended` is set and with
    # dateCompleted still a placeholder. (After PatchSession it may be the bot's own echo:
    # test_follow_units.py::test_session_states.)
    evo = FakeEvo([session("Disconnected", dateCompleted="0001-01-01T00:00:00")])
    evo.hang_up_method = "DELETE"
    call, notifier, _ = await follow(db, evo, state="connected", answered=True, hung_up_by="U9")
    assert call.state == CallState.ENDED and not call.following
    assert "Hung up by <@U9>" in notifier.edits[-1].text


class StaleStore(CallStore):
    """Lists the calls being followed, or dialled, as they were read a moment before: their
    replica may have finished one since (`CallFollower.take_over` and `reconcile_dialling` read
    the list before they take the leases)."""

    def __init__(self, db: Database, listed: list[TrackedCall]) -> None:
        super().__init__(db)
        self.listed = listed

    async def being_followed(self) -> list[TrackedCall]:
        return [call for call in self.listed if call.following]

    async def dialling(self) -> list[TrackedCall]:
        return [call for call in self.listed if call.placement == Placement.DIALLING]


async def test_a_call_another_task_finished_since_it_was_listed_is_left_alone(
    db: Database,
) -> None:
    store = CallStore(db)
    listed = await new_call(store)  # followed when listed, then its replica saw it end
    await store.update(listed.id, state="ended", following=False, answered=True,
                       outcome="Completed", marked=True)
    ended = await store.get(listed.id)
    assert ended is not None  # shown in Slack as it is
    await store.update(listed.id, shown_digest=digest(call_views.call_status(ended)))
    evo, notifier, pauses = FakeEvo([NotFound(404, "Session not found")]), FakeNotifier(), []

    async def pause(wake: asyncio.Event, seconds: float) -> None:
        pauses.append(seconds)
        assert len(pauses) < 100, "the follower never stopped"

    follower = CallFollower(
        evo=evo, notifier=notifier, store=StaleStore(db, [listed]),  # type: ignore[arg-type]
        audit=None, account_ids=["acct-1"], timing=TIMING, clock=Clock(T0 + 60), pause=pause,
    )
    await follower.resume()
    await asyncio.wait_for(asyncio.gather(*follower.tasks()), 5)
    await follower.stop()
    assert evo.polls == 0
    again = await store.get(listed.id)
    assert again is not None and again.state == CallState.ENDED and again.outcome == "Completed"


def follower_on(db: Database, store: CallStore, evo: FakeEvo, clock: Clock) -> CallFollower:
    async def pause(wake: asyncio.Event, seconds: float) -> None:
        raise AssertionError("nothing here is followed")

    return CallFollower(
        evo=evo, notifier=FakeNotifier(), store=store,  # type: ignore[arg-type]
        audit=None, account_ids=["acct-1"], timing=TIMING, clock=clock, pause=pause,
    )


async def test_a_call_its_replica_finished_dialling_since_it_was_listed_is_not_reconciled(
    db: Database,
) -> None:
    # Listed while being dialled; its replica then learned it failed, told its requester and let
    # go of it. Reconciled now, a call known not placed would be told "may or may not have been
    # placed" and looked for in Evo Voice.
    store = CallStore(db)
    listed = await new_call(store, placement="dialling", state="finding", following=False,
                            session_id=None)
    await store.update(listed.id, placement="failed", state="failed", note="❌ Refused.")
    follower = follower_on(db, StaleStore(db, [listed]), FakeEvo([session()]), Clock())
    assert await follower.reconcile_dialling() == 0
    again = await store.get(listed.id)
    assert again is not None and (again.placement, again.state) == ("failed", "failed")
    assert again.note == "❌ Refused."


async def test_the_full_number_of_a_call_over_for_a_day_is_erased_when_the_bot_starts(
    db: Database,
) -> None:
    # README, "Audit trail": the full number is kept for 24 hours after the call, then erased.
    store = CallStore(db)
    old = await new_call(store, state="ended", following=False, session_id="s-old")
    recent = await new_call(store, state="ended", following=False, session_id="s-new",
                            created_at=T0 + 3600)
    clock = Clock(T0 + TIMING.number_retention + 1)
    follower = follower_on(db, store, FakeEvo([session()]), clock)
    await follower.resume()
    await follower.stop()
    erased, kept = await store.get(old.id), await store.get(recent.id)
    assert erased is not None and erased.e164 is None and erased.number_masked
    assert kept is not None and kept.e164 == "+18144043093"
