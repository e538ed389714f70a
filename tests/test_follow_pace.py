"""How a followed call is paced and given up, without Slack: the production timing the README
promises, and an unconfirmed call looked for through a lookup failing for a moment."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.calls import status_views as call_views
from bot.calls.follow import CallFollower
from bot.calls.polling import FollowTiming
from bot.calls.store import CallState, CallStore, Placement
from bot.config import load_settings
from bot.evovoice.client import NotFound, ServerError, Session, SessionsFound
from bot.services import follow_timing
from bot.slack.blocks import Message
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


def test_the_production_pace_is_the_one_the_readme_promises() -> None:
    # README, "Following the call": every CALL_POLL_SECONDS while unanswered for its first 3
    # minutes, then less and less often up to CALL_POLL_MAX_SECONDS; CALL_FIND_SECONDS,
    # CALL_FOLLOW_MAX_MINUTES; "Audit trail": the full number kept for 24 hours after the call.
    settings = load_settings(_env_file=None, slack_bot_token="xoxb-1", slack_app_token="xapp-1",
                             evovoice_username="u", evovoice_password="p")
    assert follow_timing(settings) == FollowTiming(
        first_interval=2.0, max_interval=15.0, growth=1.5, ring_for=180.0, find_for=120.0,
        follow_for=240 * 60.0, number_retention=24 * 3600.0,
    )


class FlakyLookup(FakeEvo):
    """`GET /sessions?to=…` fails (5xx) for its first `failures` tries, then finds the session."""

    def __init__(self, failures: int, found: Session) -> None:
        super().__init__([found])
        self.failures, self.found, self.lookups = failures, found, 0

    async def find_sessions(self, *args: Any, **kwargs: Any) -> SessionsFound:
        self.lookups += 1
        if self.lookups <= self.failures:
            raise ServerError(503, "Service unavailable")
        return SessionsFound([self.found])


async def test_a_lookup_failing_for_a_moment_still_finds_an_unconfirmed_call(db: Database) -> None:
    # Within CALL_FIND_SECONDS a failing lookup is tried again, not taken for "not found".
    ended = session("Disconnected", ended=True, outcome="Completed",
                    dateCreated="2027-01-15T08:00:00Z", dateCompleted="2027-01-15T08:00:20Z")
    evo = FlakyLookup(2, ended)
    call, notifier, _ = await follow(
        db, evo, clock=Clock(T0 + TIMING.find_for / 2), session_id=None, state="finding",
        placement=str(Placement.UNKNOWN), note="⚠️ Outcome unknown.",
    )
    assert evo.lookups == 3
    assert call.state == CallState.ENDED and call.session_id == "sess-1"
    assert "Ended: Completed, lasted 20 s." in notifier.edits[-1].text


async def test_a_lookup_still_failing_after_find_for_ends_as_not_found(db: Database) -> None:
    # Looked for from after CALL_FIND_SECONDS on (a restart long after the attempt): a look that
    # fails is tried again, and one still failing CALL_FIND_SECONDS later ends as not found.
    evo = FlakyLookup(100, session())
    call, notifier, _ = await follow(
        db, evo, clock=Ticking(T0 + TIMING.find_for + 1, TIMING.find_for / 4), session_id=None,
        state="finding", placement=str(Placement.UNKNOWN), note="⚠️ Outcome unknown.",
    )
    assert 1 < evo.lookups < 100 and call.state == CallState.NOT_FOUND and not call.following
    # Never looked at: whether it rang is unknown, and the status says why (not "most likely not
    # placed", which only a lookup that found nothing can say).
    shown = notifier.edits[-1].text
    assert "whether it was placed is unknown" in shown and "HTTP 503" in shown, shown


class Ticking(Clock):
    """A clock `step` seconds on at every reading."""

    def __init__(self, now: float, step: float) -> None:
        super().__init__(now)
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


async def test_a_404_long_after_one_at_the_start_does_not_end_the_following(
    db: Database,
) -> None:
    # Unknown for a moment when new, read for minutes, unknown for a moment again: only a session
    # unknown for CALL_FIND_SECONDS on end is given up, not one unknown twice, far apart.
    lost = NotFound(404, "Session not found")
    answers: list[Session | Exception] = [lost, *[session("Connected")] * 40, lost,
                                          session("Disconnected", ended=True, outcome="Completed")]
    call, notifier, _ = await follow(db, FakeEvo(answers), clock=Ticking(T0, 10.0))
    assert call.state == CallState.ENDED and call.answered
    assert "☎️ Ended: Completed" in notifier.edits[-1].text


async def test_who_answered_is_kept_when_the_last_read_no_longer_names_them(
    db: Database,
) -> None:
    answers: list[Session | Exception] = [
        session("Connected", answeredByName="Alice Example"),
        session("Disconnected", ended=True, outcome="Completed"),  # the name gone at the end
    ]
    call, notifier, _ = await follow(db, FakeEvo(answers))
    assert call.state == CallState.ENDED and call.answered_by == "Alice Example"
    assert "☎️ Ended: Completed, answered by Alice Example." in notifier.edits[-1].text


class RefusingOnce(FakeNotifier):
    """Slack refusing the first edit of each message, then taking them."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: set[str] = set()

    async def update(self, channel: str, ts: str, message: Message) -> bool:
        if ts not in self.refused:
            self.refused.add(ts)
            return False
        return await super().update(channel, ts, message)


async def test_a_call_given_up_on_is_shown_so_even_if_slack_refuses_at_first(
    db: Database,
) -> None:
    # "I stopped following this call" and the parent's ⚠️ are a final edit like "Ended": tried
    # again until Slack takes them, never left at "Ringing".
    store, notifier, pauses = CallStore(db), RefusingOnce(), []

    async def pause(wake: asyncio.Event, seconds: float) -> None:
        pauses.append(seconds)

    follower = CallFollower(
        evo=FakeEvo([session("Ringing")]), notifier=notifier, store=store,  # type: ignore[arg-type]
        audit=None, account_ids=["acct-1"], timing=TIMING,
        clock=Clock(T0 + TIMING.follow_for + 1), pause=pause,
    )
    tracked = await new_call(store)
    await follower.begin(tracked, tracked.status_ts)
    await asyncio.wait_for(asyncio.gather(*follower.tasks()), 5)
    assert "I stopped following this call" in notifier.edits[-1].text
    assert notifier.parent_edits[-1].text.endswith("⚠️ Outcome unclear: see the thread.")
    assert notifier.reactions == [call_views.MARK_UNCLEAR]
    assert pauses  # tried again after a pause


async def test_a_call_not_ringing_yet_is_polled_at_the_first_pace_too(db: Database) -> None:
    # Created and not ringing yet ("Disconnected" before anything happened) is as unanswered as
    # ringing: answered and over between two polls further apart, it would read "not answered".
    calling = session("Disconnected")
    ended = session("Connected", ended=True, dateCompleted="2027-01-15T08:01:00Z",
                    outcome="Completed")
    call, _, pauses = await follow(db, FakeEvo([calling] * 6 + [ended]), state="calling")
    assert pauses == [2.0] * 8  # the first before the first poll, the last before its end's
    assert call.state == CallState.ENDED


async def test_a_long_outcome_is_kept_whole_up_to_its_limit(db: Database) -> None:
    # A flow's outcome (an acknowledgement's words, say) is kept up to 200 characters: the status
    # message shows what fits, the row and the audit trail keep the rest.
    words = "Acknowledged by the on-call engineer after pressing 1, " * 3
    ended = session("Disconnected", ended=True, outcome=words)
    call, _, _ = await follow(db, FakeEvo([ended]))
    assert call.outcome == words.strip() and len(words) < 200
