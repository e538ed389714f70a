"""Hang up and Call again are offered exactly while they can work, and say only what was done.
Gaps that hand-made mutations of the status message's buttons went through."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from bot.calls.status_views import CALL_ACTIONS_BLOCK, CALL_AGAIN_ACTION, HANG_UP_ACTION
from bot.standins.evovoice import DropConnection, EmptyObject, ErrorStatus, Gated
from bot.standins.slack import block_actions_payload, interactive_body
from tests.conftest import BotFactory, policy_with, until
from tests.interactions import ask
from tests.interactions import click as answer
from tests.follow_helpers import (
    FAST,
    FULL,
    audit_records,
    buttons,
    click,
    confirm_dialog,
    end_session,
    ended_call,
    history,
    parent_of,
    placed_call,
    services,
    status_message,
    status_ts_recorded,
    texts,
    wait_for_edit,
    wait_for_mark,
)


async def test_a_call_not_ringing_yet_can_be_hung_up(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(EmptyObject())  # placed, but the answer names no session
    found = asyncio.Event()
    bot.evo.queue("GET", "/sessions", Gated(found))  # the search for it waits meanwhile
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    # Created, not ringing yet: Evo Voice shows it Disconnected before anything happened.
    bot.evo.set_session_state(session_id, callState="Disconnected")
    found.set()
    await wait_for_edit(bot, status, "Calling…")
    assert HANG_UP_ACTION in buttons(status)

    await click(bot, status, HANG_UP_ACTION)
    await wait_for_edit(bot, status, "Hung up by <@U0MANAGER>")
    assert len(bot.evo.hang_ups(session_id)) == 1


# Reading a session Evo Voice no longer has: a ServiceStack service throws 404, or returns null,
# which ServiceStack answers 204 with no body (nothing public says which: the stand-in does both).
@pytest.mark.parametrize("missing", ["not_found", "no_content"])
async def test_a_call_no_longer_followed_offers_call_again(
    bot_factory: BotFactory, missing: str
) -> None:
    bot = await bot_factory("http", **{**FAST, "CALL_FIND_SECONDS": "0.3"})
    bot.evo.missing_session = missing
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    del bot.evo.sessions[session_id]  # Evo Voice forgets the session: 404 (or 204) from now on
    await wait_for_edit(bot, status, "I stopped following this call")
    parent = parent_of(bot, status)
    assert await wait_for_mark(bot, parent) == "warning"
    assert texts(parent)[-1].endswith("\n⚠️ Outcome unclear: see the thread.")
    [line] = str((await history(bot))["text"]).splitlines()[1:]
    assert line.split(" · ")[4].startswith("⏱ no longer followed")
    assert set(buttons(status)) == {CALL_AGAIN_ACTION}

    await click(bot, status, CALL_AGAIN_ACTION)
    await status_message(bot, 2)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 2


async def test_hang_up_on_a_call_evo_voice_no_longer_knows_is_not_shown_as_done(
    bot_factory: BotFactory,
) -> None:
    # The call ended on its own between the last poll and the click: Evo Voice answers 404.
    bot, status, session_id = await placed_call(bot_factory)
    for method in ("DELETE", "PATCH"):  # EndSession or PatchSession, whichever the login may use
        bot.evo.queue(method, f"/sessions/{session_id}", ErrorStatus(404, "Session not found"))
    end_session(bot, session_id, after_seconds=20, outcome="Completed")

    _, url = await click(bot, status, HANG_UP_ACTION)
    [answer] = await bot.slack.wait_for_response(url)
    assert "nothing to hang up" in answer["text"]
    await wait_for_edit(bot, status, "Ended")
    await bot.settle()
    assert "Hung up by" not in (status.text or "")
    [record] = await audit_records(bot)
    assert record.last("hang_up") is None


async def test_a_hang_up_answered_404_for_a_call_evo_voice_still_shows_ringing_is_not_done(
    bot_factory: BotFactory,
) -> None:
    # Evo Voice answers 404 to ending the session (both ways), yet lists it as ringing when read
    # right after: nothing ended it, so the clicker must not hear "nothing to hang up" while the
    # phone still rings.
    bot, status, session_id = await placed_call(bot_factory)
    for method in ("DELETE", "PATCH"):
        bot.evo.queue(method, f"/sessions/{session_id}", ErrorStatus(404, "Session not found"))

    _, url = await click(bot, status, HANG_UP_ACTION)
    [answer] = await bot.slack.wait_for_response(url)
    assert "nothing to hang up" not in answer["text"]
    assert "Evo Voice did not hang up" in answer["text"] and "may still be going on" in answer[
        "text"]
    await bot.settle()
    assert "Hung up by" not in (status.text or "")
    [record] = await audit_records(bot)
    assert record.last("hang_up") is None and record.last("hang_up_failed") is not None


async def test_a_call_again_that_failed_still_uses_up_the_button(bot_factory: BotFactory) -> None:
    # Its new thread says what went wrong; the old message says it was called again, and its
    # button (which would only answer "already called again") is gone.
    bot, status, session_id = await ended_call(bot_factory)
    bot.evo.queue_outgoing(ErrorStatus(400, "Flow is disabled"))

    await click(bot, status, CALL_AGAIN_ACTION)
    again = await status_message(bot, 2)
    assert "Call not placed" in (again.text or "")
    await wait_for_edit(bot, status, "called this number again")
    assert CALL_AGAIN_ACTION not in buttons(status)


async def test_call_again_by_a_manager_is_the_managers_own_call(bot_factory: BotFactory) -> None:
    # Clicked by someone other than the requester (allowed: a role), the new call is theirs: its
    # message, the audit trail and the rate limits name the clicker.
    bot, status, session_id = await ended_call(bot_factory)  # U0MANAGER's
    await click(bot, status, CALL_AGAIN_ACTION, user_id="U0ADMIN")
    again = await status_message(bot, 2)
    await bot.settle()
    assert "<@U0ADMIN>" in (parent_of(bot, again).text or "")
    newest, first = await audit_records(bot)
    assert (newest.user_id, newest.origin, newest.repeat_of) == ("U0ADMIN", "call_again", first.id)


async def test_a_button_names_its_call_only_from_the_calls_own_message(
    bot_factory: BotFactory,
) -> None:
    # The call's id, clicked on a message elsewhere (another channel, or another message of
    # this one, or the same ids in another workspace): not the call's status message, so the
    # click does nothing.
    bot, status, session_id = await placed_call(bot_factory)
    elsewhere = [(dataclasses.replace(status, channel="C0OTHER"), None),
                 (dataclasses.replace(status, ts=parent_of(bot, status).ts), None),
                 (status, "T0OTHER")]
    for message, team_id in elsewhere:
        _, url = await click(bot, message, HANG_UP_ACTION, value=buttons(status)[HANG_UP_ACTION],
                             team_id=team_id)
        [answer] = await bot.slack.wait_for_response(url)
        assert "no longer works" in answer["text"]
    assert bot.evo.hang_ups(session_id) == []


async def test_a_hang_up_refused_both_ways_for_a_role_is_said_and_not_shown_as_done(
    bot_factory: BotFactory,
) -> None:
    # A Manager-only login: EndSession needs the role User (403 "Invalid Role"), and here
    # PatchSession is refused the same way. Nothing ended the call.
    bot, status, session_id = await placed_call(bot_factory)
    bot.evo.queue("PATCH", f"/sessions/{session_id}", ErrorStatus(403, "Invalid Role"))

    _, url = await click(bot, status, HANG_UP_ACTION)
    [answer] = await bot.slack.wait_for_response(url)
    assert "Evo Voice did not hang up" in answer["text"] and "lacks the role" in answer["text"]
    assert "An operator can grant" in answer["text"]  # what to do next
    assert bot.evo.hang_ups(session_id) == []
    # The call goes on, then ends on its own: nobody hung it up.
    end_session(bot, session_id, after_seconds=60, outcome="Completed")
    await wait_for_edit(bot, status, "Ended")
    await bot.settle()
    assert "Hung up by" not in (status.text or "")
    [record] = await audit_records(bot)
    assert record.last("hang_up") is None and record.last("hang_up_failed") is not None


async def test_who_hung_up_shows_even_when_the_follower_saw_the_end_first(
    bot_factory: BotFactory,
) -> None:
    # Evo Voice ends the call, the follower's poll sees it over, and only then does the hang-up's
    # answer reach the bot: the message still says who hung up.
    bot, status, session_id = await placed_call(bot_factory)
    answered = asyncio.Event()
    for method in ("DELETE", "PATCH"):  # EndSession or PatchSession, whichever the login may use
        bot.evo.queue(method, f"/sessions/{session_id}", Gated(answered))
    await click(bot, status, HANG_UP_ACTION)
    await until(lambda: any(r.path == f"/sessions/{session_id}" for r in bot.evo.requests
                            if r.method in ("DELETE", "PATCH")))
    end_session(bot, session_id, after_seconds=15, outcome="Hung up")  # the hang-up took effect
    await wait_for_edit(bot, status, "Ended: Hung up")
    answered.set()
    await wait_for_edit(bot, status, "Hung up by <@U0MANAGER>")


async def test_call_again_refused_by_a_rate_limit_leaves_the_button_to_someone_else(
    bot_factory: BotFactory,
) -> None:
    # The refusal dialled nothing and says who may still call: the click after it is a new
    # request, not "already called again".
    bot = await bot_factory("http", policy=policy_with(per_user="1/10m"), **FAST)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=5, outcome="Busy")
    await wait_for_edit(bot, status, "Ended")

    _, url = await click(bot, status, CALL_AGAIN_ACTION)  # U0MANAGER's second call in 10 min
    [answer] = await bot.slack.wait_for_response(url)
    assert "You have placed 1 call in the last 10 minutes" in answer["text"]
    assert CALL_AGAIN_ACTION in buttons(status)
    _, url = await click(bot, status, CALL_AGAIN_ACTION, user_id="U0ADMIN")
    await status_message(bot, 2)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 2
    assert not any("already called again" in a["text"] for a in bot.slack.responses_to(url))


@pytest.mark.parametrize(
    "refusal", ["bad_request", "conflict", "server_error", "not_found", "accepted"]
)
async def test_a_hang_up_of_a_call_that_just_ended_says_so_whatever_evo_voice_answers(
    bot_factory: BotFactory, refusal: str
) -> None:
    # The call ended on its own a moment before the click, and no poll has shown it yet. Nothing
    # public says what Evo Voice answers to ending a session that has ended (400, 409, 500, 404,
    # or a 204 that changes nothing): whichever, the clicker is told there is nothing to hang up,
    # never that hanging up failed and the phone may still ring. With polls a minute apart, the
    # status catches up at once, not a poll later ("not_found": Evo Voice has forgotten it).
    bot = await bot_factory("http", CALL_POLL_SECONDS="60", CALL_POLL_MAX_SECONDS="60")
    bot.evo.ended_hang_up = refusal
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    await bot.settle()
    end_session(bot, session_id, after_seconds=20, outcome="Completed")

    _, url = await click(bot, status, HANG_UP_ACTION)
    if refusal == "accepted":  # a hang-up, for all the bot can tell: who clicked is said
        await wait_for_edit(bot, status, "Hung up by <@U0MANAGER>", timeout=5)
    else:
        [answer] = await bot.slack.wait_for_response(url)
        assert "nothing to hang up" in answer["text"]
        await wait_for_edit(bot, status, "Ended: Completed", timeout=5)
    await bot.settle()
    shown = bot.slack.messages[(status.channel, status.ts)]
    assert "may still ring" not in str(shown.text)
    assert not any("failed" in a["text"] for a in bot.slack.responses_to(url))
    [record] = await audit_records(bot)
    assert record.last("hang_up_failed") is None


async def test_call_again_clicked_by_two_people_at_once_dials_once(
    bot_factory: BotFactory,
) -> None:
    # The requester and a manager both see the call end and both click: one message, one call.
    bot, status, session_id = await ended_call(bot_factory)
    clicks = await asyncio.gather(click(bot, status, CALL_AGAIN_ACTION),
                                  click(bot, status, CALL_AGAIN_ACTION, user_id="U0ADMIN"))
    await status_message(bot, 2)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 2  # the first call and one again
    told = [a["text"] for _, url in clicks for a in bot.slack.responses_to(url)]
    assert sum("already called again" in t for t in told) == 1


async def test_a_call_again_whose_outcome_is_unknown_uses_up_the_button(
    bot_factory: BotFactory,
) -> None:
    # The POST's answer is lost (the call may have been placed): the old message says it was
    # called again, as for any call that went to Evo Voice, and offers no second one.
    bot, status, session_id = await ended_call(bot_factory)
    bot.evo.queue_outgoing(DropConnection())  # the stand-in places the call, then drops the answer

    await click(bot, status, CALL_AGAIN_ACTION)
    again = await status_message(bot, 2)
    await bot.settle()
    assert "Outcome unknown" in (again.text or "")
    await wait_for_edit(bot, status, "called this number again")
    assert CALL_AGAIN_ACTION not in buttons(status)


async def test_a_click_naming_no_message_does_nothing_to_a_call_whose_status_has_none(
    bot_factory: BotFactory,
) -> None:
    # A call in a channel the bot can't post to is told through the command's response_url:
    # its status message has no ts the bot knows (and no buttons). A click that names no
    # message either (a malformed payload) is not taken for a click on it.
    bot = await bot_factory("http", **FAST)
    bot.slack.fail("chat.postMessage", "channel_not_found", when=lambda c: c["channel"] == "G0PRIV")
    await bot.command(f"{FULL} escalation", channel_id="G0PRIV")
    await bot.evo.wait_for_posts(1)
    await bot.settle()
    [session_id] = bot.evo.sessions
    [row] = await services(bot).db.fetchall("SELECT id, status_ts FROM calls")
    assert row["status_ts"] is None
    url = bot.slack.response_url()
    payload = block_actions_payload(
        action_id=HANG_UP_ACTION, block_id=CALL_ACTIONS_BLOCK, value=str(row["id"]),
        channel_id="G0PRIV", response_url=url,
    )
    del payload["container"]["message_ts"], payload["message"]
    ack = await bot.post_signed(interactive_body(payload))
    assert ack.status == 200
    [answer] = await bot.slack.wait_for_response(url)
    assert "no longer works" in answer["text"]
    assert bot.evo.hang_ups(session_id) == []


async def test_a_click_before_the_bot_knows_its_status_message_is_asked_to_wait(
    bot_factory: BotFactory,
) -> None:
    """Slack shows the status message as soon as it takes it; the bot writes down its ts once
    Slack's answer comes (held here). A click meanwhile hears to try again in a moment, not that
    the button no longer works; once the bot knows the message, the button works."""
    bot = await bot_factory("http", **FAST)
    held = bot.slack.hold("chat.postMessage", after=True,
                          when=lambda c: c.params.get("thread_ts") is not None)
    await bot.command(f"{FULL} escalation")
    await held.wait_until_held()
    [status] = [m for m in bot.slack.messages.values()
                if m.thread_ts is not None and m.ts != m.thread_ts]
    _, url = await click(bot, status, HANG_UP_ACTION)
    [early] = await bot.slack.wait_for_response(url)
    assert early["text"].startswith("This call's message was posted a moment ago")
    [session_id] = bot.evo.sessions
    assert bot.evo.hang_ups(session_id) == []
    held.open()
    await status_ts_recorded(bot, int(buttons(status)[HANG_UP_ACTION]))
    await click(bot, status, HANG_UP_ACTION)
    await wait_for_edit(bot, status, "Hung up")
    assert len(bot.evo.hang_ups(session_id)) == 1


@pytest.mark.parametrize("mode", ["http", "socket"])
@pytest.mark.parametrize("clicker", ["U0MANAGER", "U0ADMIN"])
async def test_call_again_to_a_number_outside_the_home_region_asks_nothing_more(
    bot_factory: BotFactory, mode: str, clicker: str,
) -> None:
    # The first call asked "are you sure?" about the region; the button's own dialog asks "call
    # again?" and names the number's country, as that question did, for whoever clicks: a
    # Manager (U0ADMIN) who never saw the first question too. One more question would be a third.
    bot = await bot_factory(mode, **FAST)
    canada = "+14165550123"
    await answer(bot, await ask(bot, f"{canada} escalation"))
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=5, outcome="Busy")
    await wait_for_edit(bot, status, "Ended")
    assert confirm_dialog(status, CALL_AGAIN_ACTION) == (
        "Call +1 416 ••• 0123 again with “Escalation”? It is in Canada (CA).")

    _, url = await click(bot, status, CALL_AGAIN_ACTION, user_id=clicker)
    await status_message(bot, 2)
    await bot.settle()
    assert [p.json["numberToDial"] for p in bot.evo.outgoing_posts] == [canada, canada]
    assert not any("are you sure" in a["text"] for a in bot.slack.responses_to(url))


async def test_a_call_again_click_delivered_twice_calls_once_and_refuses_nothing(
    bot_factory: BotFactory,
) -> None:
    # One click reaching the bot twice (a proxy resending, a copy on each replica): one call,
    # and the person who clicked once is not told "already called again (one click dials once)".
    bot, status, session_id = await ended_call(bot_factory)
    url = bot.slack.response_url()
    payload = block_actions_payload(
        action_id=CALL_AGAIN_ACTION, block_id=CALL_ACTIONS_BLOCK,
        value=buttons(status)[CALL_AGAIN_ACTION], channel_id=status.channel,
        message_ts=status.ts, message=status.to_api(bot.slack.team_id), response_url=url,
        extra_action={"action_ts": "1700000400.000001"},
    )
    for _ in range(2):
        assert (await bot.post_signed(interactive_body(payload))).status == 200
    await status_message(bot, 2)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 2  # the first call and one again
    assert [a["text"] for a in bot.slack.responses_to(url)] == []


async def test_call_again_on_a_call_whose_flow_was_deleted_names_the_flow_it_used(
    bot_factory: BotFactory,
) -> None:
    # Deleted from Evo Voice since the call: the refusal names the flow as the person saw it,
    # not the ID nobody typed, with /call's advice about names and slugs.
    bot, status, session_id = await ended_call(bot_factory)
    bot.evo.flows[:] = [flow for flow in bot.evo.flows if flow["id"] != "flow-esc"]
    services(bot).catalog.forget()  # as when the cached list expires
    _, url = await click(bot, status, CALL_AGAIN_ACTION)
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert ("The flow this call used, “Escalation”, is no longer in the Evo Voice account"
            in answer["text"]), answer["text"]
    assert "flow-esc" not in answer["text"] and "slug" not in answer["text"]
    assert len(bot.evo.outgoing_posts) == 1
