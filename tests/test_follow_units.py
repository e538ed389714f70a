"""The follower, the call store, the status and history views and the history filter, without
Slack."""

from __future__ import annotations

import asyncio

import pytest

from bot.audit.history import HistoryFilter, HistoryFilterRejected, parse_history_filter
from bot.audit.trail import AuditLog, Decision, reason_of
from bot.calls import status_views as call_views
from bot.calls.follow import CallFollower, classify, duration_of
from bot.slack.blocks import Message
from bot.calls.store import CallState, CallStore
from bot.config import ConfigError, load_settings
from bot.evovoice.client import EvoVoiceTimeout, NotFound, RateLimited, Session
from bot.phone import NumberRejected, RejectCode
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
    tracked,
)


async def test_polls_back_off_and_start_again_after_a_change(db: Database) -> None:
    answers: list[Session | Exception] = [session("Ringing")] * 8
    # An answered call's end read without an acknowledging outcome is read once more, after the
    # first pace (the last pause): the flow may write one a moment later (test_ack_end_reads.py).
    ended = session("Connected", ended=True, dateCompleted="2027-01-15T08:01:00Z",
                    outcome="Completed")
    answers += [session("Connected"), ended]
    # Ringing for longer than any phone rings: past `ring_for`.
    call, notifier, pauses = await follow(db, FakeEvo(answers), clock=Clock(T0 + TIMING.ring_for))
    # Polled after 2 s, then less and less often; a change starts over.
    assert pauses == [2.0, 3.0, 4.5, 6.75, 10.125, 15.0, 15.0, 15.0, 15.0, 2.0, 2.0]
    assert call.state == CallState.ENDED and not call.following and call.answered
    assert call.duration_seconds == 60.0
    assert [("Connected" in m.text, "Ended" in m.text) for m in notifier.edits] == [
        (True, False),
        (False, True),
    ]
    # Connected, then ended without an acknowledging outcome: a person or a voicemail.
    assert notifier.reactions == [call_views.MARK_PICKED_UP]
    [parent] = notifier.parent_edits  # the outcome on the parent itself, once it is known
    assert parent.text.endswith("☎️ Picked up by a person or a voicemail (can't tell which).")


async def test_a_call_not_yet_answered_is_polled_at_the_first_pace_while_it_may_ring(
    db: Database,
) -> None:
    # Answered and over between two polls 15 s apart, a page that was picked up would read "not
    # answered". Once answered, or once no phone would still ring, the polls back off.
    ended = session("Connected", ended=True, dateCompleted="2027-01-15T08:01:00Z",
                    outcome="Completed")
    answers = [session("Ringing")] * 8 + [session("Connected")] * 6 + [ended]
    call, _, pauses = await follow(db, FakeEvo(answers))
    assert pauses == [2.0] * 10 + [3.0, 4.5, 6.75, 10.125, 15.0, 2.0]  # then its end read again
    assert call.state == CallState.ENDED and call.answered

    clock = Ticking(T0)  # 5 s on at every reading
    ringing, ended = (session("Ringing", id="sess-2"),
                      session("Ringing", id="sess-2", ended=True, outcome="No answer"))
    call, _, pauses = await follow(db, FakeEvo([ringing] * 60 + [ended]), clock=clock,
                                   session_id="sess-2")
    rung = [p for p in pauses if p == 2.0]
    assert len(rung) < len(pauses) and pauses[-3:] == [15.0, 15.0, 15.0]
    assert pauses[:len(rung)] == rung  # every 2 s at first, then backing off


async def test_a_rate_limit_or_a_timeout_leaves_the_waiting_to_the_shared_budget(
    db: Database,
) -> None:
    # Retry-After is waited out by the client's budget, for every request at once
    # (test_evovoice_budget.py); the follower keeps its own pace.
    answers: list[Session | Exception] = [
        RateLimited(429, "slow down", retry_after=40.0),
        EvoVoiceTimeout("no answer"),
        session(ended=True, outcome="No answer"),
    ]
    call, notifier, pauses = await follow(db, FakeEvo(answers), clock=Clock(T0 + TIMING.ring_for))
    assert pauses == [2.0, 3.0, 4.5]
    assert call.state == CallState.ENDED and not call.answered
    assert notifier.reactions == [call_views.MARK_NOT_ANSWERED]


async def test_no_call_is_followed_beyond_the_time_limit(db: Database) -> None:
    evo = FakeEvo([session("Connected")])
    call, notifier, _ = await follow(db, evo, clock=Clock(T0 + TIMING.follow_for + 1))
    assert call.state == CallState.LOST and not call.following
    assert evo.polls == 0
    assert "stopped following" in notifier.edits[-1].text
    assert notifier.reactions == [call_views.MARK_UNCLEAR]


class Ticking(Clock):
    """A clock a few seconds on at every reading."""

    def __call__(self) -> float:
        self.now += 5.0
        return self.now


async def test_a_session_that_stays_unknown_to_evo_voice_is_given_up(db: Database) -> None:
    # Unknown for `find_for` (not merely once the call is that old): given up.
    clock = Ticking(T0 + TIMING.find_for + 1)
    evo = FakeEvo([NotFound(404, "Session not found")])
    call, _, _ = await follow(db, evo, clock=clock)
    assert call.state == CallState.LOST
    assert evo.polls > 1 and clock.now - (T0 + TIMING.find_for + 1) > TIMING.find_for


async def test_resume_follows_what_was_being_followed(db: Database) -> None:
    store = CallStore(db)
    live = await new_call(store)
    await new_call(store, session_id="sess-2", state="ended", following=False)
    pauses: list[float] = []

    async def pause(wake: asyncio.Event, seconds: float) -> None:  # the 2 s before a poll: none
        pauses.append(seconds)
        assert len(pauses) < 100, "the follower never stopped"

    follower = CallFollower(
        evo=FakeEvo([session(ended=True)]),
        notifier=FakeNotifier(),
        store=store,  # type: ignore[arg-type]
        audit=None,
        account_ids=["acct-1"],
        timing=TIMING,
        pause=pause,
    )
    assert await follower.resume() == 1
    await asyncio.wait_for(asyncio.gather(*follower.tasks()), 5)
    again = await store.get(live.id)
    assert again is not None and again.state == CallState.ENDED
    await follower.stop()


async def test_numbers_are_forgotten_once_calls_are_over_and_old(db: Database) -> None:
    store = CallStore(db)
    old_over = await new_call(
        store, created_at=T0 - 90000, session_id="s1", state="ended", following=False
    )
    old_live = await new_call(store, created_at=T0 - 90000, session_id="s2")
    new_over = await new_call(store, session_id="s3", state="ended", following=False)
    assert await store.forget_numbers(T0 - 86400) == 1
    assert [(await store.get(c.id)).e164 for c in (old_over, old_live, new_over)] == [  # type: ignore[union-attr]
        None,
        "+18144043093",
        "+18144043093",
    ]


async def test_the_follower_erases_numbers_at_most_hourly_and_whenever_asked_after(
    db: Database,
) -> None:
    # The lease keeper asks every few seconds (bot/runtime.py): a quiet spell, with no call
    # beginning, still sees numbers erased within the hour after their retention.
    store, clock = CallStore(db), Clock(T0)
    follower = CallFollower(evo=FakeEvo([]), notifier=FakeNotifier(), store=store,  # type: ignore[arg-type]
                            audit=None, account_ids=["acct-1"], timing=TIMING, clock=clock)
    first = await new_call(store, created_at=T0 - TIMING.number_retention - 1, state="ended",
                           following=False, session_id="s1")
    await follower.erase_numbers()
    second = await new_call(store, created_at=T0 - TIMING.number_retention + 60, state="ended",
                            following=False, session_id="s2")
    clock.now = T0 + 3599
    await follower.erase_numbers()  # within the hour: not again
    assert [(await store.get(c.id)).e164 for c in (first, second)] == [  # type: ignore[union-attr]
        None, "+18144043093"]
    clock.now = T0 + 3600
    await follower.erase_numbers()
    assert (await store.get(second.id)).e164 is None  # type: ignore[union-attr]


async def test_a_session_belongs_to_one_call(db: Database) -> None:
    store = CallStore(db)
    first = await new_call(store, session_id=None, state="finding")
    second = await new_call(store, session_id=None, state="finding")
    assert await store.claim_session(first.id, "sess-9")
    assert not await store.claim_session(second.id, "sess-9")
    assert await store.sessions_taken(["sess-9", "sess-10"]) == {"sess-9"}


def test_session_states() -> None:
    assert classify(session("Ringing")) == CallState.RINGING
    assert classify(session("Connected")) == CallState.CONNECTED
    assert classify(session("Hold")) == CallState.CONNECTED
    assert classify(session("Disconnected")) == CallState.CALLING
    assert classify(session(None)) == CallState.CALLING
    # Passive, or no callState, after the call was seen live: no news (it stays as seen).
    for state in ("Passive", None):
        assert classify(session(state)) == CallState.CALLING
        assert classify(session(state), "ringing") == CallState.RINGING
        assert classify(session(state), "connected") == CallState.CONNECTED
    assert classify(session("Connected", ended=True)) == CallState.ENDED
    assert (
        classify(session("Disconnected", dateCompleted="2027-01-15T08:00:09Z")) == CallState.ENDED
    )
    # After the bot's own PatchSession, "Disconnected" may be its echo: only `ended` or a real
    # dateCompleted ends the call (docs/evovoice-api.md, Hang up).
    assert classify(session("Disconnected"), "connected") == CallState.ENDED
    assert classify(session("Disconnected"), "connected", patched=True) == CallState.CONNECTED
    assert classify(session("Disconnected"), "ringing", patched=True) == CallState.RINGING
    for done in (session("Disconnected", ended=True),
                 session("Disconnected", dateCompleted="2027-01-15T08:00:09Z")):
        assert classify(done, "connected", patched=True) == CallState.ENDED
    assert duration_of(session(dateCompleted="/Date(1800000009000-0000)/")) == 9.0
    assert duration_of(session(dateCompleted="2027-01-15T07:00:00Z")) is None  # before creation
    assert duration_of(session()) is None


def action_ids(message: Message) -> list[str]:
    return [e["action_id"] for b in message.blocks if b["type"] == "actions" for e in b["elements"]]


def test_status_buttons_follow_the_state() -> None:
    assert action_ids(call_views.call_status(tracked())) == [call_views.HANG_UP_ACTION]
    assert (
        action_ids(call_views.call_status(tracked(state=CallState.FINDING, session_id=None))) == []
    )
    ended = tracked(state=CallState.ENDED, following=False)
    assert action_ids(call_views.call_status(ended)) == [call_views.CALL_AGAIN_ACTION]
    assert (
        action_ids(
            call_views.call_status(tracked(state=CallState.ENDED, following=False, e164=None))
        )
        == []
    )
    again = call_views.call_status(
        tracked(state=CallState.ENDED, following=False, called_again_by="U9")
    )
    assert action_ids(again) == [] and "<@U9> called this number again" in again.text


def test_status_text_is_escaped_and_never_shows_a_full_number() -> None:
    message = call_views.call_status(
        tracked(
            state=CallState.ENDED,
            following=False,
            answered=True,
            answered_by="+1 814 404 3093",
            outcome="<!channel> done",
            duration_seconds=3725,
        )
    )
    assert "8144043093" not in str(message) and "+1 814 ••• 3093" in message.text
    assert "&lt;!channel&gt; done" in message.text and "<!channel>" not in message.text
    assert "lasted 1h 02m" in message.text


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0, "0 s"), (59.6, "1m 00s"), (61, "1m 01s"), (3600, "1h 00m")]
)
def test_durations(seconds: float, shown: str) -> None:
    assert call_views.format_duration(seconds) == shown


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), HistoryFilter()),
        (("<@U0ABC|alex>",), HistoryFilter(user_id="U0ABC")),
        (("<@W0ABC>",), HistoryFilter(user_id="W0ABC")),
        (("U0ABC",), HistoryFilter(user_id="U0ABC")),
        (("@alex.b",), HistoryFilter(user_name="alex.b")),
        (("+1", "814", "404", "3093"), HistoryFilter(e164="+18144043093")),
        (("(814)", "404-3093"), HistoryFilter(e164="+18144043093")),
    ],
)
def test_history_filters(args: tuple[str, ...], expected: HistoryFilter) -> None:
    assert parse_history_filter(args, "US") == expected


@pytest.mark.parametrize("args", [("alex",), ("<@U0ABC>", "x"), ("<#C0ABC|ops>",), ("+1", "814")])
def test_history_filters_refused(args: tuple[str, ...]) -> None:
    with pytest.raises(HistoryFilterRejected):
        parse_history_filter(args, "US")


async def test_audit_key_is_generated_once(db: Database) -> None:
    first = await AuditLog.open(db)
    second = await AuditLog.open(db)
    assert first.number_hash("+18144043093") == second.number_hash("+18144043093")
    assert first.number_hash("+18144043093") != first.number_hash("+18144043094")
    configured = await AuditLog.open(db, "x" * 32)
    assert configured.number_hash("+18144043093") != first.number_hash("+18144043093")


def test_reasons_name_the_error_not_its_text() -> None:
    rejected = NumberRejected(RejectCode.TYPE_NOT_ALLOWED, "+1 900 ••• 0123 is premium rate")
    assert reason_of(rejected) == "NumberRejected:type_not_allowed"
    assert reason_of(RateLimited(429, "slow", "TooMany")) == "RateLimited:429:TooMany"
    assert Decision.ALLOWED == "allowed"


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"audit_hash_key": "short"}, "AUDIT_HASH_KEY: must be at least 16 characters"),
        ({"call_poll_seconds": "5", "call_poll_max_seconds": "2"}, "CALL_POLL_MAX_SECONDS"),
        ({"call_poll_seconds": "0"}, "CALL_POLL_SECONDS"),
        ({"evovoice_requests_per_minute": "0"}, "EVOVOICE_REQUESTS_PER_MINUTE"),
    ],
)
def test_follow_settings_are_checked(env: dict[str, str], problem: str) -> None:
    base = {
        "slack_bot_token": "xoxb-1",
        "slack_app_token": "xapp-1",
        "evovoice_username": "u",
        "evovoice_password": "p",
    }
    with pytest.raises(ConfigError) as raised:
        load_settings(_env_file=None, **base, **env)
    assert any(problem in p for p in raised.value.problems), raised.value.problems


def test_follow_settings_default_and_blank_key() -> None:
    settings = load_settings(
        _env_file=None,
        slack_bot_token="xoxb-1",
        slack_app_token="xapp-1",
        evovoice_username="u",
        evovoice_password="p",
        audit_hash_key="",
    )
    assert settings.audit_hash_key is None
    assert (settings.call_poll_seconds, settings.call_poll_max_seconds) == (2.0, 15.0)
    assert settings.evovoice_requests_per_minute == 120
