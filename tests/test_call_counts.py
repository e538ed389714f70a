"""`callbot_calls_total{outcome}` ends every call request Slack's ack took with exactly one count,
read from `GET /metrics` of the running bot: the clicks on a question's **Call**, on **Call again**,
`/call test` and the call form's second Submit, however they end (tests/test_metrics.py: the
commands'). What is refused in the ack itself (a command's unreadable text, a form's field errors
shown for correcting) is not taken, and a Cancel or a Hang up asks for no call: neither counts."""

from __future__ import annotations

from bot.calls.confirm_views import CANCEL_CALL_ACTION
from bot.calls.status_views import CALL_AGAIN_ACTION, HANG_UP_ACTION
from tests.conftest import BotFactory
from tests.database_locks import with_short_busy_timeout, write_lock
from tests.escalations import MANAGER_ONLY
from tests.follow_helpers import (
    audit_records,
    buttons,
    end_session,
    placed_call,
    services,
    status_message,
)
from tests.follow_helpers import click as click_status
from tests.follow_helpers import wait_for_edit as wait_for_status
from tests.interactions import ask, click, interact, open_form, state, submission
from tests.metrics_scrape import Samples, scrape, value

CANADA = "+14165550123"


def counted(samples: Samples) -> dict[str, float]:
    """The outcomes counted so far, those at 0 left out."""
    found = {outcome: value(samples, "callbot_calls_total", outcome=outcome)
             for outcome in ("placed", "failed", "unknown", "refused", "duplicate", "confirming")}
    return {outcome: n for outcome, n in found.items() if n}


async def test_every_click_on_a_question_s_call_is_counted_as_it_ended(
    bot_factory: BotFactory, database_url: str
) -> None:
    bot = await bot_factory("http", DATABASE_URL=with_short_busy_timeout(database_url))
    first = await ask(bot, f"{CANADA} escalation")
    await click(bot, first, user_id="U0ADMIN")  # someone else's question
    await bot.settle()
    await click(bot, first, CANCEL_CALL_ACTION)  # asks for no call
    await bot.settle()
    await click(bot, first)  # answered already (cancelled)
    await bot.settle()
    expired = await ask(bot, f"{CANADA} escalation")
    await services(bot).db.execute("UPDATE pending_confirmations SET created_at = created_at - 601")
    await click(bot, expired)
    await bot.settle()
    last = await ask(bot, f"{CANADA} escalation")
    with write_lock(bot):  # the click can't take the question: "try again"
        _, url = await click(bot, last)
        [answer] = await bot.slack.wait_for_response(url, timeout=20)
        assert "could not write to its database" in answer["text"]
        await bot.settle()
    await click(bot, last)  # and the next click dials
    await bot.evo.wait_for_posts(1)
    await bot.settle()
    assert counted(await scrape(bot)) == {"confirming": 3, "refused": 4, "placed": 1}


async def test_every_click_on_call_again_is_counted_as_it_ended(bot_factory: BotFactory) -> None:
    bot, status, session_id = await placed_call(bot_factory)
    # The call's id, as both of its buttons carry it: Call again clicked while the call is live
    # (a message not yet redrawn) is refused.
    again = buttons(status)[HANG_UP_ACTION]
    _, url = await click_status(bot, status, CALL_AGAIN_ACTION, value=again)
    [answer] = await bot.slack.wait_for_response(url)
    assert "still" in answer["text"], answer
    end_session(bot, session_id, after_seconds=20, outcome="Completed")
    await wait_for_status(bot, status, "Ended")
    await click_status(bot, status, CALL_AGAIN_ACTION, user_id="U0INTRUDER")  # no role
    await bot.settle()
    await click_status(bot, status, CALL_AGAIN_ACTION)  # placed
    await status_message(bot, 2)
    await bot.settle()
    # The same button clicked again (the message had not been redrawn yet): one dial.
    _, url = await click_status(bot, status, CALL_AGAIN_ACTION, value=again)
    [answer] = await bot.slack.wait_for_response(url)
    assert "already called again" in answer["text"]
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 2
    assert counted(await scrape(bot)) == {"placed": 2, "refused": 2, "duplicate": 1}


async def test_a_test_call_with_nowhere_to_ring_is_counted_as_refused(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", policy=MANAGER_ONLY)
    _, url = await bot.command("test", user_id="U0ADMIN")  # no number anywhere for U0ADMIN
    await bot.slack.wait_for_response(url)
    await bot.command("test")  # U0MANAGER's own phone rings
    await bot.evo.wait_for_posts(1)
    await bot.settle()
    assert counted(await scrape(bot)) == {"refused": 1, "placed": 1}


async def test_a_call_form_submitted_twice_is_counted_and_recorded_as_a_duplicate(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")
    view = await open_form(bot)
    refused = await interact(bot, submission(view, state(number="12")))  # shown in the form
    assert refused["response_action"] == "errors"
    for _ in range(2):  # Submit, and Submit again before the modal closed
        assert "errors" not in await interact(bot, submission(view, state()))
    await bot.evo.wait_for_posts(1)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    assert counted(await scrape(bot)) == {"placed": 1, "duplicate": 1}
    # Recorded as the README's audit trail says: the second Submit as a duplicate of the first.
    records = await audit_records(bot)
    assert sorted(r.decision for r in records) == ["allowed", "duplicate"]
    assert len({(r.origin, r.user_id, r.number_masked) for r in records}) == 1


async def test_call_again_clicked_after_the_call_was_called_again_is_recorded_as_a_duplicate(
    bot_factory: BotFactory,
) -> None:
    # The README's audit trail: "duplicate (… Call again clicked twice …)", whether the second
    # click races the first (its claim taken) or comes once the call was called again.
    bot, status, session_id = await placed_call(bot_factory)
    again = buttons(status)[HANG_UP_ACTION]
    end_session(bot, session_id, after_seconds=20, outcome="Completed")
    await wait_for_status(bot, status, "Ended")
    await click_status(bot, status, CALL_AGAIN_ACTION)  # placed
    await status_message(bot, 2)
    await bot.settle()
    _, url = await click_status(bot, status, CALL_AGAIN_ACTION, value=again)
    [answer] = await bot.slack.wait_for_response(url)
    assert "already called again" in answer["text"]
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 2
    assert counted(await scrape(bot)) == {"placed": 2, "duplicate": 1}
    records = await audit_records(bot)
    assert sorted((r.origin, r.decision) for r in records) == [
        ("call_again", "allowed"), ("call_again", "duplicate"), ("command", "allowed")]
    first, again_placed = sorted((r for r in records if r.decision == "allowed"),
                                 key=lambda r: r.id)
    [duplicate] = [r for r in records if r.decision == "duplicate"]
    assert duplicate.repeat_of == first.id == again_placed.repeat_of
    assert duplicate.number_masked == first.number_masked
