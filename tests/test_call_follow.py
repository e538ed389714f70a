"""Following a call end to end: one status message edited as the session moves, the parent marked,
Hang up and Call again, a restart in the middle, and unconfirmed calls resolved or reported."""

from __future__ import annotations

import asyncio

import pytest

from bot.calls.status_views import CALL_AGAIN_ACTION, HANG_UP_ACTION
from bot.calls.store import CallState
from bot.standins.evovoice import EmptyObject, ErrorStatus, Gated
from tests.budget_clock import LeapingClock
from tests.conftest import POLICY_NO_REPEAT_QUESTION, BotFactory, BotUnderTest, until
from tests.databases import on_both_databases
from tests.follow_helpers import (
    CHANNEL,
    FAST,
    FULL,
    MASKED,
    audit_records,
    buttons,
    click,
    end_session,
    everything_sent_to_slack,
    history,
    looked_for_long_enough,
    parent_of,
    placed_call,
    poll_now,
    services,
    status_message,
    status_ts_recorded,
    texts,
    wait_for_edit,
    wait_for_mark,
)


async def test_a_number_given_as_who_answered_is_masked(bot_factory: BotFactory) -> None:
    # Evo Voice names the answering party as it likes: a phone number too.
    bot, status, session_id = await placed_call(bot_factory)
    bot.evo.set_session_state(session_id, callState="Connected", answeredByName=FULL)
    await poll_now(bot)
    await wait_for_edit(bot, status, f"answered by {MASKED}")
    # /call history while the call is on: picked up, and by whom nowhere in full.
    [line] = str((await history(bot))["text"]).splitlines()[1:]
    assert line.split(" · ")[4].startswith("🟢 in progress, picked up (session"), line
    assert FULL not in everything_sent_to_slack(bot)


async def test_a_number_inside_evo_voice_s_words_is_masked_everywhere(
    bot_factory: BotFactory,
) -> None:
    # A flow's outcome or a voicemail box's name may quote the number called: the row keeps
    # them (for /call history) long after the call's own number is erased, so it is masked
    # before anything is kept, not only when it is the whole text.
    bot, status, session_id = await placed_call(bot_factory)
    bot.evo.set_session_state(session_id, callState="Connected",
                              answeredByName=f"Voicemail of {FULL}")
    await poll_now(bot)
    await wait_for_edit(bot, status, f"answered by Voicemail of {MASKED}")
    end_session(bot, session_id, after_seconds=20, outcome=f"Left a message for {FULL}")
    await poll_now(bot)
    await wait_for_edit(bot, status, f"☎️ Ended: Left a message for {MASKED}")
    [line] = str((await history(bot))["text"]).splitlines()[1:]
    assert f"Left a message for {MASKED}" in line
    assert FULL not in everything_sent_to_slack(bot)
    [record] = await audit_records(bot)
    ended = record.last("ended")
    assert ended is not None and FULL not in f"{ended.outcome} {ended.answered_by}"


@pytest.fixture(params=["http", "socket"])
async def fast_bot(request: pytest.FixtureRequest, bot_factory: BotFactory) -> BotUnderTest:
    """The bot following calls quickly, once in HTTP mode and once in Socket Mode."""
    return await bot_factory(request.param, **FAST)


async def test_one_status_message_follows_the_call_to_its_end(fast_bot: BotUnderTest) -> None:
    bot = fast_bot
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    assert "Ringing" in texts(status)[0] and session_id in texts(status)[0]
    assert status.versions[0]["blocks"][-1]["elements"][0]["action_id"] == HANG_UP_ACTION

    bot.evo.set_session_state(session_id, callState="Connected", answeredByName="Alice Example")
    await poll_now(bot)
    await wait_for_edit(bot, status, "Connected (answered by Alice Example)")
    end_session(bot, session_id, after_seconds=125, outcome="Completed")
    await poll_now(bot)
    await wait_for_edit(bot, status, "Ended")
    parent = parent_of(bot, status)
    # Connected and ended without an acknowledging outcome (this policy lists none): picked up,
    # by a person or a voicemail (tests/test_call_outcomes.py has the acknowledged call).
    assert await wait_for_mark(bot, parent) == "phone"

    versions = texts(status)
    assert len(versions) == 3, versions  # edited on changes only, however often it was polled
    assert "Ringing" in versions[0] and "Connected" in versions[1]
    assert "Ended: Completed, answered by Alice Example, lasted 2m 05s" in versions[2]
    # No ✅ on the way, nor at the end: nothing says a person heard it.
    assert not any("✅" in v for v in versions), versions
    assert versions[2].startswith("📲 Call placed") and "☎️ Ended" in versions[2]
    # The parent carries the outcome, added by an edit once the call is over.
    assert "☎️" not in texts(parent)[0]
    assert texts(parent)[-1].endswith(
        "\n☎️ Picked up by a person or a voicemail (can't tell which).")
    assert set(buttons(status)) == {CALL_AGAIN_ACTION}
    assert bot.slack.thread(CHANNEL, parent.ts) == [status]  # one message in the thread
    assert len(bot.evo.reads_of(session_id)) >= 2
    assert FULL not in everything_sent_to_slack(bot)

    [record] = await audit_records(bot)
    assert [e.kind for e in record.events] == ["placed", "answered", "ended"]
    ended = record.events[-1]
    assert (ended.outcome, ended.answered_by, ended.duration_seconds) == (
        "Completed", "Alice Example", 125.0
    )
    assert ended.session_id == session_id


async def test_an_unanswered_call_is_marked_with_a_cross(bot_factory: BotFactory) -> None:
    bot, status, session_id = await placed_call(bot_factory)
    end_session(bot, session_id, after_seconds=30, outcome="No answer")
    await poll_now(bot)
    await wait_for_edit(bot, status, "Ended")
    assert await wait_for_mark(bot, parent_of(bot, status)) == "x"
    assert "❌ Ended: No answer, lasted 30 s." in status.text


async def test_without_the_reactions_scope_the_parent_still_carries_the_outcome(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **FAST)
    assert bot.slack.bot_scopes is not None
    bot.slack.bot_scopes.remove("reactions:write")  # an app installed without it
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=30, outcome="No answer")
    await poll_now(bot)
    await wait_for_edit(bot, status, "Ended")
    parent = parent_of(bot, status)
    mark = await bot.slack.wait_for_call(
        "reactions.add", lambda c: c.params.get("timestamp") == parent.ts
    )
    assert not mark.ok and mark.response["error"] == "missing_scope"
    await bot.slack.wait_for_call(
        "chat.update", lambda c: c.params.get("ts") == parent.ts and "Not answered" in str(c.params)
    )
    assert parent.reactions == []
    # Refused for good: the call counts as marked, so neither the reaction nor the parent's edit
    # is tried again for the next ten minutes (before, the row stayed unmarked and both were).
    store = services(bot).follower.store

    async def marked() -> None:
        while (call := await store.get(1)) is None or not call.marked:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(marked(), 10)
    assert len([c for c in bot.slack.calls_to("reactions.add")
                if c.params.get("timestamp") == parent.ts]) == 1


async def test_hang_up_ends_the_call_in_evo_voice(fast_bot: BotUnderTest) -> None:
    bot = fast_bot
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    await status_ts_recorded(bot, 1)

    ack, _ = await click(bot, status, HANG_UP_ACTION)
    assert ack.status == 200
    await wait_for_edit(bot, status, "Hung up by <@U0MANAGER>")
    assert len(bot.evo.hang_ups(session_id)) == 1
    assert "Ended: Hung up" in status.text
    assert HANG_UP_ACTION not in buttons(status)
    assert await wait_for_mark(bot, parent_of(bot, status)) == "x"
    [record] = await audit_records(bot)
    hang_up = record.last("hang_up")
    assert hang_up is not None and hang_up.actor_id == "U0MANAGER"
    [line] = str((await history(bot))["text"]).splitlines()[1:]
    assert ", hung up by <@U0MANAGER> (session" in line.split(" · ")[4], line


async def test_a_hang_up_s_edit_on_another_replica_never_leaves_the_status_behind_the_end(
    bot_factory: BotFactory,
) -> None:
    """Two replicas. Hang up is clicked on the one not following the call; Slack is slow to take
    its edit ("Hanging up…"), and meanwhile the replica following the call shows the end. The
    slow edit lands last, yet the status still comes to show the end, not a live call."""
    slow = {"CALL_POLL_SECONDS": "60", "CALL_POLL_MAX_SECONDS": "600"}  # polled when poked
    first = await bot_factory("http", **slow)
    second = await bot_factory("http", **slow)  # the same database
    await first.command(f"{FULL} escalation")
    status = await status_message(first)
    call_id = int(buttons(status)[HANG_UP_ACTION])
    await status_ts_recorded(first, call_id)  # by the first replica, once Slack took the message
    held = first.slack.hold("chat.update", when=lambda c: "Hanging up" in str(c["text"]))
    await click(second, status, HANG_UP_ACTION)
    await held.wait_until_held()  # the second replica's edit, drawn while the call was live
    services(first).follower.poke(call_id)  # the follower sees the end and shows it
    await wait_for_edit(first, status, "Ended: Hung up")
    held.open()
    await second.settle()
    await until(lambda: "Ended: Hung up" in str(status.text))
    assert HANG_UP_ACTION not in buttons(status)


async def test_a_hang_up_evo_voice_refuses_is_said_and_not_shown_as_done(
    bot_factory: BotFactory,
) -> None:
    bot, status, session_id = await placed_call(bot_factory)
    for method in ("DELETE", "PATCH"):  # EndSession or PatchSession, whichever the login may use
        bot.evo.queue(method, f"/sessions/{session_id}", ErrorStatus(500))

    _, url = await click(bot, status, HANG_UP_ACTION)
    [answer] = await bot.slack.wait_for_response(url)
    assert answer["response_type"] == "ephemeral"
    # Evo Voice's words end in a full stop before the bot's own sentence begins.
    assert answer["text"].startswith(
        "Evo Voice did not hang up: Internal server error. The call may still be going on; "
    )
    await bot.settle()
    assert "Hung up" not in (status.text or "")
    assert HANG_UP_ACTION in buttons(status)  # still live: the button stays, to try again
    [record] = await audit_records(bot)
    failed = record.last("hang_up_failed")
    assert failed is not None and failed.actor_id == "U0MANAGER"
    assert record.last("hang_up") is None


async def test_only_the_requester_or_a_manager_may_hang_up(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", **FAST)
    # U0LEAD1 is a Manager through a user group; U0INTRUDER holds no role at all.
    await bot.command(f"{FULL} escalation", user_id="U0LEAD1")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    await status_ts_recorded(bot, 1)

    _, url = await click(bot, status, HANG_UP_ACTION, user_id="U0INTRUDER")
    [answer] = await bot.slack.wait_for_response(url)
    assert answer["response_type"] == "ephemeral"
    assert "not allowed" in answer["text"]
    await bot.settle()
    assert bot.evo.hang_ups(session_id) == []

    await click(bot, status, HANG_UP_ACTION, user_id="U0ADMIN")  # a SystemAdministrator
    await wait_for_edit(bot, status, "Hung up by <@U0ADMIN>")
    assert len(bot.evo.hang_ups(session_id)) == 1


async def test_hang_up_after_the_end_sends_nothing(bot_factory: BotFactory) -> None:
    bot, status, session_id = await placed_call(bot_factory)
    hang_up_value = buttons(status)[HANG_UP_ACTION]
    end_session(bot, session_id, after_seconds=10, outcome="Completed")
    await poll_now(bot)
    await wait_for_edit(bot, status, "Ended")

    # A stale client still shows the button.
    _, url = await click(bot, status, HANG_UP_ACTION, value=hang_up_value)
    [answer] = await bot.slack.wait_for_response(url)
    assert "no longer going on" in answer["text"]
    assert bot.evo.hang_ups(session_id) == []


async def test_a_forged_or_foreign_button_value_does_nothing(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", **FAST)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    await status_ts_recorded(bot, 1)
    for value in ("999", "1; DROP TABLE calls", "-1", "", "9" * 30):
        _, url = await click(bot, status, HANG_UP_ACTION, value=value)
        [answer] = await bot.slack.wait_for_response(url)
        assert "no longer works" in answer["text"]
    assert bot.evo.hang_ups(next(iter(bot.evo.sessions))) == []


async def test_call_again_dials_once_with_the_same_number_flow_and_caller_id(
    fast_bot: BotUnderTest,
) -> None:
    bot = fast_bot
    await bot.command(f"{FULL} wake-up-call +18145550101")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=20, outcome="No answer")
    await poll_now(bot)
    await wait_for_edit(bot, status, "Ended")
    [first] = bot.evo.outgoing_posts
    call_again_value = buttons(status)[CALL_AGAIN_ACTION]

    # A double click: two clicks, moments apart, each with its own action_ts.
    await asyncio.gather(
        click(bot, status, CALL_AGAIN_ACTION), click(bot, status, CALL_AGAIN_ACTION)
    )
    again = await status_message(bot, 2)
    await bot.settle()
    posts = bot.evo.outgoing_posts
    assert len(posts) == 2
    assert posts[1].json == first.json == {
        "flowId": "flow-wake", "numberToDial": FULL, "callerId": "+18145550101"
    }
    assert again.thread_ts != status.thread_ts  # a new call, with its own parent in the channel
    assert MASKED in parent_of(bot, again).text
    await wait_for_edit(bot, status, "called this number again")
    assert CALL_AGAIN_ACTION not in buttons(status)

    # A deliberate click later on the old message is told to use the newer call's buttons.
    _, url = await click(bot, status, CALL_AGAIN_ACTION, value=call_again_value)
    [answer] = await bot.slack.wait_for_response(url)
    assert "already called again" in answer["text"]
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 2

    records = await audit_records(bot)
    decisions = [(r.origin, r.decision) for r in records]
    assert ("call_again", "allowed") in decisions and ("call_again", "duplicate") in decisions
    repeat = next(r for r in records if r.origin == "call_again" and r.decision == "allowed")
    original = records[-1]
    assert repeat.repeat_of == original.id and repeat.user_id == "U0MANAGER"
    called_again = original.last("called_again")
    assert called_again is not None and called_again.actor_id == "U0MANAGER"


async def test_call_again_goes_through_the_same_checks(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", **FAST)
    await bot.command(f"{FULL} escalation +18145550101", user_id="U0LEAD1")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=5, outcome="Busy")
    await poll_now(bot)
    await wait_for_edit(bot, status, "Ended")

    _, url = await click(bot, status, CALL_AGAIN_ACTION, user_id="U0INTRUDER")
    [answer] = await bot.slack.wait_for_response(url)
    # Refused by the button's own rule (the requester or a role), before any call is checked.
    assert "not allowed to use this call's buttons" in answer["text"]

    # The caller ID is no longer the account's: refused before dialling, like a typed command.
    bot.evo.phone_numbers[:] = [n for n in bot.evo.phone_numbers if n["id"] != "ep-2"]
    services(bot).catalog.forget()
    _, url = await click(bot, status, CALL_AGAIN_ACTION, user_id="U0LEAD1")
    [answer] = await bot.slack.wait_for_response(url)
    assert "not one of the account's phone numbers" in answer["text"]
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1

    # The refusal did not use the button up: once the number is back, it works.
    bot.evo.phone_numbers.append(
        {"id": "ep-2", "phoneNumber": "+18145550101", "accountId": "acct-1"}
    )
    services(bot).catalog.forget()
    await click(bot, status, CALL_AGAIN_ACTION, user_id="U0LEAD1")
    await status_message(bot, 2)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 2


async def test_call_again_is_offered_only_once_the_call_is_over(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", **FAST)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    call_id = buttons(status)[HANG_UP_ACTION]
    await status_ts_recorded(bot, int(call_id))
    _, url = await click(bot, status, CALL_AGAIN_ACTION, value=call_id)
    [answer] = await bot.slack.wait_for_response(url)
    assert "still going on" in answer["text"]
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1


async def test_call_again_under_a_flow_with_a_very_long_name_is_accepted_by_slack(
    bot_factory: BotFactory,
) -> None:
    # The button's confirm dialog names the flow, and Slack refuses a dialog text over 300.
    bot = await bot_factory("http", **FAST)
    name = "Escalation " + "x" * 289
    bot.evo.flows.append({"id": "flow-long", "name": name, "accountId": "acct-1"})
    services(bot).catalog.forget()
    await bot.command(f"{FULL} flow-long")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=5, outcome="Busy")
    await poll_now(bot)
    await wait_for_edit(bot, status, "Ended")
    assert set(buttons(status)) == {CALL_AGAIN_ACTION}
    assert all(c.ok for c in bot.slack.calls_to("chat.update"))


async def test_a_failed_call_offers_call_again(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(ErrorStatus(400, "Flow is disabled"))
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    assert "Call not placed" in status.text and "Flow is disabled" in status.text
    assert await wait_for_mark(bot, parent_of(bot, status)) == "x"
    assert texts(parent_of(bot, status))[-1].endswith("\n❌ Not placed.")  # not "not answered"
    await click(bot, status, CALL_AGAIN_ACTION)
    await status_message(bot, 2)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 2


@on_both_databases
async def test_a_restart_while_a_call_is_followed(bot_factory: BotFactory) -> None:
    first = await bot_factory("http", **FAST)
    await first.command(f"{FULL} escalation")
    status = await status_message(first)
    [session_id] = first.evo.sessions
    await first.runtime.stop(grace=5)
    polls_before = len(first.evo.reads_of(session_id))

    first.evo.set_session_state(session_id, callState="Connected", answeredByName="Bo")
    second = await bot_factory("http", **FAST)  # the same database
    assert services(second).follower.following == 1
    await wait_for_edit(second, status, "Connected (answered by Bo)")
    end_session(second, session_id, after_seconds=61, outcome="Completed")
    await poll_now(second)
    await wait_for_edit(second, status, "Ended")
    assert await wait_for_mark(second, parent_of(second, status)) == "phone"

    assert len(second.evo.reads_of(session_id)) > polls_before
    assert len(texts(status)) == 3  # still one message: Ringing, Connected, Ended
    # The parent, drawn again from the call's row by a process that never posted it, still says
    # who called what with which flow.
    assert texts(parent_of(second, status))[-1] == (
        f"📞 <@U0MANAGER> is calling {MASKED} with flow “Escalation”\n☎️ Picked up by a person "
        "or a voicemail (can't tell which)."
    )
    assert set(buttons(status)) == {CALL_AGAIN_ACTION}
    [record] = await audit_records(second)
    assert [e.kind for e in record.events] == ["placed", "answered", "ended"]


@on_both_databases
async def test_an_unconfirmed_call_is_resolved_when_its_session_shows_up(
    fast_bot: BotUnderTest,
) -> None:
    bot = fast_bot
    bot.evo.queue_outgoing(ErrorStatus(500))  # may or may not have been placed
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    assert "Outcome unknown" in texts(status)[0] and "Looking for the call" in texts(status)[0]
    assert status.versions[0]["blocks"][-1]["type"] != "actions"  # no buttons while unclear

    session = bot.evo.add_session(toAddress=FULL, accountId="acct-1", callState="Ringing")
    await wait_for_edit(bot, status, "Ringing")
    assert session["id"] in status.text
    assert set(buttons(status)) == {HANG_UP_ACTION}
    # Found: /call history no longer calls its outcome unknown.
    [line] = str((await history(bot))["text"]).splitlines()[1:]
    assert line.split(" · ")[4].startswith("📞 placed, in progress")
    end_session(bot, session["id"], after_seconds=3, outcome="Completed")
    await poll_now(bot)
    await wait_for_edit(bot, status, "Ended")
    assert len(bot.evo.outgoing_posts) == 1

    [record] = await audit_records(bot)
    assert [e.kind for e in record.events][:2] == ["unknown", "session_found"]
    assert record.session_id == session["id"]


async def test_an_unconfirmed_call_is_reported_not_found_after_a_while(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(ErrorStatus(503))
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    await looked_for_long_enough(bot)
    await wait_for_edit(bot, status, "most likely not placed")
    assert await wait_for_mark(bot, parent_of(bot, status)) == "warning"
    assert texts(parent_of(bot, status))[-1].endswith("\n⚠️ Outcome unclear: see the thread.")
    assert set(buttons(status)) == {CALL_AGAIN_ACTION}
    assert len(bot.evo.requests_to("GET", "/sessions")) >= 2
    [record] = await audit_records(bot)
    assert [e.kind for e in record.events] == ["unknown", "not_found"]
    # Nothing says it was dialled at all: /call history doesn't call it placed and lost.
    [line] = str((await history(bot))["text"]).splitlines()[1:]
    assert line.split(" · ")[4].startswith("❔ placed?, no session found ("), line


async def test_a_call_accepted_without_a_session_id_is_found_and_followed(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(EmptyObject())  # placed, but the answer names no session
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    assert "no session id returned yet" in texts(status)[0]
    [session_id] = bot.evo.sessions
    await wait_for_edit(bot, status, session_id)
    end_session(bot, session_id, after_seconds=8, outcome="Completed")
    await poll_now(bot)
    await wait_for_edit(bot, status, "Ended")


async def test_two_unconfirmed_calls_to_one_number_get_a_session_each(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(EmptyObject(), EmptyObject())
    await bot.command(f"{FULL} escalation")
    await bot.command(f"{FULL} daily-check")
    first, second = await status_message(bot, 1), await status_message(bot, 2)
    ids = sorted(bot.evo.sessions)
    await wait_for_edit(bot, first, "session `sess-")
    await wait_for_edit(bot, second, "session `sess-")
    shown = sorted(next(i for i in ids if i in m.text) for m in (first, second))
    assert shown == ids


async def test_without_a_thread_the_outcome_is_still_recorded(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", **FAST)
    bot.slack.fail("chat.postMessage", "channel_not_found")
    _, url = await bot.command(f"{FULL} escalation", channel_id="G0PRIVATE")
    answers = await bot.slack.wait_for_response(url, n=2)
    assert "Call placed" in answers[1]["text"]
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=42, outcome="Completed")
    await poll_now(bot)
    await wait_until_ended(bot)
    [record] = await audit_records(bot)
    ended = record.last("ended")
    assert ended is not None and ended.duration_seconds == 42.0
    assert bot.slack.calls_to("chat.update") == []


async def test_a_call_nobody_could_be_told_of_is_not_announced_later_as_one_cut_short(
    bot_factory: BotFactory,
) -> None:
    """A call placed while Slack reached its requester nowhere (no channel, an expired
    response_url, no direct message) is the operators' to know of (logged, in the audit trail). The
    next start does not tell the requester the bot "restarted while placing" it, which never
    happened, nor look for it again, nor dial it again."""
    first = await bot_factory("http", **FAST)
    first.slack.fail("chat.postMessage", "channel_not_found")
    url = first.slack.response_url()
    first.slack.expire_response_url(url)
    await first.command(f"{FULL} escalation", response_url=url)
    await first.settle()
    [record] = await audit_records(first)
    assert record.result is not None and record.result.kind == "placed"
    await first.runtime.stop()
    first.slack.off("chat.postMessage")

    second = await bot_factory("http", **FAST)  # the same database, Slack back
    await services(second).follower.take_over()
    await second.settle()
    assert "restarted while" not in everything_sent_to_slack(second)
    assert len(second.evo.outgoing_posts) == 1


async def wait_until_ended(bot: BotUnderTest, timeout: float = 10.0) -> None:
    """Without a status message there is nothing in Slack to wait for: watch the call's row."""
    store = services(bot).follower.store

    async def ended() -> None:
        while (call := await store.get(1)) is None or call.state != CallState.ENDED:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(ended(), timeout)


async def test_an_unconfirmed_call_never_takes_another_calls_session(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", policy=POLICY_NO_REPEAT_QUESTION, **FAST)
    await bot.command(f"{FULL} escalation")
    await status_message(bot)
    bot.evo.queue_outgoing(ErrorStatus(500))  # nothing placed this time
    await bot.command(f"{FULL} escalation")
    second = await status_message(bot, 2)
    [session_id] = bot.evo.sessions
    assert session_id not in texts(second)[0]
    await looked_for_long_enough(bot)
    await wait_for_edit(bot, second, "most likely not placed")
    assert session_id not in second.text
    newest, oldest = await audit_records(bot)
    assert newest.session_id is None and oldest.session_id == session_id


async def test_many_calls_are_followed_at_once(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", **FAST)
    # Following is the subject: 60 posts in one channel at once would spend a minute of Slack's
    # posting limit, and the last statuses would go by response URL (tests/test_phone_first.py).
    bot.slack.posting_rate = None
    # The request budget's waits for tokens (tests/test_polling_budget.py) take no real time here.
    budget, clock = services(bot).evo.budget, LeapingClock()
    budget.clock, budget.sleep = clock, clock.sleep
    numbers = [f"+1814404{3000 + i}" for i in range(30)]
    await asyncio.gather(*(bot.command(f"{n} escalation") for n in numbers))
    statuses = [await status_message(bot, i + 1) for i in range(len(numbers))]
    await bot.settle()  # every placement done: each call has its follower by now
    assert services(bot).follower.following == len(numbers)
    for session_id in list(bot.evo.sessions):
        end_session(bot, session_id, after_seconds=12, outcome="Completed")
    await poll_now(bot)
    for status in statuses:
        await wait_for_edit(bot, status, "Ended")
    assert all(len(texts(s)) == 2 for s in statuses)  # Ringing, then Ended: nothing in between


async def test_a_status_relayed_through_the_response_url_has_no_buttons(
    bot_factory: BotFactory,
) -> None:
    # Without a thread, no message ts is known for a click to name: the status carries no buttons.
    bot = await bot_factory("http", **FAST)
    bot.slack.fail("chat.postMessage", "not_in_channel")
    _, url = await bot.command(f"{FULL} escalation", channel_id="G0PRIVATE")
    await bot.evo.wait_for_posts(1)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=5, outcome="Busy")
    await poll_now(bot)

    async def ended() -> list[dict[str, object]]:
        while not any("Ended" in str(a.get("text")) for a in bot.slack.responses_to(url)):
            await asyncio.sleep(0.02)
        return bot.slack.responses_to(url)

    answers = await asyncio.wait_for(ended(), 10)
    for answer in answers:
        blocks = answer.get("blocks") or []
        assert isinstance(blocks, list)
        assert all(block["type"] != "actions" for block in blocks), answer


async def test_hang_up_before_the_call_is_found_sends_nothing(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(EmptyObject())  # placed, but the answer names no session
    found = asyncio.Event()
    bot.evo.queue("GET", "/sessions", Gated(found))  # and the search for it hangs meanwhile
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    assert "no session id returned yet" in texts(status)[0]
    assert HANG_UP_ACTION not in buttons(status)
    await status_ts_recorded(bot, 1)

    # A click that names the call anyway (a forged or replayed value) has nothing to hang up.
    _, url = await click(bot, status, HANG_UP_ACTION, value="1")
    [answer] = await bot.slack.wait_for_response(url)
    assert "nothing to hang up" in answer["text"]
    found.set()
    [session_id] = bot.evo.sessions
    await wait_for_edit(bot, status, session_id)
    assert bot.evo.hang_ups(session_id) == []
