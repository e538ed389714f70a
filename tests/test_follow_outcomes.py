"""The outcome a followed call ends with is true: what the session's fields prove, never what they
only hint at (docs/evovoice.md, "Fields read"). Gaps that hand-made mutations of the follower went
through."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from bot.standins.evovoice import EmptyObject, ErrorStatus, Gated, Respond
from tests.conftest import BotFactory, until
from tests.databases import on_both_databases
from tests.interactions import interact, open_form, state, submission
from tests.follow_helpers import (
    FAST,
    FULL,
    audit_records,
    end_session,
    history,
    lines,
    parent_of,
    placed_call,
    poll_now,
    polls_ahead,
    services,
    status_message,
    texts,
    wait_for_edit,
    wait_for_mark,
)


async def test_a_call_disconnected_after_ringing_has_ended_before_evo_voice_says_so(
    bot_factory: BotFactory,
) -> None:
    # Declined while ringing: `callState` says Disconnected before `ended` is set, and
    # `dateCompleted` is still .NET's placeholder. Seen ringing before, the call is over.
    bot, status, session_id = await placed_call(bot_factory)
    assert "Ringing" in texts(status)[0]
    bot.evo.set_session_state(
        session_id, callState="Disconnected", dateCompleted="0001-01-01T00:00:00"
    )
    await poll_now(bot)
    await wait_for_edit(bot, status, "Ended")
    assert "❌ Ended: not answered." in (status.text or "")
    assert await wait_for_mark(bot, parent_of(bot, status)) == "x"


async def test_a_name_shown_while_ringing_never_makes_the_call_answered(
    bot_factory: BotFactory,
) -> None:
    # `answeredByName` may be filled while the phone still rings (a voicemail box's name, say):
    # a call that then ends without connecting was not answered, by anyone, anywhere it is told.
    bot, status, session_id = await placed_call(bot_factory)
    seen = len(bot.evo.reads_of(session_id))
    bot.evo.set_session_state(session_id, callState="Ringing", answeredByName="Voicemail of Alice")
    await poll_now(bot)
    await until(lambda: len(bot.evo.reads_of(session_id)) > seen)  # polled with the name showing
    end_session(bot, session_id, after_seconds=30, outcome="No answer")
    await poll_now(bot)
    await wait_for_edit(bot, status, "Ended")
    assert await wait_for_mark(bot, parent_of(bot, status)) == "x"
    assert "❌ Ended: No answer, lasted 30 s." in (status.text or "")
    assert "Voicemail" not in str(texts(status)) and "answered by" not in str(texts(status))
    [record] = await audit_records(bot)
    ended = record.last("ended")
    assert ended is not None and ended.answered_by is None
    [line] = str((await history(bot))["text"]).splitlines()[1:]
    assert line.split(" · ")[4].startswith("❌ not answered"), line


async def test_an_edit_lost_before_a_restart_is_made_by_the_next_start(
    bot_factory: BotFactory,
) -> None:
    # Slack refused the edit to Connected, then the bot stopped: the row says connected, the
    # message still "Ringing". The next start edits it at once, not at the call's next change.
    first = await bot_factory("http", **FAST)
    await first.command(f"{FULL} escalation")
    status = await status_message(first)
    [session_id] = first.evo.sessions
    first.slack.fail("chat.update", "internal_error", times=1)
    first.evo.set_session_state(session_id, callState="Connected", answeredByName="Bo")
    await poll_now(first)
    refused = await first.slack.wait_for_call("chat.update", lambda c: not c.ok)
    assert "Connected" in str(refused.params.get("text"))
    await first.runtime.stop(grace=5)
    assert "Ringing" in (status.text or "")

    second = await bot_factory("http", **FAST)  # the same database; the session unchanged
    await second.slack.wait_for_call(
        "chat.update", lambda c: c.ok and c.params.get("ts") == status.ts, timeout=10)
    assert "Connected (answered by Bo)" in (status.text or "")


async def test_the_parents_outcome_edit_keeps_the_reason_it_was_posted_with(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **FAST)
    view = await open_form(bot, FULL)
    await interact(bot, submission(view, state(flow="flow-esc", reason="INC-42 db down")))
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=30, outcome="No answer")
    await poll_now(bot)
    parent = parent_of(bot, status)
    assert await wait_for_mark(bot, parent) == "x"
    assert "INC-42 db down" in texts(parent)[-1] and texts(parent)[-1].endswith("❌ Not answered.")


async def test_a_parent_edit_slack_refuses_is_tried_again(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", **FAST)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    parent = parent_of(bot, status)
    [session_id] = bot.evo.sessions
    bot.slack.fail("chat.update", "internal_error", times=1,
                   when=lambda c: c.params.get("ts") == parent.ts)
    end_session(bot, session_id, after_seconds=30, outcome="No answer")
    await poll_now(bot)
    assert await wait_for_mark(bot, parent) == "x"
    assert texts(parent)[-1].endswith("❌ Not answered.")


async def test_a_call_over_before_the_bot_learned_of_it_ends_with_its_outcome(
    bot_factory: BotFactory,
) -> None:
    # The POST's answer is lost (5xx) and the call is declined meanwhile: the session the bot
    # finds has already ended. It ends as any call does: its outcome, its audit event.
    bot = await bot_factory("http", **FAST)
    session = bot.evo.add_session(toAddress=FULL, accountId="acct-1", flowId="flow-esc")
    end_session(bot, session["id"], after_seconds=8, outcome="Declined")
    bot.evo.queue_outgoing(ErrorStatus(500))
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    assert "Ended" not in texts(status)[0]  # no outcome drawn before it is read
    assert await wait_for_mark(bot, parent_of(bot, status)) == "x"
    await wait_for_edit(bot, status, "❌ Ended: Declined, lasted 8 s.")
    [record] = await audit_records(bot)
    ended = record.last("ended")
    assert ended is not None and ended.outcome == "Declined" and ended.duration_seconds == 8.0
    [line] = str((await history(bot))["text"]).splitlines()[1:]
    assert line.split(" · ")[4].startswith("❌ not answered, Declined"), line


async def test_a_call_seen_connected_as_it_was_found_counts_as_picked_up(
    bot_factory: BotFactory,
) -> None:
    # Answered while Evo Voice was slow to answer the POST (lost: 5xx), and over before the
    # first poll: it was seen connected, so it was picked up (by a person or a voicemail).
    bot = await bot_factory("http", **FAST)
    session = bot.evo.add_session(toAddress=FULL, accountId="acct-1", flowId="flow-esc",
                                  callState="Connected", answeredByName="Alice Example")
    bot.evo.queue_outgoing(ErrorStatus(500))
    first_poll = asyncio.Event()
    bot.evo.queue("GET", "/sessions", Respond(), Gated(first_poll))  # the lookup, then a poll
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    assert "Connected" in texts(status)[0]
    end_session(bot, session["id"], after_seconds=40, outcome="Completed")
    await poll_now(bot)
    first_poll.set()
    assert await wait_for_mark(bot, parent_of(bot, status)) == "phone"
    assert "☎️ Ended: Completed, answered by Alice Example, lasted 40 s." in (status.text or "")
    [record] = await audit_records(bot)
    assert [e.kind for e in record.events] == ["unknown", "answered", "ended"]


async def test_a_session_evo_voice_cannot_find_for_a_moment_is_still_followed(
    bot_factory: BotFactory,
) -> None:
    # A new session read alone may answer 404 for a moment: only one unknown for
    # CALL_FIND_SECONDS is given up, not one that shows up again.
    bot = await bot_factory("http", **FAST)
    bot.evo.omitted_from_listings.add("sess-1")  # read alone, then
    bot.evo.queue("GET", "/sessions/sess-1", ErrorStatus(404, "Session not found"),
                  ErrorStatus(404, "Session not found"))
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    assert session_id == "sess-1"
    await until(lambda: len(bot.evo.requests_to("GET", "/sessions/sess-1")) > 2)
    end_session(bot, session_id, after_seconds=20, outcome="Completed")
    await poll_now(bot)
    await wait_for_edit(bot, status, "Ended")
    assert not any("stopped following" in t for t in texts(status))


async def test_a_passive_session_is_neither_answered_nor_over(bot_factory: BotFactory) -> None:
    # `Passive` is one of callState's values whose meaning nothing public gives: not an answer.
    # Seen ringing, the call stays so (a Passive read is no news).
    bot, status, session_id = await placed_call(bot_factory)
    seen = len(bot.evo.reads_of(session_id))
    bot.evo.set_session_state(session_id, callState="Passive")
    await poll_now(bot)
    await until(lambda: len(bot.evo.reads_of(session_id)) > seen + 1)  # polled while Passive
    end_session(bot, session_id, after_seconds=30, outcome="No answer")
    await poll_now(bot)
    assert await wait_for_mark(bot, parent_of(bot, status)) == "x"
    assert not any("Connected" in t for t in texts(status))


async def test_a_passive_read_after_an_answer_neither_unanswers_the_call_nor_hides_its_end(
    bot_factory: BotFactory,
) -> None:
    # Connected, then `Passive` (a value nothing public explains), then `Disconnected` before
    # `ended` is set: the call was picked up and is over. Read as "calling", it showed
    # "⏳ Calling…" after the answer, and the Disconnected that ends a call seen live never did.
    bot, status, session_id = await placed_call(bot_factory)
    bot.evo.set_session_state(session_id, callState="Connected")
    await poll_now(bot)
    await wait_for_edit(bot, status, "🟢 Connected")
    seen = len(bot.evo.reads_of(session_id))
    bot.evo.set_session_state(session_id, callState="Passive")
    await poll_now(bot)
    await until(lambda: len(bot.evo.reads_of(session_id)) > seen + 1)  # polled while Passive
    bot.evo.set_session_state(
        session_id, callState="Disconnected", dateCompleted="0001-01-01T00:00:00"
    )
    await poll_now(bot)
    await wait_for_edit(bot, status, "Ended")
    assert await wait_for_mark(bot, parent_of(bot, status)) == "phone"
    assert not any("Calling" in t for t in texts(status)[1:])


@pytest.mark.parametrize("state", ["Connected", "Hold"])
async def test_a_call_first_read_connected_as_it_ends_was_picked_up(
    bot_factory: BotFactory, state: str
) -> None:
    # Seen ringing; the next read has `ended` set while callState still says Connected (ended
    # flipping before callState, or answered and over between two polls): Connected is the sign
    # of an answer, and "❌ not answered" would tell the requester nobody picked up.
    bot, status, session_id = await placed_call(bot_factory)
    end_session(bot, session_id, after_seconds=40, callState=state, outcome="Completed")
    await poll_now(bot)
    await wait_for_edit(bot, status, "Ended")
    assert "☎️ Ended: Completed, lasted 40 s." in texts(status)[-1]
    assert await wait_for_mark(bot, parent_of(bot, status)) == "phone"
    [answer] = lines(await history(bot))
    assert "☎️ picked up (a person or a voicemail)" in answer


@pytest.mark.parametrize("ended", [False, True])
async def test_an_outcome_written_one_poll_after_the_end_is_still_told(
    bot_factory: BotFactory, ended: bool
) -> None:
    # When a flow's outcome shows is unknown (README, "Acknowledging on the phone"): it may be
    # written a moment after the session reads over (Disconnected, `ended` not yet or already
    # set). Teams read "Ended: <outcome>" here to fill in ack_outcomes: it must not be lost.
    bot, status, session_id = await placed_call(bot_factory)
    bot.evo.set_session_state(session_id, callState="Connected")
    await poll_now(bot)
    await wait_for_edit(bot, status, "🟢 Connected")
    gate = asyncio.Event()
    bot.evo.queue("GET", "/sessions", Respond(), Gated(gate))  # the end read, then the next held
    seen = len(bot.evo.reads_of(session_id))
    bot.evo.set_session_state(session_id, callState="Disconnected", ended=ended,
                              dateCompleted="0001-01-01T00:00:00")
    await poll_now(bot)
    await until(lambda: len(bot.evo.reads_of(session_id)) > seen)  # the end read, no outcome
    end_session(bot, session_id, after_seconds=30, outcome="Acknowledged")
    await poll_now(bot)
    gate.set()
    await wait_for_edit(bot, status, "Ended")
    await bot.settle()
    assert "☎️ Ended: Acknowledged, lasted 30 s." in texts(status)[-1]
    assert [line for line in texts(status) if "Ended" in line] == [texts(status)[-1]]
    [answer] = lines(await history(bot))
    assert "Acknowledged" in answer


async def test_an_unconfirmed_call_takes_the_session_closest_to_its_attempt(
    bot_factory: BotFactory,
) -> None:
    # Someone called the number from Evo Voice itself 20 s before: that session is in the lookup's
    # window too, but the one created as this call was dialled is this call's.
    bot = await bot_factory("http", **FAST)
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=20)
    other = bot.evo.add_session(
        toAddress=FULL, accountId="acct-1", flowId="flow-daily",
        dateCreated=earlier.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    )
    bot.evo.queue_outgoing(EmptyObject())  # placed, but the answer names no session
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [ours] = [s for s in bot.evo.sessions if s != other["id"]]
    await wait_for_edit(bot, status, f"session `{ours}`")
    end_session(bot, other["id"], after_seconds=30, outcome="Completed")
    end_session(bot, ours, after_seconds=12, outcome="No answer")
    await poll_now(bot)
    await wait_for_edit(bot, status, "❌ Ended: No answer, lasted 12 s.")
    assert other["id"] not in str(texts(status))


async def test_a_call_still_being_looked_for_is_looked_for_again_after_a_restart(
    bot_factory: BotFactory,
) -> None:
    first = await bot_factory("http", **FAST)
    first.evo.queue_outgoing(ErrorStatus(500))  # may or may not have been placed
    await first.command(f"{FULL} escalation")
    status = await status_message(first)
    assert "Looking for the call" in texts(status)[0]
    await first.runtime.stop(grace=5)

    session = first.evo.add_session(toAddress=FULL, accountId="acct-1", flowId="flow-esc")
    second = await bot_factory("http", **FAST)  # the same database
    await wait_for_edit(second, status, session["id"])
    end_session(second, session["id"], after_seconds=9, outcome="Completed")
    await poll_now(second)
    await wait_for_edit(second, status, "Ended: Completed")


FIND_SECONDS = float(FAST["CALL_FIND_SECONDS"])  # how long a session may be unknown


async def test_one_404_late_in_a_call_does_not_end_its_following(bot_factory: BotFactory) -> None:
    # Long after CALL_FIND_SECONDS, the session is answered 404 once (a proxy's hiccup, say):
    # only a session unknown for CALL_FIND_SECONDS is given up, so the outcome is still told.
    bot = await bot_factory("http", **FAST)
    bot.evo.omitted_from_listings.add("sess-1")  # read alone, then
    bot.evo.queue("GET", "/sessions/sess-1", ErrorStatus(404, "Session not found"))  # new: once
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    assert session_id == "sess-1"
    bot.evo.set_session_state(session_id, callState="Connected")
    await poll_now(bot)
    await wait_for_edit(bot, status, "Connected")
    polls_ahead(bot, FIND_SECONDS + 1)  # placed longer ago than that, as its polls see it
    bot.evo.queue("GET", f"/sessions/{session_id}", ErrorStatus(404, "Session not found"))
    await until(lambda: len(bot.evo.requests_to("GET", f"/sessions/{session_id}")) > 1)
    end_session(bot, session_id, after_seconds=20, outcome="Completed")
    await poll_now(bot)
    await wait_for_edit(bot, status, "☎️ Ended: Completed")
    assert not any("stopped following" in t for t in texts(status))


# A 500 for every listing while each session reads fine: nothing public says the two fail
# together, and a listing is a different operation (docs/evovoice-api.md).
@pytest.mark.parametrize("refusal", [ErrorStatus(404, "Session not found"), ErrorStatus(500)],
                         ids=["404", "500"])
async def test_listings_answered_404_do_not_end_the_following_of_a_call_still_on(
    bot_factory: BotFactory, refusal: ErrorStatus
) -> None:
    # Polls read sessions in listings of specific ids; what a listing answers when one id is
    # unknown nothing public says, and a 404 for it says nothing of this session. Taken as this
    # session's 404, the call was given up on as lost after CALL_FIND_SECONDS, still ringing.
    bot = await bot_factory("http", **FAST)
    bot.evo.default_behaviours[("GET", "/sessions")] = refusal
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    def listings() -> int:
        return len([r for r in bot.evo.requests_to("GET", "/sessions") if "specificIds" in r.query])

    # A listing refused (the next one is sent once it has been answered); then, as the polls see
    # it, twice CALL_FIND_SECONDS go by, and a listing is refused after that too.
    await until(lambda: listings() >= 2)
    polls_ahead(bot, 2 * FIND_SECONDS)
    await poll_now(bot)
    listed = listings()
    await until(lambda: listings() > listed + 1)
    bot.evo.set_session_state(session_id, callState="Connected")
    await poll_now(bot)
    await wait_for_edit(bot, status, "Connected")
    end_session(bot, session_id, after_seconds=20, outcome="Completed")
    await poll_now(bot)
    await wait_for_edit(bot, status, "☎️ Ended: Completed")
    assert not any("stopped following" in t for t in texts(status))


@on_both_databases
async def test_an_end_slack_refused_until_a_restart_is_shown_by_the_next_start(
    bot_factory: BotFactory,
) -> None:
    # The call ends while Slack refuses every edit; the bot is stopped before Slack recovers. The
    # row is no longer followed, yet its end was never shown: the next start shows it.
    first = await bot_factory("http", **FAST)
    await first.command(f"{FULL} escalation")
    status = await status_message(first)
    parent = parent_of(first, status)
    [session_id] = first.evo.sessions
    first.slack.fail("chat.update", "internal_error")
    end_session(first, session_id, after_seconds=30, outcome="No answer")
    await poll_now(first)
    await first.slack.wait_for_call(
        "chat.update", lambda c: not c.ok and "Ended" in str(c.params.get("text")))
    await first.runtime.stop(grace=1)
    first.slack.off("chat.update")
    assert "Ringing" in (status.text or "")

    second = await bot_factory("http", **FAST)  # the same database
    await wait_for_edit(second, status, "❌ Ended: No answer, lasted 30 s.")
    assert await wait_for_mark(second, parent) == "x"
    assert texts(parent)[-1].endswith("❌ Not answered.")


@on_both_databases
async def test_an_end_slack_refused_while_its_bot_stops_is_shown_by_another_running_on(
    bot_factory: BotFactory,
) -> None:
    # Two replicas; the one following the call is stopped (SIGTERM: a scale-down, say) while
    # Slack refuses the end. The other, running on, shows it: no start of any replica needed.
    first = await bot_factory("http", **FAST, LEASE_SECONDS="3")
    second = await bot_factory("http", **FAST, LEASE_SECONDS="3")  # the same database
    await first.command(f"{FULL} escalation")
    status = await status_message(first)
    parent = parent_of(first, status)
    [session_id] = first.evo.sessions
    first.slack.fail("chat.update", "internal_error")
    end_session(first, session_id, after_seconds=30, outcome="No answer")
    await poll_now(first)
    await first.slack.wait_for_call(
        "chat.update", lambda c: not c.ok and "Ended" in str(c.params.get("text")))
    await first.runtime.stop(grace=1)
    first.slack.off("chat.update")
    services(second).leases.wake()  # its lease keeper's next round now, not in half a second

    await wait_for_edit(second, status, "❌ Ended: No answer, lasted 30 s.")
    assert await wait_for_mark(second, parent) == "x"


async def test_a_restart_leaves_the_calls_already_shown_over_alone(bot_factory: BotFactory) -> None:
    first = await bot_factory("http", **FAST)
    await first.command(f"{FULL} escalation")
    status = await status_message(first)
    [session_id] = first.evo.sessions
    end_session(first, session_id, after_seconds=30, outcome="No answer")
    await poll_now(first)
    assert await wait_for_mark(first, parent_of(first, status)) == "x"
    await first.runtime.stop(grace=1)
    edits = len(first.slack.calls_to("chat.update"))

    second = await bot_factory("http", **FAST)  # the same database
    await asyncio.wait_for(asyncio.gather(*services(second).follower.tasks()), 10)
    assert len(second.slack.calls_to("chat.update")) == edits  # nothing edited again
    assert len(second.slack.calls_to("reactions.add")) == 1


async def test_a_long_outcome_with_a_less_than_sign_is_shortened_not_cut_back_to_it(
    bot_factory: BotFactory,
) -> None:
    # Evo Voice's outcome is its flow's words: a long one is shortened to fit the status line.
    # Shortened as if its `<` began a mention, everything after the `<` went, and with it what
    # happened on the call ("Menu…").
    bot, status, session_id = await placed_call(bot_factory)
    bot.evo.set_session_state(session_id, callState="Connected", answeredByName="Alice")
    await poll_now(bot)
    await wait_for_edit(bot, status, "Connected")
    outcome = ("Menu < 2 s: acknowledged by pressing 1, then the callee hung up on the recorded "
               "message before it ended")
    end_session(bot, session_id, after_seconds=40, outcome=outcome)
    await poll_now(bot)
    await wait_for_edit(bot, status, "Ended")
    assert "☎️ Ended: Menu &lt; 2 s: acknowledged by pressing 1, then the callee hung up" in (
        status.text or "")
    shown = lines(await history(bot))[0]
    assert "Menu &lt; 2 s: acknowledged by pressing 1, then the callee hung up" in shown
