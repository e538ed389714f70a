"""What a followed call's outcome says, end to end: acknowledged on the phone (an outcome listed in
`[oncall] ack_outcomes`), picked up by a person or a voicemail (connected, no such outcome), or
not answered; the same in the status message, the parent's line, its reaction and /call history.

Evo Voice can't tell a person from a voicemail (docs/evovoice-api.md: no machine detection), so
only the flow's "press 1" says a person heard the call.
"""

from __future__ import annotations

import pytest

from bot.standins.evovoice import ErrorStatus
from tests.conftest import BotFactory, BotUnderTest
from tests.escalations import ROSTER
from tests.follow_helpers import (
    BIDI_CONTROL,
    FAST,
    FULL,
    audit_records,
    end_session,
    everything_sent_to_slack,
    history,
    parent_of,
    status_message,
    texts,
    wait_for_edit,
    wait_for_mark,
)
from tests.interactions import interact, open_form, state, submission

# A team whose flow sets the session's outcome after "press 1".
WITH_ACK_OUTCOMES = ROSTER + 'ack_outcomes = ["Acknowledged", "Pressed 1"]\n'
PICKED_UP = "Picked up by a person or a voicemail (can't tell which)."


async def history_line(bot: BotUnderTest) -> str:
    """The one call /call history lists (after its heading)."""
    [line] = str((await history(bot))["text"]).splitlines()[1:]
    return line


async def test_a_call_acknowledged_on_the_phone_says_so_everywhere(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", policy=WITH_ACK_OUTCOMES, **FAST)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    # The flow reports the keypress while the call is still on, in its own case.
    bot.evo.set_session_state(session_id, callState="Connected", answeredByName="Alice Example",
                              outcome="PRESSED 1")
    await wait_for_edit(bot, status, "🟢 Connected (answered by Alice Example): acknowledged")
    end_session(bot, session_id, after_seconds=40)

    parent = parent_of(bot, status)
    assert await wait_for_mark(bot, parent) == "white_check_mark"
    assert parent.reactions == ["white_check_mark"]
    assert texts(status)[-1].splitlines()[-1] == (
        "✅ Ended: PRESSED 1 (acknowledged), answered by Alice Example, lasted 40 s."
    )
    assert texts(parent)[-1].endswith("\n✅ Acknowledged by Alice Example.")
    line = await history_line(bot)
    assert "✅ acknowledged, answered by Alice Example, PRESSED 1, 40 s" in line
    [record] = await audit_records(bot)
    assert [e.kind for e in record.events] == ["placed", "answered", "ended"]
    assert record.events[-1].outcome == "PRESSED 1"


async def test_evo_voice_s_words_cant_turn_a_line_around(bot_factory: BotFactory) -> None:
    # Who answered and the outcome are Evo Voice's words: a right-to-left override in them would
    # show the rest of the status line backwards. They are shown, and matched, without it.
    bot = await bot_factory("http", policy=WITH_ACK_OUTCOMES, **FAST)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    bot.evo.set_session_state(session_id, callState="Connected", answeredByName="Alice \u202eB",
                              outcome="\u2067PRESSED 1\u2069")
    await wait_for_edit(bot, status, "🟢 Connected (answered by Alice B): acknowledged")
    end_session(bot, session_id, after_seconds=40)
    assert await wait_for_mark(bot, parent_of(bot, status)) == "white_check_mark"
    assert "✅ acknowledged, answered by Alice B, PRESSED 1, 40 s" in await history_line(bot)
    assert not BIDI_CONTROL.search(everything_sent_to_slack(bot))


async def test_a_voicemail_is_never_told_as_a_person_answering(bot_factory: BotFactory) -> None:
    # Placed from the call form: connected, then over without the flow's acknowledgement, as a
    # voicemail would (the demo's Voicemail button does just this).
    bot = await bot_factory("http", policy=WITH_ACK_OUTCOMES, **FAST)
    view = await open_form(bot, FULL)
    await interact(bot, submission(view, state(flow="flow-esc")))
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    bot.evo.set_session_state(session_id, callState="Connected",
                              answeredByName="Voicemail of Alice Example")
    await wait_for_edit(bot, status, "Connected (answered by Voicemail of Alice Example)")
    end_session(bot, session_id, after_seconds=30, outcome="Voicemail")

    parent = parent_of(bot, status)
    assert await wait_for_mark(bot, parent) == "phone"
    assert parent.reactions == ["phone"]  # a name Slack takes
    assert texts(status)[-1].splitlines()[-1] == (
        f"☎️ Ended: Voicemail, answered by Voicemail of Alice Example, lasted 30 s. {PICKED_UP}"
    )
    assert texts(parent)[-1].endswith(f"\n☎️ {PICKED_UP}")
    line = await history_line(bot)
    assert ("☎️ picked up (a person or a voicemail), answered by Voicemail of Alice Example, "
            "Voicemail, 30 s") in line
    # Nothing about this call promised a person heard it.
    assert "✅" not in everything_sent_to_slack(bot)


async def test_a_call_nobody_answered_says_so(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", policy=WITH_ACK_OUTCOMES, **FAST)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    assert "Ringing" in texts(status)[0]
    end_session(bot, session_id, after_seconds=30, outcome="No answer")

    parent = parent_of(bot, status)
    assert await wait_for_mark(bot, parent) == "x"
    assert parent.reactions == ["x"]
    assert texts(status)[-1].splitlines()[-1] == "❌ Ended: No answer, lasted 30 s."
    assert texts(parent)[-1].endswith("\n❌ Not answered.")
    line = await history_line(bot)
    assert "❌ not answered, No answer, 30 s" in line
    assert "✅" not in everything_sent_to_slack(bot)


async def test_an_acknowledgement_seen_only_once_the_call_is_over_counts(
    bot_factory: BotFactory,
) -> None:
    # Picked up, "press 1", hung up between two polls: never seen connected, yet the flow's
    # outcome says a person heard it (an escalation's step counts it so too).
    bot = await bot_factory("http", policy=WITH_ACK_OUTCOMES, **FAST)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=20, outcome="Acknowledged")

    parent = parent_of(bot, status)
    assert await wait_for_mark(bot, parent) == "white_check_mark"
    assert texts(status)[-1].splitlines()[-1] == "✅ Ended: Acknowledged, lasted 20 s."
    assert texts(parent)[-1].endswith("\n✅ Acknowledged.")
    assert "✅ acknowledged, Acknowledged, 20 s" in await history_line(bot)


@pytest.mark.parametrize("final_outcome", ["", None, "Completed", "Hung up"])
async def test_an_acknowledgement_seen_during_the_call_is_kept_whatever_the_end_says(
    bot_factory: BotFactory, final_outcome: str | None
) -> None:
    # Whether Evo Voice keeps a session's `outcome` once the call ends is unknown
    # (docs/evovoice-api.md): cleared, or another word written over it (the flow's last step, a
    # hang-up's), the "press 1" read while the call was on still counts at its end.
    bot = await bot_factory("http", policy=WITH_ACK_OUTCOMES, **FAST)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    bot.evo.set_session_state(session_id, callState="Connected", outcome="Pressed 1")
    await wait_for_edit(bot, status, "🟢 Connected: acknowledged")
    end_session(bot, session_id, after_seconds=40, outcome=final_outcome)

    parent = parent_of(bot, status)
    assert await wait_for_mark(bot, parent) == "white_check_mark"
    assert texts(status)[-1].splitlines()[-1] == "✅ Ended: Pressed 1 (acknowledged), lasted 40 s."
    assert texts(parent)[-1].endswith("\n✅ Acknowledged.")
    [record] = await audit_records(bot)
    assert record.events[-1].outcome == "Pressed 1"


@pytest.mark.parametrize(("outcome", "mark", "seen", "parent_line", "history_says"), [
    ("Pressed 1", "white_check_mark", "after it was acknowledged on the phone",
     "✅ Acknowledged by Alice Example.", "✅ acknowledged"),
    (None, "phone", "after it was picked up by a person or a voicemail",
     f"☎️ {PICKED_UP} I stopped following it: see the thread.",
     "☎️ picked up (a person or a voicemail)"),
])
async def test_a_call_given_up_on_after_it_was_answered_still_says_it_was(
    bot_factory: BotFactory, outcome: str | None, mark: str, seen: str, parent_line: str,
    history_says: str,
) -> None:
    # Connected (and acknowledged, or not), then its session unknown to Evo Voice for
    # CALL_FIND_SECONDS: no longer followed, its end unseen. What was seen stays told: the
    # requester is never left with "outcome unclear" for a page someone answered.
    bot = await bot_factory("http", policy=WITH_ACK_OUTCOMES,
                            **{**FAST, "CALL_FIND_SECONDS": "0.3"})
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    bot.evo.omitted_from_listings.add(session_id)  # read alone, so that a 404 names it
    bot.evo.set_session_state(session_id, callState="Connected", answeredByName="Alice Example",
                              outcome=outcome)
    await wait_for_edit(bot, status, "🟢 Connected (answered by Alice Example)")
    bot.evo.default_behaviours[("GET", f"/sessions/{session_id}")] = ErrorStatus(
        404, "Session not found")

    parent = parent_of(bot, status)
    assert await wait_for_mark(bot, parent) == mark
    assert texts(status)[-1].splitlines()[-1] == (
        f"⏱ I stopped following this call {seen} (answered by Alice Example); the call log in "
        "Evo Voice shows how it ended.")
    assert texts(parent)[-1].endswith(f"\n{parent_line}")
    line = await history_line(bot)
    assert f"⏱ no longer followed, {history_says}" in line, line
