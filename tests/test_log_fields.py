"""LOG_FORMAT=json: the lines about calls and escalations carry the fields they are about
(`call_id`, `session_id`, `escalation_id`, `user_id`, `outcome`), at the level README promises:
state changes and refusals at INFO and above. Every line naming a call or an escalation by id
carries that id (tests/log_capture.py checks it on every line read)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from bot.calls.status_views import HANG_UP_ACTION
from bot.oncall.escalation_store import EscalationState
from bot.standins.evovoice import ErrorStatus
from bot.standins.slack import slash_command_body
from tests.conftest import BotFactory, until
from tests.database_locks import with_short_busy_timeout, write_lock
from tests.escalations import (
    ALICE,
    ROSTER,
    click_ack,
    click_stop,
    escalation_message,
    metrics_text,
    open_on_message,
    running_escalation,
    session_of,
    start,
    submit,
    wait_for_state,
)
from tests.escalations import wait_for_edit as wait_for_card
from tests.follow_helpers import (
    FAST,
    FULL,
    audit_records,
    click,
    placed_call,
    services,
    wait_for_edit,
)
from tests.interactions import interact, open_form, state, submission
from tests.log_capture import entries_of, logged, the_line


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    with logged("json") as stream:
        yield stream


async def test_refusals_duplicates_and_unknown_outcomes_say_who_and_what(
    bot_factory: BotFactory, json_lines: io.StringIO,
) -> None:
    bot = await bot_factory("http")
    await bot.command(f"{FULL} escalation", user_id="U0INTRUDER")
    redelivered = slash_command_body(text=f"{FULL} escalation",
                                     response_url=bot.slack.response_url(), trigger_id="7.8.dup")
    await bot.post_signed(redelivered)
    await bot.settle()
    await bot.post_signed(redelivered)
    await bot.settle()
    bot.evo.queue_outgoing(ErrorStatus(500))
    await bot.command(f"{FULL} daily-check", user_id="U0ADMIN")
    await bot.settle()
    entries = entries_of(json_lines)

    refused = the_line(entries, "call refused for U0INTRUDER")
    assert (refused["level"], refused["user_id"], refused["outcome"]) == (
        "INFO", "U0INTRUDER", "refused")
    duplicate = the_line(entries, "duplicate delivery")
    assert (duplicate["level"], duplicate["user_id"], duplicate["outcome"]) == (
        "INFO", "U0MANAGER", "duplicate")
    unknown = the_line(entries, "outcome unknown")
    assert (unknown["level"], unknown["user_id"], unknown["outcome"]) == (
        "WARNING", "U0ADMIN", "unknown")


async def test_a_hang_up_says_which_call_and_who(
    bot_factory: BotFactory, json_lines: io.StringIO,
) -> None:
    bot, status, session_id = await placed_call(bot_factory)
    await click(bot, status, HANG_UP_ACTION, user_id="U0ADMIN")
    await wait_for_edit(bot, status, "Hung up by <@U0ADMIN>")
    hung_up = the_line(entries_of(json_lines), " hung up by U0ADMIN")
    assert hung_up["level"] == "INFO"
    assert (hung_up["session_id"], hung_up["user_id"]) == (session_id, "U0ADMIN")
    assert isinstance(hung_up["call_id"], int)


@pytest.mark.parametrize("how", ["stopped", "acknowledged"])
async def test_an_escalation_ended_with_a_phone_ringing_logs_the_hang_up_and_the_end(
    bot_factory: BotFactory, json_lines: io.StringIO, how: str,
) -> None:
    bot, _, escalation = await running_escalation(bot_factory)
    alice = session_of(bot, ALICE)
    if how == "stopped":
        await click_stop(bot, escalation, user_id="U0ADMIN")
    else:
        await click_ack(bot, escalation, user_id="U0ADMIN")
    await wait_for_state(bot, how)
    await until(lambda: bot.evo.hang_ups(alice))
    await bot.settle()
    entries = entries_of(json_lines)
    [started] = [e for e in entries if " started: " in e["message"]]
    escalation_id = started["escalation_id"]

    hang_up = the_line(entries, ": call ")
    assert (hang_up["escalation_id"], hang_up["session_id"]) == (escalation_id, alice)
    ended = the_line(entries, f"escalation {escalation_id} {how} by U0ADMIN")
    assert (ended["level"], ended["outcome"]) == ("INFO", how)
    assert f'escalations_total{{outcome="{how}"}} 1.0' in metrics_text(bot)
    # The audit trail says the bot hung up Alice's phone, and why.
    [event] = await services(bot).db.fetchall("SELECT * FROM audit_events WHERE kind = 'hang_up'")
    assert event["session_id"] == alice and event["reason"].startswith("escalation: ")


async def test_an_escalation_answered_logs_its_end(
    bot_factory: BotFactory, json_lines: io.StringIO,
) -> None:
    bot, _ = await start(bot_factory, policy=ROSTER + 'ack = "answer"\n')
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    await escalation_message(bot)
    await bot.evo.wait_for_posts(1)
    bot.evo.set_session_state(session_of(bot, ALICE), callState="Connected")
    await wait_for_state(bot, EscalationState.ANSWERED)
    answered = the_line(entries_of(json_lines), "U0ALICE answered")
    assert (answered["outcome"], answered["user_id"]) == ("answered", "U0ALICE")
    assert isinstance(answered["escalation_id"], int)


async def test_an_escalation_that_cannot_go_on_says_so_and_is_counted(
    bot_factory: BotFactory, json_lines: io.StringIO,
) -> None:
    bot, clock = await start(bot_factory, policy=ROSTER + 'responders = ["S0LEADS"]\n')
    view, _ = await open_on_message(bot, user_id="U0LEAD1")  # a Manager through user group S0LEADS
    await submit(bot, view, user_id="U0LEAD1")
    await wait_for_card(bot, await escalation_message(bot), "🔔 ringing…")
    # Removed from the group while Alice's phone rings: the next step may not be taken.
    bot.slack.usergroups["S0LEADS"] = ["U0LEAD2"]
    services(bot).access.forget_groups()
    clock.advance(91)
    await wait_for_state(bot, EscalationState.FAILED)
    failed = the_line(entries_of(json_lines), " failed: ")
    assert (failed["level"], failed["outcome"]) == ("WARNING", "failed")
    assert 'escalations_total{outcome="failed"} 1.0' in metrics_text(bot)
    # The audit trail holds the step that was refused, and why.
    [refused] = [r for r in await audit_records(bot) if r.decision != "allowed"]
    assert (refused.decision, refused.reason, refused.origin) == (
        "denied", "NotAResponder", "escalation")


async def test_a_call_never_found_says_how_its_following_ended(
    bot_factory: BotFactory, json_lines: io.StringIO,
) -> None:
    bot = await bot_factory("http", **{**FAST, "CALL_FIND_SECONDS": "0.3"})
    bot.evo.queue_outgoing(ErrorStatus(500))  # nothing was created: no session will show up
    await bot.command(f"{FULL} escalation")
    await until(lambda: "not_found" in json_lines.getvalue())
    stopped = the_line(entries_of(json_lines), ": not_found")
    assert (stopped["level"], stopped["outcome"]) == ("INFO", "not_found")


async def test_a_form_refused_or_submitted_twice_says_who_and_what(
    bot_factory: BotFactory, json_lines: io.StringIO,
) -> None:
    bot = await bot_factory("http")
    view = await open_form(bot)
    refused = await interact(bot, submission(view, state(number="+1 900 555 0123")))
    assert refused["response_action"] == "errors"
    await interact(bot, submission(view, state()))  # fixed: placed
    await bot.evo.wait_for_posts(1)
    await interact(bot, submission(view, state()))  # Submit again: nothing more
    await bot.settle()
    entries = entries_of(json_lines)
    line = the_line(entries, " refused: ")
    assert (line["level"], line["user_id"], line["outcome"]) == ("INFO", "U0MANAGER", "refused")
    again = the_line(entries, "duplicate delivery")
    assert (again["user_id"], again["outcome"]) == ("U0MANAGER", "duplicate")


async def test_an_escalation_form_submitted_twice_says_who_and_what(
    bot_factory: BotFactory, json_lines: io.StringIO,
) -> None:
    bot, _ = await start(bot_factory)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    await escalation_message(bot)
    await submit(bot, view)  # Escalate pressed again: nothing more
    await bot.settle()
    again = the_line(entries_of(json_lines), "repeated submission")
    assert (again["level"], again["user_id"], again["outcome"]) == (
        "INFO", "U0ADMIN", "duplicate")


async def test_taking_the_on_call_shift_says_who(
    bot_factory: BotFactory, json_lines: io.StringIO,
) -> None:
    bot, _ = await start(bot_factory)
    bot.slack.users["U0ADMIN"] = {"profile": {"phone": "+18144043099"}}
    await bot.command("oncall take", user_id="U0ADMIN")
    await bot.settle()
    await bot.command("oncall take", user_id="U0NOBODY")  # no role: refused
    await bot.settle()
    entries = entries_of(json_lines)
    taken = the_line(entries, "on-call shift taken by U0ADMIN")
    assert (taken["level"], taken["user_id"]) == ("INFO", "U0ADMIN")
    refused = the_line(entries, "not taken by U0NOBODY")
    assert (refused["level"], refused["user_id"], refused["outcome"]) == (
        "INFO", "U0NOBODY", "refused")


async def test_a_call_the_database_stopped_says_whose_it_was(
    bot_factory: BotFactory, json_lines: io.StringIO, database_url: str,
) -> None:
    # The ERROR line is the one an alert fires on: searching by user_id must find it.
    bot = await bot_factory("http", DATABASE_URL=with_short_busy_timeout(database_url))
    with write_lock(bot):
        _, url = await bot.command(f"{FULL} escalation", user_id="U0ADMIN")
        await bot.slack.wait_for_response(url, timeout=20)
    failed = the_line(entries_of(json_lines), "not placed: the database failed")
    assert (failed["level"], failed["user_id"]) == ("ERROR", "U0ADMIN")
