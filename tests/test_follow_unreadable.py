"""A followed call whose session Evo Voice keeps failing to show (a login refused after a password
change, a 403, a 5xx, answers that can't be read): after `CALL_FIND_SECONDS` the status message
says the bot can't read the call's status, and why, instead of showing it ringing for hours; the
call is still polled, and shown as it goes once a read succeeds again."""

from __future__ import annotations

from typing import Any

import pytest

from bot.calls import polling
from bot.calls.store import CallState
from bot.evovoice.client import RateLimited, ServerError, Session
from bot.standins.evovoice import Behaviour, ErrorStatus, MalformedJson
from bot.standins.slack import Message
from bot.storage.database import Database
from tests.conftest import BotFactory, BotUnderTest
from tests.follow_fakes import T0, Clock, FakeEvo, follow, session
from tests.follow_helpers import FAST, FULL, end_session, status_message, texts, wait_for_edit

CANT_READ = "I can't read this call's status from Evo Voice"


async def ringing_call(bot_factory: BotFactory) -> tuple[BotUnderTest, Message, str]:
    """A call shown ringing, whose session is read alone (`GET /sessions/{id}`)."""
    # CALL_FIND_SECONDS short: how long reads may fail before the requester is told.
    bot = await bot_factory("http", **{**FAST, "CALL_FIND_SECONDS": "0.15"})
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    bot.evo.omitted_from_listings.add(session_id)
    assert "Ringing" in texts(status)[0]
    return bot, status, session_id


@pytest.mark.parametrize(("failure", "why"), [
    (ErrorStatus(500, "Internal error"), "Evo Voice is failing (HTTP 500: Internal error.)"),
    (ErrorStatus(403, "Forbidden"), "Evo Voice refuses to show it (HTTP 403: Forbidden.)"),
    # No words of its own: its status alone, not the default's words inside the sentence again.
    (ErrorStatus(403, ""), "Evo Voice refuses to show it (HTTP 403.) Tell the callbot operators."),
    (MalformedJson(), "Evo Voice's answers can't be read"),
])
async def test_reads_failing_for_find_seconds_are_told_and_the_call_is_shown_again_after(
    bot_factory: BotFactory, failure: Behaviour, why: str
) -> None:
    bot, status, session_id = await ringing_call(bot_factory)
    bot.evo.default_behaviours[("GET", f"/sessions/{session_id}")] = failure
    await wait_for_edit(bot, status, CANT_READ)
    shown = texts(status)[-1]
    assert why in shown and "Last seen ringing" in shown
    del bot.evo.default_behaviours[("GET", f"/sessions/{session_id}")]  # Evo Voice is back
    end_session(bot, session_id, after_seconds=30, outcome="No answer")
    await wait_for_edit(bot, status, "❌ Ended: No answer, lasted 30 s.")
    assert CANT_READ not in texts(status)[-1]


async def test_a_login_refused_while_following_says_to_fix_the_login(
    bot_factory: BotFactory,
) -> None:
    bot, status, _ = await ringing_call(bot_factory)
    bot.evo.password = "changed in Evo Voice while the bot ran"
    await wait_for_edit(bot, status, CANT_READ)
    assert "EVOVOICE_PASSWORD" in texts(status)[-1]


class Timed(FakeEvo):
    """Answers each poll at the time the script gives it (seconds after the call was placed)."""

    def __init__(self, clock: Clock, script: list[tuple[float, Session | Exception]]) -> None:
        super().__init__([answer for _, answer in script])
        self.clock, self.times = clock, [at for at, _ in script]

    async def poll_session(self, session_id: str, account_ids: list[str]) -> Session:
        self.clock.now = T0 + self.times[min(self.polls, len(self.times) - 1)]
        return await super().poll_session(session_id, account_ids)


FAILING = ServerError(503, "Service unavailable")


async def test_a_read_failing_for_a_moment_is_not_told_and_a_recovered_call_is_shown_again(
    db: Database,
) -> None:
    # Failing for longer than find_for (120 s): told. Read again: shown ringing again, though
    # nothing else changed. Failing once more, for a moment: not told, as a new failure.
    clock = Clock()
    script: list[tuple[float, Session | Exception]] = [
        (0, FAILING), (121, FAILING), (122, session("Ringing")), (300, FAILING),
        (301, session("Ringing")), (302, session("Ringing", ended=True)),
    ]
    call, notifier, _ = await follow(db, Timed(clock, script), clock=clock)
    shown = [m.text.splitlines()[-1] for m in notifier.edits]
    assert [line.split(".")[0] for line in shown] == [
        "⚠️ I can't read this call's status from Evo Voice", "🔔 Ringing…", "❌ Ended: not answered",
    ], shown
    assert call.state == CallState.ENDED and call.unreadable is None


async def test_evo_voice_asking_to_slow_down_is_not_told_as_an_unreadable_call(
    db: Database,
) -> None:
    # A 429 holds every request back together (bot/evovoice/budget.py): no fault of this call,
    # however long it lasts (docs/evovoice.md: "failing for CALL_FIND_SECONDS (a 429 aside)").
    clock = Clock()
    slow_down = RateLimited(429, "Too many requests", retry_after=60.0)
    script: list[tuple[float, Session | Exception]] = [
        (0, slow_down), (200, slow_down), (400, slow_down), (401, session("Ringing", ended=True)),
    ]
    call, notifier, _ = await follow(db, Timed(clock, script), clock=clock)
    assert not any("can't read" in m.text for m in notifier.edits)
    assert call.state == CallState.ENDED


async def test_a_bug_reading_a_call_is_told_and_the_call_is_shown_again_after(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug met reading the call's session (an answer of a shape nobody foresaw, say) no longer
    ends the following with the status frozen at Ringing until a restart: it is shown as a read
    that fails, with the log line's reference, and the call is still followed."""
    bot, status, session_id = await ringing_call(bot_factory)
    real = polling.classify
    buggy = True

    def classify(*args: Any, **kwargs: Any) -> CallState:
        if buggy:
            raise RuntimeError("a bug")
        return real(*args, **kwargs)

    monkeypatch.setattr(polling, "classify", classify)
    await wait_for_edit(bot, status, CANT_READ)
    assert "Something went wrong on our side (reference " in texts(status)[-1]
    buggy = False
    end_session(bot, session_id, after_seconds=30, outcome="No answer")
    await wait_for_edit(bot, status, "❌ Ended: No answer, lasted 30 s.")
    assert CANT_READ not in texts(status)[-1]
