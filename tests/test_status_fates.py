"""A call's status message whose fate Slack leaves unknown, or whose relay reaches nobody, still
ends shown: never a message left at "Ringing…" with a live Hang up button for a call that ended,
and the requester always learns the outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bot.calls.status_message import FINAL_RELAY_AFTER_SECONDS
from bot.calls.status_views import HANG_UP_ACTION
from bot.slack.outbox import REDELIVER_MAX_PAUSE
from bot.standins.evovoice import ErrorStatus
from bot.storage.database import Database
from tests.budget_clock import BudgetClock, LeapingClock
from tests.conftest import BotFactory, BotUnderTest, until
from tests.follow_helpers import (
    FAST,
    FULL,
    buttons,
    died_before_telling,
    end_session,
    is_thread_reply,
    services,
    status_message,
    status_ts_recorded,
    wait_for_edit,
)


async def test_a_status_message_slack_took_while_its_thread_was_unreadable_shows_the_outcome(
    bot_factory: BotFactory,
) -> None:
    # Slack takes the status message but the connection drops before its answer, and reading the
    # thread to look for it fails once (an error of Slack's own). Whether it is there is unknown
    # for a moment: it is looked for again and adopted, not told through the command's response
    # URL instead while the one in the thread stays at "Ringing…" with its Hang up button.
    bot = await bot_factory("http", **FAST)
    services(bot).outbox.sleep = LeapingClock().sleep  # the outbox's pauses take no real time
    bot.slack.cut("chat.postMessage", when=is_thread_reply)
    bot.slack.fail("conversations.replies", "internal_error", times=1)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    assert "Ringing" in (status.text or "")
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=20, outcome="Completed")
    await wait_for_edit(bot, status, "Ended", timeout=20)  # the same message, edited
    await bot.settle()
    assert HANG_UP_ACTION not in buttons(status)
    assert len([c for c in bot.slack.calls_to("chat.postMessage")
                if is_thread_reply(c) and c.ok]) == 1
    assert await services(bot).db.fetchall("SELECT id FROM slack_posts") == []


@pytest.mark.parametrize("placed", [True, False], ids=["ended", "not_placed"])
async def test_a_call_over_while_its_status_message_is_of_unknown_fate_is_told_by_dm(
    bot_factory: BotFactory, placed: bool,
) -> None:
    # As above, but the thread stays unreadable (Slack's own errors, an incident of Slack's):
    # the outbox holds the status message and looks for it again now and then, for up to ten
    # minutes. The call ends meanwhile. Its requester must not wait those ten minutes for the
    # outcome: once it has been held FINAL_RELAY_AFTER_SECONDS, the outcome goes by direct
    # message (a final one, never left at "Ringing…"). When Slack shows the thread again, the
    # message found there is brought up to the outcome too, and the requester is told once.
    # The same for a call Evo Voice refused, over as soon as it is told.
    bot = await bot_factory("http", **FAST)
    if not placed:
        bot.evo.queue_outgoing(ErrorStatus(400, "Flow is not published"))
    clock = BudgetClock()  # the outbox's: time stands still until the test moves it
    outbox = services(bot).outbox
    outbox.clock, outbox.sleep = clock, clock.sleep
    bot.slack.cut("chat.postMessage", when=is_thread_reply)
    bot.slack.fail("conversations.replies", "internal_error")
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    if placed:
        [session_id] = bot.evo.sessions
        end_session(bot, session_id, after_seconds=20, outcome="Completed")
    outcome = "Ended" if placed else "Flow is not published"

    def told() -> list[str]:
        return [c["text"] for c in bot.slack.calls_to("chat.postMessage")
                if c.ok and c["channel"] == "U0MANAGER"]

    await call_over(bot)
    assert told() == []  # held a moment: Slack may show the thread again soon
    clock.advance(FINAL_RELAY_AFTER_SECONDS)
    await until(told, timeout=10)
    [dm] = told()
    assert outcome in dm and "Ringing" not in dm

    bot.slack.off("conversations.replies")
    clock.advance(REDELIVER_MAX_PAUSE)  # the outbox's next look finds the message
    if placed:
        await wait_for_edit(bot, status, outcome, timeout=10)
    else:  # posted not placed: found, its row's ts kept
        await status_ts_recorded(bot, 1)
    await bot.settle()
    assert HANG_UP_ACTION not in buttons(status)
    assert len(told()) == 1
    assert await services(bot).db.fetchall("SELECT id FROM slack_posts") == []


async def test_a_not_placed_call_told_after_a_restart_whose_relay_slack_fails_once_is_told(
    bot_factory: BotFactory,
) -> None:
    # The bot died after Evo Voice refused the call and before telling it. Meanwhile the bot was
    # removed from the private channel: the next start's status message is refused there for
    # good, and the direct message relaying it instead fails once (a 5xx). The call is over, so
    # no later change of it would tell it: the outcome must still reach the requester, once.
    first = await bot_factory("http", **FAST)
    first.evo.queue_outgoing(ErrorStatus(400, "Flow is not published"))
    assert await died_before_telling(first, channel_id="G0INCIDENT") is None
    first.slack.fail("chat.postMessage", "channel_not_found",
                     when=lambda c: c["channel"] == "G0INCIDENT")
    first.slack.fail("chat.update", "channel_not_found",
                     when=lambda c: c["channel"] == "G0INCIDENT")
    first.slack.fail("chat.postMessage", "internal_error", times=1,
                     when=lambda c: c["channel"] == "U0MANAGER")

    second = await bot_factory("http", **FAST)  # the same database

    def told() -> list[str]:
        return [c["text"] for c in second.slack.calls_to("chat.postMessage")
                if c.ok and c["channel"] == "U0MANAGER"]

    await until(lambda: told(), timeout=20)
    await second.settle()
    [dm] = told()
    assert "Flow is not published" in dm


class FailsUntil:
    """`Database.execute`, except that a statement holding `marker` fails as a failing database
    does (a dropped connection) until `answers()` holds: who waits it out commits last."""

    def __init__(self, db: Database, marker: str, answers: Callable[[], Awaitable[bool]]) -> None:
        self._real = db.execute
        self._marker = marker
        self._answers = answers
        self.failed = 0

    async def __call__(self, sql: str, params: Any = ()) -> int:
        if self._marker in sql and not await self._answers():
            self.failed += 1
            raise ConnectionError("the database is failing")
        return await self._real(sql, params)


@pytest.mark.usefixtures("database_retried_quickly")
async def test_a_status_message_ts_kept_by_the_outbox_first_is_not_erased_by_the_follower(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The status message's fate is unknown for a moment (as above), so the outbox looks for it
    # again while the follower notes that nothing is shown yet; both wait out a failing
    # database, and the outbox's note of the message's ts commits first. The follower's must not
    # write over it: without its ts the message would never be edited again.
    bot = await bot_factory("http", **FAST)
    services(bot).outbox.sleep = LeapingClock().sleep
    db = services(bot).db

    async def ts_kept() -> bool:
        row = await db.fetchone("SELECT status_ts FROM calls WHERE id = 1")
        return row is not None and row["status_ts"] is not None

    fault = FailsUntil(db, "UPDATE calls SET status_ts = ?, shown_digest = ?", ts_kept)
    monkeypatch.setattr(db, "execute", fault)
    bot.slack.cut("chat.postMessage", when=is_thread_reply)
    bot.slack.fail("conversations.replies", "internal_error", times=1)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=20, outcome="Completed")
    await wait_for_edit(bot, status, "Ended", timeout=20)
    assert HANG_UP_ACTION not in buttons(status)


async def call_over(bot: BotUnderTest) -> None:
    """Until the bot has seen call 1 end (and tried to show it)."""

    async def over() -> None:
        while (await services(bot).db.fetchone(
                "SELECT following FROM calls WHERE id = 1"))["following"]:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(over(), 10)
    await bot.settle()
